rule paper:
    """Build the PDF with latexmk and move it into place atomically; a failed build leaves the previous PDF."""
    input:
        tex=f"{PAPER_DIR}/paper.tex",
        bib=f"{PAPER_DIR}/refs.bib",
        generated=rules.claims.output.generated,
        sections=rules.claims.output.sections,
        figures=rules.figures.output.pdf,
        theory_figures=rules.figures.output.theory_pdf,
    output:
        # update(): Snakemake keeps the previous PDF while the job runs and puts it back if the job fails.
        report(update("results/paper/paper.pdf"), caption="../report/paper.rst", category="Paper"),
    log:
        "results/logs/paper.log",
    localrule: True
    conda:
        "../envs/paper.yaml"
    script:
        "../scripts/build_paper.py"
