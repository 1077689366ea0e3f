"""The checks of the workflow config (config/config.yaml) that run before anything trains.

Each raises GridError with one line that names the bad key or value and the fix. They read the config
and, where a check is about runs, the run list of dropout_lab.planning.grid (runs are read, never made here).
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from dropout_lab.settings import experiments
from dropout_lab.settings.claims import CLAIMS
from dropout_lab.settings.protocols import judged_protocol, protocols, tuned_lrs
from dropout_lab.settings.datasets import SPECS
from dropout_lab.settings.vocabulary import MODEL_SLOTS, MODELS, gate_names


class GridError(ValueError):
    """An invalid grid or claims setting; the message is one line naming it."""


def _where(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


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
        check_names(config)
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
    if error.validator == "type":
        wanted = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        kind = " or ".join(_KINDS.get(str(k), str(k)) for k in wanted)
        # Snakemake's --config reads a value inside a mapping as text: KEY={a: 0.5} gives a '0.5'.
        text = " (--config reads values inside a mapping as text: set it in a --configfile)" if isinstance(
            value, str) and not isinstance(_load(value), str) else ""
        raise GridError(f"config: {where}={value!r} is not {kind}{text}; give {_example(error.absolute_path)}")
    raise GridError(f"config: {where}={value!r}: {error.message}")


# A JSON-schema type as the one line says it.
_KINDS = {"object": "a mapping", "array": "a list", "integer": "an integer", "number": "a number",
          "string": "a string", "boolean": "true or false", "null": "null"}


def _load(text: str) -> Any:
    """`text` read as YAML; itself where it is not YAML."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _example(path) -> str:
    """The fix of a value of the wrong kind: the shipped config/config.yaml's value at that key, in flow YAML."""
    import yaml

    from dropout_lab.settings.config import CONFIG_DIR

    node: Any = yaml.safe_load((Path(CONFIG_DIR) / "config.yaml").read_text())
    for part in path:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return "a value of the kind config/config.yaml gives it"
    shipped = yaml.safe_dump(node, default_flow_style=True, width=1 << 16).strip().removesuffix("...").strip()
    return f"one like config/config.yaml's: {_where(path)}={shipped}"


def _known(where: str, value: Any, known: Sequence[str], fix: str) -> None:
    if value not in known:
        raise GridError(f"config: {where}={value!r} is unknown; choose one of {sorted(known)} ({fix})")


def check_names(config: Mapping[str, Any]) -> None:
    """Every name the config uses (datasets, models, gates) is one the project registers: the schema only checks
    their spelling, so that a new gate, dataset or model needs no schema edit."""
    check_grid_keys(config)
    data = config.get("data") or {}
    for block in ("mirrors", "checksums"):
        for dataset in data.get(block) or {}:
            _known(f"data.{block}.{dataset}", dataset, list(SPECS), "settings.datasets")
    for name, grid in (config.get("grids") or {}).items():
        _known(f"grids.{name}.dataset", grid["dataset"], list(SPECS), "settings.datasets")
        _known(f"grids.{name}.model", grid["model"], list(MODELS), "settings.vocabulary")
        slots = MODEL_SLOTS[grid["model"]]
        for sweep, spec in grid.items():
            if not isinstance(spec, Mapping):
                continue
            if "vary" in spec:
                _known(f"grids.{name}.{sweep}.vary", spec["vary"], slots, f"model={grid['model']}'s slots")
            for slot in spec.get("fixed") or {}:
                _known(f"grids.{name}.{sweep}.fixed.{slot}", slot, slots, f"model={grid['model']}'s slots")
            for i, gate in enumerate(spec.get("gates", [])):
                _known(f"grids.{name}.{sweep}.gates[{i}]", gate, gate_names(), "config/gate/")


GRID_KEYS = ("dataset", "model", "placement")  # what a grid holds besides its sweeps (settings.experiments)


def check_grid_keys(config: Mapping[str, Any]) -> None:
    """Every key of a grid is a registered sweep (settings.experiments) or one of GRID_KEYS: the schema admits any
    name ending in _sweep, so that a new sweep needs no schema edit, and a misspelt one would run nothing. Run
    before a sweep set to null is dropped (planning.grid.drop_switched_off), so a misspelt null is caught too."""
    grids = config.get("grids")
    for name, grid in (grids.items() if isinstance(grids, Mapping) else ()):
        for key in (grid if isinstance(grid, Mapping) else ()):
            if key in GRID_KEYS or key in experiments.names():
                continue
            near = difflib.get_close_matches(str(key), [*experiments.names(), *GRID_KEYS], n=1)
            hint = f"did you mean {near[0]}? " if near else ""
            raise GridError(f"config: grids.{name}.{key} is not a setting; {hint}a grid holds {', '.join(GRID_KEYS)} "
                            f"and the sweeps {', '.join(experiments.names())} (dropout_lab.settings.experiments)")


def check_data_dir(config: Mapping[str, Any]) -> None:
    """data.dir is a folder, or a path one can make a folder at: not a file, nor inside one."""
    folder = Path(str(config["data"]["dir"])).expanduser()
    for path in (folder, *folder.parents):
        if path.exists():
            if not path.is_dir():
                what = "is a file" if path == folder else f"is inside {path}, which is a file"
                raise GridError(f"config: data.dir={str(folder)!r} {what}, not a folder; set data.dir to the folder "
                                "that holds (or will hold) the data, e.g. --config data={dir: data}")
            return


def _check_sweep(name: str, model: str, sweep: str, spec: Mapping[str, Any]) -> None:
    for slot in [spec["vary"], *spec.get("fixed", {})]:
        if slot not in MODEL_SLOTS[model]:
            raise GridError(
                f"grids.{name}.{sweep} uses slot {slot!r}; model={model} has slots {list(MODEL_SLOTS[model])}")
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


def check_grid(name: str, grid: Mapping[str, Any]) -> None:
    """One experiment's grid (grids.NAME): its sweeps fit its model, and its gate lists make sense."""
    for sweep in experiments.names():
        if grid.get(sweep) is not None:
            _check_sweep(name, grid["model"], sweep, grid[sweep])
    if "conventions" in grid and "none" in grid["conventions"].get("gates", []):
        raise GridError(f"grids.{name}.conventions.gates cannot include 'none'; it has no convention")
    parity_gates = grid.get("gate_parity", {}).get("gates", [])
    if "gate_parity" in grid and (len(parity_gates) < 2 or len(set(parity_gates)) != len(parity_gates)):
        raise GridError(f"grids.{name}.gate_parity.gates must name the reference gate and at least one other, each "
                        "once, e.g. [bernoulli, gaussian]")


def check_protocols(config: Mapping[str, Any]) -> None:
    """One line for a protocol setting that cannot work, before anything runs."""
    run, judge = protocols(config), judged_protocol(config)
    if judge not in run:
        raise GridError(f"protocols.judge={judge!r} is not among protocols.run={list(run)}; judge under a protocol "
                        "that runs")
    if "tuned" not in run:
        return
    lrs = tuned_lrs(config)
    if len(lrs) < 2 or len(set(lrs)) != len(lrs):
        raise GridError(f"protocols.tuned.lrs.{config['scale']}={lrs} must list at least two different learning "
                        "rates, e.g. [0.015, 0.05, 0.15, 0.5]")
    if int(config["seeds"][config["scale"]]) < 2:
        raise GridError(f"seeds.{config['scale']}={config['seeds'][config['scale']]}: the tuned protocol chooses on "
                        "the mean over at least two seeds; give seeds >= 2")
    for sweep in config["protocols"]["tuned"]["sweeps"]:
        if sweep not in experiments.BY_NAME or sweep in ("budget_sweep", "conventions"):
            allowed = [s for s in experiments.names() if s not in ("budget_sweep", "conventions")]
            raise GridError(f"protocols.tuned.sweeps names {sweep!r}; choose from {allowed}")


def check_claims(config: Mapping[str, Any]) -> None:
    """Each claims block belongs to a registered claim (settings.claims) and names a grid; a claim whose grid or
    sweep does not run is reported as not run."""
    known = sorted({claim.settings for claim in CLAIMS})
    for claim, settings in config["claims"].items():
        if not isinstance(settings, Mapping):
            continue
        if claim not in known:
            raise GridError(f"claims.{claim} is the settings of no registered claim; the claims are {known} "
                            "(register a claim in dropout_lab.settings.claims, or fix the name)")
        experiment = settings["experiment"]
        if experiment not in config["grids"]:
            raise GridError(f"claims.{claim}.experiment={experiment!r} is not in grids (has {sorted(config['grids'])})")
    for claim in ("optimum", "width_optimum"):
        low, high = config["claims"].get(claim, {}).get("published_band", (0, 0))
        if low > high:
            raise GridError(f"claims.{claim}.published_band=[{low:g}, {high:g}] runs backwards; give [low, high], "
                            "e.g. [0.2, 0.6]")
    check_claimed_rates(config)


# Settings of a claim that name one rate of the sweep the claim reads (settings.claims: Claim.reads).
CLAIMED_RATES = ("claimed_rate", "threshold")


def check_claimed_rates(config: Mapping[str, Any]) -> None:
    """A claim's claimed rate (or threshold) is a rate of the sweep it reads, where that sweep runs: a rate the grid
    does not hold would be judged on no runs."""
    for block, settings in config["claims"].items():
        reads = [claim.reads for claim in CLAIMS if claim.settings == block and claim.reads in experiments.names()]
        if not isinstance(settings, Mapping) or not reads or settings.get("experiment") not in config["experiments"]:
            continue
        spec = config["grids"].get(settings["experiment"], {}).get(reads[0])
        for key in CLAIMED_RATES:
            value = settings.get(key)
            if spec is None or value is None or any(math.isclose(value, r, abs_tol=1e-9) for r in spec["rates"]):
                continue
            where = f"grids.{settings['experiment']}.{reads[0]}.rates"
            raise GridError(f"config: claims.{block}.{key}={value:g} is not a rate of {where}={spec['rates']}; "
                            f"choose one of those rates, or add {value:g} to {where}")


# Settings the grid owns: a train override of one of them would be overridden by each run's own value.
GRID_OWNED = {"seed": "seeds:", "gate": "the grid's gates", "dropout": "the grid's rates",
              "scale": "scale:", "out": "the workflow (each run's folder)", "dataset": "the grid's dataset",
              "model": "the grid's model", "data_dir": "data.dir", "device": "device:", "threads": "threads_per_run:"}


def check_override_keys(config: Mapping[str, Any], runs: Sequence[Any]) -> None:
    """Refuse a train override of a setting the grid owns, or of one that some of these runs set per run."""
    set_per_run = {"train.lr": ("the tuned protocol", any(r.lr is not None for r in runs)),
                   "train.epochs": ("the budget sweep", any(r.epochs is not None for r in runs))}
    for override in config.get("train_overrides") or []:
        key = str(override).lstrip("+~").split("=", 1)[0].strip()
        owner, owned = set_per_run.get(key, ("", False))
        if owned:
            raise GridError(f"train_overrides: {override!r} sets {key}, which {owner} sets per run; change it in "
                            "config/scale/ or leave that part out (protocols.run, or the sweep set to null)")
        root = key.split(".", 1)[0].split("@", 1)[0]
        if root in GRID_OWNED and not key.startswith(("dataset.", "model.")):  # model.max_norm...: the runs' to set
            raise GridError(f"train_overrides: {override!r} sets {key}, which the workflow owns; set it through "
                            f"{GRID_OWNED[root]} in config/config.yaml")


def check_validation_split(runs: Sequence[Any], expected: Mapping[str, Mapping[str, Any]]) -> None:
    """The tuned protocol chooses on the validation split: refuse, before anything trains, tuned runs that would
    hold none (dataset.validation=0, e.g. in train_overrides)."""
    for run in runs:
        if any(tag.startswith("tuned:") for tag in run.sweeps) and not expected[run.folder].get("dataset.validation"):
            raise GridError(f"{run.folder}: the tuned protocol chooses its learning rate on the validation split, "
                            "but dataset.validation=0 holds none; hold some out (config/scale/) or set "
                            "protocols: {run: [fixed], judge: fixed}")
