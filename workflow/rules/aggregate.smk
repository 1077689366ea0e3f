rule check_runs:
    """Check every run's recorded settings against those expected at its path (a separate job, so that a
    refused run leaves the earlier aggregate tables in place)."""
    input:
        metrics_files(),
    output:
        "results/aggregate/checked.json",
    log:
        "results/logs/check_runs.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        expected=EXPECTED,
    script:
        "../scripts/check_runs.py"


rule aggregate:
    """Gather every checked run into tidy tables: one row per run, per run-epoch, per Monte-Carlo k."""
    input:
        metrics=metrics_files(),
        checked="results/aggregate/checked.json",
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
        # A run's health follows these rules: an edit re-marks every run (and reruns what reads the tables).
        failure=config["failure"],
    script:
        "../scripts/aggregate.py"
