"""The statistics the claims share: best sets over a rate grid, Welch and Holm, paired equivalence (TOST).

Each function takes arrays or the tidy run table (one row per run) and returns numbers or JSON-able
rows; the claims (analysis.claims) turn them into verdicts. Failed runs (settings.health) are counted
per rate and left out of every statistic.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.weightstats import ttost_ind, ttost_paired

from dropout_lab.analysis.power import seeds_for_equivalence, smallest_margin
from dropout_lab.settings.vocabulary import OK

# The three verdicts a claim can get.
SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"


def ok_runs(df: pd.DataFrame) -> pd.DataFrame:
    """The runs whose training worked (dropout_lab.settings.health); a table without statuses is all ok."""
    return df[df["status"] == OK] if "status" in df else df


def failed_by(df: pd.DataFrame, col: str) -> dict[float, int]:
    """How many runs failed at each value of `col` (diverged or collapsed)."""
    if "status" not in df:
        return {}
    bad = df[df["status"] != OK]
    return {float(v): int(n) for v, n in bad.groupby(col).size().items()}


def with_failed_cells(table: list[dict[str, Any]], failed: Mapping[float, int]) -> list[dict[str, Any]]:
    """Each row gets its count of failed runs; a rate where every run failed gets a row of its own (n = 0)."""
    rows = [{**row, "failed": failed.get(row["rate"], 0)} for row in table]
    known = {row["rate"] for row in rows}
    rows += [{"rate": r, "mean": math.nan, "sd": math.nan, "n": 0, "failed": k} for r, k in failed.items()
             if r not in known]
    return sorted(rows, key=lambda row: row["rate"])


def cells_by_rate(df: pd.DataFrame, rate_col: str, metric: str) -> dict[float, np.ndarray]:
    df = df[np.isfinite(df[metric].to_numpy(float))]
    return {float(rate): group[metric].to_numpy(float) for rate, group in df.groupby(rate_col)}


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given (a p-value that is not finite counts as 1).

    The k-th smallest of m p-values becomes max over j <= k of min(1, (m - j + 1) p_(j)). Written out here:
    statsmodels' multipletests gives the same numbers but runs a full garbage collection on every call
    (0.1 s each with the tables loaded, 28 calls per claims job).
    """
    clean = np.array([p if math.isfinite(p) else 1.0 for p in pvalues], dtype=float)
    order = np.argsort(clean, kind="stable")
    steps = np.minimum(1.0, (len(clean) - np.arange(len(clean))) * clean[order])
    adjusted = np.empty_like(clean)
    adjusted[order] = np.maximum.accumulate(steps)
    return [float(p) for p in adjusted]


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
    failed = failed_by(df, rate_col)
    cells = cells_by_rate(ok_runs(df), rate_col, metric)
    rates = sorted(cells)
    sign = 1.0 if higher_is_better else -1.0
    means = {r: float(np.mean(v)) for r, v in cells.items()}
    best = max(rates, key=lambda r: sign * means[r])
    rng = np.random.default_rng(seed)
    boot = {r: rng.choice(v, size=(samples, len(v)), replace=True).mean(axis=1) for r, v in cells.items()}
    argmax = np.array(rates)[np.argmax(np.stack([sign * boot[r] for r in rates]), axis=0)]
    others = [r for r in rates if r != best]
    raw = [welch_greater(sign * cells[best], sign * cells[r]) for r in others]
    adjusted = dict(zip(others, holm(raw)))
    members = [best] + [r for r in others if adjusted[r] >= alpha]
    lo, hi = np.quantile(boot[best], [alpha / 2, 1 - alpha / 2])
    return {
        "best": best,
        "best_mean": means[best],
        "best_ci": [float(lo), float(hi)],
        "set": sorted(members),
        "argmax_frequency": {f"{r:g}": float(np.mean(argmax == r)) for r in rates},
        "p_adjusted": {f"{r:g}": float(p) for r, p in adjusted.items()},
        "table": with_failed_cells([
            {"rate": r, "mean": means[r], "sd": float(np.std(cells[r], ddof=1)) if len(cells[r]) > 1 else math.nan,
             "n": int(len(cells[r]))}
            for r in rates
        ], failed),
    }


def welch_beyond(a: np.ndarray, b: np.ndarray, margin: float) -> float:
    """One-sided Welch p-value for mean(a) - mean(b) > margin (a better than b by more than the margin)."""
    return welch_greater(a - margin, b)


def against_best(cells: Mapping[float, np.ndarray], best: float, sign: float, alpha: float,
                 margin: float | None) -> dict[float, dict[str, Any]]:
    """Each rate against the best one (`sign` +1: higher is better, -1: lower is better): the difference from the
    best in the better direction (<= 0), its (1 - 2 alpha) Welch interval, whether it is significantly worse
    (one-sided Welch, Holm over the other rates), and, with a margin, whether it is equivalent to the best (Welch
    TOST, Holm) and whether it is worse by more than the margin."""
    others = [r for r in sorted(cells) if r != best]
    top = sign * cells[best]
    worse = dict(zip(others, holm([welch_greater(top, sign * cells[r]) for r in others])))
    out: dict[float, dict[str, Any]] = {best: {"diff": 0.0, "ci": [0.0, 0.0], "worse": False, "equivalent": True,
                                               "beyond_margin": False}}
    if margin is not None:
        same = dict(zip(others, holm([tost_welch(sign * cells[r], top, margin) for r in others])))
        beyond = dict(zip(others, holm([welch_beyond(top, sign * cells[r], margin) for r in others])))
    for r in others:
        ci = welch_ci(sign * cells[r], top, alpha)
        out[r] = {"diff": float(np.mean(sign * cells[r]) - np.mean(top)), "ci": ci, "worse": bool(worse[r] < alpha),
                  "p_worse_adjusted": float(worse[r])}
        if margin is not None:
            out[r].update(equivalent=bool(same[r] < alpha), p_tost_adjusted=float(same[r]),
                          beyond_margin=bool(beyond[r] < alpha))
    return out


def welch_greater(a: np.ndarray, b: np.ndarray) -> float:
    """One-sided Welch p-value for mean(a) > mean(b); 1 when undefined (fewer than 2 values or no spread)."""
    if len(a) < 2 or len(b) < 2:
        return 1.0
    if np.std(a) == 0 and np.std(b) == 0:
        return 0.0 if a.mean() > b.mean() else 1.0
    p = stats.ttest_ind(a, b, equal_var=False, alternative="greater").pvalue
    return float(p) if math.isfinite(p) else 1.0


def tost(diffs: np.ndarray, margin: float) -> float:
    """p-value of the paired TOST that the mean difference lies within (-margin, margin)."""
    if len(diffs) < 2:
        return 1.0
    if np.std(diffs) == 0:
        return 0.0 if abs(diffs.mean()) < margin else 1.0
    p = ttost_paired(diffs, np.zeros_like(diffs), -margin, margin)[0]
    return float(p) if math.isfinite(p) else 1.0


def tost_welch(a: np.ndarray, b: np.ndarray, margin: float) -> float:
    """p-value of the Welch TOST that mean(a) - mean(b) lies within (-margin, margin) (independent cells)."""
    if len(a) < 2 or len(b) < 2:
        return 1.0
    if np.std(a) == 0 and np.std(b) == 0:
        return 0.0 if abs(a.mean() - b.mean()) < margin else 1.0
    p = ttost_ind(a, b, -margin, margin, usevar="unequal")[0]
    return float(p) if math.isfinite(p) else 1.0


def welch_ci(a: np.ndarray, b: np.ndarray, alpha: float) -> list[float]:
    """The Welch TOST's (1 - 2 alpha) confidence interval of mean(a) - mean(b)."""
    if len(a) < 2 or len(b) < 2:
        return [math.nan, math.nan]
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return [float(a.mean() - b.mean())] * 2
    dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = stats.t.ppf(1 - alpha, dof) * se
    return [float(a.mean() - b.mean() - half), float(a.mean() - b.mean() + half)]


def worse_beyond(diffs: np.ndarray, margin: float) -> float:
    """One-sided p-value that the mean difference is below -margin (Gaussian worse by more than the margin)."""
    if len(diffs) < 2:
        return 1.0
    if np.std(diffs) == 0:
        return 0.0 if diffs.mean() < -margin else 1.0
    p = stats.ttest_1samp(diffs, -margin, alternative="less").pvalue
    return float(p) if math.isfinite(p) else 1.0


def paired_ci(diffs: np.ndarray, alpha: float) -> list[float]:
    """The TOST's (1 - 2 alpha) confidence interval of the mean paired difference."""
    if len(diffs) < 2:
        return [math.nan, math.nan]
    half = stats.t.ppf(1 - alpha, len(diffs) - 1) * diffs.std(ddof=1) / math.sqrt(len(diffs))
    return [float(diffs.mean() - half), float(diffs.mean() + half)]


def equivalence_rows(rows: list[dict[str, Any]], alpha: float, worse: str, better: str) -> None:
    """Per row: Holm over rows for 'worse/better beyond the margin', then a per-row verdict, in place.

    A row is `equivalent` when its TOST rejects, `worse` or `better` when its mean lies
    significantly beyond the margin on that side, `no runs` when it has no pair, else
    `inconclusive`.
    """
    low = holm([r["p_below"] for r in rows])
    high = holm([r["p_above"] for r in rows])
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


def equivalence_row(diffs: np.ndarray, margin: float, alpha: float, power: float = 0.8) -> dict[str, Any]:
    """One cell of paired differences: mean, (1 - 2 alpha) interval, TOST and one-sided p-values, and what its
    seeds can see (analysis.power): the smallest margin they could show and the seeds equivalence would need."""
    n = len(diffs)
    sd = float(diffs.std(ddof=1)) if n > 1 else math.nan
    mean = float(diffs.mean()) if n else math.nan
    return {"mean_diff": mean, "ci": paired_ci(diffs, alpha), "n": n,
            "p_tost": tost(diffs, margin), "p_below": worse_beyond(diffs, margin),
            "p_above": worse_beyond(-diffs, margin), "sd_diff": sd,
            "smallest_margin": smallest_margin(sd, n, alpha, power, paired=True) if n > 1 else math.nan,
            "seeds_for_equivalence": seeds_for_equivalence(sd, mean, margin, alpha, power, paired=True)
            if n > 1 else None}


def seeds_to_decide(rows: list[dict[str, Any]]) -> int | None:
    """The seeds per cell that would decide every inconclusive row (the most any needs); None where one cannot
    be decided by more seeds (its observed difference lies at or beyond the margin) or none is inconclusive."""
    needed = [r["seeds_for_equivalence"] for r in rows if r.get("verdict") == "inconclusive"]
    return max(needed) if needed and None not in needed else None


def best_rate(cells: Mapping[float, np.ndarray]) -> float:
    rates = sorted(cells)
    return rates[int(np.argmax([np.mean(cells[r]) for r in rates]))]
