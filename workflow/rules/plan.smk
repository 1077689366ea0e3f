# Before any job runs: say what will be done, and stop early for what would fail late.
import re
import shutil

from snakemake.exceptions import WorkflowError

from dropout_lab.planning import plan

TRAINING = []  # the packs this run trains (set when it starts)


def print_plan(training=None, remember=False):
    """The plan's lines (dropout_lab.planning.plan.plan_report): those packs Snakemake will run, or from the files;
    a run remembers its estimate, which the next plan checks against the jobs' measured times."""
    cores = workflow.resource_settings.cores or os.cpu_count() or 1
    for line in plan.plan_report(config, RUNS, PACKS, EXPECTED, cores, SCALE_CHOICE, training, remember=remember):
        print(line, file=sys.stderr)


# A dry run has no onstart: its plan is printed here, counted from the files (what `dropout-lab plan` prints).
if workflow.is_main_process and any(
    arg in ("--dry-run", "--dryrun") or re.fullmatch(r"-[a-zA-Z]*n[a-zA-Z]*", arg) for arg in sys.argv[1:]
):
    print_plan()


onstart:
    needed = {job.rule.name for job in workflow.dag.needrun_jobs()}
    if "paper" in needed and shutil.which("latexmk") is None:
        raise WorkflowError(
            "latexmk is not installed, so the paper cannot be built; install TeX first (tools/setup-tex, or make "
            "paper as root on Debian or Ubuntu) or ask for another target, e.g. results/claims/claims.json"
        )
    TRAINING[:] = [
        PACK_BY_NAME[job.wildcards.pack] for job in workflow.dag.needrun_jobs() if job.rule.name == "train"
    ]
    print_plan(TRAINING, remember=True)


onsuccess:
    # How far off this run's estimate was, at once, when it trained (the next plan says it again).
    if TRAINING and (line := plan.last_estimate_line()):
        print(line, file=sys.stderr)
