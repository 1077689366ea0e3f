"""A pack's final evaluation, batched across its models, gives each model's own numbers.

The reference is the model-by-model evaluation of each run's own MLP/CNN (its
gates drawing from its own Monte-Carlo generator), written here independently
of the engine. On the CPU the masks are the same draws, so the numbers agree to
float32 rounding; and a model's numbers in a pack equal its numbers alone, bit
for bit.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dropout_lab.training.engine import EngineSettings, Hyper, Member, PackTrainer
from dropout_lab.training.gates import Gate, sampling_gates, set_generator
from dropout_lab.training.models import CNN, MLP

HYPER = Hyper(epochs=1, batch_size=16, lr=0.05, momentum=0.9, weight_decay=0.0, schedule="constant")
SAMPLES = 7


@torch.no_grad()
def deterministic(model, x, y, scaled=True):
    """Loss and accuracy of the model alone in eval mode (optionally without the scaled convention's p)."""
    gates = [g for g in model.modules() if isinstance(g, Gate) and g.scaled and not scaled]
    for g in gates:
        g.scaled = False
    model.eval()
    logits = model(x)
    for g in gates:
        g.scaled = True
    return float(F.cross_entropy(logits, y)), float((logits.argmax(1) == y).double().mean())


@torch.no_grad()
def monte_carlo(model, x, y, samples, seed, batch_size):
    """Average of the softmax over `samples` masks, batch by batch, all gates on one generator."""
    set_generator(model, torch.Generator().manual_seed(seed))
    loss, correct, curve = 0.0, 0, {}
    with sampling_gates(model):
        for start in range(0, len(y), batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            probs = torch.zeros(len(yb), 10)
            for k in range(1, samples + 1):
                probs += F.softmax(model(xb), dim=1)
                curve[k] = curve.get(k, 0) + int((probs.argmax(1) == yb).sum())
            mean = probs / samples
            loss += float(F.nll_loss(mean.clamp_min(1e-12).log(), yb, reduction="sum"))
            correct += int((mean.argmax(1) == yb).sum())
    set_generator(model, None)
    return loss / len(y), correct / len(y), {k: c / len(y) for k, c in curve.items()}


def mlps():
    """Every kind of slot a pack can mix: both gates, both conventions, rate 0 and no gate."""
    specs = [("bernoulli", 0.2, [0.5, 0.0], "inverted"), ("gaussian", 0.0, [0.3, 0.6], "inverted"),
             ("bernoulli", 0.0, [0.5, 0.5], "scaled"), ("gaussian", 0.1, [0.4, 0.0], "scaled"),
             ("uniform", 0.1, [0.2, 0.5], "inverted"), ("dropconnect", 0.2, [0.0, 0.5], "inverted"),
             ("dropconnect", 0.0, [0.5, 0.3], "scaled"), ("none", 0.0, [0.0, 0.0], "inverted")]
    models = []
    for i, (gate, input_rate, hidden, convention) in enumerate(specs):
        torch.manual_seed(i)
        models.append(MLP(64, 10, 24, gate, input_rate, hidden, convention))
    return models


def cnns():
    models = []
    for i, (gate, convention) in enumerate([("bernoulli", "inverted"), ("gaussian", "scaled"),
                                            ("uniform", "inverted")]):
        torch.manual_seed(i)
        models.append(CNN(3, 8, 10, [4, 6], 3, 12, gate, 0.1, [0.2, 0.0], [0.3], convention))
    torch.manual_seed(3)  # DropConnect on the fully connected weights: after the last conv block and in fc
    models.append(CNN(3, 8, 10, [4, 6], 3, 12, "dropconnect", 0.0, [0.0, 0.4], [0.3], "inverted"))
    return models


def trained_pack(models, image_shape):
    torch.manual_seed(0)
    x, y = torch.rand(96, *image_shape), torch.randint(0, 10, (96,))
    members = [Member(m, order_seed=i, gate_seed=100 + i) for i, m in enumerate(models)]
    trainer = PackTrainer(members, x, y, HYPER, EngineSettings(), torch.device("cpu"))
    trainer.train_epoch()
    trainer.trained_models()  # each model's own MLP/CNN now holds its trained weights
    x_test, y_test = torch.rand(70, *image_shape), torch.randint(0, 10, (70,))
    return trainer, x_test, y_test


@pytest.mark.parametrize("make, image_shape", [(mlps, (1, 8, 8)), (cnns, (3, 8, 8))], ids=["mlp", "cnn"])
def test_batched_final_evaluation_equals_model_by_model(make, image_shape):
    models = make()
    trainer, x, y = trained_pack(models, image_shape)
    seeds = [7 + k for k in range(len(models))]
    loss, acc = trainer.evaluate(x, y, batch_size=32)
    unscaled_loss, unscaled_acc = trainer.evaluate(x, y, batch_size=32, scaled_inference=False)
    mc_loss, mc_acc, curve = trainer.evaluate_mc(x, y, 32, SAMPLES, seeds)
    assert sorted(curve) == [1, 2, 5, SAMPLES]
    for k, model in enumerate(models):
        ref_loss, ref_acc = deterministic(model, x, y)
        assert float(loss[k]) == pytest.approx(ref_loss, rel=1e-5) and float(acc[k]) == ref_acc
        ref_loss, ref_acc = deterministic(model, x, y, scaled=False)
        assert float(unscaled_loss[k]) == pytest.approx(ref_loss, rel=1e-5) and float(unscaled_acc[k]) == ref_acc
        ref_loss, ref_acc, ref_curve = monte_carlo(model, x, y, SAMPLES, seeds[k], 32)
        assert float(mc_loss[k]) == pytest.approx(ref_loss, rel=1e-5), f"model {k}"
        assert float(mc_acc[k]) == ref_acc and {n: float(c[k]) for n, c in curve.items()} == {
            n: ref_curve[n] for n in curve}


def test_the_scaled_convention_and_its_masks_change_the_numbers():
    """The reference can fail: without p at inference, or with other masks, the numbers move."""
    models = mlps()
    trainer, x, y = trained_pack(models, (1, 8, 8))
    loss, _ = trainer.evaluate(x, y, 32)
    unscaled, _ = trainer.evaluate(x, y, 32, scaled_inference=False)
    scaled = [k for k, m in enumerate(models) if m.input_gate.scaled]
    assert all(float(loss[k]) != float(unscaled[k]) for k in scaled)
    assert all(float(loss[k]) == float(unscaled[k]) for k in range(len(models)) if k not in scaled)
    a = trainer.evaluate_mc(x, y, 32, SAMPLES, [1] * len(models))[0]
    b = trainer.evaluate_mc(x, y, 32, SAMPLES, [2] * len(models))[0]
    dropping = [k for k, m in enumerate(models) if m.input_gate.rate or any(
        isinstance(g, Gate) and g.rate for g in m.hidden)]
    assert len(dropping) == len(models) - 1
    assert all(float(a[k]) != float(b[k]) for k in dropping)


def test_a_models_evaluation_does_not_depend_on_its_pack():
    models = mlps()
    trainer, x, y = trained_pack(models, (1, 8, 8))
    seeds = [11 * (k + 1) for k in range(len(models))]
    together = trainer.evaluate_mc(x, y, 32, SAMPLES, seeds)
    for k, model in enumerate(models):
        alone = PackTrainer([Member(model, 0, 0)], x, y, HYPER, EngineSettings(), torch.device("cpu"))
        loss, acc, curve = alone.evaluate_mc(x, y, 32, SAMPLES, [seeds[k]])
        assert torch.equal(loss[0], together[0][k]) and torch.equal(acc[0], together[1][k])
        assert all(torch.equal(curve[n][0], together[2][n][k]) for n in curve)


def _layer_calls(monkeypatch, method: str) -> list[int]:
    """The layer numbers StackedNet.<method> is called with, from now on."""
    from dropout_lab.training.stacked import StackedNet

    calls, original = [], getattr(StackedNet, method)

    def counted(self, i, *args, **kwargs):
        calls.append(i)
        return original(self, i, *args, **kwargs)

    monkeypatch.setattr(StackedNet, method, counted)
    return calls


@pytest.mark.parametrize("input_dropout", [False, True], ids=["no-input-dropout", "input-dropout"])
def test_monte_carlo_runs_the_layers_before_the_first_mask_once_per_batch(monkeypatch, input_dropout):
    """Without input dropout in the pack an MLP's first layer runs once per batch (3 here), not once per
    mask; with one model dropping its input, once per mask; each model's numbers are its own either way."""
    models = [m for m in mlps() if input_dropout or m.input_gate.rate == 0]
    trainer, x, y = trained_pack(models, (1, 8, 8))
    calls = _layer_calls(monkeypatch, "linear")
    seeds = [5 + k for k in range(len(models))]
    mc_loss, mc_acc, _ = trainer.evaluate_mc(x, y, 32, SAMPLES, seeds)
    batches = 3
    assert calls.count(0) == (batches * SAMPLES if input_dropout else batches)
    assert calls.count(1) == batches * SAMPLES  # the hidden layers' masks are drawn anew for every sample
    for k, model in enumerate(models):
        ref_loss, ref_acc, _ = monte_carlo(model, x, y, SAMPLES, seeds[k], 32)
        assert float(mc_loss[k]) == pytest.approx(ref_loss, rel=1e-5) and float(mc_acc[k]) == ref_acc


def test_monte_carlo_with_fully_connected_dropout_only_runs_each_convolution_once_per_batch(monkeypatch):
    torch.manual_seed(0)
    models = [CNN(3, 8, 10, [4, 6], 3, 12, gate, 0.0, [0.0, 0.0], [0.4], "inverted")
              for gate in ("bernoulli", "gaussian")]
    trainer, x, y = trained_pack(models, (3, 8, 8))
    calls = _layer_calls(monkeypatch, "conv")
    mc_loss, mc_acc, _ = trainer.evaluate_mc(x, y, 32, SAMPLES, [3, 4])
    assert calls == [0, 1] * 3
    for k, model in enumerate(models):
        ref_loss, ref_acc, _ = monte_carlo(model, x, y, SAMPLES, [3, 4][k], 32)
        assert float(mc_loss[k]) == pytest.approx(ref_loss, rel=1e-5) and float(mc_acc[k]) == ref_acc
