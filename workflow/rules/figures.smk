rule figures:
    """Draw every seaborn figure of the paper (PDF and PNG) from the aggregated tables, in one process."""
    input:
        runs="results/aggregate/runs.parquet",
        curves="results/aggregate/curves.parquet",
        mc="results/aggregate/mc_curves.parquet",
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
    log:
        "results/logs/figures/figures.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        # The figures to draw, and the thresholds, margins and bands they draw.
        stems=FIGURES,
        claims=config["claims"],
    script:
        "../scripts/figure.py"
