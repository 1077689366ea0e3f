rule fetch_data:
    """Fetch a dataset from the mirrors, verify its pinned SHA-256 digests and cache it."""
    output:
        cache=data_cache("{dataset}"),
        stamp=f"{DATA_DIR}/{{dataset}}/verified.json",
    log:
        "results/logs/fetch_data/{dataset}.log",
    localrule: True
    conda:
        "../envs/train.yaml"
    params:
        args=fetch_arguments,
    shell:
        "python -m dropout_lab.data {wildcards.dataset} {params.args} --stamp {output.stamp} > {log} 2>&1"
