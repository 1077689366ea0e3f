"""Expand the workflow's grids (config/config.yaml) into the runs that exist.

Each run is one (experiment, gate, dropout rates, seed); a run that several
sweeps need (say hidden 0.5 with no input dropout) exists once and is tagged
with every sweep it belongs to. The Snakemake rules ask this module for the
run list, each run's output path and the Hydra overrides that train it.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from omegaconf import OmegaConf

from dropout_lab.settings import experiments
from dropout_lab.settings.config import CONFIG_DIR, PER_RUN
from dropout_lab.settings.protocols import judged_protocol, protocols, tuned_lrs, tuned_sweeps
from dropout_lab.settings.vocabulary import CONVENTIONS, INVERTED, MODEL_SLOTS, REFERENCE_GATE


class GridError(ValueError):
    """An invalid grid or claims setting; the message is one line naming it."""


def run_folder(experiment: str, gate: str, cell: str, seed: int | str) -> str:
    """A run's folder (its gate folder names the convention when it is not inverted); the rules' wildcards
    name the same four parts."""
    return f"results/runs/{experiment}/{gate}/{cell}/seed{seed}"


@dataclass(frozen=True)
class Run:
    experiment: str
    dataset: str
    model: str
    gate: str
    rates: tuple[tuple[str, float], ...]  # (slot, rate) in the model's slot order
    seed: int
    convention: str = INVERTED
    sweeps: frozenset[str] = field(default=frozenset(), compare=False)
    placement: str | None = field(default=None, compare=False)
    width: int | None = None  # the hidden layers' width where the grid sets it (width sweep), else the scale's
    lr: float | None = None  # the learning rate where the tuned protocol sets it, else the scale's
    epochs: int | None = None  # the epochs where the budget sweep sets them, else the scale's

    def _cell(self, lr: float | None) -> str:
        parts = [f"{slot}{rate:g}" for slot, rate in self.rates]
        parts += [f"{name}{value:g}" for name, value in (("width", self.width), ("lr", lr), ("ep", self.epochs))
                  if value is not None]
        return "_".join(parts)

    @property
    def cell(self) -> str:
        return self._cell(self.lr)

    @property
    def design_cell(self) -> str:
        """The cell without its learning rate: the tuned protocol chooses one learning rate per design cell."""
        return self._cell(None)

    @property
    def folder(self) -> str:
        gate = self.gate if self.convention == INVERTED else f"{self.gate}-{self.convention}"
        return run_folder(self.experiment, gate, self.cell, self.seed)

    def overrides(self, settings: Mapping[str, Any]) -> list[str]:
        """Hydra overrides for this run; `settings` holds scale, device and data checksums.

        Where the data lies (data_dir, mirrors) and the threads are not here: they cannot
        change a run's numbers, so the train rule passes them outside its parameters
        (a change to them retrains nothing).
        """
        checksums = (settings["data"].get("checksums") or {}).get(self.dataset)
        args = [
            f"dataset={self.dataset}", f"model={self.model}", f"gate={self.gate}", "dropout=none",
            *(f"dropout.{slot}={rate!r}" for slot, rate in self.rates),
            f"seed={self.seed}", f"scale={settings['scale']}", f"device={settings['device']}",
            "progress=false", f"out={self.folder}",
        ]
        if self.convention != INVERTED:
            args.insert(3, f"gate.convention={self.convention}")
        if self.width is not None:
            args.insert(2, f"model.width={self.width}")
        if self.lr is not None:
            args.insert(2, f"train.lr={self.lr!r}")
        if self.epochs is not None:
            args.insert(2, f"train.epochs={self.epochs}")
        if checksums:
            args.append("dataset.checksums={" + ", ".join(f"{k}: {v}" for k, v in checksums.items()) + "}")
        return args

    def command_line(self, settings: Mapping[str, Any]) -> str:
        return " ".join(shlex.quote(arg) for arg in self.overrides(settings))


def _where(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def drop_switched_off(config: dict[str, Any]) -> None:
    """A sweep or placement list set to null (in a --configfile) is left out of its grid: the way to run
    a grid without one of its parts, e.g. to build the paper from runs trained before it existed."""
    for grid in (config.get("grids") or {}).values():
        if isinstance(grid, dict):
            for key in [k for k, v in grid.items() if v is None and k not in ("dataset", "model")]:
                del grid[key]


def check_schema(config: Mapping[str, Any], schema_file: str | Path) -> None:
    """Validate the workflow config against its JSON schema; raise GridError with one line naming the key."""
    import jsonschema
    import yaml

    schema = yaml.safe_load(Path(schema_file).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = list(validator.iter_errors(config))
    for error in errors:  # a choice between kinds of value: name the choices, not one branch's complaint
        if error.validator == "anyOf" and "description" in error.schema:
            where = _where(error.absolute_path)
            raise GridError(f"config: {where}={error.instance!r} is not allowed; give {error.schema['description']}")
    error = jsonschema.exceptions.best_match(errors)
    if error is None:
        return
    where = _where(error.absolute_path)
    value = error.instance
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(value) - set(allowed)) if isinstance(value, dict) else []
        key = f"{where}.{extra[0]}" if where and extra else (extra[0] if extra else where)
        raise GridError(f"config: {key} is not a setting; {where or 'the top level'} has: {', '.join(allowed)}")
    if error.validator == "enum":
        raise GridError(f"config: {where}={value!r} is not allowed; choose one of {error.validator_value}")
    if error.validator == "required":
        raise GridError(f"config: {where or 'the top level'} lacks a required key: {error.message}")
    if error.validator in ("minItems", "minProperties") and not value:
        raise GridError(f"config: {where} is empty; give at least {error.validator_value}")
    raise GridError(f"config: {where}={value!r}: {error.message}")


def preset_rates(preset: str, model: str, config_dir: str = CONFIG_DIR) -> tuple[tuple[str, float], ...]:
    """The rates a config/dropout/ preset gives the model's slots; reject a preset that does not fit."""
    path = Path(config_dir) / "dropout" / f"{preset}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise GridError(f"placement preset {preset!r} does not exist; choose from {known} (config/dropout/)")
    values = OmegaConf.to_container(OmegaConf.load(path))
    unused = [slot for slot, rate in values.items() if rate and slot not in MODEL_SLOTS[model]]
    if unused:
        raise GridError(f"placement preset {preset!r} sets dropout.{unused[0]}, which model={model} does not have")
    return tuple((slot, float(values.get(slot, 0.0))) for slot in MODEL_SLOTS[model])


def _rates(model: str, fixed: Mapping[str, float], vary: str, rate: float) -> tuple[tuple[str, float], ...]:
    values = {slot: 0.0 for slot in MODEL_SLOTS[model]}
    values.update({k: float(v) for k, v in fixed.items()})
    values[vary] = float(rate)
    return tuple((slot, values[slot]) for slot in MODEL_SLOTS[model])


def _check_grid(name: str, grid: Mapping[str, Any]) -> None:
    model = grid["model"]
    for sweep in experiments.names():
        spec = grid.get(sweep)
        if spec is None:
            continue
        slots = [spec["vary"], *spec.get("fixed", {})]
        for slot in slots:
            if slot not in MODEL_SLOTS[model]:
                raise GridError(
                    f"grids.{name}.{sweep} uses slot {slot!r}; model={model} has slots {list(MODEL_SLOTS[model])}"
                )
        rates = spec["rates"]
        if len(set(rates)) != len(rates):
            raise GridError(f"grids.{name}.{sweep}.rates repeats a rate: {rates}")
        if (sweep == "width_sweep") != ("retained_share" in spec):
            raise GridError(f"grids.{name}.{sweep}: retained_share (p * n as a share of the scale's width) belongs to "
                            "width_sweep, which needs it")
        if (sweep == "budget_sweep") != ("epochs" in spec):
            raise GridError(f"grids.{name}.{sweep}: epochs (the budgets, per scale) belong to budget_sweep, which "
                            "needs them")
        if sweep == "width_sweep" and (model != "mlp" or spec["vary"] != "hidden"):
            raise GridError(f"grids.{name}.width_sweep widens the MLP's hidden layers: it needs model=mlp and "
                            "vary: hidden")
        for value in [*rates, *spec.get("fixed", {}).values()]:
            if not 0.0 <= value < 1.0:
                raise GridError(f"grids.{name}.{sweep} has rate {value}, outside [0, 1)")
    if "conventions" in grid and "none" in grid["conventions"].get("gates", []):
        raise GridError(f"grids.{name}.conventions.gates cannot include 'none'; it has no convention")
    parity_gates = grid.get("gate_parity", {}).get("gates", [])
    if "gate_parity" in grid and (len(parity_gates) < 2 or len(set(parity_gates)) != len(parity_gates)):
        raise GridError(f"grids.{name}.gate_parity.gates must name the reference gate and at least one other, each "
                        "once, e.g. [bernoulli, gaussian]")


def scale_value(scale: str, model: str, key: str, config_dir: str = CONFIG_DIR) -> Any:
    """One model's setting at a scale (config/scale/SCALE.yaml), e.g. its epochs or learning rate."""
    return OmegaConf.load(Path(config_dir) / "scale" / f"{scale}.yaml")[model][key]


def scale_width(scale: str, config_dir: str = CONFIG_DIR) -> int:
    """The MLP's hidden width at a scale (config/scale/SCALE.yaml)."""
    return int(scale_value(scale, "mlp", "width", config_dir))


def check_protocols(config: Mapping[str, Any]) -> None:
    """One line for a protocol setting that cannot work, before anything runs."""
    run, judge = protocols(config), judged_protocol(config)
    if judge not in run:
        raise GridError(f"protocols.judge={judge!r} is not among protocols.run={list(run)}; judge under a protocol "
                        "that runs")
    if "tuned" not in run:
        return
    tuned = config["protocols"]["tuned"]
    lrs = tuned_lrs(config)
    if len(lrs) < 2 or len(set(lrs)) != len(lrs):
        raise GridError(f"protocols.tuned.lrs.{config['scale']}={lrs} must list at least two different learning "
                        "rates, e.g. [0.015, 0.05, 0.15, 0.5]")
    if int(config["seeds"][config["scale"]]) < 2:
        raise GridError(f"seeds.{config['scale']}={config['seeds'][config['scale']]}: the tuned protocol chooses on "
                        "the mean over at least two seeds; give seeds >= 2")
    for sweep in tuned["sweeps"]:
        if sweep not in experiments.BY_NAME or sweep in ("budget_sweep", "conventions"):
            allowed = [s for s in experiments.names() if s not in ("budget_sweep", "conventions")]
            raise GridError(f"protocols.tuned.sweeps names {sweep!r}; choose from {allowed}")


def fixed_retained_width(spec: Mapping[str, Any], rate: float, scale: str, config_dir: str = CONFIG_DIR) -> int:
    """Srivastava et al. (2014, Fig. 9b): hold p * n fixed, so the width n grows as the retain probability p falls.
    p * n is `retained_share` of the scale's width (0.25: 256 of 1024 units kept at the paper scale)."""
    kept = spec["retained_share"] * scale_width(scale, config_dir)
    return max(1, round(kept / (1.0 - rate)))


def budgets(spec: Mapping[str, Any], scale: str, model: str, config_dir: str = CONFIG_DIR) -> list[int | None]:
    """The budget sweep's epoch counts at a scale; None for the scale's own epochs (the hidden sweep's runs)."""
    own = int(scale_value(scale, model, "epochs", config_dir))
    return [None if int(e) == own else int(e) for e in spec["epochs"][scale]]


def expand_runs(config: Mapping[str, Any], config_dir: str = CONFIG_DIR) -> list[Run]:
    """Every run of the chosen experiments at the chosen scale, each once, in a stable order.

    The tuned protocol adds, for each cell of its sweeps, a run per learning rate and seed (tagged
    tuned:<sweep>); at the scale's own learning rate that run is the fixed protocol's.
    """
    scale = config["scale"]
    seeds = range(int(config["seeds"][scale]))
    check_protocols(config)
    found: dict[Run, set[str]] = {}
    placements: dict[Run, str] = {}
    for experiment in config["experiments"]:
        if experiment not in config["grids"]:
            raise GridError(f"experiments lists {experiment!r}, which is not in grids (has {sorted(config['grids'])})")
        grid = config["grids"][experiment]
        _check_grid(experiment, grid)
        model = grid["model"]

        def add(gate: str, rates, seed: int, tag: str, placement: str | None = None,
                convention: str = INVERTED, width: int | None = None, lr: float | None = None,
                epochs: int | None = None) -> None:
            run = Run(experiment, grid["dataset"], model, gate, rates, seed, convention, width=width, lr=lr,
                      epochs=epochs)
            found.setdefault(run, set()).add(tag)
            if placement:
                placements[run] = placement

        for sweep in experiments.names():
            spec = grid.get(sweep)
            if spec is None:
                continue
            conventions = CONVENTIONS if sweep == "conventions" else (INVERTED,)
            epochs = budgets(spec, scale, model, config_dir) if sweep == "budget_sweep" else [None]
            scale_lr = float(scale_value(scale, model, "lr", config_dir))
            # The tuned protocol's learning rates for this sweep's cells; None: the scale's, the fixed run's.
            lrs = [None if lr == scale_lr else lr for lr in tuned_lrs(config)] \
                if sweep in tuned_sweeps(config) else []
            for gate in spec.get("gates", [REFERENCE_GATE]):
                for rate in spec["rates"]:
                    width = fixed_retained_width(spec, rate, scale, config_dir) if sweep == "width_sweep" else None
                    rates = _rates(model, spec.get("fixed", {}), spec["vary"], rate)
                    for seed in seeds:
                        for convention in conventions:
                            for budget in epochs:
                                add(gate, rates, seed, sweep, convention=convention, width=width, epochs=budget)
                        for lr in lrs:
                            add(gate, rates, seed, f"tuned:{sweep}", width=width, lr=lr)
        for preset in grid.get("placement", []):
            rates = preset_rates(preset, model, config_dir)
            for seed in seeds:
                add(REFERENCE_GATE, rates, seed, f"placement:{preset}", preset)
    runs = [
        Run(r.experiment, r.dataset, r.model, r.gate, r.rates, r.seed, r.convention, frozenset(tags),
            placements.get(r), r.width, r.lr, r.epochs)
        for r, tags in found.items()
    ]
    by_folder: dict[str, Run] = {}
    for run in runs:
        other = by_folder.setdefault(run.folder, run)
        if other is not run:
            raise GridError(
                f"grids.{run.experiment}: rates {dict(other.rates)} and {dict(run.rates)} both map to the run "
                f"folder {run.folder}; make the rates differ in their first 6 significant digits")
    return runs


@dataclass(frozen=True)
class Pack:
    """Runs trained together by one job (dropout_lab.training.pack); `name` is its folder under results/packs/."""

    name: str
    runs: tuple[Run, ...]

    def arguments(self, settings: Mapping[str, Any], extra: list[str]) -> str:
        """The pack command's arguments: shared overrides, then one --run per run."""
        per_run = tuple(f"{key}{sep}" for key in PER_RUN for sep in "=.")  # a run's own overrides
        shared = [a for a in self.runs[0].overrides(settings) if not a.startswith(per_run)]
        args = [*shared, *extra]
        for run in self.runs:
            own = [a for a in run.overrides(settings) if a.startswith(per_run)]
            args += ["--run", " ".join(own)]
        return " ".join(shlex.quote(arg) for arg in args)


def gpu_visible(device: str) -> bool:
    """Whether the runs will train on a GPU: device=cuda[:N], or auto on a machine that shows an
    NVIDIA GPU (found without importing torch, so that planning stays light)."""
    if device == "cpu":
        return False
    if device.startswith("cuda"):
        return True
    if os.environ.get("CUDA_VISIBLE_DEVICES", "unset").strip() in ("", "-1"):
        return False
    gpus = Path("/proc/driver/nvidia/gpus")
    if (gpus.is_dir() and any(gpus.iterdir())) or any(Path("/dev").glob("nvidia[0-9]*")):
        return True
    if shutil.which("nvidia-smi"):
        try:
            listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return False
        return "GPU" in listed
    return False


def runs_per_job(config: Mapping[str, Any]) -> int | str:
    """The configured runs_per_job; auto is all on a GPU (many small nets keep it busy) and cell on a CPU
    (the seeds of a cell in one job, so that a job's start-up is paid once per cell; cells side by side
    on the cores)."""
    value = config["runs_per_job"]
    if value == "auto":
        return "all" if gpu_visible(config["device"]) else "cell"
    return value


def make_packs(runs: list[Run], runs_per_job: int | str) -> list[Pack]:
    """Split the runs into jobs: 1 (a job per run), cell (the seeds of a grid cell, for one
    gate), N (up to N runs of an experiment) or all (every run of an experiment)."""
    def gate_folder(run: Run) -> str:
        return run.folder.split("/")[3]

    groups: dict[str, list[Run]] = {}
    for run in runs:
        if runs_per_job == 1:
            key = f"{run.experiment}/{gate_folder(run)}/{run.cell}/seed{run.seed}"
        elif runs_per_job == "cell":
            key = f"{run.experiment}/{gate_folder(run)}/{run.cell}"
        else:  # the runs of a pack share their architecture and schedule: a pack per width, rate and budget
            key = run.experiment
            for part, value in (("width", run.width), ("lr", run.lr), ("ep", run.epochs)):
                key += "" if value is None else f"/{part}{value:g}"
        groups.setdefault(key, []).append(run)
    packs = []
    for key, members in groups.items():
        members.sort(key=lambda r: (gate_folder(r), r.cell, r.seed))
        if runs_per_job in (1, "cell"):
            packs.append(Pack(key, tuple(members)))
        elif runs_per_job == "all":
            packs.append(Pack(f"{key}/all", tuple(members)))
        else:
            size = int(runs_per_job)
            parts = -(-len(members) // size)
            packs += [Pack(f"{key}/part{i + 1}of{parts}", tuple(members[i * size:(i + 1) * size]))
                      for i in range(parts)]
    return packs


def run_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """What every run takes from the workflow config (the `settings` of Run.overrides)."""
    return {key: config[key] for key in ("scale", "device", "data")}


# Settings the grid owns: a train override of one of them would be overridden by each run's own value.
GRID_OWNED = {"seed": "seeds:", "gate": "the grid's gates", "dropout": "the grid's rates",
              "scale": "scale:", "out": "the workflow (each run's folder)", "dataset": "the grid's dataset",
              "model": "the grid's model", "data_dir": "data.dir", "device": "device:", "threads": "threads_per_run:"}


def check_train_overrides(config: Mapping[str, Any], runs: list[Run], config_dir: str = CONFIG_DIR) -> None:
    """Refuse an override of a setting the grid owns; compose and validate one run with `train_overrides` so a
    bad one fails before any job starts."""
    extra = list(config.get("train_overrides") or [])
    set_per_run = {"train.lr": ("the tuned protocol", any(r.lr is not None for r in runs)),
                   "train.epochs": ("the budget sweep", any(r.epochs is not None for r in runs))}
    for override in extra:
        key = str(override).lstrip("+~").split("=", 1)[0].strip()
        owner, owned = set_per_run.get(key, ("", False))
        if owned:
            raise GridError(f"train_overrides: {override!r} sets {key}, which {owner} sets per run; change it in "
                            "config/scale/ or leave that part out (protocols.run, or the sweep set to null)")
        root = key.split(".", 1)[0].split("@", 1)[0]
        if root in GRID_OWNED and not key.startswith(("dataset.", "model.")):
            raise GridError(f"train_overrides: {override!r} sets {key}, which the workflow owns; set it through "
                            f"{GRID_OWNED[root]} in config/config.yaml")
        if key in ("dataset", "model"):
            raise GridError(f"train_overrides: {override!r} sets {key}, which the workflow owns; set it through "
                            f"{GRID_OWNED[key]} in config/config.yaml")
    if not extra or not runs:
        return
    from dropout_lab.settings.config import (
        COMPOSITION_ERRORS,
        ConfigError,
        compose_config,
        describe_composition_error,
        validate,
    )

    # device=cpu: the submitting machine may have no GPU; each job checks its own device.
    settings = {**run_settings(config), "device": "cpu"}
    try:
        validate(compose_config([*runs[0].overrides(settings), *extra], config_dir))
    except COMPOSITION_ERRORS as err:
        raise GridError(f"config: train_overrides: {describe_composition_error(err)}") from err
    except ConfigError as err:
        raise GridError(f"config: train_overrides: {err}") from err


def check_claims(config: Mapping[str, Any]) -> None:
    """Each claim must name a grid; a claim whose grid or sweep does not run is reported as not run."""
    for claim, settings in config["claims"].items():
        if not isinstance(settings, Mapping):
            continue
        experiment = settings["experiment"]
        if experiment not in config["grids"]:
            raise GridError(f"claims.{claim}.experiment={experiment!r} is not in grids (has {sorted(config['grids'])})")
    for claim in ("optimum", "width_optimum"):
        low, high = config["claims"].get(claim, {}).get("published_band", (0, 0))
        if low > high:
            raise GridError(f"claims.{claim}.published_band=[{low:g}, {high:g}] runs backwards; give [low, high], "
                            "e.g. [0.2, 0.6]")


def check_validation_split(runs: list[Run], expected: Mapping[str, Mapping[str, Any]]) -> None:
    """The tuned protocol chooses on the validation split: refuse, before anything trains, tuned runs that would
    hold none (dataset.validation=0, e.g. in train_overrides)."""
    for run in runs:
        if any(tag.startswith("tuned:") for tag in run.sweeps) and not expected[run.folder].get("dataset.validation"):
            raise GridError(f"{run.folder}: the tuned protocol chooses its learning rate on the validation split, "
                            "but dataset.validation=0 holds none; hold some out (config/scale/) or set "
                            "protocols: {run: [fixed], judge: fixed}")


def run_table(runs: list[Run]) -> list[dict[str, Any]]:
    """One JSON-able record per run: its coordinates and sweep membership (for aggregation)."""
    return [
        {
            "path": f"{r.folder}/metrics.json",
            "experiment": r.experiment,
            "gate": r.gate,
            "cell": r.cell,
            "seed": r.seed,
            "sweeps": sorted(r.sweeps),
            "placement": r.placement,
            "convention": r.convention,
            "design_cell": r.design_cell,
        }
        for r in runs
    ]


def figure_stems(config: Mapping[str, Any]) -> list[str]:
    """The figures the chosen experiments produce (the workflow's outputs), in drawing order."""
    return [stem for name in config["experiments"]
            for stem, _ in experiments.figures(name, config["grids"][name], tuned_sweeps(config))]


def expected_settings(config: Mapping[str, Any], runs: list[Run], config_dir: str = CONFIG_DIR) -> dict[str, dict]:
    """The defining settings (dropout_lab.settings.identity) each run folder should hold, composed from the Hydra files.

    Hydra composes once per (dataset, model, gate, convention); each run then sets its own
    seed and rates, the only settings that differ within such a group.
    """
    from dropout_lab.settings.config import compose_config
    from dropout_lab.settings.identity import defining_settings

    settings = {**run_settings(config), "device": "cpu"}
    extra = list(config.get("train_overrides") or [])
    templates: dict[tuple, dict] = {}
    out = {}
    for run in runs:
        key = (run.dataset, run.model, run.gate, run.convention)
        if key not in templates:
            resolved = OmegaConf.to_container(compose_config([*run.overrides(settings), *extra], config_dir),
                                              resolve=True)
            templates[key] = resolved
        resolved = {**templates[key], "seed": run.seed,
                    "dropout": {**{slot: 0.0 for slot in templates[key]["dropout"]}, **dict(run.rates)}}
        if run.width is not None:
            resolved["model"] = {**resolved["model"], "width": run.width}
        for key, value in (("lr", run.lr), ("epochs", run.epochs)):
            if value is not None:
                resolved["train"] = {**resolved["train"], key: value}
        out[run.folder] = defining_settings(resolved)
    return out
