"""Gather every run's metrics.json into tidy tables: one row per run, one per run-epoch."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd
import pyarrow

from dropout_lab.settings import experiments
from dropout_lab.settings.atomic import WriteError, atomic_path, write_json
from dropout_lab.settings.datasets import SPECS
from dropout_lab.settings.architectures import architecture
from dropout_lab.settings.health import classify
from dropout_lab.settings.metrics_schema import read_metrics
from dropout_lab.settings.vocabulary import INVERTED, SLOTS


def _uniform(rates: list[float]) -> float:
    """The rate of a slot group: its value when all layers share it (as in every grid), else NaN."""
    if not rates:
        return math.nan
    return rates[0] if all(r == rates[0] for r in rates) else math.nan


def _coordinates(record: Mapping[str, Any], metrics: Mapping[str, Any], failure: Mapping[str, Any]) -> dict[str, Any]:
    """Where the run sits in the grid, and its health under the `failure` rules."""
    cfg, rates = metrics["config"], metrics["rates"]
    health = classify(metrics, SPECS[cfg["dataset"]["name"]].classes, failure)
    return {
        "run": str(Path(record["path"]).parent),
        "experiment": record["experiment"],
        "dataset": cfg["dataset"]["name"],
        "model": cfg["model"]["name"],
        "gate": cfg["gate"]["name"],
        "convention": cfg["gate"].get("convention", INVERTED),
        "cell": record["cell"],
        "design_cell": record.get("design_cell", record["cell"]),  # the cell without a tuned learning rate
        "seed": metrics["seed"],
        "status": health.status,
        "failed_epoch": math.nan if health.epoch is None else health.epoch,
        "failed_reason": health.reason,
        "placement": record.get("placement") or "",
        "input_rate": rates["input"],
        **{f"{slot}_rate": _uniform(rates.get(slot, [])) for slot in SLOTS if slot != "input"},
    }


def _number(value: Any) -> float:
    """A recorded result, NaN where it is null (a failed run's: settings.health)."""
    return math.nan if value is None else value


def _results(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Its final numbers (NaN where a diverged run has none)."""
    final = {k: _number(v) for k, v in (metrics.get("final") or {}).items()}
    for key in ("train_acc", "train_loss", "test_acc", "test_loss", "gap_acc", "gap_loss", "val_acc", "val_loss"):
        final.setdefault(key, math.nan)
    mc, norms = metrics.get("mc") or {}, metrics.get("weight_norms")
    unscaled = metrics.get("unscaled_inference") or {}
    return {
        **{key: final[key] for key in ("test_acc", "test_loss")},
        "val_acc": final["val_acc"],  # on the validation split held out of the training images (NaN: none)
        **{key: final[key] for key in ("val_loss", "train_acc", "train_loss", "gap_acc", "gap_loss")},
        "test_error_pct": 100.0 * (1.0 - final["test_acc"]),
        "mc_test_acc": _number(mc.get("test_acc")),
        "mc_samples": mc.get("samples", 0),
        "unscaled_test_acc": _number(unscaled.get("test_acc", final["test_acc"])),
        "unscaled_test_loss": _number(unscaled.get("test_loss", final["test_loss"])),
        "weight_norm": math.sqrt(sum(_number(v) ** 2 for v in norms.values())) if norms else math.nan,
    }


def _settings(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """What it was trained with, on what."""
    cfg, engine = metrics["config"], metrics.get("engine") or {}
    kind = architecture(cfg["model"]["name"])
    return {
        # the layers of its last dropout slot (the MLP's hidden layers, the CNN's fully connected ones)
        "depth": kind.layer_count(cfg["model"], kind.groups[-1]) if kind.groups else 0,
        "width": cfg["model"][kind.width_field],
        "channels": "-".join(str(c) for c in cfg["model"].get("channels") or []),
        "max_norm": math.nan if cfg["model"].get("max_norm") is None else cfg["model"]["max_norm"],
        **{key: cfg["train"][key] for key in ("lr", "momentum", "batch_size", "weight_decay", "schedule", "epochs")},
        "train_samples": metrics["train_samples"],
        "test_samples": metrics["test_samples"],
        "validation_samples": metrics.get("validation_samples", 0),
        "scale": cfg["scale"]["name"],
        "wall_seconds": metrics["wall_seconds"],
        "precision": engine.get("precision", "fp32"),
        "pack_size": engine.get("pack_size", 1),
        "device_type": metrics["device"]["type"],
        "device_name": metrics["device"]["name"],
        "torch": metrics["versions"]["torch"],
        "commit": metrics["git"]["commit"] or "",
    }


def run_row(record: Mapping[str, Any], metrics: Mapping[str, Any], failure: Mapping[str, Any]) -> dict[str, Any]:
    """One row; a diverged run keeps its coordinates and status, and NaN for every result.

    `status` is the run's health under the `failure` rules (dropout_lab.settings.health): ok,
    diverged or collapsed, with the epoch and the reason it failed.
    """
    row = {**_coordinates(record, metrics, failure), **_results(metrics), **_settings(metrics)}
    for sweep, column in experiments.columns().items():  # the sweeps of dropout_lab.settings.experiments
        row[column] = sweep in record["sweeps"]
        row[f"tuned_{sweep}"] = f"tuned:{sweep}" in record["sweeps"]  # among the tuned protocol's runs
    return row


KEYS = ("run", "experiment", "gate", "convention", "cell", "seed", "status", "input_rate", "hidden_rate", "conv_rate", "fc_rate")


def curve_rows(row: Mapping[str, Any], metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{**{k: row[k] for k in KEYS}, **{k: (math.nan if v is None else v) for k, v in epoch.items()}}
            for epoch in metrics["history"]]


def mc_rows(row: Mapping[str, Any], metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Monte-Carlo test accuracy after k masks, beside the deterministic net's."""
    curve = (metrics.get("mc") or {}).get("curve") or {}
    return [{**{k: row[k] for k in KEYS}, "k": int(k), "mc_test_acc": _number(acc), "test_acc": row["test_acc"]}
            for k, acc in curve.items()]


Loaded = list[tuple[Mapping[str, Any], dict[str, Any]]]


def load(records: Iterable[Mapping[str, Any]], root: Path = Path(".")) -> Loaded:
    """Each record with its run's metrics.json, read once and checked (settings.metrics_schema): MetricsError, one
    line naming the file, the field and the fix, for a file that cannot be believed."""
    return [(record, read_metrics(root / record["path"])) for record in records]


def collect(loaded: Loaded, failure: Mapping[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(runs, learning curves, Monte-Carlo curves) as tidy tables; `failure`: the rules of config `failure:`."""
    runs, curves, mc = [], [], []
    for record, metrics in loaded:
        row = run_row(record, metrics, failure)
        runs.append(row)
        curves.extend(curve_rows(row, metrics))
        mc.extend(mc_rows(row, metrics))
    return (pd.DataFrame(runs), pd.DataFrame(curves) if curves else _empty([*KEYS, "epoch"]),
            pd.DataFrame(mc) if mc else _empty([*KEYS, "k", "mc_test_acc", "test_acc"]))


def _empty(columns: list[str]) -> pd.DataFrame:
    """A table with no rows that keeps its columns and their kinds (every run diverged: no Monte-Carlo curve), so
    what reads it finds no row rather than no column."""
    text = ("run", "experiment", "gate", "convention", "cell", "status")
    return pd.DataFrame({c: pd.Series(dtype=object if c in text else float) for c in columns})


def provenance(loaded: Loaded) -> dict[str, Any]:
    """What the report states about where the numbers come from: data digests, versions, hardware, commits,
    and the training time of the grid, counted once per stack (the runs one trainer steps together share it)."""
    data, versions, devices, commits, dirty = {}, {}, set(), set(), False
    precisions, stacks = set(), {}
    for record, metrics in loaded:
        data[metrics["config"]["dataset"]["name"]] = metrics["data_sha256"]
        versions = metrics["versions"]
        devices.add(f"{metrics['device']['type']}: {metrics['device']['name']}")
        if metrics["git"]["commit"]:
            commits.add(metrics["git"]["commit"])
        dirty = dirty or bool(metrics["git"]["dirty"])
        engine = metrics.get("engine") or {}
        precisions.add(f"{engine.get('precision', 'fp32')}{' with TF32' if engine.get('tf32') else ''}")
        train = sum(e.get("train_seconds") or 0.0 for e in metrics["history"])
        key = metrics.get("pack_fingerprint") or record["path"]  # a stack: the runs one trainer steps together
        # A stack's runs finish their evaluation one after another: its wall time is the latest.
        stacks[key] = (train, max(metrics["wall_seconds"], stacks.get(key, (0.0, 0.0))[1]))
    return {
        "data_sha256": data,
        "versions": versions,
        "devices": sorted(devices),
        "commits": sorted(commits),
        "dirty": dirty,
        "precisions": sorted(precisions),
        "training_stacks": len(stacks),
        "train_seconds": sum(train for train, _ in stacks.values()),
        "train_wall_seconds": sum(wall for _, wall in stacks.values()),
    }


def write_tables(tables: Mapping[str, pd.DataFrame], prov: Mapping[str, Any], prov_path: str | Path) -> None:
    """Write each table (parquet, or CSV for a .csv path) and the provenance atomically; a failure is one line and
    leaves the earlier file in place."""
    for target, table in tables.items():
        try:
            with atomic_path(target) as tmp:
                if str(target).endswith(".csv"):
                    table.to_csv(tmp, index=False)
                else:
                    table.to_parquet(tmp, index=False)
        except (OSError, pyarrow.ArrowException) as err:
            raise WriteError(f"could not write {target}: {err}; free space or make the folder writable, "
                             "then run again") from err
    try:
        write_json(prov_path, prov)
    except OSError as err:
        raise WriteError(f"could not write {prov_path}: {err}; free space or make the folder writable, "
                         "then run again") from err
