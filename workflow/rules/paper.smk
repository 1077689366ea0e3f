rule paper:
    """Build the PDF with latexmk and move it into place atomically."""
    input:
        tex=f"{PAPER_DIR}/paper.tex",
        bib=f"{PAPER_DIR}/refs.bib",
        macros="results/claims/macros.tex",
        verdicts="results/claims/verdicts.tex",
        failed="results/claims/failed.tex",
        methods="results/claims/methods.tex",
        discussion="results/claims/discussion.tex",
        theory="results/claims/theory.tex",
        sections=rules.claims.output.sections,
        placement="results/claims/placement.tex",
        protocols="results/claims/protocols.tex",
        anchors="results/claims/anchors.tex",
        provenance="results/claims/provenance.tex",
        figures=expand("results/figures/{stem}.pdf", stem=FIGURES),
        theory_figures=expand(
            "results/figures/theory/{part}.pdf", part=["gradient", "regression"]
        ),
    output:
        report("results/paper/paper.pdf", caption="../report/paper.rst", category="Paper"),
    log:
        "results/logs/paper.log",
    localrule: True
    conda:
        "../envs/paper.yaml"
    script:
        "../scripts/build_paper.py"
