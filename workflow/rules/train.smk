rule train:
    """Train one pack of runs in one process (dropout_lab.pack); its pack.json holds every run's metrics.

    Each run's metrics.json is also written to its folder when the pack ends (--write-runs): a finished run is kept,
    not retrained, when its pack runs again (a seed added, a pack.json lost to a kill); a run whose settings
    changed trains again (--retrain-changed).
    """
    input:
        pack_data,
    output:
        "results/packs/{pack}/pack.json",
    log:
        "results/logs/train/{pack}.log",
    benchmark:
        "results/benchmarks/train/{pack}.tsv"
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
        " --write-runs --retrain-changed"
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
    conda:
        "../envs/train.yaml"
    shell:
        "python -m dropout_lab.unpack {input} {output} > {log} 2>&1"
