rule figures:
    """Draw every figure of the paper (PDF and PNG), the theory's too, in one job: from the aggregated tables and
    what the claims rule computed (claims.json), the drawing shared out over the job's threads."""
    input:
        runs="results/aggregate/runs.parquet",
        curves="results/aggregate/curves.parquet",
        mc="results/aggregate/mc_curves.parquet",
        claims="results/claims/claims.json",
        theory="results/theory/theory.json",
        anchors=f"{PAPER_DIR}/anchors.yaml",
    output:
        pdf=expand("results/figures/{stem}.pdf", stem=FIGURES),
        png=[
            report(
                f"results/figures/{stem}.png",
                caption="../report/figure.rst",
                category="Figures",
                labels={"figure": stem},
            )
            for stem in FIGURES
        ],
        theory_pdf=expand("results/figures/theory/{part}.pdf", part=THEORY_FIGURES),
        theory_png=[
            report(
                f"results/figures/theory/{part}.png",
                caption="../report/theory_figure.rst",
                category="Figures",
                labels={"figure": f"theory/{part}"},
            )
            for part in THEORY_FIGURES
        ],
    log:
        "results/logs/figures/figures.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    threads: workflow.cores
    params:
        # The figures to draw, and the thresholds, margins and bands they draw.
        stems=FIGURES,
        claims=config["claims"],
    script:
        "../scripts/figure.py"
