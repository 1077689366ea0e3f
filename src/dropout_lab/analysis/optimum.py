"""Claims 1a-1d: where along a rate sweep the best test accuracy, the smallest gap and the smallest weights lie.

Each takes the tidy table of one sweep's runs (one row per run) and the claim's settings
(config/config.yaml, claims.optimum) and returns its JSON-able result: the per-rate table, each rate
against the best, what the seeds could detect (analysis.power) and the verdict by the stated rule.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import pandas as pd

from dropout_lab.analysis.power import (
    detectable_difference,
    pooled_sd,
    seeds_for_difference,
    seeds_for_equivalence,
    smallest_margin,
)
from dropout_lab.analysis.statistics import (
    INCONCLUSIVE,
    NOT_SUPPORTED,
    SUPPORTED,
    against_best,
    best_set,
    cells_by_rate,
    ok_runs,
)
from dropout_lab.settings import vocabulary


def _near(rate: float, rates: list[float]) -> bool:
    return any(math.isclose(rate, r, abs_tol=1e-9) for r in rates)


def sweep_power(cells: Mapping[float, np.ndarray], best: float, comparisons: Mapping[float, Mapping[str, Any]],
                undecided: Mapping[float, str], margin: float | None, alpha: float, power: float) -> dict[str, Any]:
    """What a rate sweep's seeds can see (analysis.power): the smallest difference from the best that the median
    cell's spread could detect, the narrowest margin it could show, and for each comparison left undecided the
    seeds per cell that would decide it ("equivalence" or "difference" from the best)."""
    sds = [float(np.std(v, ddof=1)) for v in cells.values() if len(v) > 1]
    n = min(len(v) for v in cells.values())
    sd = float(np.median(sds)) if sds else math.nan
    needed: dict[str, int | None] = {}
    for rate, kind in undecided.items():
        spread = pooled_sd(float(np.std(cells[rate], ddof=1)), float(np.std(cells[best], ddof=1)))
        diff = comparisons[rate]["diff"]
        needed[f"{rate:g}"] = (seeds_for_equivalence(spread, diff, margin, alpha, power, paired=False)
                               if kind == "equivalence" else
                               seeds_for_difference(spread, diff, alpha, power, paired=False))
    known = [v for v in needed.values() if v is not None]
    return {"sd": sd, "n": n, "power": power, "detectable": detectable_difference(sd, n, alpha, power, paired=False),
            "smallest_margin": smallest_margin(sd, n, alpha, power, paired=False) if margin is not None else None,
            "undecided": {f"{r:g}": k for r, k in undecided.items()}, "seeds_needed": needed,
            "seeds_to_decide": max(known) if known and len(known) == len(needed) else None}


def _optimum_verdict(claimed: float, best: float, comparisons: Mapping[float, Mapping[str, Any]],
                     outside: list[float], margin: float) -> tuple[str, str, str, dict[float, str]]:
    """Claim 1a's rule (config/config.yaml, claims.optimum): (verdict, shape, reason, undecided comparisons)."""
    own = comparisons[claimed]
    flat = [r for r in outside if comparisons[r]["equivalent"] and not comparisons[r]["worse"]]
    open_outside = {r: "difference" for r in outside if not comparisons[r]["worse"] and r not in flat}
    points = 100 * margin
    if own.get("beyond_margin"):
        return NOT_SUPPORTED, "elsewhere", (f"rate {claimed:g} is worse than the best rate {best:g} by more than "
                                            f"{points:g} points"), {}
    if not own["equivalent"]:
        return INCONCLUSIVE, "undecided", (f"rate {claimed:g} is neither shown within {points:g} points of the best "
                                           f"rate {best:g} nor shown worse by more"), {claimed: "equivalence",
                                                                                      **open_outside}
    if flat:
        return NOT_SUPPORTED, "flat", (f"rate {claimed:g} is within {points:g} points of the best, and so are rates "
                                       f"outside {claimed:g} +/- its window ({', '.join(f'{r:g}' for r in flat)}) "
                                       "that are not worse: the optimum is a flat band, not one rate"), {}
    if open_outside:
        return INCONCLUSIVE, "undecided", (f"rate {claimed:g} is within {points:g} points of the best, but "
                                           f"{', '.join(f'{r:g}' for r in open_outside)} (outside its window) "
                                           "are not shown worse"), open_outside
    return SUPPORTED, "sharp", (f"rate {claimed:g} is within {points:g} points of the best and every rate outside "
                                "its window is significantly worse"), {}


def optimum_claim(df: pd.DataFrame, rate_col: str, settings: Mapping[str, Any], alpha: float, samples: int,
                  power: float = 0.8) -> dict:
    """Claim 1a: the best mean test accuracy over the rate grid lies at the claimed rate (0.5), by the rule of
    claims.optimum: equivalent to the best within the margin, every rate outside its window worse."""
    claimed, window, margin = settings["claimed_rate"], settings["sharp_window"], settings["margin"]
    result = best_set(df, rate_col, "test_acc", True, alpha, samples)
    cells = cells_by_rate(ok_runs(df), rate_col, "test_acc")
    band = settings["published_band"]
    base = {"claim": f"Dropping hidden units at rate {claimed:g} (retain p = {1 - claimed:g}) gives the best test "
            "accuracy",
            "statistic": f"mean test accuracy over seeds per rate; the claimed rate against the best by Welch TOST "
            f"within {margin:g}, every rate outside {claimed:g} +/- {window:g} against the best by one-sided Welch "
            "tests (Holm); a seed bootstrap gives P(best)", "estimate": result["best"], **result, "margin": margin,
            "published_band": band}
    if not _near(claimed, [r for r in cells if len(cells[r]) > 1]):
        return {**base, "verdict": INCONCLUSIVE, "shape": "undecided", "equivalent": [], "worse": [],
                "comparisons": {}, "equivalent_within_published_band": False,
                "reason": f"rate {claimed:g} has fewer than 2 runs that trained"}
    claimed = next(r for r in cells if math.isclose(r, claimed, abs_tol=1e-9))
    comparisons = against_best(cells, result["best"], 1.0, alpha, margin)
    outside = [r for r in cells if abs(r - claimed) > window + 1e-9 and r != result["best"]]
    if abs(result["best"] - claimed) > window + 1e-9:
        outside.append(result["best"])  # the best rate itself lies outside the window: never "worse than the best"
    verdict, shape, reason, undecided = _optimum_verdict(claimed, result["best"], comparisons, outside, margin)
    equivalent = sorted(r for r, c in comparisons.items() if c["equivalent"])
    return {**base, "verdict": verdict, "reason": reason, "shape": shape, "equivalent": equivalent,
            "worse": sorted(r for r, c in comparisons.items() if c["worse"]),
            "comparisons": {f"{r:g}": c for r, c in sorted(comparisons.items())},
            "equivalent_within_published_band": all(band[0] - 1e-9 <= r <= band[1] + 1e-9 for r in equivalent),
            "power": sweep_power(cells, result["best"], comparisons, undecided, margin, alpha, power)}


def width_claim(df: pd.DataFrame, rate_col: str, settings: Mapping[str, Any], alpha: float, samples: int,
                power: float = 0.8) -> dict:
    """Claim 1d: claim 1a's statistic over the width sweep, where p * n is held fixed (Srivastava et al., Fig. 9b)."""
    result = optimum_claim(df, rate_col, settings, alpha, samples, power)
    claimed = settings["claimed_rate"]
    result["claim"] = (f"With p * n fixed (the hidden layers widened as p falls), dropping hidden units at rate "
                       f"{claimed:g} gives the best test accuracy")
    result["widths"] = {f"{float(rate):g}": int(width) for rate, width in
                        df.groupby(rate_col)["width"].first().items()}
    return result


# Claim 1b's statistic (claims.optimum.gap): the aggregate column, and how the paper names it.
GAPS = dict(zip(vocabulary.GAPS, (("gap_loss", "test-minus-train loss gap"),
                                   ("gap_acc", "train-minus-test accuracy gap"))))
SATURATED = 0.999  # mean training accuracy at which the accuracy gap is the test error


def _smallest_claim(df: pd.DataFrame, rate_col: str, metric: str, reading: str, settings: Mapping[str, Any],
                    alpha: float, samples: int, power: float) -> dict:
    """Rate 0.5 regularises most, read as the rate where `metric` is smallest. An ordering, so no margin: supported
    when the smallest mean lies within the claimed rate's window and every rate outside it is significantly larger
    (one-sided Welch, Holm); not supported when the smallest lies outside and the claimed rate is significantly
    larger than it; else inconclusive, with the seeds that would decide each open comparison."""
    claimed, window = settings["claimed_rate"], settings["sharp_window"]
    result = best_set(df, rate_col, metric, False, alpha, samples)
    cells = cells_by_rate(ok_runs(df), rate_col, metric)
    best = result["best"]
    comparisons = against_best(cells, best, -1.0, alpha, None)
    outside = [r for r in cells if abs(r - claimed) > window + 1e-9 and r != best]
    open_outside = {r: "difference" for r in outside if not comparisons[r]["worse"]}
    inside = abs(best - claimed) <= window + 1e-9
    own = next((c for r, c in comparisons.items() if math.isclose(r, claimed, abs_tol=1e-9)), None)
    if inside and not open_outside:
        verdict, reason, undecided = SUPPORTED, (f"the smallest {reading} is at rate {best:g}, within {window:g} of "
                                                 f"{claimed:g}, and every rate outside that window is significantly "
                                                 "larger"), {}
    elif not inside and own is not None and own["worse"]:
        verdict, reason, undecided = NOT_SUPPORTED, (f"rate {claimed:g} has a significantly larger {reading} than "
                                                     f"rate {best:g}"), {}
    else:
        undecided = open_outside if inside else {r: "difference" for r in cells if math.isclose(r, claimed)}
        verdict, reason = INCONCLUSIVE, f"the smallest {reading} (rate {best:g}) is not set apart by the tests"
    return {
        "claim": f"Rate {claimed:g} regularises most (smallest {reading})",
        "statistic": f"argmin over the rate grid of the mean {reading}; every rate outside {claimed:g} +/- "
        f"{window:g} against it by one-sided Welch tests (Holm)",
        "estimate": best,
        **result,
        "comparisons": {f"{r:g}": c for r, c in sorted(comparisons.items())},
        "power": sweep_power(cells, best, comparisons, undecided, None, alpha, power),
        "verdict": verdict,
        "reason": reason,
    }


def regularisation_claim(df: pd.DataFrame, rate_col: str, settings: Mapping[str, Any], alpha: float, samples: int,
                         power: float = 0.8) -> dict:
    """Claim 1b: the smallest generalisation gap (claims.optimum.gap: the loss gap by default), with the other gap
    and the mean training accuracy per rate beside it; rates where training accuracy saturates are named."""
    column, reading = GAPS[settings.get("gap", "loss")]
    result = _smallest_claim(df, rate_col, column, reading, settings, alpha, samples, power)
    ok = ok_runs(df)
    means = ok.groupby(rate_col)[["gap_loss", "gap_acc", "train_acc"]].mean()
    result["gap"] = settings.get("gap", "loss")
    result["gaps"] = [{"rate": float(r), "gap_loss": float(row["gap_loss"]), "gap_acc": float(row["gap_acc"]),
                       "train_acc": float(row["train_acc"])} for r, row in means.iterrows()]
    result["saturated"] = [float(r) for r, row in means.iterrows() if row["train_acc"] >= SATURATED]
    result["saturated_at"] = SATURATED
    return result


def weight_norm_claim(df: pd.DataFrame, rate_col: str, settings: Mapping[str, Any], alpha: float, samples: int,
                      power: float = 0.8) -> dict:
    """Claim 1c: the smallest norm of the weights the trained net uses at inference."""
    return _smallest_claim(df, rate_col, "weight_norm", "norm of the weights the trained net uses at inference",
                           settings, alpha, samples, power)
