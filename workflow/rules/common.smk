# Helpers shared by the rules: config validation, the run list, paths and overrides.
import os
import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# The package comes from this checkout, at parse time as in every job: planning needs only the DAG-time
# dependencies (docs/workflow.md), not an install of dropout-lab into Snakemake's environment.
sys.path.insert(0, f"{REPOSITORY}/src")

from dropout_lab.settings import claims as claim_registry, datasets, identity
from dropout_lab.planning import checks, grid, packs, plan, scales
from dropout_lab.paper import report as paper_report

# scale: auto becomes paper or quick for this machine; the plan and the paper's first page say which and why.
SCALE_CHOICE = scales.resolve_scale(config)
try:
    # Every check before anything runs, one line naming the bad key (the same as `dropout-lab plan`'s);
    # then Snakemake's own validation. Also: the runs, their packs and what each run folder should hold.
    RUNS, RUNS_PER_JOB, PACKS, EXPECTED = plan.checked_grid(config, f"{REPOSITORY}/workflow/schemas/config.schema.yaml")
    validate(config, "../schemas/config.schema.yaml")
    # A damaged pack.json stops the workflow before any job runs, its runs' metrics.json untouched.
    for _pack in PACKS:
        if os.path.exists(f"results/packs/{_pack.name}/pack.json"):
            packs.check_pack_json(f"results/packs/{_pack.name}/pack.json")
except checks.GridError as err:
    raise WorkflowError(f"error: {err}")


# The interpreter running Snakemake has the package: put it first on PATH so that
# `python` in the rules' shell commands is that one (not a parameter, which would
# make every run out of date when the environment moves).
envvars:
    "PATH",


# Set, never read, here (the jobs read them): the package from this checkout in every job, whatever
# environment runs it (the venv, or a per-rule conda environment of workflow/envs/ without an install);
# and where the data lies, which cannot change a run's numbers: the runs read it from the environment
# (config/train.yaml's data_dir, dropout_lab.training.data's mirror variables), not from the train rule's
# parameters, so moving the data or a mirror retrains nothing.
os.environ.update(
    PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
    PYTHONPATH=os.pathsep.join(p for p in (f"{REPOSITORY}/src", os.environ.get("PYTHONPATH")) if p),
    DROPOUT_LAB_DATA_DIR=config["data"]["dir"],
)
os.environ.update(
    {
        f"DROPOUT_LAB_{name.upper()}_MIRROR": str(mirror)
        for name, mirror in (config["data"].get("mirrors") or {}).items()
        if mirror
    }
)
PAPER_DIR = f"{REPOSITORY}/paper"
DATA_DIR = config["data"]["dir"]
RUN_BY_FOLDER = {run.folder: run for run in RUNS}
PACK_BY_NAME = {pack.name: pack for pack in PACKS}
PACK_OF_FOLDER = {run.folder: pack.name for pack in PACKS for run in pack.runs}
RUN_SETTINGS = grid.run_settings(config)
FIGURES = grid.figure_stems(config)
THEORY_FIGURES = ["gradient", "regression"]  # the numerical checks' figures (dropout_lab.analysis.theory_plots)
CLAIM_SECTIONS = claim_registry.sections()  # the paper sections of the registered claims (dropout_lab.settings.claims)
GENERATED_TEX = paper_report.GENERATED  # the paper's other generated LaTeX files (dropout_lab.paper.report)


# A gate folder is a gate name (digits allowed), then -scaled for the article's convention: the vocabulary's
# pattern (tests/test_vocabulary.py reads this block against it).
from dropout_lab.settings.vocabulary import GATE_FOLDER


wildcard_constraints:
    experiment=r"[A-Za-z0-9_]+",
    gate=GATE_FOLDER,
    seed=r"\d+",
    dataset="|".join(datasets.SPECS),
    stem=r"[A-Za-z0-9_]+",
    pack=rf"[A-Za-z0-9_]+(/(width\d+|lr[0-9.e+-]+|ep\d+))*/({GATE_FOLDER}/)?[A-Za-z0-9_.+-]+(/seed\d+)?",


def metrics_files():
    return [f"{run.folder}/metrics.json" for run in RUNS]


def the_run(wildcards):
    folder = grid.run_folder(wildcards.experiment, wildcards.gate, wildcards.cell, wildcards.seed)
    if folder not in RUN_BY_FOLDER:
        raise WorkflowError(f"{folder} is not a run of the configured grids")
    return RUN_BY_FOLDER[folder]


def the_pack(wildcards):
    if wildcards.pack not in PACK_BY_NAME:
        raise WorkflowError(f"{wildcards.pack} is not a pack of the configured grids")
    return PACK_BY_NAME[wildcards.pack]


def pack_arguments(wildcards):
    return the_pack(wildcards).arguments(RUN_SETTINGS, config["train_overrides"])


def pack_identity(wildcards):
    # The digests of the pack's runs' defining settings: an edit to a Hydra file that changes them retrains.
    return [identity.digest(EXPECTED[run.folder]) for run in the_pack(wildcards).runs]


def pack_of_run(wildcards):
    return f"results/packs/{PACK_OF_FOLDER[the_run(wildcards).folder]}/pack.json"


def data_cache(dataset):
    return str(datasets.cache_paths(DATA_DIR, dataset)[0])


def pack_data(wildcards):
    # A finished pack is not retrained because its data cache was rebuilt, touched or fetched anew (runs
    # imported from another machine, with no data here): the cache holds the same verified content, whose
    # digest each run's identity records (check_runs). A pack is finished when its pack.json or all its
    # runs' metrics.json are there; it then reads the cache as ancient, or not at all when the cache is
    # missing (Snakemake reruns a job whose input another job makes, even an ancient one). A pack still to
    # train needs the cache as a plain input (ancient there, with a cache marked incomplete by a kill,
    # makes Snakemake 9.27 drop the jobs that need it).
    pack = the_pack(wildcards)
    cache = data_cache(pack.runs[0].dataset)
    done = os.path.exists(f"results/packs/{wildcards.pack}/pack.json") or all(
        os.path.exists(f"{run.folder}/metrics.json") for run in pack.runs
    )
    if not done:
        return cache
    return ancient(cache) if os.path.exists(cache) else []


def pack_memory(wildcards):
    # The dataset, plus weights, gradients and momenta per run; the profiles may override it.
    return 1500 + 250 * len(the_pack(wildcards).runs)


def fetch_arguments(wildcards):
    # The mirror reaches the fetch through the environment (above): another mirror with the
    # same verified files fetches nothing again and retrains nothing.
    checksums = (config["data"].get("checksums") or {}).get(wildcards.dataset) or {}
    args = [f"--data-dir {DATA_DIR}"]
    args += [f"--sha256 {name}={digest}" for name, digest in checksums.items()]
    return " ".join(args)
