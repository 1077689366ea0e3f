"""Gate statistics: mean 1, variance rate/(1-rate), identity in eval mode and at rate 0.

Tolerances are Z standard errors of the estimate for the sample size used, so
a correct gate fails with probability below 1e-6 and a biased one is caught.
"""

from __future__ import annotations

import math

import pytest
import torch

from dropout_lab.gates import BernoulliGate, GaussianGate, NoGate, make_gate, sampling_gates, set_generator

N = 1 << 21
Z = 5.0
RATES = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def noise(kind: str, rate: float, n: int = N, seed: int = 0) -> torch.Tensor:
    gate = make_gate(kind, rate).train()
    gate.generator = torch.Generator().manual_seed(seed)
    return gate(torch.ones(n, dtype=torch.float64))


def central_fourth_moment(kind: str, rate: float) -> float:
    p, var = 1.0 - rate, rate / (1.0 - rate)
    if kind == "gaussian":
        return 3.0 * var**2
    # X = 1/p with probability p, else 0; X - 1 is (1-p)/p or -1.
    return p * ((1.0 - p) / p) ** 4 + (1.0 - p)


@pytest.mark.parametrize("kind", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("rate", RATES)
def test_mean_one_and_matched_variance(kind, rate):
    g = noise(kind, rate)
    var = rate / (1.0 - rate)
    mean_se = math.sqrt(var / N)
    var_se = math.sqrt((central_fourth_moment(kind, rate) - var**2) / N)
    assert abs(float(g.mean()) - 1.0) < Z * mean_se
    # The second term bounds the bias from estimating the mean (zero-width SE at rate 0.5).
    assert abs(float(g.var()) - var) < Z * var_se + Z**2 * var / N


@pytest.mark.parametrize("rate", RATES)
def test_bernoulli_and_gaussian_variance_agree(rate):
    bern, gauss = BernoulliGate(rate), GaussianGate(rate)
    assert bern.variance == pytest.approx(gauss.variance, rel=1e-12)
    assert gauss.sigma**2 == pytest.approx(rate / (1.0 - rate), rel=1e-12)


@pytest.mark.parametrize("rate", [0.2, 0.5, 0.8])
def test_bernoulli_takes_two_values_with_the_right_frequency(rate):
    g = noise("bernoulli", rate)
    kept = g != 0
    assert torch.allclose(g[kept], torch.full_like(g[kept], 1.0 / (1.0 - rate)), rtol=1e-4)
    p = 1.0 - rate
    assert abs(float(kept.double().mean()) - p) < Z * math.sqrt(p * (1 - p) / N)


def test_every_random_word_position_is_unbiased():
    """Four 16-bit draws come from each 64-bit word; each position must keep with probability p."""
    g = noise("bernoulli", 0.5).view(-1, 4)
    se = math.sqrt(0.25 / len(g))
    for position in range(4):
        assert abs(float((g[:, position] != 0).double().mean()) - 0.5) < Z * se


@pytest.mark.parametrize("kind", ["bernoulli", "gaussian", "none"])
def test_identity_in_eval_mode_and_at_rate_zero(kind):
    x = torch.randn(64, 33)
    rate = 0.0 if kind == "none" else 0.5
    gate = make_gate(kind, rate).eval()
    assert torch.equal(gate(x), x)
    assert torch.equal(make_gate(kind, 0.0).train()(x), x)


@pytest.mark.parametrize("kind", ["bernoulli", "gaussian"])
def test_gradient_flows_through_the_sampled_noise(kind):
    gate = make_gate(kind, 0.4).train()
    gate.generator = torch.Generator().manual_seed(1)
    x = torch.randn(50, 40, requires_grad=True)
    y = gate(x)
    y.sum().backward()
    assert torch.allclose(x.grad * x.detach(), y.detach(), atol=1e-6)  # d(x*g)/dx = g


def test_same_generator_seed_gives_same_noise_and_other_seeds_differ():
    assert torch.equal(noise("bernoulli", 0.5, 1000, seed=3), noise("bernoulli", 0.5, 1000, seed=3))
    assert not torch.equal(noise("bernoulli", 0.5, 1000, seed=3), noise("bernoulli", 0.5, 1000, seed=4))
    assert torch.equal(noise("gaussian", 0.5, 1000, seed=3), noise("gaussian", 0.5, 1000, seed=3))


def test_odd_shapes_and_dtypes():
    gate = BernoulliGate(0.5).train()
    for shape in [(1,), (3, 5), (2, 3, 7, 7)]:
        for dtype in (torch.float32, torch.float64, torch.bfloat16):
            y = gate(torch.ones(shape, dtype=dtype))
            assert y.shape == shape and y.dtype == dtype


def test_invalid_rates_are_refused():
    for rate in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="outside"):
            BernoulliGate(rate)
    with pytest.raises(ValueError, match="cannot drop"):
        NoGate(0.3)
    with pytest.raises(ValueError, match="unknown gate"):
        make_gate("uniform", 0.5)


def test_sampling_gates_switches_only_the_gates():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), BernoulliGate(0.5), torch.nn.BatchNorm1d(4))
    model.eval()
    with sampling_gates(model):
        assert model[1].training and not model[0].training and not model[2].training
    assert not model[1].training
    set_generator(model, torch.Generator().manual_seed(0))
    assert model[1].generator is not None
