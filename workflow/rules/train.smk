rule train:
    input:
        run_data,
    output:
        "results/runs/{experiment}/{gate}/{cell}/seed{seed}/metrics.json",
    log:
        "results/logs/train/{experiment}/{gate}/{cell}/seed{seed}.log",
    conda:
        "../../environment.yml"
    threads: config["threads_per_run"]
    resources:
        mem_mb=4000,
    params:
        overrides=train_arguments,
    shell:
        "python -m dropout_lab.train {params.overrides} > {log} 2>&1"
