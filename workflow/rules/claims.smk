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
        macros="results/claims/macros.tex",
        verdicts="results/claims/verdicts.tex",
        failed="results/claims/failed.tex",
        methods="results/claims/methods.tex",
        discussion="results/claims/discussion.tex",
        theory="results/claims/theory.tex",
        sections=expand(
            "results/claims/claims/{claim}.tex",
            claim=CLAIM_SECTIONS,
        ),
        placement="results/claims/placement.tex",
        protocols="results/claims/protocols.tex",
        anchors="results/claims/anchors.tex",
        provenance="results/claims/provenance.tex",
    log:
        "results/logs/claims.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/claims.py"
