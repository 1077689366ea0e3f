rule fetch_data:
    output:
        cache=f"{DATA_DIR}/{{dataset}}/{{dataset}}.pt",
        stamp=f"{DATA_DIR}/{{dataset}}/verified.json",
    log:
        "results/logs/fetch_data/{dataset}.log",
    localrule: True
    conda:
        "../../environment.yml"
    params:
        args=fetch_arguments,
    shell:
        "python -m dropout_lab.data {wildcards.dataset} {params.args} --stamp {output.stamp} > {log} 2>&1"
