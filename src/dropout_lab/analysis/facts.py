"""Every number the paper prints besides the verdicts, computed once from the run table.

`collect_facts` returns a JSON-able dict that the claims step stores in claims.json
beside the verdicts; dropout_lab.paper.report renders the paper from that document only,
so each printed number has one source.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import pandas as pd

from dropout_lab.settings.vocabulary import COLLAPSED, DIVERGED, INVERTED, OK, REFERENCE_GATE


def _mean_sd(values: pd.Series) -> tuple[float, float]:
    return float(values.mean()) if len(values) else math.nan, float(values.std()) if len(values) > 1 else math.nan


def failed_runs(runs: pd.DataFrame) -> dict[str, Any]:
    """How many runs failed, and per cell (experiment, gate, convention, cell): status, seeds, epochs, a reason."""
    bad = runs[runs["status"] != OK]
    cells = []
    for key, group in bad.groupby(["experiment", "gate", "convention", "cell"], sort=True):
        total = runs[(runs["experiment"] == key[0]) & (runs["gate"] == key[1]) & (runs["convention"] == key[2])
                     & (runs["cell"] == key[3])]
        epochs = sorted({int(e) for e in group["failed_epoch"] if pd.notna(e)})
        cells.append({"experiment": key[0], "gate": key[1], "convention": key[2], "cell": key[3],
                      "failed": int(len(group)), "of": int(len(total)),
                      "statuses": sorted(set(group["status"])), "seeds": sorted(int(s) for s in group["seed"]),
                      "epochs": epochs, "reason": str(group["failed_reason"].iloc[0])})
    return {"count": int(len(bad)), "of": int(len(runs)), "trained": int(len(runs) - len(bad)),
            DIVERGED: int((runs["status"] == DIVERGED).sum()),
            COLLAPSED: int((runs["status"] == COLLAPSED).sum()), "cells": cells}


def anchor_runs(runs: pd.DataFrame, selector: Mapping[str, Any]) -> pd.DataFrame:
    """The runs whose settings match a published figure: experiment and placement or cell, gate and convention.

    The gate defaults to Bernoulli and the convention to inverted, so runs of the article's
    scaled convention are never averaged in with the inverted runs a figure is set beside.
    """
    rows = runs[(runs["experiment"] == selector["experiment"])
                & (runs["gate"] == selector.get("gate", REFERENCE_GATE))
                & (runs["convention"] == selector.get("convention", "inverted"))]
    for key in ("placement", "cell"):
        if key in selector:
            rows = rows[rows[key] == selector[key]]
    return rows


def anchor_rows(runs: pd.DataFrame, anchors: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each published figure beside the mean and sd of our matching runs that trained, and which runs those are."""
    rows = []
    for anchor in anchors:
        matched = anchor_runs(runs, anchor["ours"])
        ok = matched[matched["status"] == OK]
        mean, sd = _mean_sd(ok["test_error_pct"])
        row = {"cite": anchor["cite"], "where": anchor["where"], "setting": anchor["setting"],
               "error_pct": anchor["error_pct"], "error_sd": anchor.get("error_sd"), "differs": anchor.get("differs"),
               "mean": mean, "sd": sd, "n": int(len(ok)),
               "failed": int(len(matched) - len(ok)), "ran": not matched.empty}
        if not matched.empty:
            first = matched.iloc[0]
            row.update({"gate": first["gate"], "convention": first["convention"], "cell": first["cell"],
                        "epochs": int(first["epochs"]), "train_samples": int(first["train_samples"])})
        rows.append(row)
    return rows


def placement_rows(runs: pd.DataFrame, experiment: str, presets: list[str]) -> list[dict[str, Any]]:
    rows = []
    own = runs[runs["experiment"] == experiment]
    for preset in presets:
        cell = own[own["placement"] == preset]
        if cell.empty:
            continue
        ok = cell[cell["status"] == OK]
        mean, sd = _mean_sd(ok["test_error_pct"])
        rows.append({"preset": preset, "cell": cell["cell"].iloc[0], "mean": mean, "sd": sd, "n": int(len(ok)),
                     "failed": int(len(cell) - len(ok))})
    return rows


def best_cell(runs: pd.DataFrame, experiment: str) -> dict[str, Any] | None:
    """The cell (gate, convention, rates) with the lowest mean test error over runs that trained (2 runs or more)."""
    own = runs[(runs["experiment"] == experiment) & (runs["status"] == OK)]
    groups = own.groupby(["gate", "convention", "cell"])["test_error_pct"].agg(["mean", "std", "count"])
    groups = groups[groups["count"] >= 2]
    if groups.empty:
        return None
    (gate, convention, cell), row = next(iter(groups.sort_values("mean").iterrows()))
    return {"gate": gate, "convention": convention, "cell": cell, "mean": float(row["mean"]),
            "sd": float(row["std"]), "n": int(row["count"])}


def recommended_cell(runs: pd.DataFrame, settings: Mapping[str, Any]) -> dict[str, Any] | None:
    """The article's recommended setting (input rate at the claim-2 threshold, hidden rate at the claimed rate)."""
    own = runs[(runs["experiment"] == settings["optimum"]["experiment"]) & (runs["status"] == OK)
               & (runs["gate"] == REFERENCE_GATE) & (runs["convention"] == INVERTED)]
    cell = own[np.isclose(own["input_rate"], settings["input_rate"]["threshold"])
               & np.isclose(own["hidden_rate"], settings["optimum"]["claimed_rate"])]
    if len(cell) < 2:
        return None
    mean, sd = _mean_sd(cell["test_error_pct"])
    return {"input_rate": settings["input_rate"]["threshold"], "hidden_rate": settings["optimum"]["claimed_rate"],
            "mean": mean, "sd": sd, "n": int(len(cell))}


SETTINGS = ("dataset", "model", "depth", "width", "channels", "max_norm", "epochs", "train_samples", "test_samples",
            "validation_samples", "lr", "momentum", "batch_size", "weight_decay", "schedule", "mc_samples")


def experiment_settings(runs: pd.DataFrame, experiment: str) -> dict[str, Any] | None:
    """What one experiment's runs were trained with (shared by all its runs), and how many ran."""
    own = runs[runs["experiment"] == experiment]
    if own.empty:
        return None
    # The fixed protocol's settings: a run of the hidden sweep where there is one (the tuned protocol's and the
    # budget sweep's runs differ in learning rate and epochs; the methods name those apart).
    reference = own[own["in_hidden_sweep"]] if "in_hidden_sweep" in own and own["in_hidden_sweep"].any() else own
    first = reference.iloc[0]
    settings = {key: (None if isinstance(first[key], float) and math.isnan(first[key]) else first[key])
                for key in SETTINGS}
    return {**{k: (v.item() if hasattr(v, "item") else v) for k, v in settings.items()}, "runs": int(len(own)),
            "all_epochs": sorted(int(e) for e in own["epochs"].unique()),
            "all_lrs": sorted(float(lr) for lr in own["lr"].unique())}


def collect_facts(runs: pd.DataFrame, prov: Mapping[str, Any], config: Mapping[str, Any],
                  anchors: list[Mapping[str, Any]], built: Mapping[str, Any]) -> dict[str, Any]:
    """The paper's numbers besides the verdicts; `built`: the commit and versions that build the report."""
    return {
        "failed": failed_runs(runs),
        "anchors": anchor_rows(runs, anchors),
        "placement": {e: placement_rows(runs, e, list(config["grids"][e]["placement"]))
                      for e in config["experiments"] if config["grids"][e].get("placement")},
        "best_cells": {e: best_cell(runs, e) for e in config["experiments"]},
        "recommended": recommended_cell(runs, config["claims"]),
        "experiments": {e: experiment_settings(runs, e) for e in config["experiments"]},
        "not_run": [e for e in config["grids"] if e not in config["experiments"]],
        "training": dict(prov),
        "report": dict(built),
        "runs": int(len(runs)),
    }


def claims_document(verdicts: Mapping[str, Any], theory: Mapping[str, Any], runs: pd.DataFrame,
                    prov: Mapping[str, Any], config: Mapping[str, Any], anchors: list[Mapping[str, Any]],
                    built: Mapping[str, Any]) -> dict[str, Any]:
    """What claims.json holds: the settings the verdicts were judged under, the verdicts, the theory checks and
    the facts. The paper is written from this document alone."""
    scale = config["scale"]
    return {
        "scale": scale,
        "settings": {"claims": config["claims"], "failure": config["failure"], "seeds": config["seeds"][scale]},
        "claims": verdicts,
        "theory": theory,
        "facts": collect_facts(runs, prov, config, anchors, built),
    }
