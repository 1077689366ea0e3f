"""What the seeds can see: the power figures against the textbook formulas."""

from __future__ import annotations

import math

import pytest
from scipy.stats import norm, t

from dropout_lab.analysis import power

ALPHA, POWER = 0.05, 0.8


def test_detectable_difference_matches_the_noncentral_t_formula():
    # Paired test, n = 10: the standardised effect d solves 1 - T_{n-1, d sqrt(n)}(t_{1-alpha, n-1}) = power.
    d = power.detectable_difference(1.0, 10, ALPHA, POWER, paired=True)
    from scipy.stats import nct
    crit = t.ppf(1 - ALPHA, 9)
    assert 1 - nct.cdf(crit, 9, d * math.sqrt(10)) == pytest.approx(POWER, abs=1e-5)
    # and the normal approximation (z_{1-alpha} + z_{power}) sigma / sqrt(n) from below, as the t makes it wider
    z = (norm.ppf(1 - ALPHA) + norm.ppf(POWER)) / math.sqrt(10)
    assert z < d < 1.15 * z


def test_seeds_for_a_difference_match_the_textbook_sample_size():
    # Two independent cells, sigma = 1, difference 0.5: n = 2 (z_a + z_b)^2 sigma^2 / delta^2 = 49.5 per cell by the
    # normal formula; the t-test needs one or two more.
    textbook = 2 * (norm.ppf(1 - ALPHA) + norm.ppf(POWER)) ** 2 / 0.25
    n = power.seeds_for_difference(1.0, 0.5, ALPHA, POWER, paired=False)
    assert math.ceil(textbook) <= n <= math.ceil(textbook) + 2
    assert power.seeds_for_difference(1.0, 0.0, ALPHA, POWER, paired=False) is None


def test_seeds_for_equivalence_match_the_tost_sample_size():
    # Paired TOST, true difference 0, margin 0.5 sigma: n = (z_a + z_{(1+power)/2})^2 sigma^2 / margin^2 (Chow, Shao &
    # Wang, Sample Size Calculations in Clinical Research, 3.2), about 34.3; the t-test needs a little more.
    textbook = (norm.ppf(1 - ALPHA) + norm.ppf((1 + POWER) / 2)) ** 2 / 0.25
    n = power.seeds_for_equivalence(1.0, 0.0, 0.5, ALPHA, POWER, paired=True)
    assert math.ceil(textbook) <= n <= math.ceil(textbook) + 2
    assert power.tost_power(1.0, n, 0.0, 0.5, ALPHA, paired=True) >= POWER
    assert power.tost_power(1.0, n - 1, 0.0, 0.5, ALPHA, paired=True) < POWER
    # a difference at the margin can never be shown equivalent
    assert power.seeds_for_equivalence(1.0, 0.5, 0.5, ALPHA, POWER, paired=True) is None


def test_smallest_margin_is_the_margin_the_seeds_at_hand_would_show():
    margin = power.smallest_margin(0.4, 5, ALPHA, POWER, paired=True)
    assert power.seeds_for_equivalence(0.4, 0.0, margin * 1.001, ALPHA, POWER, paired=True) <= 5
    assert power.seeds_for_equivalence(0.4, 0.0, margin * 0.9, ALPHA, POWER, paired=True) > 5
