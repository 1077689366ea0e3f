"""The linear-unit math and dropout linear regression, against known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dropout_lab.analysis import theory as th
from dropout_lab.training.gates import make_gate

GATES = [th.Gate(kind, inverted) for kind in ("bernoulli", "gaussian") for inverted in (False, True)]


@pytest.mark.parametrize("gate", GATES, ids=lambda g: f"{g.kind}-{'inv' if g.inverted else 'article'}")
def test_analytic_gradient_is_the_autograd_gradient_of_er(gate):
    rng = np.random.default_rng(1)
    w, x, p = rng.normal(size=7), rng.normal(size=7), rng.uniform(0.1, 0.9, size=7)
    t = 0.3
    wt = torch.tensor(w, requires_grad=True)
    mean, var = (torch.tensor(v) for v in gate.moments(p))
    xt = torch.tensor(x)
    er = 0.5 * (t - (mean * wt * xt).sum()) ** 2 + 0.5 * (var * wt**2 * xt**2).sum()
    er.backward()
    assert np.allclose(th.expected_gradient(w, x, t, p, gate), wt.grad.numpy(), rtol=1e-12)
    assert th.regularised_error(w, x, t, p, gate) == pytest.approx(float(er.detach()))


def test_article_gate_gives_baldi_sadowski_eq6():
    rng = np.random.default_rng(2)
    w, x, p = rng.normal(size=5), rng.normal(size=5), rng.uniform(0.1, 0.9, size=5)
    t = -0.7
    en_grad = -(t - np.sum(p * w * x)) * p * x  # gradient of E_N, the p-scaled network
    expected = en_grad + w * p * (1 - p) * x**2
    assert np.allclose(th.expected_gradient(w, x, t, p, th.Gate("bernoulli", False)), expected)


@pytest.mark.parametrize("gate", GATES, ids=lambda g: f"{g.kind}-{'inv' if g.inverted else 'article'}")
def test_monte_carlo_mean_converges_within_its_bound(gate):
    check = th.gradient_check(gate, units=10, samples=(100, 1000, 10_000, 100_000), seed=3)
    assert all(e <= b for e, b in zip(check.relative_error, check.bound))
    assert check.relative_error[-1] < 0.02
    slope = np.polyfit(np.log(check.samples), np.log(check.relative_error), 1)[0]
    assert -0.7 < slope < -0.3  # 1/sqrt(n)


@pytest.mark.parametrize("rate", [0.0, 0.3, 0.5, 0.8])
def test_closed_form_matches_a_direct_solve_of_the_expected_loss(rate):
    x, y, _ = th.regression_problem(n=300, d=6, seed=4)
    p = 1 - rate
    gamma = np.sqrt(np.diag(x.T @ x))
    # Expected loss as one least-squares problem: stack X over sqrt((1-p)/p) Gamma, y over zeros.
    a = np.vstack([x, math.sqrt(rate / p) * np.diag(gamma)])
    b = np.concatenate([y, np.zeros(len(gamma))])
    direct = np.linalg.lstsq(a, b, rcond=None)[0]
    assert np.allclose(th.closed_form(x, y, rate), direct, rtol=1e-9, atol=1e-12)


def test_expected_dropout_loss_is_the_ridge_objective():
    x, y, _ = th.regression_problem(n=50, d=4, seed=5)
    rate, w = 0.4, np.array([0.5, -1.0, 2.0, 0.1])
    p = 1 - rate
    rng = np.random.default_rng(6)
    masks = (rng.random((200_000, *x.shape[1:])) < p) / p
    sampled = np.mean([np.sum((y - (x * m) @ w) ** 2) for m in masks[:20_000]])
    ridge = np.sum((y - x @ w) ** 2) + (rate / p) * np.sum(np.diag(x.T @ x) * w**2)
    assert sampled == pytest.approx(ridge, rel=0.02)


def test_sgd_with_real_masks_reaches_the_closed_form():
    x, y, _ = th.regression_problem(n=1000, d=6, seed=7)
    for rate in (0.2, 0.5):
        sgd = th.sgd_dropout_regression(x, y, rate, epochs=200, seed=1)
        exact = th.closed_form(x, y, rate)
        assert np.linalg.norm(sgd - exact) / np.linalg.norm(exact) < 0.03


def test_penalties_in_the_two_parametrisations():
    rates = [0.1 * i for i in range(1, 10)]
    assert max(rates, key=th.raw_penalty) == pytest.approx(0.5)
    effective = [th.effective_penalty(r) for r in rates]
    assert all(a < b for a, b in zip(effective, effective[1:]))


@pytest.mark.parametrize("kind", ["bernoulli", "gaussian"])
def test_both_conventions_give_the_same_predictions_in_expectation(kind):
    """A gate then a linear layer: the MC mean in training mode equals the eval output, for both
    conventions, and the scaled convention with weights W/p predicts what the inverted one does with W."""
    torch.manual_seed(0)
    rate, n = 0.4, 200_000
    x = torch.randn(1, 16, dtype=torch.float64)
    layer = torch.nn.Linear(16, 3).double()
    outputs = {}
    for convention in ("inverted", "scaled"):
        gate = make_gate(kind, rate, convention)
        gate.generator = torch.Generator().manual_seed(1)
        weight = layer.weight if convention == "inverted" else layer.weight / (1 - rate)
        gate.train()
        mc = (gate(x.expand(n, -1)) @ weight.T + layer.bias).mean(0)
        gate.eval()
        exact = (gate(x) @ weight.T + layer.bias)[0]
        se = (gate.train()(x.expand(20_000, -1)) @ weight.T).std(0) / math.sqrt(n)
        assert torch.all((mc - exact).abs() < 5 * se + 1e-9), (convention, mc, exact)
        outputs[convention] = exact
    assert torch.allclose(outputs["inverted"], outputs["scaled"], atol=1e-4)  # realised p differs by < 2e-5


def test_scaled_convention_without_scaling_is_off_by_p():
    gate = make_gate("bernoulli", 0.5, "scaled").eval()
    x = torch.ones(4)
    assert torch.allclose(gate(x), torch.full((4,), 0.5), atol=1e-4)
    assert torch.equal(make_gate("bernoulli", 0.5, "inverted").eval()(x), x)


def test_the_checks_are_kept_for_their_settings_and_made_anew_for_others(tmp_path, monkeypatch):
    """The second workflow folder takes the checks' results from the cache, exactly as computed (floats through
    JSON); another seed is another result, computed again."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    settings = {"gradient": {"samples": [10, 100], "tolerance": 0.5, "seed": 0},
                "regression": {"rates": [0.0, 0.5], "samples": 200, "features": 3, "noise": 0.5, "epochs": 5,
                               "tolerance": 0.5, "seed": 0}}
    first, was_kept = th.kept_checks(settings)
    assert not was_kept and first["regression"]["rows"]

    def not_again(_settings):
        raise AssertionError("computed again")

    monkeypatch.setattr(th, "run_checks", not_again)
    again, was_kept = th.kept_checks(settings)
    assert was_kept and again == first
    other = {**settings, "regression": {**settings["regression"], "seed": 1}}
    with pytest.raises(AssertionError, match="computed again"):
        th.kept_checks(other)
