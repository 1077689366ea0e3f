"""Expand the workflow's grids (config/config.yaml) into the runs that exist.

Each run is one (experiment, gate, dropout rates, seed); a run that several
sweeps need (say hidden 0.5 with no input dropout) exists once and is tagged
with every sweep it belongs to. The Snakemake rules ask this module for the
run list, each run's output path, the Hydra overrides that train it and the
defining settings its folder should hold; packs.py groups the runs into jobs
and checks.py checks the config first.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from omegaconf import OmegaConf

from dropout_lab.planning.checks import GridError, check_grid, check_override_keys, check_protocols
from dropout_lab.settings import experiments
from dropout_lab.settings.config import (
    COMPOSITION_ERRORS,
    CONFIG_DIR,
    ConfigError,
    compose_config,
    describe_composition_error,
    validate,
)
from dropout_lab.settings.composing import resolved_composition
from dropout_lab.settings.identity import defining_settings
from dropout_lab.settings.protocols import tuned_lrs, tuned_sweeps
from dropout_lab.settings.vocabulary import CONVENTIONS, INVERTED, MODEL_SLOTS, REFERENCE_GATE

# The settings of a run that Hydra composes together (its groups, and its gate's convention): runs that agree on
# them share one composition, on which each sets the rest of its own settings (expected_settings).
COMPOSED = ("dataset", "model", "gate", "gate.convention", "dropout")


def run_folder(experiment: str, gate: str, cell: str, seed: int | str) -> str:
    """A run's folder (its gate folder names the convention when it is not inverted); the rules' wildcards
    name the same four parts."""
    return f"results/runs/{experiment}/{gate}/{cell}/seed{seed}"


def _override(key: str, value: Any) -> str:
    """One Hydra override: a choice or a name as it is, a number as Python writes it (0.1, not 0.1000...)."""
    return f"{key}={value}" if isinstance(value, str) else f"{key}={value!r}"


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

    def hydra_settings(self) -> list[tuple[str, Any]]:
        """What this run sets in its Hydra config, as (dotted key, value) in the order of its overrides: the
        groups it chooses, its gate's convention where not inverted, its rates and seed, and its epochs, learning
        rate and width where the grid sets them. The overrides and the expected settings are both made from it."""
        own = (("train.epochs", self.epochs), ("train.lr", self.lr), ("model.width", self.width))
        pairs: list[tuple[str, Any]] = [("dataset", self.dataset), ("model", self.model)]
        pairs += [(key, value) for key, value in own if value is not None]
        pairs.append(("gate", self.gate))
        if self.convention != INVERTED:
            pairs.append(("gate.convention", self.convention))
        pairs.append(("dropout", "none"))
        pairs += [(f"dropout.{slot}", rate) for slot, rate in self.rates]
        pairs.append(("seed", self.seed))
        return pairs

    def workflow_overrides(self, settings: Mapping[str, Any]) -> list[str]:
        """What the workflow sets in every run (`settings`: run_settings): scale, device, the folder, checksums.

        Where the data lies (data_dir, mirrors) and the threads are not here: they cannot
        change a run's numbers, so the train rule passes them outside its parameters
        (a change to them retrains nothing).
        """
        args = [f"scale={settings['scale']}", f"device={settings['device']}", "progress=false", f"out={self.folder}"]
        checksums = (settings["data"].get("checksums") or {}).get(self.dataset)
        if checksums:
            args.append("dataset.checksums={" + ", ".join(f"{k}: {v}" for k, v in checksums.items()) + "}")
        return args

    def overrides(self, settings: Mapping[str, Any]) -> list[str]:
        """Hydra overrides for this run; `settings` holds scale, device and data checksums (run_settings)."""
        return [*(_override(key, value) for key, value in self.hydra_settings()), *self.workflow_overrides(settings)]


def run_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """What every run takes from the workflow config (the `settings` of Run.overrides)."""
    return {key: config[key] for key in ("scale", "device", "data")}


def drop_switched_off(config: dict[str, Any]) -> None:
    """A sweep or placement list set to null (in a --configfile) is left out of its grid: the way to run
    a grid without one of its parts, e.g. to build the paper from runs trained before it existed."""
    for grid in (config.get("grids") or {}).values():
        if isinstance(grid, dict):
            for key in [k for k, v in grid.items() if v is None and k not in ("dataset", "model")]:
                del grid[key]


def scale_settings(scale: str, config_dir: str = CONFIG_DIR) -> dict[str, Any]:
    """Each model's settings at a scale (config/scale/SCALE.yaml), {model: {epochs, lr, width...}}, read through
    Hydra as every run reads them (train.yaml's ${scale.${model.name}.X})."""
    return resolved_composition([f"scale={scale}"], config_dir)["scale"]


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


def fixed_retained_width(spec: Mapping[str, Any], rate: float, width: int) -> int:
    """Srivastava et al. (2014, Fig. 9b): hold p * n fixed, so the width n grows as the retain probability p falls.
    p * n is `retained_share` of the scale's `width` (0.25: 256 of 1024 units kept at the paper scale)."""
    return max(1, round(spec["retained_share"] * int(width) / (1.0 - rate)))


def budgets(spec: Mapping[str, Any], scale: str, own_epochs: int) -> list[int | None]:
    """The budget sweep's epoch counts at a scale; None for the scale's own epochs (the hidden sweep's runs)."""
    return [None if int(e) == int(own_epochs) else int(e) for e in spec["epochs"][scale]]


# Runs as the sweeps make them, each with its tag (which sweep) and, for a placement preset's run, the preset.
Tagged = Iterator[tuple[Run, str, str | None]]


def _sweep_runs(config: Mapping[str, Any], sweep: str, spec: Mapping[str, Any], model: str,
                own: Mapping[str, Any], make: Callable[..., Run]) -> Tagged:
    """The runs of one sweep; `own`: the model's settings at the scale. The tuned protocol adds, for each cell,
    a run per learning rate and seed (tagged tuned:<sweep>); at the scale's own rate that run is the fixed one."""
    conventions = CONVENTIONS if sweep == "conventions" else (INVERTED,)
    epochs = budgets(spec, config["scale"], own["epochs"]) if sweep == "budget_sweep" else [None]
    lrs = [None if lr == float(own["lr"]) else lr for lr in tuned_lrs(config)] if sweep in tuned_sweeps(config) else []
    for gate in spec.get("gates", [REFERENCE_GATE]):
        for rate in spec["rates"]:
            width = fixed_retained_width(spec, rate, own["width"]) if sweep == "width_sweep" else None
            rates = _rates(model, spec.get("fixed", {}), spec["vary"], rate)
            for seed in range(int(config["seeds"][config["scale"]])):
                for convention in conventions:
                    for budget in epochs:
                        yield make(gate, rates, seed, convention=convention, width=width, epochs=budget), sweep, None
                for lr in lrs:
                    yield make(gate, rates, seed, width=width, lr=lr), f"tuned:{sweep}", None


def _grid_runs(config: Mapping[str, Any], experiment: str, scale: Mapping[str, Any], config_dir: str) -> Tagged:
    """Every run of one experiment's grid: its sweeps in the registry's order, then its placement presets."""
    grid = config["grids"][experiment]
    check_grid(experiment, grid)
    model = grid["model"]
    make = partial(Run, experiment, grid["dataset"], model)
    for sweep in experiments.names():
        if grid.get(sweep) is not None:
            yield from _sweep_runs(config, sweep, grid[sweep], model, scale[model], make)
    for preset in grid.get("placement", []):
        rates = preset_rates(preset, model, config_dir)
        for seed in range(int(config["seeds"][config["scale"]])):
            yield make(REFERENCE_GATE, rates, seed), f"placement:{preset}", preset


def expand_runs(config: Mapping[str, Any], config_dir: str = CONFIG_DIR) -> list[Run]:
    """Every run of the chosen experiments at the chosen scale, each once (with all its sweeps), in a stable order."""
    check_protocols(config)
    scale = scale_settings(config["scale"], config_dir)
    sweeps: dict[Run, set[str]] = {}
    placements: dict[Run, str] = {}
    for experiment in config["experiments"]:
        if experiment not in config["grids"]:
            raise GridError(f"experiments lists {experiment!r}, which is not in grids (has {sorted(config['grids'])})")
        for run, tag, placement in _grid_runs(config, experiment, scale, config_dir):
            sweeps.setdefault(run, set()).add(tag)
            if placement:
                placements[run] = placement
    runs = [replace(run, sweeps=frozenset(tags), placement=placements.get(run)) for run, tags in sweeps.items()]
    by_folder: dict[str, Run] = {}
    for run in runs:
        other = by_folder.setdefault(run.folder, run)
        if other is not run:
            raise GridError(
                f"grids.{run.experiment}: rates {dict(other.rates)} and {dict(run.rates)} both map to the run "
                f"folder {run.folder}; make the rates differ in their first 6 significant digits")
    return runs


def check_train_overrides(config: Mapping[str, Any], runs: list[Run], config_dir: str = CONFIG_DIR) -> None:
    """Refuse an override of a setting the grid owns; compose and validate one run with `train_overrides` so a
    bad one fails before any job starts."""
    check_override_keys(config, runs)
    extra = list(config.get("train_overrides") or [])
    if not extra or not runs:
        return
    # device=cpu: the submitting machine may have no GPU; each job checks its own device.
    settings = {**run_settings(config), "device": "cpu"}
    try:
        validate(compose_config([*runs[0].overrides(settings), *extra], config_dir))
    except COMPOSITION_ERRORS as err:
        raise GridError(f"config: train_overrides: {describe_composition_error(err)}") from err
    except ConfigError as err:
        raise GridError(f"config: train_overrides: {err}") from err


def _set(tree: Mapping[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """A copy of a resolved config with one dotted setting changed (the parts it shares stay shared)."""
    head, _, rest = dotted.partition(".")
    return {**tree, head: _set(tree[head], rest, value) if rest else value}


def expected_settings(config: Mapping[str, Any], runs: Sequence[Run], config_dir: str = CONFIG_DIR) -> dict[str, dict]:
    """The defining settings (dropout_lab.settings.identity) each run folder should hold, composed from the Hydra
    files: Hydra composes once per group of runs that agree on their COMPOSED settings, and each run then sets
    its other settings (Run.hydra_settings) on that composition."""
    settings = {**run_settings(config), "device": "cpu"}
    extra = list(config.get("train_overrides") or [])
    composed: dict[tuple, dict] = {}
    out = {}
    for run in runs:
        pairs = run.hydra_settings()
        group = tuple((key, value) for key, value in pairs if key in COMPOSED)
        if group not in composed:
            overrides = [*(_override(key, value) for key, value in group), *run.workflow_overrides(settings), *extra]
            composed[group] = resolved_composition(overrides, config_dir)  # kept between invocations
        resolved = composed[group]
        for key, value in pairs:
            if key not in COMPOSED:
                resolved = _set(resolved, key, value)
        out[run.folder] = defining_settings(resolved)
    return out


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
