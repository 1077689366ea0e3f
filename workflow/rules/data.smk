rule fetch_data:
    output:
        f"{DATA_DIR}/{{dataset}}/{{dataset}}.pt",
    params:
        args=fetch_arguments,
    log:
        "results/logs/fetch_data/{dataset}.log",
    localrule: True
    shell:
        "{PYTHON} -m dropout_lab.data {wildcards.dataset} {params.args} > {log} 2>&1"
