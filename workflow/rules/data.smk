rule fetch_data:
    output:
        f"{DATA_DIR}/{{dataset}}/{{dataset}}.pt",
    log:
        "results/logs/fetch_data/{dataset}.log",
    localrule: True
    conda:
        "../../environment.yml"
    params:
        args=fetch_arguments,
    shell:
        "python -m dropout_lab.data {wildcards.dataset} {params.args} > {log} 2>&1"
