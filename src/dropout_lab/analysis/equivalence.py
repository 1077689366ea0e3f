"""The claims judged per rate by paired equivalence (TOST): a gate against the reference gate, Monte-Carlo
averaging against weight scaling, and the scaled convention's need for scaling at inference.

Each returns its per-rate table, a headline naming which rates give which verdict, and the claim's verdict.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import pandas as pd

from dropout_lab.analysis.statistics import (
    INCONCLUSIVE,
    NOT_SUPPORTED,
    SUPPORTED,
    equivalence_row,
    equivalence_rows,
    failed_by,
    ok_runs,
    seeds_to_decide,
    welch_greater,
)
from dropout_lab.settings.vocabulary import INVERTED, SCALED, rate_ranges


def per_rate_headline(rows: list[dict[str, Any]], grid: list[float], phrases: Mapping[str, str]) -> str:
    """'equivalent at 0.1-0.7; worse at 0.8 (-0.89 points); no runs at 0.9': which rates give which verdict."""
    parts = []
    for verdict, phrase in phrases.items():
        chosen = [r for r in rows if r["verdict"] == verdict]
        if not chosen:
            continue
        text = f"{phrase} at {rate_ranges([r['rate'] for r in chosen], grid)}"
        if verdict not in ("equivalent", "no runs", "inconclusive"):
            text += " (" + ", ".join(f"{100 * r['mean_diff']:+.2f}" for r in chosen) + " points)"
        parts.append(text)
    return "; ".join(parts)


def parity_claim(df: pd.DataFrame, rate_col: str, gates: list[str], settings: Mapping[str, Any], alpha: float,
                 grid: list[float] | None = None, power: float = 0.8) -> dict:
    """Claim 3: a gate with matched variance does as well as the reference (Bernoulli) gate, judged per rate.

    At each rate: the paired (other - reference) test accuracy, TOST within the margin,
    and one-sided tests for a difference beyond the margin on either side (Holm over
    rates). A rate where a run of a pair failed loses that pair; a rate with no pair
    left is reported as such. No mean pooled across rates is reported: the verdict
    names the rates where the claim holds and where it fails. Each rate also says whether
    its interval excludes the published effect (settings["published_effect"], the other gate
    better by that much) and, where undecided, the seeds that would decide it.
    """
    margin, published = settings["margin"], settings.get("published_effect")
    reference, other = gates  # e.g. bernoulli, gaussian
    failed = failed_by(df, rate_col)
    wide = ok_runs(df).pivot_table(index=[rate_col, "seed"], columns="gate", values="test_acc")
    wide = wide.reindex(columns=gates).dropna()
    grid = sorted(set(grid or []) | {float(r) for r in df[rate_col]})
    rows = []
    for rate in grid:
        group = wide[wide.index.get_level_values(0) == rate]
        diffs = (group[other] - group[reference]).to_numpy(float)
        row = {"rate": float(rate), **equivalence_row(diffs, margin, alpha, power), "failed": failed.get(rate, 0)}
        if published is not None:
            row["excludes_published"] = bool(row["n"] > 1 and row["ci"][1] < published)
        rows.append(row)
    equivalence_rows(rows, alpha, worse=f"{other} worse", better=f"{other} better")
    verdicts = {r["verdict"] for r in rows}
    headline = per_rate_headline(rows, grid, {"equivalent": "equivalent", f"{other} better": f"{other} better",
                                      f"{other} worse": f"{other} worse", "inconclusive": "inconclusive",
                                      "no runs": "every run failed"})
    worse_at = [r["rate"] for r in rows if r["verdict"] == f"{other} worse"]
    if not rows or verdicts == {"no runs"}:
        verdict, reason = INCONCLUSIVE, "no paired runs"
    elif f"{other} worse" in verdicts:
        verdict, reason = NOT_SUPPORTED, f"{other} is significantly worse than {reference} by more than the margin " \
            f"at {rate_ranges(worse_at, grid)}"
    elif verdicts <= {"equivalent", f"{other} better"}:
        verdict, reason = SUPPORTED, f"{other} is equivalent within {100 * margin:g} points or better at every rate"
    else:
        verdict, reason = INCONCLUSIVE, "equivalence is not shown at every rate, nor a difference beyond the margin"
    return {
        "claim": f"{other.capitalize()} dropout with matched variance does as well as {reference} dropout",
        "statistic": f"at each rate, paired ({other} - {reference}) test accuracy, paired by seed; TOST with margin "
        f"{margin:g} at level {alpha:g}; one-sided tests for a difference beyond the margin, Holm over rates",
        "headline": headline,
        "margin": margin,
        "published_effect": published,
        "excludes_published_at": [r["rate"] for r in rows if r.get("excludes_published")],
        "holds_at": [r["rate"] for r in rows if r["verdict"] in ("equivalent", f"{other} better")],
        "fails_at": [r["rate"] for r in rows if r["verdict"] == f"{other} worse"],
        "seeds_to_decide": seeds_to_decide(rows),
        "gates": list(gates),
        "table": rows,
        "verdict": verdict,
        "reason": reason,
    }


def inference_claim(mc: pd.DataFrame, rate_col: str, settings: Mapping[str, Any], alpha: float,
                    power: float = 0.8) -> dict:
    """Monte-Carlo averaging over k masks matches the deterministic (weight-scaled) net, per gate and rate.

    Per run, the MC test accuracy after k masks minus the deterministic net's; per
    (gate, rate) a TOST within the margin and one-sided tests beyond it (Holm over the
    cells); no mean pooled across rates.
    """
    margin = settings["margin"]
    k = min(settings["k"], int(mc["k"].max()))
    at_k = mc[mc["k"] == k]
    grid = sorted({float(r) for r in mc[rate_col]})
    rows = []
    for gate in sorted(set(at_k["gate"])):
        failed = failed_by(at_k[at_k["gate"] == gate], rate_col)
        ok = ok_runs(at_k[at_k["gate"] == gate])
        for rate in grid:
            group = ok[ok[rate_col] == rate]
            diffs = (group["mc_test_acc"] - group["test_acc"]).to_numpy(float)
            rows.append({"gate": gate, "rate": rate, "k": k, **equivalence_row(diffs, margin, alpha, power),
                         "failed": failed.get(rate, 0)})
    equivalence_rows(rows, alpha, worse="MC worse", better="MC better")
    phrases = {"equivalent": "matches", "MC better": "MC better", "MC worse": "MC worse",
               "inconclusive": "inconclusive", "no runs": "every run failed"}
    by_gate = {gate: per_rate_headline([r for r in rows if r["gate"] == gate], grid, phrases)
               for gate in sorted({r["gate"] for r in rows})}
    if len(set(by_gate.values())) == 1 and len(by_gate) > 1:
        headline = "both gates: " + next(iter(by_gate.values()))
    else:
        headline = "; ".join(f"{gate}: {text}" for gate, text in by_gate.items())
    verdicts = {r["verdict"] for r in rows}
    if verdicts & {"MC better", "MC worse"}:
        verdict, reason = NOT_SUPPORTED, f"MC averaging over {k} masks differs from the deterministic net by more " \
            "than the margin at some rates"
    elif rows and verdicts == {"equivalent"}:
        verdict, reason = SUPPORTED, f"MC averaging over {k} masks matches the deterministic net within {100 * margin:g} points " \
            "for every gate and rate"
    else:
        verdict, reason = INCONCLUSIVE, f"equivalence within {100 * margin:g} points at k = {k} is not shown at every rate"
    return {
        "claim": f"Averaging {settings['k']} sampled networks matches the deterministic net at inference",
        "statistic": f"per run, MC test accuracy after k = {k} masks minus the deterministic net's; per gate and "
        f"rate, TOST with margin {margin:g}, one-sided tests beyond it (Holm)",
        "headline": headline,
        "margin": margin,
        "seeds_to_decide": seeds_to_decide(rows),
        "k": k,
        "table": rows,
        "verdict": verdict,
        "reason": reason,
    }


def convention_claim(runs: pd.DataFrame, alpha: float) -> dict:
    """The article's scaled convention needs its activations scaled by p at inference; inverted gates need nothing."""
    rows = []
    for gate, group in ok_runs(runs).groupby("gate"):
        scaled = group[group["convention"] == SCALED]
        inverted = group[group["convention"] == INVERTED].set_index("seed")
        if scaled.empty:
            continue
        loss_gain = (scaled["unscaled_test_loss"] - scaled["test_loss"]).to_numpy(float)
        paired = scaled.set_index("seed").join(inverted[["test_acc"]].add_suffix("_inverted"), how="inner")
        rows.append({
            "gate": gate,
            "n": len(scaled),
            "scaled_test_acc": float(scaled["test_acc"].mean()),
            "unscaled_test_acc": float(scaled["unscaled_test_acc"].mean()),
            "inverted_test_acc": float(paired["test_acc_inverted"].mean()) if len(paired) else math.nan,
            "scaled_test_loss": float(scaled["test_loss"].mean()),
            "unscaled_test_loss": float(scaled["unscaled_test_loss"].mean()),
            "p_loss_worse_unscaled": welch_greater(scaled["unscaled_test_loss"].to_numpy(float),
                                                    scaled["test_loss"].to_numpy(float))
            if len(scaled) > 1 else 1.0,
            "mean_loss_increase": float(loss_gain.mean()),
        })
    needed = [r for r in rows if r["p_loss_worse_unscaled"] < alpha]
    if rows and len(needed) == len(rows):
        verdict, reason = SUPPORTED, "without scaling by p the scaled convention's test loss is significantly worse"
    elif rows and all(r["mean_loss_increase"] <= 0 for r in rows):
        verdict, reason = NOT_SUPPORTED, "the scaled convention does as well without scaling by p"
    else:
        verdict, reason = INCONCLUSIVE, "the loss increase without scaling is not significant for every gate"
    return {
        "claim": "The article's convention (mean-p gates) needs weights scaled by p at inference; mean-1 gates need none",
        "statistic": "test loss of scaled-convention nets with and without the inference scaling (one-sided Welch)",
        "table": rows,
        "verdict": verdict,
        "reason": reason,
    }
