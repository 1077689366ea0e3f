rule theory:
    """Check the article's linear-unit mathematics numerically (no training data)."""
    output:
        report("results/theory/theory.json", caption="../report/theory.rst", category="Verdicts"),
    log:
        "results/logs/theory.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        # The checks' settings (config theory:): an edit reruns them and reaches the paper.
        settings=config["theory"],
    script:
        "../scripts/theory.py"
