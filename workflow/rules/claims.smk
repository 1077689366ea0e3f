rule claims:
    """Judge every claim from the runs that trained; write claims.json and the paper's LaTeX from it."""
    input:
        runs="results/aggregate/runs.parquet",
        mc="results/aggregate/mc_curves.parquet",
        theory="results/theory/theory.json",
        provenance="results/aggregate/provenance.json",
        anchors=f"{PAPER_DIR}/anchors.yaml",
        # The sentences of the generated LaTeX (dropout_lab.paper.render): a template edit rewrites them.
        templates=sorted(
            os.path.join(PAPER_DIR, "templates", name)
            for name in os.listdir(os.path.join(PAPER_DIR, "templates"))
            if name.endswith(".j2")
        ),
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
    params:
        # Every setting the verdicts and the prose read: an edit reruns the claims and reaches the PDF.
        claims=config["claims"],
        seeds=config["seeds"][config["scale"]],
        protocols=config.get("protocols"),
        scale_choice=SCALE_CHOICE,
    script:
        "../scripts/claims.py"
