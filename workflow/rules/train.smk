rule train:
    """Train one pack of runs in one process (dropout_lab.pack); its pack.json holds every run's metrics."""
    input:
        pack_data,
    output:
        "results/packs/{pack}/pack.json",
    log:
        "results/logs/train/{pack}.log",
    conda:
        "../envs/train.yaml"
    threads: config["threads_per_run"]
    resources:
        mem_mb=pack_memory,
    params:
        arguments=pack_arguments,
        identity=pack_identity,
    shell:
        "python -m dropout_lab.pack --dir results/packs/{wildcards.pack} {params.arguments} threads={threads}"
        " > {log} 2>&1"


rule run_metrics:
    """Take each run's metrics.json out of its pack's pack.json (a light shell job, no torch)."""
    input:
        pack_of_run,
    output:
        "results/runs/{experiment}/{gate}/{cell}/seed{seed}/metrics.json",
    log:
        "results/logs/run_metrics/{experiment}/{gate}/{cell}/seed{seed}.log",
    localrule: True
    shell:
        "python -m dropout_lab.unpack {input} {output} > {log} 2>&1"
