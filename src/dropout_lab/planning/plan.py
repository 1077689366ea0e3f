"""What a workflow run is about to do, printed before any work: runs, packs, device and the time it expects.

The time is an estimate from each model's training FLOPs per image and two measured
throughputs of this project's engine (below); it says which it used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from dropout_lab.planning import checks, grid, packs
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
    per_job = packs.runs_per_job(config)  # auto: all on a GPU, a cell per job on a CPU
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


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def plan_lines(config: Mapping[str, Any], templates: Mapping[str, Mapping[str, Any]], runs_per_experiment:
               Mapping[str, int], to_train: Mapping[str, int], packs: int, training_jobs: int, gpu: bool,
               cores: int) -> list[str]:
    """The plan: one line per experiment with runs and expected time, and a warning for a paper grid on a CPU.

    `templates`: one run's defining settings per experiment (all runs of an experiment share
    model, data and epochs)."""
    parallel = max(cores // int(config["threads_per_run"]), 1)
    device = "a GPU" if gpu else f"the CPU ({cores} cores, {parallel} training jobs at once)"
    lines = [f"plan: scale={config['scale']}, {sum(runs_per_experiment.values())} runs in {packs} "
             f"pack{'s' if packs != 1 else ''} "
             f"(runs_per_job={config['runs_per_job']}), {training_jobs} of them to train now, on {device}"]
    total = 0.0
    for experiment, runs in runs_per_experiment.items():
        settings = templates[experiment]
        train = to_train.get(experiment, 0)
        seconds = estimate_seconds(settings, train, gpu, parallel, training_jobs if train else 0)
        total += seconds
        size = architecture(settings["model.name"]).describe(_model(settings))
        low, high = settings.get("plan.epochs", (settings["train.epochs"],) * 2)
        epochs = f"{low:g} epochs" if low == high else f"{low:g}-{high:g} epochs (mean {settings['train.epochs']:.1f})"
        lines.append(f"plan: {experiment}: {runs} runs of {settings['model.name']} {size}, "
                     f"{epochs}; {train} to train now, about {_duration(seconds)} (estimate)")
    if not gpu and config["scale"] == "paper" and training_jobs:
        lines.append(f"plan: WARNING: the paper scale is meant for a GPU; on this CPU it would take about "
                     f"{_duration(total)}. Use --config scale=quick (minutes) or train on a GPU (README).")
    return lines

