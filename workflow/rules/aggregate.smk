rule aggregate:
    """Check every run against the settings expected at its path, then gather all runs into tidy tables."""
    input:
        metrics_files(),
    output:
        runs="results/aggregate/runs.parquet",
        csv=report("results/aggregate/runs.csv", caption="../report/runs.rst", category="Tables"),
        curves="results/aggregate/curves.parquet",
        mc="results/aggregate/mc_curves.parquet",
        provenance="results/aggregate/provenance.json",
    log:
        "results/logs/aggregate.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        records=grid.run_table(RUNS),
        expected=EXPECTED,
    script:
        "../scripts/aggregate.py"
