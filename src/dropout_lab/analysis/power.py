"""What the seeds at hand can see, and how many seeds a verdict not yet decided would need.

Every claim compares cells of seeds: two cells by a Welch test (independent runs) or one cell of
paired differences (runs paired by seed). From the observed seed-to-seed spread `sd` (the pooled sd of
the two cells, or the sd of the paired differences) and the seeds per cell `n`:

- `detectable_difference`: the smallest true difference a one-sided t-test at level alpha detects
  with the configured power (the textbook minimum detectable effect, noncentral t);
- `smallest_margin`: the narrowest equivalence margin a TOST at level alpha shows with that power when
  the true difference is 0;
- `seeds_for_difference` / `seeds_for_equivalence`: the seeds per cell at which the observed difference
  would be shown significant, or shown equivalent within the margin, with that power.

The power of a TOST is taken as P1 + P2 - 1, where P1 and P2 are the powers of its two one-sided
tests (a lower bound, exact in the limit of many seeds). The t-test powers are statsmodels'.
"""

from __future__ import annotations

import math

from statsmodels.stats.power import TTestIndPower, TTestPower

MAX_SEEDS = 10_000  # beyond this, "more seeds" is not an answer: the verdict needs another design


def _power(effect: float, n: int, alpha: float, paired: bool) -> float:
    """Power of the one-sided t-test for a standardised effect at n seeds per cell."""
    if effect <= 0:
        return alpha if effect == 0 else 0.0
    if paired:
        return float(TTestPower().power(effect_size=effect, nobs=n, alpha=alpha, alternative="larger"))
    return float(TTestIndPower().power(effect_size=effect, nobs1=n, ratio=1.0, alpha=alpha, alternative="larger"))


def _solve_effect(n: int, alpha: float, power: float, paired: bool) -> float:
    if paired:
        return float(TTestPower().solve_power(nobs=n, alpha=alpha, power=power, alternative="larger"))
    return float(TTestIndPower().solve_power(nobs1=n, ratio=1.0, alpha=alpha, power=power, alternative="larger"))


def detectable_difference(sd: float, n: int, alpha: float, power: float, paired: bool) -> float:
    """The smallest true difference detected with `power` by a one-sided test at level `alpha`, n seeds per cell;
    NaN where it is undefined (fewer than 2 seeds, or no spread to scale by)."""
    if n < 2 or not math.isfinite(sd) or sd <= 0:
        return math.nan
    return _solve_effect(n, alpha, power, paired) * sd


def tost_power(sd: float, n: int, diff: float, margin: float, alpha: float, paired: bool) -> float:
    """The power of a TOST within +/- margin at n seeds per cell when the true difference is `diff`."""
    if n < 2 or sd <= 0:
        return 0.0
    lower = _power((margin + diff) / sd, n, alpha, paired)
    upper = _power((margin - diff) / sd, n, alpha, paired)
    return max(0.0, lower + upper - 1.0)


def smallest_margin(sd: float, n: int, alpha: float, power: float, paired: bool) -> float:
    """The narrowest margin a TOST shows with `power` when the true difference is 0 (each one-sided test then
    needs power (1 + power) / 2)."""
    return detectable_difference(sd, n, alpha, (1.0 + power) / 2.0, paired)


def _seeds(reached, most: int = MAX_SEEDS) -> int | None:
    """The smallest n >= 2 with reached(n), by doubling then bisection; None beyond `most`."""
    if not reached(most):
        return None
    high = 2
    while not reached(high):
        high *= 2
    low = max(2, high // 2)
    while low < high:
        mid = (low + high) // 2
        low, high = (low, mid) if reached(mid) else (mid + 1, high)
    return high


def seeds_for_difference(sd: float, diff: float, alpha: float, power: float, paired: bool) -> int | None:
    """Seeds per cell at which a one-sided test detects the observed difference |diff| with `power`; None where
    no number of seeds would (no difference, or beyond MAX_SEEDS)."""
    if not math.isfinite(sd) or sd <= 0 or not math.isfinite(diff) or diff == 0:
        return None
    return _seeds(lambda n: _power(abs(diff) / sd, n, alpha, paired) >= power)


def seeds_for_equivalence(sd: float, diff: float, margin: float, alpha: float, power: float,
                          paired: bool) -> int | None:
    """Seeds per cell at which a TOST within +/- margin shows equivalence with `power`, if the true difference
    is the observed `diff`; None where it cannot (|diff| at or beyond the margin)."""
    if not math.isfinite(sd) or sd <= 0 or not math.isfinite(diff) or abs(diff) >= margin:
        return None
    return _seeds(lambda n: tost_power(sd, n, diff, margin, alpha, paired) >= power)


def pooled_sd(sd_a: float, sd_b: float) -> float:
    """The pooled sd of two cells with equal seeds."""
    return math.sqrt((sd_a ** 2 + sd_b ** 2) / 2.0)
