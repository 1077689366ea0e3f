"""A model kind is its architecture (settings) and its network (training): a third kind, defined here, trains.

The recipe for a new kind (dropout_lab.settings.architectures): an Architecture subclass that
names its settings and slots and gives its layer shapes, and a Network subclass that builds
its layers from those shapes and says how the pack engine stacks it, both registered. The toy
kind here is a residual MLP (a projection to `width`, then residual blocks h + ReLU(W h)); it
must validate, plan and build like the built-in kinds, train in a pack bit for bit as alone,
and evaluate as its own network would. A kind that is not registered is refused in one line.
"""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from dropout_lab.planning import plan
from dropout_lab.settings import architectures
from dropout_lab.settings.architectures import ARCHITECTURES, Architecture, LayerGroup, model_parameters
from dropout_lab.settings.checks import positive_int
from dropout_lab.settings.config import ConfigError, compose_config, validate
from dropout_lab.training import engine, models, stacked, train
from dropout_lab.training.gates import make_gate
from tests.test_evaluation import HYPER, deterministic, monte_carlo

KIND = "resmlp-test"


class ResidualArchitecture(Architecture):
    """in -> width (ReLU), then depth - 1 residual blocks h + ReLU(W h) -> classes; dropout as the MLP's."""

    name = KIND
    fields = ("depth", "width")
    groups = (LayerGroup("hidden", "hidden layer", "depth"),)
    width_field = "width"

    def check_values(self, model):
        positive_int("model.depth", model["depth"])  # the projection at least
        positive_int("model.width", model["width"])

    def layer_shapes(self, model, image, classes):
        channels, side = image
        sizes = [channels * side * side, *[model["width"]] * model["depth"], classes]
        return [], list(zip(sizes, sizes[1:]))

    def describe(self, model):
        return f"residual {model['depth']}x{model['width']}"


class ResidualMLP(models.Network):
    architecture = ResidualArchitecture()

    def __init__(self, in_features, classes, width, gate, input_rate, hidden_rates, convention="inverted"):
        super().__init__()
        _, dense = self.architecture.layer_shapes({"depth": len(hidden_rates), "width": width}, (in_features, 1),
                                                  classes)
        self.input_gate = make_gate(gate, input_rate, convention)
        self.blocks = nn.ModuleList(models.Linear(*shape) for shape in dense[:-1])
        self.drops = nn.ModuleList(make_gate(gate, rate, convention) for rate in hidden_rates)
        self.output = models.Linear(*dense[-1])
        models.attach_weight_gates([self.input_gate, *(m for pair in zip(self.blocks, self.drops) for m in pair),
                                    self.output])

    @classmethod
    def build(cls, model, rates, image_shape, classes, gate, convention):
        return cls(math.prod(image_shape), classes, model["width"], gate, rates.input, rates.hidden, convention)

    def forward(self, x):
        h = self.drops[0](torch.relu(self.blocks[0](self.input_gate(x.flatten(1)))))
        for block, drop in zip(self.blocks[1:], self.drops[1:]):
            h = h + drop(torch.relu(block(h)))
        return self.output(h)

    @staticmethod
    def stacked_forward(run, x):
        h = run.gate(torch.relu(run.linear(run.gate(x.flatten(2), 0), 0)), 1)
        for i in range(1, run.layers - 1):
            h = h + run.gate(torch.relu(run.linear(h, i)), i + 1)
        return run.linear(h, run.layers - 1)


@pytest.fixture
def residual_kind():
    """The toy kind registered in both registries for one test, then removed."""
    architectures.register(ResidualArchitecture)
    models.register(ResidualMLP)
    try:
        yield
    finally:
        del ARCHITECTURES[KIND], models.NETWORKS[KIND]


def resolved(*overrides: str, model: str) -> OmegaConf:
    """A run's resolved config with model.name set afterwards (a kind without config/model/NAME.yaml)."""
    cfg = OmegaConf.create(OmegaConf.to_container(compose_config(["out=x", "scale=smoke", *overrides]), resolve=True))
    cfg.model.name = model
    return cfg


def members():
    """Every kind of slot: unit gates, a weight gate on the projection and a block, rate 0, no gate."""
    specs = [("bernoulli", 0.2, [0.5, 0.3, 0.0]), ("gaussian", 0.0, [0.4, 0.4, 0.4]),
             ("dropconnect", 0.0, [0.5, 0.0, 0.3]), ("none", 0.0, [0.0, 0.0, 0.0])]
    out = []
    for k, (gate, input_rate, hidden) in enumerate(specs):
        torch.manual_seed(k)
        out.append(engine.Member(ResidualMLP(16, 10, 12, gate, input_rate, hidden), order_seed=k, gate_seed=10 + k))
    return out


def test_a_kind_registered_from_a_test_validates_plans_and_builds(residual_kind):
    cfg = resolved("model.depth=3", "model.width=40", "dropout.hidden=[0.5,0.2,0.0]", model=KIND)
    rates = validate(cfg)
    assert rates.hidden == (0.5, 0.2, 0.0) and rates.conv == () and rates.fc == ()
    train.check_trainable(cfg, rates)
    model = train.build_model(cfg, rates, torch.Size((1, 28, 28)))
    assert isinstance(model, ResidualMLP) and [g.rate for g in model.gates()] == [0.0, 0.5, 0.2, 0.0]
    # One owner for the shapes: the settings' count of weights is the network's.
    assert model_parameters(cfg.model, "mnist") == sum(p.numel() for p in model.parameters()) == 784 * 40 + 40 + \
        2 * (40 * 40 + 40) + 40 * 10 + 10
    settings = {"dataset.name": "mnist", **{f"model.{k}": v for k, v in cfg.model.items()}}
    assert plan.training_flops_per_image(settings) == 3.0 * 2.0 * (784 * 40 + 2 * 40 * 40 + 40 * 10)
    assert ARCHITECTURES[KIND].describe(cfg.model) == "residual 3x40"
    # Its own settings' checks, one line each, and the slots it lacks.
    for overrides, expected in [(["model.width=0"], "model.width=0 must be an integer >= 1"),
                                (["dropout.hidden=[0.5]"], "dropout.hidden lists 1 rates but the model has 3"),
                                (["dropout=fc-only"], (f"dropout.fc=0.5 applies to model=cnn; for model={KIND} set "
                                                       "dropout.input and dropout.hidden"))]:
        with pytest.raises(ConfigError) as err:
            validate(resolved("model.depth=3", *overrides, model=KIND))
        assert expected in str(err.value) and "\n" not in str(err.value)
    wrong = resolved(model=KIND)
    wrong.model.fc_width = 8
    with pytest.raises(ConfigError, match=f"model.fc_width does not apply to model={KIND}; it sets depth, width"):
        validate(wrong)


def test_a_kind_registered_from_a_test_trains_in_a_pack_bit_for_bit_as_alone(residual_kind):
    torch.manual_seed(0)
    x, y = torch.rand(80, 1, 4, 4), torch.randint(0, 10, (80,))
    pack = engine.PackTrainer(members(), x, y, HYPER, engine.EngineSettings(), torch.device("cpu"))
    losses, accs = pack.train_epoch()
    assert torch.isfinite(losses).all() and ((0 <= accs) & (accs <= 1)).all()
    assert pack.net.layer_kinds == ["linear"] * 4 and pack.net.slots == 4
    trained = pack.trained_models()
    loss, acc = pack.evaluate(x, y, 32)
    mc_loss, mc_acc, _ = pack.evaluate_mc(x, y, 32, 5, [1, 2, 3, 4])
    assert torch.isfinite(loss).all() and torch.isfinite(mc_loss).all()
    for k, member in enumerate(members()):
        alone = engine.PackTrainer([member], x, y, HYPER, engine.EngineSettings(), torch.device("cpu"))
        alone.train_epoch()
        for mine, theirs in zip(alone.net.parameters(), pack.net.parameters()):
            assert torch.equal(mine[0], theirs[k]), f"model {k}"
        # The stacked pass computes what the network alone computes, masks drawn in the same order.
        ref_loss, ref_acc = deterministic(trained[k], x, y)
        assert float(loss[k]) == pytest.approx(ref_loss, rel=1e-5) and float(acc[k]) == ref_acc
        ref_loss, ref_acc, _ = monte_carlo(trained[k], x, y, 5, k + 1, 32)
        assert float(mc_loss[k]) == pytest.approx(ref_loss, rel=1e-5) and float(mc_acc[k]) == ref_acc


def test_a_kind_that_is_not_registered_is_refused_in_one_line():
    with pytest.raises(ConfigError) as err:
        validate(resolved(model="transformer"))
    assert str(err.value) == "model='transformer' is unknown; choose one of ['mlp', 'cnn']"
    with pytest.raises(ConfigError) as err:
        models.network("transformer")
    assert str(err.value) == "model='transformer' is unknown; choose one of ['mlp', 'cnn']"
    # An architecture with no network: refused before any data is touched, naming the networks there are.
    architectures.register(ResidualArchitecture)
    try:
        cfg = resolved("model.depth=2", model=KIND)
        with pytest.raises(ConfigError) as err:
            train.check_trainable(cfg, validate(cfg))
        assert str(err.value) == (f"model={KIND} has no network; register one in dropout_lab.training.models "
                                  "(networks: mlp, cnn)")
    finally:
        del ARCHITECTURES[KIND]
    with pytest.raises(engine.EngineError, match="cannot stack a Linear; the engine stacks the networks of"):
        stacked.StackedNet([nn.Linear(3, 3)], (3,))


def test_the_built_in_kinds_take_their_shapes_from_their_architecture():
    """The settings' shapes (planning, memory) are those of the networks torch builds."""
    for overrides, shape in [(["model=mlp"], (1, 28, 28)), (["model=cnn", "dataset=cifar10"], (3, 32, 32))]:
        cfg = compose_config(["out=x", "scale=smoke", *overrides])
        model = train.build_model(cfg, validate(cfg), torch.Size(shape))
        convs, dense = architectures.layer_shapes(cfg.model, cfg.dataset.name)
        weights = [tuple(layer.weight.shape) for layer in model.layers()]
        assert weights == [(b, a, k, k) for a, b, k, _ in convs] + [(b, a) for a, b in dense]
        assert model_parameters(cfg.model, cfg.dataset.name) == sum(p.numel() for p in model.parameters())
