rule claims:
    """Judge every claim from the runs that trained; write claims.json and the paper's LaTeX from it."""
    input:
        runs="results/aggregate/runs.parquet",
        mc="results/aggregate/mc_curves.parquet",
        theory="results/theory/theory.json",
        provenance="results/aggregate/provenance.json",
        anchors=f"{PAPER_DIR}/anchors.yaml",
    output:
        json=report("results/claims/claims.json", caption="../report/claims.rst", category="Verdicts"),
        table=report("results/claims/verdicts.csv", caption="../report/verdicts.rst", category="Verdicts"),
        generated=expand("results/claims/{name}.tex", name=GENERATED_TEX),
        sections=expand(
            "results/claims/claims/{claim}.tex",
            claim=CLAIM_SECTIONS,
        ),
    log:
        "results/logs/claims.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/claims.py"
