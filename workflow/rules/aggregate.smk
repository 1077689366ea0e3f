rule aggregate:
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
        "../../environment.yml"
    params:
        records=grid.run_table(RUNS),
        expected=EXPECTED,
    script:
        "../scripts/aggregate.py"
