rule aggregate:
    input:
        metrics_files(),
    output:
        runs="results/aggregate/runs.parquet",
        csv=report("results/aggregate/runs.csv", category="Tables"),
        curves="results/aggregate/curves.parquet",
        provenance="results/aggregate/provenance.json",
    params:
        records=grid.run_table(RUNS),
    log:
        "results/logs/aggregate.log",
    localrule: True
    script:
        "../scripts/aggregate.py"
