rule train:
    input:
        run_data,
    output:
        "results/runs/{experiment}/{gate}/{cell}/seed{seed}/metrics.json",
    params:
        overrides=train_arguments,
    log:
        "results/logs/train/{experiment}/{gate}/{cell}/seed{seed}.log",
    threads: config["threads_per_run"]
    resources:
        mem_mb=4000,
    shell:
        "{PYTHON} -m dropout_lab.train {params.overrides} > {log} 2>&1"
