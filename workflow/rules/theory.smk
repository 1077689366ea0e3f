rule theory:
    output:
        report("results/theory/theory.json", caption="../report/theory.rst", category="Verdicts"),
    log:
        "results/logs/theory.log",
    localrule: True
    conda:
        "../../environment.yml"
    script:
        "../scripts/theory.py"


rule theory_figure:
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
        "../../environment.yml"
    script:
        "../scripts/theory_figure.py"
