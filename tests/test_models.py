"""Models, dropout placement presets and the max-norm constraint."""

from __future__ import annotations

import pytest
import torch

from dropout_lab.settings.config import compose_config, validate
from dropout_lab.training.gates import gates_of
from dropout_lab.training.models import CNN, MLP, effective_weight_norms, weight_layers
from dropout_lab.training.train import build_model


def model_for(*overrides: str) -> torch.nn.Module:
    cfg = compose_config(["out=unused", *overrides])
    rates = validate(cfg)
    shape = (1, 28, 28) if cfg.dataset.name == "mnist" else (3, 32, 32)
    return build_model(cfg, rates, torch.Size(shape))


@pytest.mark.parametrize(
    "preset, expected",
    [
        ("none", [0.0, 0.0, 0.0]),
        ("input", [0.2, 0.0, 0.0]),
        ("hidden", [0.0, 0.5, 0.5]),
        ("both", [0.2, 0.5, 0.5]),
    ],
)
def test_mlp_presets_place_gates(preset, expected):
    model = model_for("model=mlp", f"dropout={preset}")
    assert [g.rate for g in gates_of(model)] == expected


@pytest.mark.parametrize(
    "preset, expected",
    [
        ("fc-only", [0.0, 0.0, 0.0, 0.0, 0.5, 0.5]),
        ("all-layers", [0.1, 0.25, 0.25, 0.25, 0.5, 0.5]),
    ],
)
def test_cnn_presets_place_gates(preset, expected):
    model = model_for("dataset=cifar10", "model=cnn", f"dropout={preset}")
    assert [g.rate for g in gates_of(model)] == expected


def test_per_layer_rates_and_gate_kind():
    model = model_for("model.depth=3", "dropout.hidden=[0.1,0.3,0.5]", "dropout.input=0.2", "gate=gaussian")
    assert [g.rate for g in gates_of(model)] == [0.2, 0.1, 0.3, 0.5]
    assert {type(g).__name__ for g in gates_of(model)} == {"GaussianGate"}


def test_shapes_and_widths():
    mlp = MLP(784, 10, 64, "bernoulli", 0.2, [0.5, 0.5, 0.5])
    assert mlp(torch.randn(5, 1, 28, 28)).shape == (5, 10)
    assert [tuple(m.weight.shape) for m in weight_layers(mlp).values()] == [(64, 784), (64, 64), (64, 64), (10, 64)]
    cnn = CNN(3, 32, 10, [8, 16, 32], 3, 48, "bernoulli", 0.1, [0.2] * 3, [0.5] * 2)
    assert cnn(torch.randn(4, 3, 32, 32)).shape == (4, 10)
    assert tuple(weight_layers(cnn)["classifier.0"].weight.shape) == (48, 32 * 4 * 4)
    # A CNN on MNIST's single channel works too.
    assert CNN(1, 28, 10, [4, 8], 5, 16, "none", 0.0, [0.0] * 2, [0.0])(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_eval_mode_is_deterministic_and_train_mode_is_not():
    model = MLP(20, 10, 32, "bernoulli", 0.0, [0.5])
    x = torch.randn(8, 20)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))


def test_max_norm_caps_only_units_above_the_limit():
    """The training engine's max-norm (the only one): each unit's incoming weights, per model."""
    from dropout_lab.training.stacked import StackedNet

    mlp = MLP(3, 2, 2, "none", 0.0, [0.0])
    layer = mlp.hidden[0]
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[3.0, 4.0, 0.0], [0.3, 0.4, 0.0]]))  # norms 5 and 0.5
    net = StackedNet([mlp], (3,))
    net.apply_max_norm(2.0)
    net.copy_into([mlp])
    assert torch.allclose(layer.weight[0], torch.tensor([1.2, 1.6, 0.0]))
    assert torch.allclose(layer.weight[1], torch.tensor([0.3, 0.4, 0.0]))
    cnn = CNN(2, 8, 10, [4], 3, 6, "none", 0.0, [0.0], [0.0])
    with torch.no_grad():
        cnn.features[0].weight.mul_(100)
    net = StackedNet([cnn], (2, 8, 8))
    net.apply_max_norm(1.5)
    net.copy_into([cnn])
    assert torch.all(cnn.features[0].weight.flatten(1).norm(dim=1) <= 1.5 + 1e-5)


def test_effective_weight_norms_name_every_layer():
    mlp = MLP(784, 10, 16, "bernoulli", 0.2, [0.5, 0.5])
    norms = effective_weight_norms(mlp)
    assert list(norms) == ["hidden.0", "hidden.3", "output"]
    assert norms["output"] == pytest.approx(float(mlp.output.weight.detach().norm()))
