# Before any job runs: say what will be done, and stop early for what would fail late.
import shutil

from snakemake.exceptions import WorkflowError

from dropout_lab.planning import plan


onstart:
    needed = {job.rule.name for job in workflow.dag.needrun_jobs()}
    if "paper" in needed and shutil.which("latexmk") is None:
        raise WorkflowError(
            "latexmk is not installed, so the paper cannot be built; install TeX first (README: latexmk "
            "texlive-latex-base texlive-latex-recommended texlive-science lmodern) or ask for another target, "
            "e.g. results/claims/claims.json"
        )
    trains = [job for job in workflow.dag.needrun_jobs() if job.rule.name == "train"]
    templates, counts = plan.by_experiment(RUNS, EXPECTED)
    _, to_train = plan.by_experiment([r for job in trains for r in PACK_BY_NAME[job.wildcards.pack].runs], EXPECTED)
    gpu = packs.gpu_visible(config["device"])
    lines = plan.plan_lines(config, templates, counts, to_train, len(PACKS), len(trains), gpu, workflow.cores)
    for line in lines:
        print(line, file=sys.stderr)
