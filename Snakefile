# The workflow is workflow/Snakefile (the Snakemake catalog's layout); this file runs it from the checkout's root.


include: "workflow/Snakefile"


# An included file's default target counts inside that file only: the same target, named again for this one.
rule everything:
    """The default target of workflow/Snakefile (rule all): the paper, its verdicts and the run table."""
    default_target: True
    input:
        rules.all.input,
