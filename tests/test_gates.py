"""Gates keep the gate contract (dropout_lab.training.gates): every registered gate, with no list of names here.

For each gate of the registry: identity rows of the noise store give exactly 1, the noise has the mean and
variance the gate states (mean 1 and variance rate/(1-rate) under the inverted convention for the matched
gates), no NaN or inf, eval mode and rate 0 are the identity, and a pack of it beside Bernoulli trains with
finite losses, each model bit-identical to the same model alone. Gates defined here show that the checks
fail: `register` refuses broken ones in one line, and a broken gate slipped past it fails the pack check.

Tolerances are Z standard errors of the estimate for the sample size used, so a correct gate fails with
probability below 1e-6 and a biased one is caught.
"""

from __future__ import annotations

import math

import pytest
import torch

from dropout_lab.settings.vocabulary import CONVENTIONS, INVERTED, REFERENCE_GATE, SCALED, gate_names
from dropout_lab.training import engine
from dropout_lab.training.gate_contract import GateContractError, has_noise_law
from dropout_lab.training.gates import (
    REGISTRY,
    BernoulliGate,
    Gate,
    GaussianGate,
    NoGate,
    UniformGate,
    make_gate,
    register,
    sampling_gates,
    set_generator,
)
from dropout_lab.training.models import MLP

N = 1 << 21
Z = 5.0
RATES = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
GATES = list(REGISTRY)  # the registered gates, as gate=NAME accepts them
NOISY = [name for name in GATES if has_noise_law(REGISTRY[name])]
UNIT_GATES = [name for name in NOISY if REGISTRY[name].target == "units"]


def noise(kind: str, rate: float, n: int = N, seed: int = 0, convention: str = INVERTED) -> torch.Tensor:
    """n draws of the gate's multiplicative noise: a unit gate on ones, a weight gate's mask of n weights."""
    gate = make_gate(kind, rate, convention).train()
    gate.generator = torch.Generator().manual_seed(seed)
    if gate.target == "weights":
        return gate.sample_factor((n,), torch.device("cpu")).double()
    return gate(torch.ones(n, dtype=torch.float64))


def assert_stated_moments(kind: str, rate: float, convention: str = INVERTED, n: int = N) -> None:
    """The noise is finite, with the gate's own mean and variance (times p^2 under the scaled convention)."""
    gate = make_gate(kind, rate, convention)
    g = noise(kind, rate, n, convention=convention)
    assert bool(g.isfinite().all()), f"gate {kind} at rate {rate} draws NaN or inf"
    mean = gate.mean
    var = gate.variance * (gate.retain**2 if gate.scaled else 1.0)
    fourth = float(((g - float(g.mean())) ** 4).mean())  # the sample's own fourth central moment sets the SE
    assert abs(float(g.mean()) - mean) < Z * math.sqrt(var / n)
    # The second term bounds the bias from estimating the mean (zero-width SE at rate 0.5).
    assert abs(float(g.var()) - var) < Z * math.sqrt(max(fourth - var**2, 0.0) / n) + Z**2 * var / n


@pytest.mark.parametrize("kind", NOISY)
@pytest.mark.parametrize("rate", RATES)
def test_mean_one_and_the_stated_variance(kind, rate):
    """Mean 1, and the variance the gate states: rate / (1 - rate) for a gate with the Bernoulli gate's moments."""
    assert make_gate(kind, rate).mean == 1.0
    assert_stated_moments(kind, rate)


@pytest.mark.parametrize("kind", NOISY)
@pytest.mark.parametrize("rate", [0.2, 0.5, 0.8])
def test_scaled_convention_has_mean_p_and_p_squared_times_the_variance(kind, rate):
    assert make_gate(kind, rate, SCALED).mean == pytest.approx(1.0 - rate)
    assert_stated_moments(kind, rate, SCALED)


def assert_identity_rows(cls: type[Gate], rows: int = 3) -> None:
    """Zero rows of the store, with the IDENTITY constants as floats or as the engine's (K, 1) tensors, and
    beside a row that draws, give exactly 1 (never NaN or inf)."""
    for numel in (1, 7, 64):
        store = torch.zeros(rows, cls.storage(numel), dtype=cls.storage_dtype)
        per_row = {key: torch.full((rows, 1), float(value)) for key, value in cls.IDENTITY.items()}
        for constants in (dict(cls.IDENTITY), per_row):
            factor = cls.factor(cls.raw(store, numel), constants)
            assert factor.dtype == torch.float32 and factor.shape == (rows, numel)
            assert torch.equal(factor, torch.ones(rows, numel)), f"gate {cls.name}: identity rows give {factor}"
        for convention in CONVENTIONS:
            own = cls(0.5, convention).constants()
            cls.fill(store[0], torch.Generator().manual_seed(numel))
            mixed = {key: torch.tensor([[float(own[key])]] + [[float(v)]] * (rows - 1)) for key, v in
                     cls.IDENTITY.items()}
            factor = cls.factor(cls.raw(store, numel), mixed)
            assert torch.equal(factor[1:], torch.ones(rows - 1, numel)), f"gate {cls.name}: {factor[1:]}"
            assert bool(factor[0].isfinite().all())


@pytest.mark.parametrize("kind", NOISY)
def test_identity_rows_of_the_noise_store_give_exactly_one(kind):
    assert_identity_rows(REGISTRY[kind])


def assert_eval_and_rate_zero_are_the_identity(kind: str) -> None:
    x = torch.randn(64, 33)
    rate = 0.5 if has_noise_law(REGISTRY[kind]) else 0.0
    for convention in CONVENTIONS:
        gate = make_gate(kind, rate, convention).eval()
        if convention == INVERTED:
            assert gate.inference_scale == 1.0 and torch.equal(gate(x), x)
        else:
            assert torch.equal(gate(x), x * gate.inference_scale)
        assert torch.equal(make_gate(kind, 0.0, convention).train()(x), x)


@pytest.mark.parametrize("kind", GATES)
def test_identity_in_eval_mode_and_at_rate_zero(kind):
    assert_eval_and_rate_zero_are_the_identity(kind)


# --------------------------------------------------------------------------- a pack beside Bernoulli

HYPER = engine.Hyper(epochs=2, batch_size=16, lr=0.05, momentum=0.9, weight_decay=0.0, schedule="constant")
SETTINGS = engine.EngineSettings(noise_chunk=3)  # 5 steps an epoch: chunks that straddle the epochs


def assert_trains_beside_bernoulli(kind: str) -> None:
    """[the gate, Bernoulli, the gate at rate 0 where the first model drops] trained together: finite losses,
    and each model's weights, losses and Monte-Carlo numbers bit-identical to the same model alone.

    Bernoulli drops no input, so its input row of the gate's store stays zero; the third model is of the
    gate's own class at rate 0 there: both read the identity rows."""
    rate = 0.5 if has_noise_law(REGISTRY[kind]) else 0.0
    specs = [(kind, 0.4 * rate, [rate]), (REFERENCE_GATE, 0.0, [0.5]), (kind, 0.0, [0.6 * rate])]
    data = torch.Generator().manual_seed(0)
    x, y = torch.rand(72, 1, 4, 4, generator=data), torch.randint(0, 10, (72,), generator=data)

    def trained(which: list[int]):
        members = []
        for k in which:
            torch.manual_seed(k)  # each model's initial weights, the same in the pack and alone
            members.append(engine.Member(MLP(16, 10, 12, *specs[k]), order_seed=k, gate_seed=10 + k))
        trainer = engine.PackTrainer(members, x, y, HYPER, SETTINGS, torch.device("cpu"))
        losses = torch.stack([trainer.train_epoch()[0] for _ in range(HYPER.epochs)])
        mc_loss, mc_acc, _ = trainer.evaluate_mc(x, y, 32, 3, [20 + k for k in which])
        return trainer, losses, mc_loss, mc_acc

    pack, losses, mc_loss, mc_acc = trained([0, 1, 2])
    assert bool(losses.isfinite().all() and mc_loss.isfinite().all()), \
        f"a pack of [{kind}, {REFERENCE_GATE}, {kind}] has train losses {losses.tolist()}, MC {mc_loss.tolist()}"
    for k in range(len(specs)):
        alone, alone_losses, alone_mc_loss, alone_mc_acc = trained([k])
        for mine, theirs in zip(alone.net.parameters(), pack.net.parameters()):
            assert torch.equal(mine[0], theirs[k]), f"model {k} ({specs[k][0]}) differs in the pack"
        assert torch.equal(alone_losses[:, 0], losses[:, k]) and float(alone_mc_loss[0]) == float(mc_loss[k])
        assert float(alone_mc_acc[0]) == float(mc_acc[k])


@pytest.mark.parametrize("kind", GATES)
def test_a_pack_of_the_gate_beside_bernoulli_trains_each_model_as_alone(kind):
    assert_trains_beside_bernoulli(kind)


# --------------------------------------------------------------------------- the checks can fail


class InverseCdfLaplaceGate(Gate):
    """A textbook Laplace(1, b) by the inverse CDF of u ~ U[0, 1): right moments, but u = 0 (a zero row)
    gives log(0) = -inf, and with the identity constant b = 0 the factor 0 * inf = NaN."""

    name = "laplace_icdf"
    IDENTITY = {"mean": 1.0, "b": 0.0}

    @staticmethod
    def fill(stored, generator):
        stored.uniform_(generator=generator)

    @staticmethod
    def factor(raw, c):
        v = raw - 0.5
        return (1.0 - c["b"] * torch.sign(v) * torch.log1p(-2.0 * v.abs())) * c["mean"]

    def constants(self):
        return {"mean": self.mean, "b": math.sqrt(self.variance / 2.0)}  # Laplace(0, b) has variance 2 b^2


class LaplaceGate(Gate):
    """Laplace(1, b) with the Bernoulli gate's moments, kept to the contract: b (E1 - E2) with two
    exponential draws per value, so a zero row is 1 + 0 * 0 = 1."""

    name = "laplace2"  # a digit in the name, as GATE_NAME allows
    IDENTITY = {"mean": 1.0, "b": 0.0}

    @staticmethod
    def storage(numel):
        return 2 * numel

    @staticmethod
    def fill(stored, generator):
        stored.exponential_(generator=generator)

    @staticmethod
    def raw(stored, numel):
        return stored[..., :numel] - stored[..., numel : 2 * numel]

    @staticmethod
    def factor(raw, c):
        return (1.0 + raw * c["b"]) * c["mean"]

    def constants(self):
        return {"mean": self.mean, "b": math.sqrt(self.variance / 2.0)}


def test_register_refuses_a_gate_whose_identity_rows_are_nan_in_one_line():
    with pytest.raises(GateContractError) as err:
        register(InverseCdfLaplaceGate)
    assert str(err.value) == (
        "gate 'laplace_icdf' breaks the gate contract: a zero row of the noise store with the IDENTITY constants "
        "(a packmate that does not draw this gate) gives the factor nan, not exactly 1; see 'The gate contract' in "
        "dropout_lab.training.gate_contract")
    assert "laplace_icdf" not in REGISTRY


def test_a_gate_with_nan_identity_rows_slipped_past_register_fails_the_generic_checks(monkeypatch):
    monkeypatch.setitem(REGISTRY, InverseCdfLaplaceGate.name, InverseCdfLaplaceGate)
    assert_stated_moments(InverseCdfLaplaceGate.name, 0.5, n=1 << 16)  # its own noise looks right ...
    with pytest.raises(AssertionError, match="identity rows give"):
        assert_identity_rows(InverseCdfLaplaceGate)
    with pytest.raises(AssertionError, match=r"train losses \[\[[0-9.]+, nan, "):  # ... its packmate is NaN
        assert_trains_beside_bernoulli(InverseCdfLaplaceGate.name)


def test_a_gate_kept_to_the_contract_registers_and_passes_every_check():
    register(LaplaceGate)
    try:
        assert_identity_rows(LaplaceGate)
        for rate in (0.2, 0.5, 0.8):
            assert_stated_moments(LaplaceGate.name, rate)
        assert_stated_moments(LaplaceGate.name, 0.5, SCALED)
        assert_eval_and_rate_zero_are_the_identity(LaplaceGate.name)
        assert_trains_beside_bernoulli(LaplaceGate.name)
    finally:
        del REGISTRY[LaplaceGate.name]


class _GlobalDraws(UniformGate):
    @staticmethod
    def fill(stored, generator):
        stored.copy_(torch.rand(stored.shape))


class _Float64(GaussianGate):
    @staticmethod
    def factor(raw, c):
        return GaussianGate.factor(raw, c).double()


class _OtherKeys(GaussianGate):
    def constants(self):
        return {"mean": self.mean, "sd": self.sigma}


class _ScalesInEval(GaussianGate):
    def forward(self, x):
        return x * 2.0 if not self.training else super().forward(x)


class _Silent(Gate):
    pass


BROKEN = [
    (type("Hyphen", (GaussianGate,), {"name": "laplace-2"}),
     "gate 'laplace-2' breaks the gate contract: its name does not match [a-z][a-z0-9_]* (a results folder, a "
     "Snakemake wildcard and a Hydra choice)"),
    (type("Unnamed", (GaussianGate,), {}), "gate 'Unnamed' breaks the gate contract: it declares no name of its own"),
    (type("Sideways", (GaussianGate,), {"name": "sideways", "target": "biases"}),
     "gate 'sideways' breaks the gate contract: target='biases'; choose one of ['units', 'weights']"),
    (type("GlobalDraws", (_GlobalDraws,), {"name": "global_draws"}),
     "gate 'global_draws' breaks the gate contract: at rate 0.5 under the inverted convention, fill drew from "
     "torch's global generator"),
    (type("Float64", (_Float64,), {"name": "float64"}),
     "gate 'float64' breaks the gate contract: factor gives torch.float64 of shape (2, 1), not float32"),
    (type("OtherKeys", (_OtherKeys,), {"name": "other_keys"}),
     "gate 'other_keys' breaks the gate contract: at rate 0.5 under the inverted convention, constants() has the "
     "keys ['mean', 'sd'], IDENTITY ['mean', 'sigma']"),
    (type("ScalesInEval", (_ScalesInEval,), {"name": "scales_in_eval"}),
     "gate 'scales_in_eval' breaks the gate contract: eval mode under the inverted convention is not the identity"),
    (type("Silent", (_Silent,), {"name": "silent"}),
     "gate 'silent' breaks the gate contract: it has no noise law (fill and factor) but accepts rate 0.5; refuse "
     "every rate above 0, as NoGate does"),
]


@pytest.mark.parametrize("cls, message", BROKEN, ids=[cls.__name__ for cls, _ in BROKEN])
def test_register_names_the_gate_and_the_broken_rule_in_one_line(cls, message):
    before = dict(REGISTRY)
    with pytest.raises(GateContractError) as err:
        register(cls)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
    assert str(err.value).endswith("; see 'The gate contract' in dropout_lab.training.gate_contract")
    assert REGISTRY == before


def test_a_gate_is_registered_once():
    with pytest.raises(ValueError, match="registered twice"):
        register(type("Other", (REGISTRY["gaussian"],), {"name": "gaussian"}))


def test_the_registry_is_the_vocabularys_gates():
    assert sorted(GATES) == sorted(gate_names())


# --------------------------------------------------------------------------- gate by gate


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


@pytest.mark.parametrize("kind", UNIT_GATES)
def test_gradient_flows_through_the_sampled_noise(kind):
    gate = make_gate(kind, 0.4).train()
    gate.generator = torch.Generator().manual_seed(1)
    x = torch.randn(50, 40, requires_grad=True)
    y = gate(x)
    y.sum().backward()
    assert torch.allclose(x.grad * x.detach(), y.detach(), atol=1e-6)  # d(x*g)/dx = g


@pytest.mark.parametrize("kind", NOISY)
def test_same_generator_seed_gives_same_noise_and_other_seeds_differ(kind):
    assert torch.equal(noise(kind, 0.5, 1000, seed=3), noise(kind, 0.5, 1000, seed=3))
    assert not torch.equal(noise(kind, 0.5, 1000, seed=3), noise(kind, 0.5, 1000, seed=4))


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
