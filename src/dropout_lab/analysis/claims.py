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
from dropout_lab.analysis.optimum import (
    optimum_claim,
    regularisation_claim,
    sweep_power,
    weight_norm_claim,
    width_claim,
)
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
    tost_welch,
    welch_ci,
    welch_greater,
    with_failed_cells,
)
from dropout_lab.analysis.power import (
    detectable_difference,
    pooled_sd,
    seeds_for_difference,
    seeds_for_equivalence,
    smallest_margin,
)
from dropout_lab.settings import experiments
from dropout_lab.settings.claims import Claim, registered
from dropout_lab.settings.vocabulary import COLLAPSED, DIVERGED, INVERTED, OK, REFERENCE_GATE


def input_rate_claim(df: pd.DataFrame, settings: Mapping[str, Any], alpha: float, power: float = 0.8) -> dict:
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
    comparisons = {r: {"diff": means[r] - means[best_low]} for r in cells}
    undecided = {} if verdict != INCONCLUSIVE else {r: "difference" for r, p in zip(high, worse) if p >= alpha}
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
        "power": sweep_power(cells, best_low, comparisons, undecided, None, alpha, power),
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

    def resampled_best(cells: Mapping[float, np.ndarray]) -> np.ndarray:
        """The best rate of each bootstrap sample (seeds resampled within each rate; a tie to the smaller rate)."""
        rates = sorted(cells)
        means = np.stack([rng.choice(cells[r], size=(samples, len(cells[r])), replace=True).mean(axis=1)
                          for r in rates], axis=1)
        return np.asarray(rates)[np.argmax(means, axis=1)]

    first, last = resampled_best(ends[0]), resampled_best(ends[1])
    boot = np.round(last - first, 9)
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


# The placement claim's two presets (config/dropout/): input and hidden dropout, against input dropout alone.
PLACEMENT_WITH, PLACEMENT_WITHOUT = "both", "input"


def placement_claim(df: pd.DataFrame, settings: Mapping[str, Any], alpha: float, power: float) -> dict:
    """Does hidden dropout add anything on top of input dropout? The "both" preset minus "input" in test accuracy:
    supported when "both" is significantly better (one-sided Welch), not supported when the two are equivalent
    within the margin (Welch TOST) or "both" is significantly worse, else inconclusive with the seeds needed."""
    margin = settings["margin"]
    cells = {preset: ok_runs(df[df["placement"] == preset])["test_acc"].to_numpy(float)
             for preset in (PLACEMENT_WITH, PLACEMENT_WITHOUT)}
    both, alone = cells[PLACEMENT_WITH], cells[PLACEMENT_WITHOUT]
    claim = "Hidden dropout (rate 0.5) adds to input dropout (rate 0.2)"
    if len(both) < 2 or len(alone) < 2:
        return {"claim": claim, "estimate": None, "verdict": INCONCLUSIVE,
                "reason": f"the presets {PLACEMENT_WITH!r} and {PLACEMENT_WITHOUT!r} need 2 runs that trained each"}
    diff = float(both.mean() - alone.mean())
    p_better, p_worse = welch_greater(both, alone), welch_greater(alone, both)
    p_tost = tost_welch(both, alone, margin)
    spread = comparison_power(both, alone, diff, margin, alpha, power)
    if p_better < alpha:
        verdict, reason = SUPPORTED, f"input and hidden dropout beat input dropout alone by {100 * diff:+.2f} points"
    elif p_worse < alpha:
        verdict, reason = NOT_SUPPORTED, (f"adding hidden dropout to input dropout is significantly worse "
                                          f"({100 * diff:+.2f} points)")
    elif p_tost < alpha:
        verdict, reason = NOT_SUPPORTED, (f"adding hidden dropout changes test accuracy by {100 * diff:+.2f} points, "
                                          f"equivalent to nothing within {100 * margin:g} points")
    else:
        verdict, reason = INCONCLUSIVE, f"a difference of {100 * diff:+.2f} points is neither shown nor ruled out"
    return {
        "claim": claim,
        "statistic": f"mean test accuracy of preset {PLACEMENT_WITH!r} minus {PLACEMENT_WITHOUT!r}; one-sided Welch "
        f"tests each way, Welch TOST within {margin:g}",
        "estimate": diff,
        "ci": welch_ci(both, alone, alpha),
        "n": [len(both), len(alone)],
        "p_better": p_better,
        "p_worse": p_worse,
        "p_tost": p_tost,
        "margin": margin,
        "power": spread,
        "verdict": verdict,
        "reason": reason,
    }


def comparison_power(a: np.ndarray, b: np.ndarray, diff: float, margin: float, alpha: float, power: float) -> dict:
    """What two independent cells of seeds can see (analysis.power): the smallest difference and margin they could
    show, and the seeds per cell that would show the observed difference, or equivalence within the margin."""
    sd, n = pooled_sd(float(np.std(a, ddof=1)), float(np.std(b, ddof=1))), min(len(a), len(b))
    return {"sd": sd, "n": n, "detectable": detectable_difference(sd, n, alpha, power, paired=False),
            "smallest_margin": smallest_margin(sd, n, alpha, power, paired=False),
            "seeds_for_difference": seeds_for_difference(sd, diff, alpha, power, paired=False),
            "seeds_for_equivalence": seeds_for_equivalence(sd, diff, margin, alpha, power, paired=False)}


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
        _reference_gate(rows, spec), _rate(spec), s[claim.settings], alpha, n, s["power"]),
    "regularisation": lambda rows, spec, s, alpha, n, claim: regularisation_claim(
        _reference_gate(rows, spec), _rate(spec), s[claim.settings], alpha, n, s["power"]),
    "weight_norm": lambda rows, spec, s, alpha, n, claim: weight_norm_claim(
        _reference_gate(rows, spec), _rate(spec), s[claim.settings], alpha, n, s["power"]),
    # claim 1a's statistic over the width sweep: claim 1a's settings, with the width sweep's own published band
    "width_optimum": lambda rows, spec, s, alpha, n, claim: width_claim(
        rows, _rate(spec), {**s["optimum"], **s[claim.settings]}, alpha, n, s["power"]),
    "input_rate": lambda rows, spec, s, alpha, n, claim: input_rate_claim(
        _reference_gate(rows, spec), s[claim.settings], alpha, s["power"]),
    "gate_parity": lambda rows, spec, s, alpha, n, claim: parity_claim(
        _pair(rows, claim.params["reference"], claim.params["gate"]), _rate(spec),
        [claim.params["reference"], claim.params["gate"]], s[claim.settings], alpha, list(spec["rates"]),
        s["power"]),
    "conventions": lambda rows, spec, s, alpha, n, claim: convention_claim(rows, alpha),
    "budget": lambda rows, spec, s, alpha, n, claim: budget_claim(
        _reference_gate(rows, spec), _rate(spec), s[claim.settings], alpha, n),
    "inference": lambda rows, spec, s, alpha, n, claim: inference_claim(rows, "hidden_rate", s[claim.settings], alpha,
                                                                           s["power"]),
    "placement": lambda rows, spec, s, alpha, n, claim: placement_claim(rows, s[claim.settings], alpha, s["power"]),
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
    # the placement grid's runs of the reference gate (settings.experiments: its presets are not a sweep)
    "placement": lambda runs, mc, experiment: runs[(runs["experiment"] == experiment) & (runs["placement"] != "")
                                                   & (runs["gate"] == REFERENCE_GATE)
                                                   & (runs["convention"] == INVERTED)],
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


def _edge_marks(rows: pd.DataFrame, edges: set[tuple]) -> list[str]:
    """The cells a claim reads whose learning rate was chosen at the edge of its grid (analysis.protocol)."""
    cell = ["experiment", "gate", "convention", "design_cell"]
    if not edges or not set(cell) <= set(rows.columns):
        return []
    return sorted({f"{gate} {design}" for key in rows[cell].drop_duplicates().itertuples(index=False)
                   if tuple(key) in edges for gate, design in [(key[1], key[3])]})


# The reason of a claim whose runs all failed: nothing to judge, and the paper says so.
EVERY_RUN_FAILED = "every run failed"


def _every_run_failed(rows: pd.DataFrame) -> dict[str, Any] | None:
    """A claim's result when none of its runs trained (settings.health): inconclusive, with the failures counted;
    None when some did."""
    if "status" not in rows or (rows["status"] == OK).any():
        return None
    counts = {status: int((rows["status"] == status).sum()) for status in (DIVERGED, COLLAPSED)}
    return {"verdict": INCONCLUSIVE, "estimate": None, "every_run_failed": True, "failed": counts,
            "reason": f"{EVERY_RUN_FAILED} ({counts[DIVERGED]} diverged, {counts[COLLAPSED]} collapsed): nothing to "
                      "judge; see the failed-runs table"}


def _evaluate(runs: pd.DataFrame, config: Mapping[str, Any], mc: pd.DataFrame | None,
              edges: set[tuple] = frozenset()) -> dict[str, Any]:
    """Every registered claim's verdict from `runs` (failed runs are passed in: each claim counts them and leaves
    them out); a claim whose settings or runs are absent is left out. `edges`: the tuned cells whose learning rate
    was chosen at the edge of its grid; a claim that reads one is marked (`edge_lr`)."""
    settings = config["claims"]
    alpha, samples = settings["alpha"], settings["bootstrap_samples"]
    out: dict[str, Any] = {}
    for claim in registered(config):
        own = settings.get(claim.settings)
        found = None if own is None else _rows(claim, runs, mc, config, own["experiment"])
        if found is not None:
            failed = _every_run_failed(found[0])
            out[claim.key] = failed or STATISTICS[claim.statistic](*found, settings, alpha, samples, claim)
            marks = _edge_marks(found[0], edges)
            if marks:
                out[claim.key]["edge_lr"] = marks
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


def evaluate_claims(runs: pd.DataFrame, config: Mapping[str, Any], mc: pd.DataFrame | None = None,
                    edges: set[tuple] = frozenset()) -> dict[str, Any]:
    """All verdicts for the experiments that ran; a claim whose experiment did not run is skipped.

    Failed runs (diverged or collapsed, dropout_lab.settings.health) are left out and counted. Each
    claim also records `with_failed`: its verdict and estimate had the collapsed runs been
    included (diverged runs have no numbers), and whether that would change it.
    """
    verdicts = _evaluate(runs, config, mc, edges)
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
