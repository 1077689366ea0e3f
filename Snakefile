# dropout-lab: from data to the paper. Table of contents; rules live in workflow/rules/.
#   snakemake --cores all                      # the whole workflow at the configured scale
#   snakemake --cores all --config scale=smoke # a couple of minutes, proves the pipeline
from snakemake.utils import min_version

min_version("9.0")


configfile: f"{workflow.basedir}/config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/plan.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/theory.smk"
include: "workflow/rules/claims.smk"
include: "workflow/rules/paper.smk"


rule all:
    """The paper, its verdicts and the run table."""
    default_target: True
    input:
        "results/paper/paper.pdf",
        "results/claims/claims.json",
        "results/claims/verdicts.csv",
        "results/aggregate/runs.csv",
