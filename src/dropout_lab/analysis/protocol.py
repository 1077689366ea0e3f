"""The protocols that set each run's learning rate, and the runs each one reads.

`fixed`: every run at its scale's learning rate; the runs the sweeps list
(`in_<sweep>` columns of the run table).

`tuned`: every cell of the tuned sweeps trained at each learning rate of the
configured grid with all its seeds (`tuned_<sweep>` columns). Per cell (its
gate, convention and rates: `design_cell`), the learning rate with the best mean
accuracy on the validation split is chosen; a failed run (diverged or
collapsed) counts as a chance-level guess, so a rate that often fails is not
chosen for the seeds that survived. The choice reads validation accuracy only,
never a test number; the claims then read the chosen rate's runs.

`selection` computes the choices and `view` gives the run table a protocol's
claims and figures read: the same columns, with `in_<sweep>` marking that
protocol's runs. Both are computed from the run table alone, so the figures and
the claims (separate jobs) cannot disagree about a choice.
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping

import pandas as pd

from dropout_lab.settings.datasets import SPECS
from dropout_lab.settings.protocols import judged_protocol, protocols, tuned_sweeps
from dropout_lab.settings.vocabulary import OK

CELL = ["experiment", "gate", "convention", "design_cell"]


def _tuned_rows(runs: pd.DataFrame, sweeps: list[str]) -> pd.DataFrame:
    columns = [f"tuned_{s}" for s in sweeps if f"tuned_{s}" in runs]
    if not columns:
        return runs.iloc[0:0]
    return runs[runs[columns].any(axis=1)]


def validation_score(rows: pd.DataFrame) -> pd.Series:
    """Each run's validation accuracy; a run that failed scores as a uniform guess (1 / classes)."""
    chance = rows["dataset"].map(lambda name: 1.0 / SPECS[name].classes)
    return rows["val_acc"].where(rows["status"] == OK, chance)


def selection(runs: pd.DataFrame, config: Mapping[str, Any]) -> pd.DataFrame:
    """One row per (tuned cell, learning rate): mean validation score over its seeds, the runs, the failed runs,
    and whether it is the cell's choice (the best mean; a tie goes to the smaller rate)."""
    rows = _tuned_rows(runs, tuned_sweeps(config))
    columns = [*CELL, "input_rate", "hidden_rate", "conv_rate", "fc_rate", "lr", "val_mean", "runs", "failed",
               "chosen"]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    if rows["val_acc"].isna().all() and (rows["validation_samples"] == 0).all():
        raise ValueError("the tuned protocol's runs hold no validation split (dataset.validation=0); they cannot "
                         "choose a learning rate: train them with dataset.validation > 0 or run protocols: [fixed]")
    rows = rows.assign(score=validation_score(rows), failed=rows["status"] != OK)
    table = (rows.groupby([*CELL, "lr"], sort=True)
             .agg(input_rate=("input_rate", "first"), hidden_rate=("hidden_rate", "first"),
                  conv_rate=("conv_rate", "first"), fc_rate=("fc_rate", "first"),
                  val_mean=("score", "mean"), runs=("score", "size"), failed=("failed", "sum"))
             .reset_index())
    best = table.sort_values([*CELL, "val_mean", "lr"], ascending=[True] * len(CELL) + [False, True])
    chosen = best.drop_duplicates(CELL, keep="first").set_index(CELL)["lr"]
    table["chosen"] = [math.isclose(lr, chosen.loc[tuple(key)]) for lr, key in zip(table["lr"], table[CELL].values)]
    table["failed"] = table["failed"].astype(int)
    return table[columns]


def edge_cells(chosen: pd.DataFrame) -> set[tuple]:
    """The tuned cells whose chosen learning rate is the smallest or largest of their grid: not a choice but a
    bound, so every verdict that reads such a cell is marked (analysis.claims)."""
    edges = set()
    for key, rows in chosen.groupby(CELL):
        picked = rows[rows["chosen"]]["lr"]
        if len(rows) > 1 and len(picked) and float(picked.iloc[0]) in (rows["lr"].min(), rows["lr"].max()):
            edges.add(tuple(key))
    return edges


def view(runs: pd.DataFrame, protocol: str, config: Mapping[str, Any],
         chosen: pd.DataFrame | None = None) -> pd.DataFrame:
    """The run table as `protocol`'s claims read it: for tuned, each tuned sweep's `in_<sweep>` marks its cells'
    runs at the chosen learning rate; the other sweeps read the fixed protocol's runs."""
    if protocol == "fixed":
        return runs
    if protocol != "tuned":
        raise ValueError(f"protocol {protocol!r} is unknown; choose fixed or tuned")
    chosen = selection(runs, config) if chosen is None else chosen
    picks = chosen[chosen["chosen"]][[*CELL, "lr"]].rename(columns={"lr": "chosen_lr"})
    out = runs.merge(picks, on=CELL, how="left")
    at_choice = out["chosen_lr"].notna() & (out["lr"] - out["chosen_lr"]).abs().le(1e-12)
    for sweep in tuned_sweeps(config):
        if f"tuned_{sweep}" in out:
            out[f"in_{sweep}"] = out[f"tuned_{sweep}"] & at_choice
    return out.drop(columns="chosen_lr")


def document(by_protocol: Mapping[str, Mapping[str, Any]], chosen: pd.DataFrame,
             config: Mapping[str, Any]) -> dict[str, Any]:
    """What claims.json records of the protocols: which ran, which the headline verdicts use, each claim's verdict
    and estimate under each protocol, and the tuned protocol's choice per cell with its validation curve."""
    return {
        "run": list(protocols(config)),
        "judge": judged_protocol(config),
        "tuned_sweeps": tuned_sweeps(config),
        "by_protocol": {name: dict(claims) for name, claims in by_protocol.items()},
        "selection": json.loads(chosen.to_json(orient="records")),  # NaN as null
    }
