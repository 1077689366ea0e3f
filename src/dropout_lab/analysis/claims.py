"""The statistics and decision rules of the registered claims (settings.claims), from the aggregated run table.

Each function takes the tidy table (one row per run) and the claim's settings
from config/config.yaml and returns a JSON-able dict: the claim, the statistic,
the estimate, a confidence interval or p-values, and a verdict that is one of
"supported", "not supported" or "inconclusive".
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd

from dropout_lab.analysis.equivalence import convention_claim, inference_claim, parity_claim
from dropout_lab.analysis.statistics import (
    INCONCLUSIVE,
    NOT_SUPPORTED,
    SUPPORTED,
    best_rate,
    best_set,
    cells_by_rate,
    failed_by,
    holm,
    ok_runs,
    welch_greater,
    with_failed_cells,
)
from dropout_lab.settings import experiments
from dropout_lab.settings.claims import Claim, registered
from dropout_lab.settings.vocabulary import COLLAPSED, INVERTED, OK, REFERENCE_GATE


def _sharp_verdict(result: dict[str, Any], claimed: float, window: float) -> tuple[str, str]:
    members = result["set"]
    if not any(math.isclose(r, claimed) for r in members):
        return NOT_SUPPORTED, f"rate {claimed:g} is significantly worse than the best rate {result['best']:g}"
    if all(abs(r - claimed) <= window + 1e-9 for r in members):
        return SUPPORTED, f"rate {claimed:g} is in the best set and every rate in it lies within {window:g} of it"
    return INCONCLUSIVE, (
        f"rate {claimed:g} is among the best, but so are rates from {min(members):g} to {max(members):g}: "
        "the optimum is flat, not at one rate"
    )


def optimum_claim(df: pd.DataFrame, rate_col: str, settings: Mapping[str, Any], alpha: float, samples: int) -> dict:
    """Claim 1a: the best mean test accuracy over the rate grid lies at rate 0.5."""
    claimed, window = settings["claimed_rate"], settings["sharp_window"]
    result = best_set(df, rate_col, "test_acc", True, alpha, samples)
    if not any(math.isclose(r, claimed) for r in (row["rate"] for row in result["table"] if row["n"])):
        verdict, reason = INCONCLUSIVE, f"rate {claimed:g} has no run that trained"
    else:
        verdict, reason = _sharp_verdict(result, claimed, window)
    band = settings["published_band"]
    return {
        "claim": f"Dropping hidden units at rate {claimed:g} (retain p = {1 - claimed:g}) gives the best test accuracy",
        "statistic": "argmax over the rate grid of mean test accuracy over seeds; rates not significantly "
        "worse (one-sided Welch, Holm; seed bootstrap for P(best)) form the best set",
        "estimate": result["best"],
        **result,
        "published_band": band,
        "set_within_published_band": all(band[0] - 1e-9 <= r <= band[1] + 1e-9 for r in result["set"]),
        "verdict": verdict,
        "reason": reason,
    }


def width_claim(df: pd.DataFrame, rate_col: str, settings: Mapping[str, Any], alpha: float, samples: int) -> dict:
    """Claim 1d: claim 1a's statistic over the width sweep, where p * n is held fixed (Srivastava et al., Fig. 9b)."""
    result = optimum_claim(df, rate_col, settings, alpha, samples)
    claimed = settings["claimed_rate"]
    result["claim"] = (f"With p * n fixed (the hidden layers widened as p falls), dropping hidden units at rate "
                       f"{claimed:g} gives the best test accuracy")
    result["widths"] = {f"{float(rate):g}": int(width) for rate, width in
                        df.groupby(rate_col)["width"].first().items()}
    return result


def _smallest_claim(df: pd.DataFrame, rate_col: str, metric: str, reading: str, settings: Mapping[str, Any],
                    alpha: float, samples: int) -> dict:
    """Rate 0.5 regularises most, read as the rate where `metric` is smallest (the same test as claim 1a)."""
    result = best_set(df, rate_col, metric, False, alpha, samples)
    verdict, reason = _sharp_verdict(result, settings["claimed_rate"], settings["sharp_window"])
    return {
        "claim": f"Rate {settings['claimed_rate']:g} regularises most (smallest {reading})",
        "statistic": f"argmin over the rate grid of the mean {reading}; rates not significantly larger "
        "(one-sided Welch, Holm) form the set",
        "estimate": result["best"],
        **result,
        "verdict": verdict,
        "reason": reason,
    }


def regularisation_claim(df: pd.DataFrame, rate_col: str, settings: Mapping[str, Any], alpha: float, samples: int) -> dict:
    """Claim 1b: the smallest gap between train and test accuracy."""
    return _smallest_claim(df, rate_col, "gap_acc", "gap between train and test accuracy", settings, alpha, samples)


def weight_norm_claim(df: pd.DataFrame, rate_col: str, settings: Mapping[str, Any], alpha: float, samples: int) -> dict:
    """Claim 1c: the smallest norm of the weights the trained net uses at inference."""
    return _smallest_claim(df, rate_col, "weight_norm", "norm of the weights the trained net uses at inference",
                           settings, alpha, samples)


def input_rate_claim(df: pd.DataFrame, settings: Mapping[str, Any], alpha: float) -> dict:
    """Claim 2: input layers should drop at rate <= threshold; higher rates are worse."""
    threshold = settings["threshold"]
    failed = failed_by(df, "input_rate")
    cells = cells_by_rate(ok_runs(df), "input_rate", "test_acc")
    means = {r: float(np.mean(v)) for r, v in cells.items()}
    low = [r for r in cells if r <= threshold + 1e-9]
    high = [r for r in cells if r > threshold + 1e-9]
    if not low or not high:
        return {"claim": "Input rate <= threshold", "verdict": INCONCLUSIVE,
                "reason": f"the grid needs rates on both sides of {threshold:g}"}
    best = max(means, key=means.get)
    best_low = max(low, key=means.get)
    worse = holm([welch_greater(cells[best_low], cells[r]) for r in high])
    better = holm([welch_greater(cells[r], cells[best_low]) for r in high])
    if any(p < alpha for p in better):
        verdict = NOT_SUPPORTED
        reason = f"a rate above {threshold:g} is significantly better than the best rate at or below it"
    elif best <= threshold + 1e-9 and all(p < alpha for p in worse):
        verdict = SUPPORTED
        reason = f"the best input rate is {best:g} and every rate above {threshold:g} is significantly worse"
    else:
        verdict = INCONCLUSIVE
        reason = f"not every rate above {threshold:g} is significantly worse than rate {best_low:g}"
    return {
        "claim": f"Input layers should drop at a rate of {threshold:g} or less",
        "statistic": f"best mean test accuracy over input rates; one-sided Welch t-tests of the best rate <= "
        f"{threshold:g} against each higher rate, Holm-corrected",
        "estimate": best,
        "best_low": best_low,
        "table": with_failed_cells([{"rate": r, "mean": means[r], "sd": float(np.std(cells[r], ddof=1))
                                      if len(cells[r]) > 1 else math.nan, "n": len(cells[r])} for r in sorted(cells)],
                                    failed),
        "p_worse_adjusted": {f"{r:g}": float(p) for r, p in zip(high, worse)},
        "p_better_adjusted": {f"{r:g}": float(p) for r, p in zip(high, better)},
        "verdict": verdict,
        "reason": reason,
    }


def budget_claim(df: pd.DataFrame, rate_col: str, settings: Mapping[str, Any], alpha: float, samples: int,
                 seed: int = 0) -> dict:
    """Does the optimum move with training length? At each epoch budget, claim 1a's best rate and best set; the
    statistic is the best rate at the longest budget minus that at the shortest, with a seed bootstrap (seeds
    resampled within each budget and rate). Stays (the article's unconditional optimum) if the interval lies within
    +/- tolerance, moves if it excludes 0, else inconclusive."""
    tolerance = settings["tolerance"]
    budgets = sorted(int(b) for b in df["epochs"].unique())
    per_budget = []
    for budget in budgets:
        rows = df[df["epochs"] == budget]
        if ok_runs(rows).empty:
            continue
        result = best_set(rows, rate_col, "test_acc", True, alpha, samples, seed)
        per_budget.append({"epochs": budget, "best": result["best"], "best_mean": result["best_mean"],
                           "set": result["set"], "table": result["table"]})
    ends = [cells_by_rate(ok_runs(df[df["epochs"] == b]), rate_col, "test_acc") for b in (budgets[0], budgets[-1])]
    if len(budgets) < 2 or not all(ends):
        return {"claim": "The best hidden rate does not move with the training budget (epochs)", "budgets": per_budget,
                "estimate": None, "interval": [None, None], "tolerance": tolerance, "verdict": INCONCLUSIVE,
                "reason": "fewer than two budgets have runs that trained"}
    shift = round(best_rate(ends[1]) - best_rate(ends[0]), 9)
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(samples):
        picks = [{r: rng.choice(v, size=len(v), replace=True) for r, v in cells.items()} for cells in ends]
        boot.append(round(best_rate(picks[1]) - best_rate(picks[0]), 9))
    lo, hi = (float(q) for q in np.quantile(boot, [alpha / 2, 1 - alpha / 2]))
    if -tolerance - 1e-9 <= lo and hi <= tolerance + 1e-9:
        verdict, reason = SUPPORTED, (f"the best rate moves by {shift:+g} from {budgets[0]} to {budgets[-1]} epochs, "
                                      f"interval [{lo:+g}, {hi:+g}] within +/-{tolerance:g}")
    elif lo > 0 or hi < 0:
        verdict, reason = NOT_SUPPORTED, (f"the best rate moves by {shift:+g} from {budgets[0]} to {budgets[-1]} "
                                          f"epochs, interval [{lo:+g}, {hi:+g}] excludes 0")
    else:
        verdict, reason = INCONCLUSIVE, (f"the best rate moves by {shift:+g}, interval [{lo:+g}, {hi:+g}]: neither "
                                         f"within +/-{tolerance:g} nor clear of 0")
    return {
        "claim": "The best hidden rate does not move with the training budget (epochs)",
        "statistic": "best rate (argmax of mean test accuracy over seeds) at the longest budget minus that at the "
        f"shortest; {100 * (1 - alpha):g}% seed-bootstrap percentile interval",
        "estimate": shift,
        "interval": [lo, hi],
        "tolerance": tolerance,
        "budgets": per_budget,
        "verdict": verdict,
        "reason": reason,
    }


def _reference_gate(rows: pd.DataFrame, spec: Mapping[str, Any]) -> pd.DataFrame:
    return rows[rows["gate"] == spec.get("gates", [REFERENCE_GATE])[0]]


def _pair(rows: pd.DataFrame, reference: str, gate: str) -> pd.DataFrame:
    """The inverted-convention runs of two gates (the failures of a third gate are not this pair's)."""
    return rows[(rows["convention"] == INVERTED) & rows["gate"].isin([reference, gate])]


def _rate(spec: Mapping[str, Any]) -> str:
    return f"{spec['vary']}_rate"


# Each registered claim's statistic and decision rule (settings.claims names it):
# (its runs, its sweep's grid entry, config["claims"], alpha, bootstrap samples, the claim) -> its result.
STATISTICS: dict[str, Callable[..., dict]] = {
    "optimum": lambda rows, spec, s, alpha, n, claim: optimum_claim(
        _reference_gate(rows, spec), _rate(spec), s[claim.settings], alpha, n),
    "regularisation": lambda rows, spec, s, alpha, n, claim: regularisation_claim(
        _reference_gate(rows, spec), _rate(spec), s[claim.settings], alpha, n),
    "weight_norm": lambda rows, spec, s, alpha, n, claim: weight_norm_claim(
        _reference_gate(rows, spec), _rate(spec), s[claim.settings], alpha, n),
    # claim 1a's statistic over the width sweep: claim 1a's settings, with the width sweep's own published band
    "width_optimum": lambda rows, spec, s, alpha, n, claim: width_claim(
        rows, _rate(spec), {**s["optimum"], **s[claim.settings]}, alpha, n),
    "input_rate": lambda rows, spec, s, alpha, n, claim: input_rate_claim(
        _reference_gate(rows, spec), s[claim.settings], alpha),
    "gate_parity": lambda rows, spec, s, alpha, n, claim: parity_claim(
        _pair(rows, claim.params["reference"], claim.params["gate"]), _rate(spec),
        [claim.params["reference"], claim.params["gate"]], s[claim.settings], alpha, list(spec["rates"])),
    "conventions": lambda rows, spec, s, alpha, n, claim: convention_claim(rows, alpha),
    "budget": lambda rows, spec, s, alpha, n, claim: budget_claim(
        _reference_gate(rows, spec), _rate(spec), s[claim.settings], alpha, n),
    "inference": lambda rows, spec, s, alpha, n, claim: inference_claim(rows, "hidden_rate", s[claim.settings], alpha),
}


def _monte_carlo(runs: pd.DataFrame, mc: pd.DataFrame | None, experiment: str) -> pd.DataFrame:
    """The Monte-Carlo curves of the runs the inference claim reads (inference_runs), with their status."""
    if mc is None or not len(mc):
        return pd.DataFrame()
    hidden = inference_runs(runs, experiment)
    own = mc[mc["run"].isin(hidden["run"]) & (mc["hidden_rate"] > 0)]
    return own.drop(columns="status", errors="ignore").merge(hidden[["run", "status"]], on="run")


# Runs a claim reads that are not one sweep's (settings.claims: `reads`): (runs, mc, experiment) -> rows.
SELECTIONS: dict[str, Callable[[pd.DataFrame, pd.DataFrame | None, str], pd.DataFrame]] = {
    "monte_carlo": _monte_carlo,
}


def _rows(claim: Claim, runs: pd.DataFrame, mc: pd.DataFrame | None, config: Mapping[str, Any],
          experiment: str) -> tuple[pd.DataFrame, Mapping[str, Any]] | None:
    """The rows a claim judges and its sweep's grid entry; None where its runs did not run."""
    if claim.reads in SELECTIONS:
        rows = SELECTIONS[claim.reads](runs, mc, experiment)
        return (rows, {}) if len(rows) else None
    spec = config["grids"].get(experiment, {}).get(claim.reads)
    column = experiments.BY_NAME[claim.reads].column
    if spec is None or column not in runs:
        return None
    rows = runs[(runs["experiment"] == experiment) & runs[column]]
    return (rows, spec) if len(rows) else None


def _evaluate(runs: pd.DataFrame, config: Mapping[str, Any], mc: pd.DataFrame | None) -> dict[str, Any]:
    """Every registered claim's verdict from `runs` (failed runs are passed in: each claim counts them and leaves
    them out); a claim whose settings or runs are absent is left out."""
    settings = config["claims"]
    alpha, samples = settings["alpha"], settings["bootstrap_samples"]
    out: dict[str, Any] = {}
    for claim in registered(config):
        own = settings.get(claim.settings)
        found = None if own is None else _rows(claim, runs, mc, config, own["experiment"])
        if found is not None:
            out[claim.key] = STATISTICS[claim.statistic](*found, settings, alpha, samples, claim)
    return out


def inference_runs(runs: pd.DataFrame, experiment: str) -> pd.DataFrame:
    """The runs the inference claim reads: one hidden rate and no other dropout, inverted gates; those of the
    gate-parity grid (every gate) where it ran, else the hidden sweep's. Never both: under the tuned protocol the
    hidden sweep's runs are at another learning rate than the gate-parity grid's, and a cell must not mix them."""
    own = runs[(runs["experiment"] == experiment) & (runs["convention"] == INVERTED)]
    column = "in_gate_parity" if own["in_gate_parity"].any() else "in_hidden_sweep"
    return own[own[column]]


def _summary(result: Mapping[str, Any]) -> Any:
    """What a claim's verdict rests on: its estimate, or its per-rate headline."""
    return result.get("headline", result.get("estimate"))


def evaluate_claims(runs: pd.DataFrame, config: Mapping[str, Any], mc: pd.DataFrame | None = None) -> dict[str, Any]:
    """All verdicts for the experiments that ran; a claim whose experiment did not run is skipped.

    Failed runs (diverged or collapsed, dropout_lab.settings.health) are left out and counted. Each
    claim also records `with_failed`: its verdict and estimate had the collapsed runs been
    included (diverged runs have no numbers), and whether that would change it.
    """
    verdicts = _evaluate(runs, config, mc)
    collapsed = runs["status"] == COLLAPSED
    if not collapsed.any():
        return verdicts
    counted = runs.assign(status=np.where(collapsed, OK, runs["status"]))
    alternative = _evaluate(counted, config, mc)
    for name, result in verdicts.items():
        other = alternative.get(name)
        if other is None:
            continue
        result["with_failed"] = {
            "collapsed_runs": int(collapsed.sum()),
            "verdict": other["verdict"],
            "summary": _summary(other),
            "changes_verdict": other["verdict"] != result["verdict"],
            "changes_summary": _summary(other) != _summary(result),
        }
    return verdicts
