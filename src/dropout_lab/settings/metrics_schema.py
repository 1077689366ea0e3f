"""What a run's metrics.json must hold before its numbers are believed, and the one line that refuses it.

A file is refused (MetricsError, one line naming the file, the field and the fix) when it
is not a JSON object, lacks a field the tables read, holds a value of the wrong type or a
non-finite number where a finite one is required (settings, sizes, timings, rates), or
when its `rates`, `gate` or `seed` disagree with its folder
(results/runs/<experiment>/<gate>[-<convention>]/<cell>/seed<k>: planning.grid.Run.folder)
or with its recorded `config`.

Its results (`final`, `mc`, `unscaled_inference`, `weight_norms`, the history's numbers)
are numbers or explicit nulls: a NaN, an infinity or a null there is no broken file but a
failed run, which settings.health marks diverged ("non-finite final numbers") and the
tables count as failed.

Light on purpose (no torch, no pandas): the workflow's check_runs rule reads every run
through it before the aggregate job, so a refused file leaves the earlier tables in place.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Callable, Mapping

from dropout_lab.settings.architectures import ARCHITECTURES
from dropout_lab.settings.datasets import SPECS
from dropout_lab.settings.vocabulary import DIVERGED, INVERTED, OK, SLOTS

FIX = "retrain it (delete its folder) or restore the file"
FINITE_FIX = f"a finished run records finite numbers or null: {FIX}"
MOVED_FIX = "the file is not the run of its folder: put it back where it belongs, or delete the folder to retrain it"


class MetricsError(ValueError):
    """A metrics.json that cannot be believed; the message is one line naming the file, the field and the fix."""


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(value: Any) -> bool:
    return _number(value) and math.isfinite(value)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or check(value)


# A field's check and what it should hold, as the refusal says it.
Rule = tuple[Callable[[Any], bool], str]
TEXT: Rule = (lambda v: isinstance(v, str), "a string")
INTEGER: Rule = (_integer, "an integer")
FINITE: Rule = (_finite, "a finite number")
OBJECT: Rule = (lambda v: isinstance(v, dict), "an object")
OPTIONAL_OBJECT: Rule = (_optional(lambda v: isinstance(v, dict)), "an object or null")
RESULT: Rule = (_optional(_number), "a number or null")

# Every field the tables and the provenance read (dotted), required; then those they read where present.
REQUIRED: dict[str, Rule] = {
    "config": OBJECT, "config.dataset": OBJECT, "config.dataset.name": TEXT, "config.model": OBJECT,
    "config.model.name": TEXT, "config.gate": OBJECT, "config.gate.name": TEXT, "config.train": OBJECT,
    **{f"config.train.{key}": FINITE for key in ("lr", "momentum", "weight_decay")},
    "config.train.batch_size": INTEGER, "config.train.epochs": INTEGER, "config.train.schedule": TEXT,
    "config.scale": OBJECT, "config.scale.name": TEXT,
    "seed": INTEGER, "status": ((lambda v: v in (OK, DIVERGED)), f"{OK!r} or {DIVERGED!r}"),
    "rates": OBJECT, "history": ((lambda v: isinstance(v, list)), "a list of epochs"),
    "final": (OPTIONAL_OBJECT[0], "an object of final numbers (null for a diverged run)"),
    "train_samples": INTEGER, "test_samples": INTEGER, "wall_seconds": FINITE,
    "device": OBJECT, "device.type": TEXT, "device.name": TEXT, "versions": OBJECT, "versions.torch": TEXT,
    "git": OBJECT, "git.commit": (_optional(lambda v: isinstance(v, str)), "a string or null"),
    "git.dirty": (_optional(lambda v: isinstance(v, bool)), "true, false or null"), "data_sha256": OBJECT,
}
OPTIONAL: dict[str, Rule] = {
    "config.gate.convention": TEXT, "config.dropout": OBJECT, "config.seed": INTEGER,
    "diverged_epoch": (_optional(_integer), "an integer or null"),
    "diverged_reason": (_optional(lambda v: isinstance(v, str)), "a string or null"), "validation_samples": INTEGER,
    "mc": OPTIONAL_OBJECT, "mc.samples": INTEGER, "mc.curve": OPTIONAL_OBJECT,
    "unscaled_inference": OPTIONAL_OBJECT, "weight_norms": OPTIONAL_OBJECT, "engine": OPTIONAL_OBJECT,
    "pack_fingerprint": (_optional(lambda v: isinstance(v, str)), "a string or null"),
}
FINAL_REQUIRED = ("train_acc", "train_loss", "test_acc", "test_loss")  # a run that trained records these
_ABSENT = object()


def describe(value: Any) -> str:
    """A value as the refusal names it."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, str):
        return json.dumps(value if len(value) <= 40 else value[:37] + "...")
    if isinstance(value, list):
        text = json.dumps(value)
        return text if len(text) <= 40 else "a list"
    return json.dumps(value)


def _get(metrics: Mapping[str, Any], dotted: str) -> Any:
    node: Any = metrics
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return _ABSENT
        node = node[key]
    return node


def _refuse(where: str, field: str, value: Any, wanted: str) -> None:
    if value is _ABSENT:
        raise MetricsError(f"{where}: {field} is missing; a finished run records it as {wanted}: {FIX}")
    fix = FINITE_FIX if _number(value) and not math.isfinite(value) else FIX
    raise MetricsError(f"{where}: {field} is {describe(value)}, not {wanted}; {fix}")


def _check_fields(where: str, metrics: Mapping[str, Any]) -> None:
    for rules, required in ((REQUIRED, True), (OPTIONAL, False)):
        for field, (check, wanted) in rules.items():
            value = _get(metrics, field)
            if (value is _ABSENT and required) or (value is not _ABSENT and not check(value)):
                _refuse(where, field, value, wanted)
    model, dataset = metrics["config"]["model"], metrics["config"]["dataset"]["name"]
    if dataset not in SPECS:
        raise MetricsError(f"{where}: config.dataset.name is {describe(dataset)}, not a dataset of this project "
                           f"({', '.join(SPECS)}); {FIX}")
    if model["name"] not in ARCHITECTURES:
        raise MetricsError(f"{where}: config.model.name is {describe(model['name'])}, not a model of this project "
                           f"({', '.join(ARCHITECTURES)}); {FIX}")
    kind = ARCHITECTURES[model["name"]]
    for key in (*(group.count for group in kind.groups), kind.width_field):
        if key not in model:
            _refuse(where, f"config.model.{key}", _ABSENT, "the model's size")


def _check_results(where: str, metrics: Mapping[str, Any]) -> None:
    """Results are numbers or null (non-finite ones mark a failed run: settings.health); an ok run has `final`."""
    final = metrics["final"]
    if final is None and metrics["status"] == OK:
        raise MetricsError(f"{where}: final is null but status is {OK!r}; a finished run records its final numbers "
                           f"(null only if it diverged): {FIX}")
    for key in FINAL_REQUIRED if final is not None else ():
        if key not in final:
            _refuse(where, f"final.{key}", _ABSENT, RESULT[1])
    sections = {"final": final, "unscaled_inference": metrics.get("unscaled_inference"),
                "weight_norms": metrics.get("weight_norms"), "mc": metrics.get("mc"),
                "mc.curve": (metrics.get("mc") or {}).get("curve")}
    for name, section in sections.items():
        for key, value in (section or {}).items():
            if not (name == "mc" and key in ("curve", "samples")) and not RESULT[0](value):
                _refuse(where, f"{name}.{key}", value, RESULT[1])
    for i, epoch in enumerate(metrics["history"]):
        if not isinstance(epoch, dict) or not _integer(epoch.get("epoch")):
            raise MetricsError(f"{where}: history[{i}] is {describe(epoch)}, not an epoch's record with an integer "
                               f"epoch; {FIX}")
        for key, value in epoch.items():
            if not RESULT[0](value):
                _refuse(where, f"history[{i}].{key}", value, RESULT[1])


def _rate_values(where: str, slot: str, value: Any) -> list[float]:
    values = value if isinstance(value, list) else [value]
    if (slot == "input" and isinstance(value, list)) or not all(_finite(v) and 0.0 <= v < 1.0 for v in values):
        wanted = "a drop rate in [0, 1)" if slot == "input" else "a list of drop rates in [0, 1), one per layer"
        _refuse(where, f"rates.{slot}", value, wanted)
    return [float(v) for v in values]


def _check_rates(where: str, metrics: Mapping[str, Any]) -> dict[str, list[float]]:
    """Each slot's rates, checked against the rates the recorded config asked for."""
    recorded = metrics["rates"]
    if "input" not in recorded:
        _refuse(where, "rates.input", _ABSENT, "the input drop rate")
    asked = metrics["config"].get("dropout") or {}
    rates = {}
    for slot, value in recorded.items():
        if slot not in SLOTS:
            raise MetricsError(f"{where}: rates.{slot} is not a dropout slot of this project ({', '.join(SLOTS)}); "
                               f"{FIX}")
        rates[slot] = _rate_values(where, slot, value)
        want = asked.get(slot)
        if want is None or not rates[slot]:
            continue
        wants = want if isinstance(want, list) else [want] * len(rates[slot])
        if len(wants) != len(rates[slot]) or not all(_finite(w) and math.isclose(r, w, abs_tol=1e-12)
                                                      for r, w in zip(rates[slot], wants)):
            raise MetricsError(f"{where}: rates.{slot} is {describe(value)} but its config records dropout.{slot}="
                               f"{describe(want)}; the file contradicts itself: {FIX}")
    return rates


def _same(value: float, written: str) -> bool:
    """A number as a folder name writes it (`:g`, Run.cell) equals the folder's text."""
    try:
        return f"{value:g}" == f"{float(written):g}"
    except ValueError:
        return False


def _check_folder(where: str, metrics: Mapping[str, Any], rates: Mapping[str, list[float]]) -> None:
    """The seed, gate folder and cell of results/runs/<experiment>/<gate>[-<convention>]/<cell>/seed<k>."""
    parts = Path(where).parent.parts
    if len(parts) < 4 or not re.fullmatch(r"seed\d+", parts[-1]):
        return  # not in the runs' layout: nothing to compare
    gate_folder, cell, seed = parts[-3], parts[-2], int(parts[-1][len("seed"):])
    cfg = metrics["config"]
    for field, value in (("seed", metrics["seed"]), ("config.seed", cfg.get("seed", seed))):
        if value != seed:
            raise MetricsError(f"{where}: {field} is {describe(value)} but its folder is seed{seed}; {MOVED_FIX}")
    convention = cfg["gate"].get("convention", INVERTED)
    gate = cfg["gate"]["name"] if convention == INVERTED else f"{cfg['gate']['name']}-{convention}"
    if gate != gate_folder:
        raise MetricsError(f"{where}: config.gate is {describe(gate)} (name-convention) but its folder is "
                           f"{gate_folder}; {MOVED_FIX}")
    kind = ARCHITECTURES[cfg["model"]["name"]]
    settings = {"width": ("config.model." + kind.width_field, cfg["model"][kind.width_field]),
                "lr": ("config.train.lr", cfg["train"]["lr"]), "ep": ("config.train.epochs", cfg["train"]["epochs"])}
    for token in cell.split("_"):
        found = re.fullmatch(r"([a-z]+)(.+)", token)
        name, written = found.groups() if found else (token, "")
        if name in SLOTS:
            values = rates.get(name, [])
            if not values or not all(_same(v, written) for v in values):
                raise MetricsError(f"{where}: rates.{name} is {describe(metrics['rates'].get(name))} but its folder's "
                                   f"cell {cell} has {name} {written}; {MOVED_FIX}")
        elif name in settings:
            field, value = settings[name]
            if not (_number(value) and _same(value, written)):
                raise MetricsError(f"{where}: {field} is {describe(value)} but its folder's cell {cell} has "
                                   f"{name} {written}; {MOVED_FIX}")


def check_metrics(where: str, metrics: Any) -> None:
    """Refuse a run's record that cannot be believed (module docstring); `where`: its path, as the line names it."""
    if not isinstance(metrics, dict):
        raise MetricsError(f"{where}: holds {describe(metrics)}, not a run's record (a JSON object); {FIX}")
    _check_fields(where, metrics)
    _check_results(where, metrics)
    _check_folder(where, metrics, _check_rates(where, metrics))


def read_metrics(path: str | Path) -> dict[str, Any]:
    """A run's metrics.json, read and checked (check_metrics); MetricsError, one line, if it cannot be believed."""
    where = str(path)
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise MetricsError(f"{where}: the file is missing; retrain the run (delete its folder) or restore the file") \
            from None
    except (OSError, UnicodeDecodeError) as err:
        raise MetricsError(f"{where}: could not be read ({err}); {FIX}") from None
    try:
        metrics = json.loads(text)
    except json.JSONDecodeError as err:
        raise MetricsError(f"{where}: is not valid JSON ({err.msg} at line {err.lineno} column {err.colno}): a "
                           f"truncated or damaged file; {FIX}") from None
    check_metrics(where, metrics)
    return metrics
