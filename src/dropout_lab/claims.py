"""Verdicts on the three claims, computed from the aggregated run table.

Each function takes the tidy table (one row per run) and the claim's settings
from config/config.yaml and returns a JSON-able dict: the claim, the statistic,
the estimate, a confidence interval or p-values, and a verdict that is one of
"supported", "not supported" or "inconclusive".
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import ttost_paired

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"


def _cells(df: pd.DataFrame, rate_col: str, metric: str) -> dict[float, np.ndarray]:
    return {float(rate): group[metric].to_numpy(float) for rate, group in df.groupby(rate_col)}


def _holm(pvalues: list[float]) -> list[float]:
    if not pvalues:
        return []
    clean = [1.0 if not math.isfinite(p) else p for p in pvalues]
    return list(multipletests(clean, method="holm")[1])


def best_set(
    df: pd.DataFrame, rate_col: str, metric: str, higher_is_better: bool, alpha: float, samples: int, seed: int = 0
) -> dict[str, Any]:
    """The rate with the best mean `metric`, and the rates not significantly worse than it.

    A seed bootstrap (seeds resampled with replacement within each rate) gives
    how often each rate comes out best and a percentile interval for the best
    mean. Each other rate is compared with the best by a one-sided Welch t-test
    (a bootstrap of five seeds understates the spread), Holm-corrected; the set
    holds the best rate and every rate whose corrected p-value is at least alpha.
    """
    cells = _cells(df, rate_col, metric)
    rates = sorted(cells)
    sign = 1.0 if higher_is_better else -1.0
    means = {r: float(np.mean(v)) for r, v in cells.items()}
    best = max(rates, key=lambda r: sign * means[r])
    rng = np.random.default_rng(seed)
    boot = {r: rng.choice(v, size=(samples, len(v)), replace=True).mean(axis=1) for r, v in cells.items()}
    argmax = np.array(rates)[np.argmax(np.stack([sign * boot[r] for r in rates]), axis=0)]
    others = [r for r in rates if r != best]
    raw = [_welch_greater(sign * cells[best], sign * cells[r]) for r in others]
    adjusted = dict(zip(others, _holm(raw)))
    members = [best] + [r for r in others if adjusted[r] >= alpha]
    lo, hi = np.quantile(boot[best], [alpha / 2, 1 - alpha / 2])
    return {
        "best": best,
        "best_mean": means[best],
        "best_ci": [float(lo), float(hi)],
        "set": sorted(members),
        "argmax_frequency": {f"{r:g}": float(np.mean(argmax == r)) for r in rates},
        "p_adjusted": {f"{r:g}": float(p) for r, p in adjusted.items()},
        "table": [
            {"rate": r, "mean": means[r], "sd": float(np.std(cells[r], ddof=1)) if len(cells[r]) > 1 else math.nan,
             "n": int(len(cells[r]))}
            for r in rates
        ],
    }


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
    if not any(math.isclose(r, claimed) for r in (row["rate"] for row in result["table"])):
        verdict, reason = INCONCLUSIVE, f"rate {claimed:g} is not in the grid"
    else:
        verdict, reason = _sharp_verdict(result, claimed, window)
    band = settings["published_band"]
    return {
        "claim": "Dropping hidden units at rate 0.5 (retain p = 0.5) gives the best test accuracy",
        "statistic": "argmax over the rate grid of mean test accuracy over seeds; rates not significantly "
        "worse (one-sided Welch, Holm; seed bootstrap for P(best)) form the best set",
        "estimate": result["best"],
        **result,
        "published_band": band,
        "set_within_published_band": all(band[0] - 1e-9 <= r <= band[1] + 1e-9 for r in result["set"]),
        "verdict": verdict,
        "reason": reason,
    }


def _smallest_claim(df: pd.DataFrame, rate_col: str, metric: str, reading: str, settings: Mapping[str, Any],
                    alpha: float, samples: int) -> dict:
    """Rate 0.5 regularises most, read as the rate where `metric` is smallest (the same test as claim 1a)."""
    result = best_set(df, rate_col, metric, False, alpha, samples)
    verdict, reason = _sharp_verdict(result, settings["claimed_rate"], settings["sharp_window"])
    return {
        "claim": f"Rate 0.5 regularises most (smallest {reading})",
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


def _welch_greater(a: np.ndarray, b: np.ndarray) -> float:
    """One-sided Welch p-value for mean(a) > mean(b); 1 when undefined (fewer than 2 values or no spread)."""
    if len(a) < 2 or len(b) < 2:
        return 1.0
    if np.std(a) == 0 and np.std(b) == 0:
        return 0.0 if a.mean() > b.mean() else 1.0
    p = stats.ttest_ind(a, b, equal_var=False, alternative="greater").pvalue
    return float(p) if math.isfinite(p) else 1.0


def input_rate_claim(df: pd.DataFrame, settings: Mapping[str, Any], alpha: float) -> dict:
    """Claim 2: input layers should drop at rate <= threshold; higher rates are worse."""
    threshold = settings["threshold"]
    cells = _cells(df, "input_rate", "test_acc")
    means = {r: float(np.mean(v)) for r, v in cells.items()}
    low = [r for r in cells if r <= threshold + 1e-9]
    high = [r for r in cells if r > threshold + 1e-9]
    if not low or not high:
        return {"claim": "Input rate <= threshold", "verdict": INCONCLUSIVE,
                "reason": f"the grid needs rates on both sides of {threshold:g}"}
    best = max(means, key=means.get)
    best_low = max(low, key=means.get)
    worse = _holm([_welch_greater(cells[best_low], cells[r]) for r in high])
    better = _holm([_welch_greater(cells[r], cells[best_low]) for r in high])
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
        "table": [{"rate": r, "mean": means[r], "sd": float(np.std(cells[r], ddof=1)) if len(cells[r]) > 1
                   else math.nan, "n": len(cells[r])} for r in sorted(cells)],
        "p_worse_adjusted": {f"{r:g}": float(p) for r, p in zip(high, worse)},
        "p_better_adjusted": {f"{r:g}": float(p) for r, p in zip(high, better)},
        "verdict": verdict,
        "reason": reason,
    }


def _tost(diffs: np.ndarray, margin: float) -> float:
    """p-value of the paired TOST that the mean difference lies within (-margin, margin)."""
    if len(diffs) < 2:
        return 1.0
    if np.std(diffs) == 0:
        return 0.0 if abs(diffs.mean()) < margin else 1.0
    p = ttost_paired(diffs, np.zeros_like(diffs), -margin, margin)[0]
    return float(p) if math.isfinite(p) else 1.0


def _worse_beyond(diffs: np.ndarray, margin: float) -> float:
    """One-sided p-value that the mean difference is below -margin (Gaussian worse by more than the margin)."""
    if len(diffs) < 2:
        return 1.0
    if np.std(diffs) == 0:
        return 0.0 if diffs.mean() < -margin else 1.0
    p = stats.ttest_1samp(diffs, -margin, alternative="less").pvalue
    return float(p) if math.isfinite(p) else 1.0


def parity_claim(df: pd.DataFrame, rate_col: str, gates: list[str], settings: Mapping[str, Any], alpha: float) -> dict:
    """Claim 3: the Gaussian gate with matched variance does as well as the Bernoulli gate."""
    margin = settings["margin"]
    reference, other = gates  # e.g. bernoulli, gaussian
    wide = df.pivot_table(index=[rate_col, "seed"], columns="gate", values="test_acc").dropna()
    rows = []
    for rate, group in wide.groupby(level=0):
        diffs = (group[other] - group[reference]).to_numpy(float)
        n = len(diffs)
        mean = float(diffs.mean())
        if n > 1:
            half = stats.t.ppf(1 - alpha, n - 1) * diffs.std(ddof=1) / math.sqrt(n)  # the TOST's (1 - 2 alpha) CI
            ci = [mean - half, mean + half]
        else:
            ci = [math.nan, math.nan]
        rows.append({"rate": float(rate), "mean_diff": mean, "ci": ci, "n": n,
                     "p_tost": _tost(diffs, margin), "p_worse": _worse_beyond(diffs, margin)})
    worse_adjusted = _holm([r["p_worse"] for r in rows])
    for row, p in zip(rows, worse_adjusted):
        row["p_worse_adjusted"] = p
        row["equivalent"] = row["p_tost"] < alpha
    if not rows:
        verdict, reason = INCONCLUSIVE, "no paired runs"
    elif any(p < alpha for p in worse_adjusted):
        verdict, reason = NOT_SUPPORTED, f"{other} is significantly worse than {reference} by more than the margin"
    elif all(r["equivalent"] for r in rows):
        verdict, reason = SUPPORTED, f"the two gates are equivalent within {margin:g} at every rate"
    else:
        verdict = INCONCLUSIVE
        reason = f"equivalence within {margin:g} is shown at {sum(r['equivalent'] for r in rows)} of {len(rows)} rates"
    return {
        "claim": f"{other.capitalize()} dropout with matched variance does as well as {reference} dropout",
        "statistic": f"paired ({other} - {reference}) test accuracy per rate, paired by seed; TOST with margin "
        f"{margin:g} at level {alpha:g}; one-sided tests for being worse by more than the margin, Holm-corrected",
        "estimate": float(np.mean([r["mean_diff"] for r in rows])) if rows else math.nan,
        "margin": margin,
        "table": rows,
        "verdict": verdict,
        "reason": reason,
    }


def inference_claim(mc: pd.DataFrame, settings: Mapping[str, Any], alpha: float) -> dict:
    """Monte-Carlo averaging over k masks matches the deterministic (weight-scaled) net within a margin."""
    margin = settings["margin"]
    k = min(settings["k"], int(mc["k"].max()))
    at_k = mc[mc["k"] == k]
    rows = []
    for gate, group in at_k.groupby("gate"):
        diffs = (group["mc_test_acc"] - group["test_acc"]).to_numpy(float)
        rows.append({"gate": gate, "k": k, "mean_diff": float(diffs.mean()), "n": len(diffs),
                     "p_tost": _tost(diffs, margin),
                     "p_outside": min(_worse_beyond(diffs, margin), _worse_beyond(-diffs, margin))})
    if any(r["p_outside"] < alpha / 2 for r in rows):
        verdict, reason = NOT_SUPPORTED, f"MC averaging over {k} masks differs from the deterministic net by more than the margin"
    elif rows and all(r["p_tost"] < alpha for r in rows):
        verdict, reason = SUPPORTED, f"MC averaging over {k} masks matches the deterministic net within {margin:g} for every gate"
    else:
        verdict, reason = INCONCLUSIVE, f"equivalence within {margin:g} at k = {k} is not shown for every gate"
    return {
        "claim": f"Averaging {settings['k']} sampled networks matches the deterministic net at inference",
        "statistic": f"per run, MC test accuracy after k = {k} masks minus the deterministic net's; TOST with "
        f"margin {margin:g} per gate",
        "estimate": float(np.mean([r["mean_diff"] for r in rows])) if rows else math.nan,
        "k": k,
        "table": rows,
        "verdict": verdict,
        "reason": reason,
    }


def convention_claim(runs: pd.DataFrame, alpha: float) -> dict:
    """The article's scaled convention needs its activations scaled by p at inference; inverted gates need nothing."""
    rows = []
    for gate, group in runs.groupby("gate"):
        scaled = group[group["convention"] == "scaled"]
        inverted = group[group["convention"] == "inverted"].set_index("seed")
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
            "p_loss_worse_unscaled": _welch_greater(scaled["unscaled_test_loss"].to_numpy(float),
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


def evaluate_claims(runs: pd.DataFrame, config: Mapping[str, Any], mc: pd.DataFrame | None = None) -> dict[str, Any]:
    """All verdicts for the experiments that ran; a claim whose experiment did not run is skipped."""
    settings = config["claims"]
    alpha, samples = settings["alpha"], settings["bootstrap_samples"]
    out: dict[str, Any] = {}
    runs = runs[runs["status"] == "ok"]  # diverged runs are counted (diverged_runs), never averaged in
    if mc is not None and len(mc):
        mc = mc[mc["run"].isin(runs["run"])]

    def sweep(claim: str, name: str) -> tuple[pd.DataFrame, Mapping[str, Any]] | None:
        experiment = settings[claim]["experiment"]
        column = {"hidden_sweep": "in_hidden_sweep", "input_sweep": "in_input_sweep",
                  "gate_parity": "in_gate_parity", "conventions": "in_conventions"}[name]
        rows = runs[(runs["experiment"] == experiment) & runs[column]]
        return (rows, config["grids"][experiment][name]) if len(rows) else None

    found = sweep("optimum", "hidden_sweep")
    if found:
        rows, spec = found
        rows = rows[rows["gate"] == spec.get("gates", ["bernoulli"])[0]]
        col = f"{spec['vary']}_rate"
        out["optimum"] = optimum_claim(rows, col, settings["optimum"], alpha, samples)
        out["regularisation"] = regularisation_claim(rows, col, settings["optimum"], alpha, samples)
        out["weight_norm"] = weight_norm_claim(rows, col, settings["optimum"], alpha, samples)
    found = sweep("input_rate", "input_sweep")
    if found:
        rows, spec = found
        out["input_rate"] = input_rate_claim(rows[rows["gate"] == "bernoulli"], settings["input_rate"], alpha)
    found = sweep("gaussian_parity", "gate_parity")
    if found:
        rows, spec = found
        inverted = rows[rows["convention"] == "inverted"] if "convention" in rows else rows
        out["gaussian_parity"] = parity_claim(inverted, f"{spec['vary']}_rate", list(spec["gates"]),
                                              settings["gaussian_parity"], alpha)
    experiment = settings["inference"]["experiment"]
    if mc is not None and len(mc):
        own = mc[(mc["experiment"] == experiment) & (mc["convention"] == "inverted")]
        if len(own):
            out["inference"] = inference_claim(own, settings["inference"], alpha)
    if "conventions" in config["grids"].get(experiment, {}):
        rows = runs[(runs["experiment"] == experiment) & runs["in_conventions"]]
        if len(rows):
            out["conventions"] = convention_claim(rows, alpha)
    return out


def diverged_runs(runs: pd.DataFrame) -> dict[str, Any]:
    """How many runs diverged, and which (experiment, gate, convention, cell, seed, epoch)."""
    bad = runs[runs["status"] != "ok"]
    return {
        "count": int(len(bad)),
        "of": int(len(runs)),
        "runs": [
            {"experiment": r.experiment, "gate": r.gate, "convention": r.convention, "cell": r.cell,
             "seed": int(r.seed), "epoch": None if pd.isna(r.diverged_epoch) else int(r.diverged_epoch)}
            for r in bad.itertuples()
        ],
    }
