rule figure:
    """Draw one seaborn figure (PDF and PNG) from the aggregated tables."""
    input:
        runs="results/aggregate/runs.parquet",
        curves="results/aggregate/curves.parquet",
        mc="results/aggregate/mc_curves.parquet",
        anchors=f"{PAPER_DIR}/anchors.yaml",
    output:
        pdf="results/figures/{stem}.pdf",
        png=report("results/figures/{stem}.png", caption="../report/figure.rst", category="Figures"),
    log:
        "results/logs/figures/{stem}.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        # The thresholds, margins and bands a figure draws.
        claims=config["claims"],
    script:
        "../scripts/figure.py"
