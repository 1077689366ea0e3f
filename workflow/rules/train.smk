rule train:
    input:
        pack_data,
    output:
        "results/packs/{pack}/pack.json",
    log:
        "results/logs/train/{pack}.log",
    conda:
        "../../environment.yml"
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
    """Each run's metrics.json, taken out of its pack's pack.json (aggregation reads these).

    A shell job: it runs in Snakemake's own process pool and imports no torch.
    """
    input:
        pack_of_run,
    output:
        "results/runs/{experiment}/{gate}/{cell}/seed{seed}/metrics.json",
    log:
        "results/logs/run_metrics/{experiment}/{gate}/{cell}/seed{seed}.log",
    localrule: True
    shell:
        "python -m dropout_lab.unpack {input} {output} > {log} 2>&1"
