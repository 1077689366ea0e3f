"""What a workflow run is about to do, printed before any work: runs, packs, device and the time it expects.

The time is an estimate from each model's training FLOPs per image and two measured
throughputs of this project's engine (below). Where training jobs already ran on this machine, their
wall times (the train rule's Snakemake benchmark files) scale that estimate, and the plan says so.
A run whose folder holds its metrics.json is finished: its pack keeps it, so it is not counted again.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dropout_lab.planning import checks, grid, packs
from dropout_lab.settings import run_folder
from dropout_lab.settings.atomic import write_json
from dropout_lab.settings.architectures import architecture, layer_shapes
from dropout_lab.settings.datasets import SPECS

# Measured throughputs of the engine, in training FLOP/s (forward and backward, 6 per weight-image for an MLP):
# - CPU: one epoch of the 784-1024-1024-10 MLP on 60,000 images in about 9 s with 2 threads (AMD EPYC,
#   ../shared/notes/python-stack.md), i.e. about 3.7e10 FLOP/s per core;
# - GPU: the MNIST paper grid (145 of those MLPs x 50 epochs, one pack, bf16) in 128.8 s on one H200 (db2f17d).
CPU_FLOPS_PER_CORE = 3.7e10
GPU_FLOPS = 3.8e13
EVAL_SHARE = 0.3  # final evaluation (both splits, Monte-Carlo masks), as a share of training
JOB_START_SECONDS = 3.0  # a training job's start on the CPU: Python, torch and the data cache
BENCHMARKS = "results/benchmarks/train"  # the train rule's benchmark: {pack}.tsv, Snakemake's columns (s, h:m:s, ...)
LAST_ESTIMATE = "results/benchmarks/plan.json"  # what the last run expected of its training jobs


def checked_grid(config: dict[str, Any], schema_file: str | Path | None) -> tuple[list, int | str, list, dict]:
    """Every check of the workflow config that runs before anything trains, then (runs, runs_per_job, packs,
    expected settings per run folder). One function for the workflow (workflow/rules/common.smk) and
    `dropout-lab plan`, so both refuse the same config with the same line (GridError). Without a schema file
    (an installed package has none) the schema check is left out; the project's own checks remain."""
    checks.check_grid_keys(config)  # before drop_switched_off: a misspelt sweep set to null switches nothing off
    grid.drop_switched_off(config)  # a sweep set to null is not run
    if schema_file is not None:
        checks.check_schema(config, schema_file)  # and then check_names
    else:
        checks.check_names(config)
    checks.check_data_dir(config)
    runs = grid.expand_runs(config)
    checks.check_claims(config)
    grid.check_train_overrides(config, runs)
    per_job = packs.runs_per_job(config)  # auto: all on a GPU, mixed packs of up to 32 on a CPU
    made = packs.make_packs(runs, per_job)
    # What each run folder should hold (dropout_lab.settings.identity), from the Hydra files: a change retrains.
    expected = grid.expected_settings(config, runs)
    checks.check_validation_split(runs, expected)
    return runs, per_job, made, expected


def _model(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The model's settings (name, sizes) from a run's defining settings (dropout_lab.settings.identity, dotted keys)."""
    return {key[len("model."):]: value for key, value in settings.items() if key.startswith("model.")}


def training_flops_per_image(settings: Mapping[str, Any]) -> float:
    """Forward and backward FLOPs of one training image (3 x the forward pass); `settings`: a run's defining
    settings (dropout_lab.settings.identity, dotted keys)."""
    convs, dense = layer_shapes(_model(settings), settings["dataset.name"])
    forward = sum(2.0 * k * k * a * b * side * side for a, b, k, side in convs) + sum(2.0 * a * b for a, b in dense)
    return 3.0 * forward


def estimate_seconds(settings: Mapping[str, Any], runs: int, gpu: bool, parallel_jobs: int, jobs: int = 0) -> float:
    """Wall seconds to train `runs` runs with these defining settings, in `jobs` training jobs."""
    pool = SPECS[settings["dataset.name"]].train_images - settings.get("dataset.validation", 0)
    images = int(settings["dataset.train_fraction"] * pool)
    work = training_flops_per_image(settings) * images * settings["train.epochs"] * runs * (1 + EVAL_SHARE)
    if gpu:
        return work / GPU_FLOPS
    parallel = max(parallel_jobs, 1)
    return work / (CPU_FLOPS_PER_CORE * parallel) + jobs * JOB_START_SECONDS / parallel


def by_experiment(runs: Any, expected: Mapping[str, Mapping[str, Any]]) -> tuple[dict, dict]:
    """(one run's defining settings per experiment, runs per experiment) of grid runs with their expected
    settings (dropout_lab.planning.grid.expected_settings): what `plan_lines` takes."""
    templates: dict[str, Mapping[str, Any]] = {}
    counts: dict[str, int] = {}
    epochs: dict[str, list[int]] = {}
    for run in runs:
        templates.setdefault(run.experiment, expected[run.folder])
        counts[run.experiment] = counts.get(run.experiment, 0) + 1
        epochs.setdefault(run.experiment, []).append(expected[run.folder]["train.epochs"])
    # The budget sweep's runs train for other epochs: the estimate takes the mean, the line names the range.
    for experiment, values in epochs.items():
        templates[experiment] = {**templates[experiment], "train.epochs": sum(values) / len(values),
                                 "plan.epochs": (min(values), max(values))}
    return templates, counts


def unfinished(runs: Iterable[Any], root: str | Path = ".") -> list:
    """The runs still to train: those whose folder under `root` (the workflow's directory) holds no
    metrics.json. A pack that runs again keeps its finished runs (dropout_lab.training.pack --write-runs)."""
    return [run for run in runs if not (Path(root) / run.folder / run_folder.METRICS).is_file()]


@dataclass(frozen=True)
class Measured:
    """Training jobs timed on this machine (the train rule's benchmark files), beside the FLOP model's
    estimate of the same jobs."""

    jobs: int
    seconds: float  # their wall seconds, as Snakemake measured them
    model_seconds: float  # what estimate_seconds says for the same jobs
    run_epochs: float  # the runs' epochs, summed over the jobs' runs

    @property
    def ratio(self) -> float:
        """Measured over modelled: above 1, the FLOP model is too optimistic for this machine."""
        return self.seconds / self.model_seconds

    def __add__(self, other: Measured) -> Measured:
        return Measured(self.jobs + other.jobs, self.seconds + other.seconds,
                        self.model_seconds + other.model_seconds, self.run_epochs + other.run_epochs)


def benchmark_seconds(path: str | Path) -> float | None:
    """A Snakemake benchmark file's wall seconds (column s, the mean of its rows), or None where there is no
    file or it cannot be read: a missing or damaged measurement only leaves the FLOP estimate in place."""
    try:
        with open(path, newline="") as handle:
            seconds = [float(row["s"]) for row in csv.DictReader(handle, delimiter="\t")]
    except (OSError, UnicodeDecodeError, KeyError, TypeError, ValueError, csv.Error):
        return None
    return sum(seconds) / len(seconds) if seconds and all(value > 0 for value in seconds) else None


def measured_jobs(made: Sequence[Any], expected: Mapping[str, Mapping[str, Any]], gpu: bool,
                  root: str | Path = ".") -> dict[str, Measured]:
    """Per experiment, the packs of `made` (dropout_lab.planning.packs.Pack) whose benchmark file
    (BENCHMARKS/{pack}.tsv under `root`) holds a measured time, with the model's estimate for each such job."""
    measured: dict[str, Measured] = {}
    for pack in made:
        seconds = benchmark_seconds(Path(root) / BENCHMARKS / f"{pack.name}.tsv")
        if seconds is None:
            continue
        settings = [expected[run.folder] for run in pack.runs]
        # One job alone on its cores: each run's work, and the job's start once.
        model = sum(estimate_seconds(one, 1, gpu, 1) for one in settings) + (0 if gpu else JOB_START_SECONDS)
        job = Measured(1, seconds, model, float(sum(one["train.epochs"] for one in settings)))
        experiment = pack.runs[0].experiment
        measured[experiment] = measured[experiment] + job if experiment in measured else job
    return measured


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _jobs(count: int) -> str:
    return f"{count} job{'s' if count != 1 else ''}"


def _scaling(experiment: str, measured: Mapping[str, Measured]) -> tuple[float, str]:
    """(the factor on the FLOP estimate, the words that say where the estimate comes from)."""
    if experiment in measured:  # this experiment's own jobs: its model, data and job size
        own = measured[experiment]
        return own.ratio, (f"from {_jobs(own.jobs)} measured on this machine: {own.seconds / own.run_epochs:.3g} s "
                           f"per run-epoch, {own.ratio:.2g}x the FLOP model's estimate for them")
    if measured:  # other experiments' jobs still tell this machine's speed against the model
        pooled = sum(measured.values(), Measured(0, 0.0, 0.0, 0.0))
        return pooled.ratio, (f"FLOP estimate scaled by {_jobs(pooled.jobs)} of other experiments measured on "
                              f"this machine, {pooled.ratio:.2g}x")
    return 1.0, "estimate"


def parallel_jobs(config: Mapping[str, Any], cores: int) -> int:
    """Training jobs side by side on `cores` (each takes threads_per_run)."""
    return max(cores // int(config["threads_per_run"]), 1)


def expected_seconds(config: Mapping[str, Any], templates: Mapping[str, Mapping[str, Any]],
                     runs_per_experiment: Mapping[str, int], to_train: Mapping[str, int], training_jobs: int,
                     gpu: bool, cores: int, measured: Mapping[str, Measured] | None = None) -> dict[str, tuple]:
    """Per experiment: (the wall seconds its runs still to train should take, where that figure comes from)."""
    out = {}
    for experiment in runs_per_experiment:
        train = to_train.get(experiment, 0)
        factor, source = _scaling(experiment, measured or {})
        seconds = estimate_seconds(templates[experiment], train, gpu, parallel_jobs(config, cores),
                                   training_jobs if train else 0)
        out[experiment] = (factor * seconds, source)
    return out


def remember_estimate(training: Sequence[Any], seconds: float, parallel: int, root: str | Path = ".") -> None:
    """Record what a run that starts now expects of its training jobs (LAST_ESTIMATE), for the next plan."""
    write_json(Path(root) / LAST_ESTIMATE, {"packs": [pack.name for pack in training], "seconds": seconds,
                                            "parallel": parallel, "started": time.time()})


def last_estimate_line(root: str | Path = ".") -> str | None:
    """How far off the last run's estimate was: its training jobs' measured seconds (benchmark files written
    since it started), shared over the jobs it ran side by side, against what it expected. None before any."""
    try:
        last = json.loads((Path(root) / LAST_ESTIMATE).read_text())
        names, expected, parallel, started = last["packs"], float(last["seconds"]), int(last["parallel"]), last["started"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    took = []
    for name in names:
        path = Path(root) / BENCHMARKS / f"{name}.tsv"
        seconds = benchmark_seconds(path)
        if seconds is not None and path.stat().st_mtime >= started:
            took.append(seconds)
    if not names or not took:
        return None
    head = f"plan: the last run expected about {_duration(expected)} of training for its {_jobs(len(names))}"
    if len(took) < len(names):
        return head + f"; {len(took)} of them finished (the run stopped early), so it cannot be compared"
    wall = sum(took) / max(parallel, 1)
    ratio = f"{wall / expected:.2g}x the estimate" if expected > 0 else "no estimate"
    return head + f"; they took about {_duration(wall)} ({ratio}, their seconds over {parallel} at once)"


def plan_lines(config: Mapping[str, Any], templates: Mapping[str, Mapping[str, Any]], runs_per_experiment:
               Mapping[str, int], to_train: Mapping[str, int], packs: int, training_jobs: int, gpu: bool,
               cores: int, measured: Mapping[str, Measured] | None = None) -> list[str]:
    """The plan: one line per experiment with runs and expected time, and a warning for a paper grid on a CPU.

    `templates`: one run's defining settings per experiment (all runs of an experiment share model, data and
    epochs); `to_train`: the runs per experiment still to train (the rest are finished), in `training_jobs`
    jobs; `measured`: jobs timed on this machine (measured_jobs), which scale the estimate."""
    parallel = parallel_jobs(config, cores)
    device = "a GPU" if gpu else f"the CPU ({cores} cores, {parallel} training jobs at once)"
    total_runs, left = sum(runs_per_experiment.values()), sum(to_train.values())
    lines = [f"plan: scale={config['scale']}, {total_runs} runs in {packs} pack{'s' if packs != 1 else ''} "
             f"(runs_per_job={config['runs_per_job']}): {total_runs - left} finished, {left} to train now in "
             f"{training_jobs} pack{'s' if training_jobs != 1 else ''}, on {device}"]
    expected = expected_seconds(config, templates, runs_per_experiment, to_train, training_jobs, gpu, cores, measured)
    total = sum(seconds for seconds, _ in expected.values())
    for experiment, runs in runs_per_experiment.items():
        settings = templates[experiment]
        train = to_train.get(experiment, 0)
        seconds, source = expected[experiment]
        size = architecture(settings["model.name"]).describe(_model(settings))
        low, high = settings.get("plan.epochs", (settings["train.epochs"],) * 2)
        epochs = f"{low:g} epochs" if low == high else f"{low:g}-{high:g} epochs (mean {settings['train.epochs']:.1f})"
        lines.append(f"plan: {experiment}: {runs} runs of {settings['model.name']} {size}, {epochs}; "
                     f"{runs - train} finished, {train} to train now, about {_duration(seconds)} ({source})")
    if not gpu and config["scale"] == "paper" and training_jobs:
        lines.append(f"plan: WARNING: the paper scale is meant for a GPU; on this CPU it would take about "
                     f"{_duration(total)}. Ways on: a GPU host (docs/gpu.md: train there, build the paper here), the "
                     "SLURM GPU profile (--profile profiles/slurm --profile profiles/slurm-gpu), scale=quick here, "
                     "or make reference for the shipped paper-scale runs")
    return lines


def plan_report(config: Mapping[str, Any], runs: Sequence[Any], made: Sequence[Any],
                expected: Mapping[str, Mapping[str, Any]], cores: int, scale_choice: str = "",
                training: Sequence[Any] | None = None, root: str | Path = ".", remember: bool = False) -> list[str]:
    """Every line of the plan, each starting "plan: ", as `dropout-lab plan`, a dry run and a run print it.

    `training`: the packs Snakemake will run (a run's DAG); None counts, from the files under `root`, the
    packs that still have a run without its metrics.json (the command and a dry run, which has no DAG hook).
    Only runs without a metrics.json count as to train: a pack that runs again keeps its finished runs.
    The last run's estimate is checked against its measured jobs; `remember` (a run that starts now)
    records this estimate for the next plan to check."""
    if training is None:
        left = {run.folder for run in unfinished(runs, root)}
        training = [pack for pack in made if any(run.folder in left for run in pack.runs)]
    templates, counts = by_experiment(runs, expected)
    _, to_train = by_experiment(unfinished([run for pack in training for run in pack.runs], root), expected)
    gpu = packs.gpu_visible(str(config["device"]))
    measured = measured_jobs(made, expected, gpu, root)
    lines = plan_lines(config, templates, counts, to_train, len(made), len(training), gpu, cores, measured=measured)
    checked = last_estimate_line(root)
    if remember and training:
        seconds = expected_seconds(config, templates, counts, to_train, len(training), gpu, cores, measured)
        remember_estimate(training, sum(s for s, _ in seconds.values()), parallel_jobs(config, cores), root)
    return ([f"plan: {scale_choice}"] if scale_choice else []) + lines + ([checked] if checked else [])
