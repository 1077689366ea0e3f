"""Gate statistics: mean 1, variance rate/(1-rate), identity in eval mode and at rate 0.

Tolerances are Z standard errors of the estimate for the sample size used, so
a correct gate fails with probability below 1e-6 and a biased one is caught.
"""

from __future__ import annotations

import math

import pytest
import torch

from dropout_lab.training.gates import BernoulliGate, GaussianGate, NoGate, make_gate, sampling_gates, set_generator

N = 1 << 21
Z = 5.0
RATES = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def noise(kind: str, rate: float, n: int = N, seed: int = 0) -> torch.Tensor:
    """n draws of the gate's multiplicative noise: a unit gate on ones, a weight gate's mask of n weights."""
    gate = make_gate(kind, rate).train()
    gate.generator = torch.Generator().manual_seed(seed)
    if gate.target == "weights":
        return gate.sample_factor((n,), torch.device("cpu")).double()
    return gate(torch.ones(n, dtype=torch.float64))


def central_fourth_moment(kind: str, rate: float) -> float:
    p, var = 1.0 - rate, rate / (1.0 - rate)
    if kind == "gaussian":
        return 3.0 * var**2
    if kind == "uniform":  # U(-a, a) with a^2 = 3 var
        return (3.0 * var) ** 2 / 5.0
    # X = 1/p with probability p, else 0; X - 1 is (1-p)/p or -1.
    return p * ((1.0 - p) / p) ** 4 + (1.0 - p)


@pytest.mark.parametrize("kind", ["bernoulli", "gaussian", "uniform", "dropconnect"])
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


@pytest.mark.parametrize("kind", ["bernoulli", "gaussian", "uniform", "dropconnect", "none"])
def test_identity_in_eval_mode_and_at_rate_zero(kind):
    x = torch.randn(64, 33)
    rate = 0.0 if kind == "none" else 0.5
    gate = make_gate(kind, rate).eval()
    assert torch.equal(gate(x), x)
    assert torch.equal(make_gate(kind, 0.0).train()(x), x)


@pytest.mark.parametrize("kind", ["bernoulli", "gaussian", "uniform"])
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
        make_gate("triangular", 0.5)


def test_sampling_gates_switches_only_the_gates():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), BernoulliGate(0.5), torch.nn.BatchNorm1d(4))
    model.eval()
    with sampling_gates(model):
        assert model[1].training and not model[0].training and not model[2].training
    assert not model[1].training
    set_generator(model, torch.Generator().manual_seed(0))
    assert model[1].generator is not None


@pytest.mark.parametrize("rate", [0.1, 0.25, 0.5])
def test_uniform_noise_fills_its_interval(rate):
    g = noise("uniform", rate, 1 << 16)
    a = math.sqrt(3.0 * rate / (1.0 - rate))
    assert float(g.min()) >= 1.0 - a - 1e-6 and float(g.max()) <= 1.0 + a + 1e-6
    assert float(g.min()) < 1.0 - 0.99 * a and float(g.max()) > 1.0 + 0.99 * a


def test_dropconnect_masks_the_weights_of_the_layer_that_reads_its_slot():
    from dropout_lab.training.models import MLP

    torch.manual_seed(0)
    model = MLP(6, 3, 5, "dropconnect", 0.0, [0.5], "inverted").train()
    first, second = model.hidden[0], model.output
    assert first.weight_gate is None and second.weight_gate is model.hidden[2]
    set_generator(model, torch.Generator().manual_seed(1))
    x = torch.randn(4, 6)
    hidden = torch.relu(first(x))
    out = model(x)
    assert not torch.allclose(out, second(hidden))  # the output layer's weights were masked
    # ... by one 0-or-2 mask for the whole mini-batch, drawn from the slot's generator.
    mask = model.hidden[2]
    mask.generator = torch.Generator().manual_seed(1)
    expected = torch.nn.functional.linear(hidden, second.weight * mask.sample_factor(second.weight.shape, x.device),
                                          second.bias)
    assert torch.allclose(out, expected)
    assert torch.equal(model.eval()(x), second(torch.relu(first(x))))  # eval mode: the mean weights


def test_a_gate_is_registered_once():
    from dropout_lab.training.gates import REGISTRY, register

    with pytest.raises(ValueError, match="registered twice"):
        register(type("Other", (REGISTRY["gaussian"],), {"name": "gaussian"}))
