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
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import ttost_paired

from dropout_lab.settings import experiments
from dropout_lab.settings.claims import Claim, registered
from dropout_lab.settings.vocabulary import COLLAPSED, INVERTED, OK, REFERENCE_GATE, SCALED, rate_ranges

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"


def _ok(df: pd.DataFrame) -> pd.DataFrame:
    """The runs whose training worked (dropout_lab.settings.health); a table without statuses is all ok."""
    return df[df["status"] == OK] if "status" in df else df


def _failed_by(df: pd.DataFrame, col: str) -> dict[float, int]:
    """How many runs failed at each value of `col` (diverged or collapsed)."""
    if "status" not in df:
        return {}
    bad = df[df["status"] != OK]
    return {float(v): int(n) for v, n in bad.groupby(col).size().items()}


def _with_failed_cells(table: list[dict[str, Any]], failed: Mapping[float, int]) -> list[dict[str, Any]]:
    """Each row gets its count of failed runs; a rate where every run failed gets a row of its own (n = 0)."""
    rows = [{**row, "failed": failed.get(row["rate"], 0)} for row in table]
    known = {row["rate"] for row in rows}
    rows += [{"rate": r, "mean": math.nan, "sd": math.nan, "n": 0, "failed": k} for r, k in failed.items()
             if r not in known]
    return sorted(rows, key=lambda row: row["rate"])


def _cells(df: pd.DataFrame, rate_col: str, metric: str) -> dict[float, np.ndarray]:
    df = df[np.isfinite(df[metric].to_numpy(float))]
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
    failed = _failed_by(df, rate_col)
    cells = _cells(_ok(df), rate_col, metric)
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
        "table": _with_failed_cells([
            {"rate": r, "mean": means[r], "sd": float(np.std(cells[r], ddof=1)) if len(cells[r]) > 1 else math.nan,
             "n": int(len(cells[r]))}
            for r in rates
        ], failed),
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
    failed = _failed_by(df, "input_rate")
    cells = _cells(_ok(df), "input_rate", "test_acc")
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
        "table": _with_failed_cells([{"rate": r, "mean": means[r], "sd": float(np.std(cells[r], ddof=1))
                                      if len(cells[r]) > 1 else math.nan, "n": len(cells[r])} for r in sorted(cells)],
                                    failed),
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


def _paired_ci(diffs: np.ndarray, alpha: float) -> list[float]:
    """The TOST's (1 - 2 alpha) confidence interval of the mean paired difference."""
    if len(diffs) < 2:
        return [math.nan, math.nan]
    half = stats.t.ppf(1 - alpha, len(diffs) - 1) * diffs.std(ddof=1) / math.sqrt(len(diffs))
    return [float(diffs.mean() - half), float(diffs.mean() + half)]


def _equivalence_rows(rows: list[dict[str, Any]], alpha: float, worse: str, better: str) -> None:
    """Per row: Holm over rows for 'worse/better beyond the margin', then a per-row verdict, in place.

    A row is `equivalent` when its TOST rejects, `worse` or `better` when its mean lies
    significantly beyond the margin on that side, `no runs` when it has no pair, else
    `inconclusive`.
    """
    low = _holm([r["p_below"] for r in rows])
    high = _holm([r["p_above"] for r in rows])
    for row, p_low, p_high in zip(rows, low, high):
        row["p_below_adjusted"], row["p_above_adjusted"] = p_low, p_high
        row["equivalent"] = row["n"] > 1 and row["p_tost"] < alpha
        if row["n"] == 0:
            row["verdict"] = "no runs"
        elif p_low < alpha:
            row["verdict"] = worse
        elif row["equivalent"]:
            row["verdict"] = "equivalent"
        elif p_high < alpha:
            row["verdict"] = better
        else:
            row["verdict"] = "inconclusive"


def _equivalence_row(diffs: np.ndarray, margin: float, alpha: float) -> dict[str, Any]:
    n = len(diffs)
    return {"mean_diff": float(diffs.mean()) if n else math.nan, "ci": _paired_ci(diffs, alpha), "n": n,
            "p_tost": _tost(diffs, margin), "p_below": _worse_beyond(diffs, margin),
            "p_above": _worse_beyond(-diffs, margin)}


def _headline(rows: list[dict[str, Any]], grid: list[float], phrases: Mapping[str, str]) -> str:
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
                 grid: list[float] | None = None) -> dict:
    """Claim 3: a gate with matched variance does as well as the reference (Bernoulli) gate, judged per rate.

    At each rate: the paired (other - reference) test accuracy, TOST within the margin,
    and one-sided tests for a difference beyond the margin on either side (Holm over
    rates). A rate where a run of a pair failed loses that pair; a rate with no pair
    left is reported as such. No mean pooled across rates is reported: the verdict
    names the rates where the claim holds and where it fails.
    """
    margin = settings["margin"]
    reference, other = gates  # e.g. bernoulli, gaussian
    failed = _failed_by(df, rate_col)
    wide = _ok(df).pivot_table(index=[rate_col, "seed"], columns="gate", values="test_acc")
    wide = wide.reindex(columns=gates).dropna()
    grid = sorted(set(grid or []) | {float(r) for r in df[rate_col]})
    rows = []
    for rate in grid:
        group = wide[wide.index.get_level_values(0) == rate]
        diffs = (group[other] - group[reference]).to_numpy(float)
        rows.append({"rate": float(rate), **_equivalence_row(diffs, margin, alpha), "failed": failed.get(rate, 0)})
    _equivalence_rows(rows, alpha, worse=f"{other} worse", better=f"{other} better")
    verdicts = {r["verdict"] for r in rows}
    headline = _headline(rows, grid, {"equivalent": "equivalent", f"{other} better": f"{other} better",
                                      f"{other} worse": f"{other} worse", "inconclusive": "inconclusive",
                                      "no runs": "every run failed"})
    if not rows or verdicts == {"no runs"}:
        verdict, reason = INCONCLUSIVE, "no paired runs"
    elif f"{other} worse" in verdicts:
        verdict, reason = NOT_SUPPORTED, f"{other} is significantly worse than {reference} by more than the margin " \
            f"at some rates: {headline}"
    elif verdicts <= {"equivalent", f"{other} better"}:
        verdict, reason = SUPPORTED, f"{other} is equivalent within {margin:g} or better at every rate"
    else:
        verdict, reason = INCONCLUSIVE, f"the claim is not decided at every rate: {headline}"
    return {
        "claim": f"{other.capitalize()} dropout with matched variance does as well as {reference} dropout",
        "statistic": f"at each rate, paired ({other} - {reference}) test accuracy, paired by seed; TOST with margin "
        f"{margin:g} at level {alpha:g}; one-sided tests for a difference beyond the margin, Holm over rates",
        "headline": headline,
        "margin": margin,
        "gates": list(gates),
        "table": rows,
        "verdict": verdict,
        "reason": reason,
    }


def inference_claim(mc: pd.DataFrame, rate_col: str, settings: Mapping[str, Any], alpha: float) -> dict:
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
        failed = _failed_by(at_k[at_k["gate"] == gate], rate_col)
        ok = _ok(at_k[at_k["gate"] == gate])
        for rate in grid:
            group = ok[ok[rate_col] == rate]
            diffs = (group["mc_test_acc"] - group["test_acc"]).to_numpy(float)
            rows.append({"gate": gate, "rate": rate, "k": k, **_equivalence_row(diffs, margin, alpha),
                         "failed": failed.get(rate, 0)})
    _equivalence_rows(rows, alpha, worse="MC worse", better="MC better")
    phrases = {"equivalent": "matches", "MC better": "MC better", "MC worse": "MC worse",
               "inconclusive": "inconclusive", "no runs": "every run failed"}
    by_gate = {gate: _headline([r for r in rows if r["gate"] == gate], grid, phrases)
               for gate in sorted({r["gate"] for r in rows})}
    if len(set(by_gate.values())) == 1 and len(by_gate) > 1:
        headline = "both gates: " + next(iter(by_gate.values()))
    else:
        headline = "; ".join(f"{gate}: {text}" for gate, text in by_gate.items())
    verdicts = {r["verdict"] for r in rows}
    if verdicts & {"MC better", "MC worse"}:
        verdict, reason = NOT_SUPPORTED, f"MC averaging over {k} masks differs from the deterministic net by more " \
            f"than the margin at some rates ({headline})"
    elif rows and verdicts == {"equivalent"}:
        verdict, reason = SUPPORTED, f"MC averaging over {k} masks matches the deterministic net within {margin:g} " \
            "for every gate and rate"
    else:
        verdict, reason = INCONCLUSIVE, f"equivalence within {margin:g} at k = {k} is not shown everywhere ({headline})"
    return {
        "claim": f"Averaging {settings['k']} sampled networks matches the deterministic net at inference",
        "statistic": f"per run, MC test accuracy after k = {k} masks minus the deterministic net's; per gate and "
        f"rate, TOST with margin {margin:g}, one-sided tests beyond it (Holm)",
        "headline": headline,
        "margin": margin,
        "k": k,
        "table": rows,
        "verdict": verdict,
        "reason": reason,
    }


def convention_claim(runs: pd.DataFrame, alpha: float) -> dict:
    """The article's scaled convention needs its activations scaled by p at inference; inverted gates need nothing."""
    rows = []
    for gate, group in _ok(runs).groupby("gate"):
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


# Each claim judged on a sweep's runs (dropout_lab.settings.experiments names the claims of each sweep): a function of
def _best_rate(cells: Mapping[float, np.ndarray]) -> float:
    rates = sorted(cells)
    return rates[int(np.argmax([np.mean(cells[r]) for r in rates]))]


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
        if _ok(rows).empty:
            continue
        result = best_set(rows, rate_col, "test_acc", True, alpha, samples, seed)
        per_budget.append({"epochs": budget, "best": result["best"], "best_mean": result["best_mean"],
                           "set": result["set"], "table": result["table"]})
    ends = [_cells(_ok(df[df["epochs"] == b]), rate_col, "test_acc") for b in (budgets[0], budgets[-1])]
    if len(budgets) < 2 or not all(ends):
        return {"claim": "The best hidden rate does not move with the training budget (epochs)", "budgets": per_budget,
                "estimate": None, "interval": [None, None], "tolerance": tolerance, "verdict": INCONCLUSIVE,
                "reason": "fewer than two budgets have runs that trained"}
    shift = round(_best_rate(ends[1]) - _best_rate(ends[0]), 9)
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(samples):
        picks = [{r: rng.choice(v, size=len(v), replace=True) for r, v in cells.items()} for cells in ends]
        boot.append(round(_best_rate(picks[1]) - _best_rate(picks[0]), 9))
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
        _reference_gate(rows, spec), _rate(spec), s["optimum"], alpha, n),
    "regularisation": lambda rows, spec, s, alpha, n, claim: regularisation_claim(
        _reference_gate(rows, spec), _rate(spec), s["optimum"], alpha, n),
    "weight_norm": lambda rows, spec, s, alpha, n, claim: weight_norm_claim(
        _reference_gate(rows, spec), _rate(spec), s["optimum"], alpha, n),
    "width_optimum": lambda rows, spec, s, alpha, n, claim: width_claim(
        rows, _rate(spec), {**s["optimum"], **s["width_optimum"]}, alpha, n),
    "input_rate": lambda rows, spec, s, alpha, n, claim: input_rate_claim(
        _reference_gate(rows, spec), s["input_rate"], alpha),
    "gate_parity": lambda rows, spec, s, alpha, n, claim: parity_claim(
        _pair(rows, claim.params["reference"], claim.params["gate"]), _rate(spec),
        [claim.params["reference"], claim.params["gate"]], s["gate_parity"], alpha, list(spec["rates"])),
    "conventions": lambda rows, spec, s, alpha, n, claim: convention_claim(rows, alpha),
    "budget": lambda rows, spec, s, alpha, n, claim: budget_claim(
        _reference_gate(rows, spec), _rate(spec), s["budget"], alpha, n),
    "inference": lambda rows, spec, s, alpha, n, claim: inference_claim(rows, "hidden_rate", s["inference"], alpha),
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
