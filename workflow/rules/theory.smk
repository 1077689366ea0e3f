rule theory:
    """Check the article's linear-unit mathematics numerically (no training data)."""
    output:
        report("results/theory/theory.json", caption="../report/theory.rst", category="Verdicts"),
    log:
        "results/logs/theory.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/theory.py"


rule theory_figure:
    """Draw the figures of the numerical theory checks."""
    input:
        "results/theory/theory.json",
    output:
        pdf="results/figures/theory/{part}.pdf",
        png=report("results/figures/theory/{part}.png", caption="../report/theory_figure.rst", category="Figures"),
    log:
        "results/logs/figures/theory_{part}.log",
    wildcard_constraints:
        part="gradient|regression",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/theory_figure.py"
