"""The networks of the model kinds, with dropout slots: an MLP for MNIST and a small CNN for CIFAR-10.

A network is the torch side of its kind's architecture (dropout_lab.settings.architectures),
which owns the kind's settings, slots and layer shapes: the network builds its layers
from those shapes, and says how the pack engine stacks K copies of it
(`Network.stacked_forward`, written in the engine's operations). It is registered by
its architecture's name (`register`), so model=NAME builds it.

Dropout placement is given per slot as a drop rate:
- MLP: `input` (on the pixels) and one rate per hidden layer (after its ReLU);
- CNN: `input`, one rate per conv block (after its pooling) and one per fully
  connected hidden layer (after its ReLU), as in Srivastava et al. (2014), Table 4.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dropout_lab.settings.architectures import ARCHITECTURES, Architecture, architecture
from dropout_lab.settings.checks import ConfigError
from dropout_lab.training.gates import Gate, gates_of, make_gate

if TYPE_CHECKING:
    from dropout_lab.settings.config import Rates
    from dropout_lab.training.stacked import StackedPass


class Linear(nn.Linear):
    """nn.Linear whose weights a weight gate (DropConnect) of the slot it reads may mask in training."""

    weight_gate: Gate | None = None  # set by attach_weight_gates; not a submodule (the slot holds it)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.weight_gate
        if gate is None or not (gate.training and gate.draws):
            return super().forward(x)
        mask = gate.sample_factor(self.weight.shape, self.weight.device).to(self.weight.dtype)
        return F.linear(x, self.weight * mask, self.bias)


def attach_weight_gates(layers: Sequence[nn.Module]) -> None:
    """Give each weight gate (gates.Gate.target == "weights") to the layer that reads its slot; `layers`: a
    network's gates and layers in forward order."""
    pending: Gate | None = None
    for module in layers:
        if isinstance(module, Gate):
            pending = module if module.target == "weights" and module.draws else None
        elif isinstance(module, Linear):
            module.__dict__["weight_gate"], pending = pending, None  # plain attribute: no second registration
        elif isinstance(module, nn.Conv2d) and pending is not None:
            raise ValueError(f"gate {pending.name} masks fully connected weights, but a convolution reads its "
                             "slot; give it rate 0 there (on model=cnn only dropout.fc and the last conv block)")


class Network(nn.Module):
    """A model kind's network: Linear and Conv2d layers and gates, each numbered in forward order.

    The pack engine (dropout_lab.training.stacked) stacks layer i and slot s of K copies and
    runs `stacked_forward`; a copy's numbers there must be those of its own `forward`.
    """

    architecture: ClassVar[Architecture]

    @classmethod
    def build(cls, model: Mapping[str, Any], rates: Rates, image_shape: Sequence[int], classes: int, gate: str,
              convention: str) -> Network:
        """The network of a run: its model settings and rates (settings.config.validate), for images (C, H, W)."""
        raise NotImplementedError

    def layers(self) -> list[nn.Module]:
        """Its Linear and Conv2d layers in forward order (here: the order they were made in)."""
        return list(weight_layers(self).values())

    def gates(self) -> list[Gate]:
        """Its gates, one per dropout slot, in forward order (a model's Monte-Carlo masks are drawn in it)."""
        return gates_of(self)

    @staticmethod
    def stacked_forward(run: StackedPass, x: torch.Tensor) -> torch.Tensor:
        """Logits (K, B, classes) of K stacked copies for inputs (K, B, C, H, W), in the engine's operations
        (run.gate, run.linear, run.gate_each, run.conv_each); the structure comes from `run`, never weights."""
        raise NotImplementedError


NETWORKS: dict[str, type[Network]] = {}  # model=NAME -> its network


def register(cls: type[Network]) -> type[Network]:
    """Class decorator: the network of the model kind its architecture names."""
    name = cls.architecture.name
    if NETWORKS.get(name, cls) is not cls:
        raise ValueError(f"model {name!r} has two networks: {NETWORKS[name].__name__} and {cls.__name__}")
    NETWORKS[name] = cls
    return cls


def network(name: str) -> type[Network]:
    """The network class of model=NAME; one line naming the kinds if there is none."""
    architecture(name)
    if name not in NETWORKS:
        raise ConfigError(f"model={name} has no network; register one in dropout_lab.training.models "
                          f"(networks: {', '.join(NETWORKS)})")
    return NETWORKS[name]


def _fully_connected(shapes: Sequence[tuple[int, int]], rates: Sequence[float], gate: str,
                     convention: str) -> list[nn.Module]:
    """[Linear, ReLU, gate] per hidden layer."""
    layers: list[nn.Module] = []
    for (fan_in, fan_out), rate in zip(shapes, rates):
        layers += [Linear(fan_in, fan_out), nn.ReLU(), make_gate(gate, rate, convention)]
    return layers


@register
class MLP(Network):
    """in_features -> len(hidden_rates) x width (ReLU) -> classes."""

    architecture = ARCHITECTURES["mlp"]

    def __init__(self, in_features: int, classes: int, width: int, gate: str, input_rate: float,
                 hidden_rates: Sequence[float], convention: str = "inverted") -> None:
        super().__init__()
        sizes = {"depth": len(hidden_rates), "width": width}
        _, dense = self.architecture.layer_shapes(sizes, (in_features, 1), classes)
        self.input_gate = make_gate(gate, input_rate, convention)
        self.hidden = nn.Sequential(*_fully_connected(dense[:-1], hidden_rates, gate, convention))
        self.output = Linear(*dense[-1])
        attach_weight_gates([self.input_gate, *self.hidden, self.output])

    @classmethod
    def build(cls, model: Mapping[str, Any], rates: Rates, image_shape: Sequence[int], classes: int, gate: str,
              convention: str) -> MLP:
        return cls(math.prod(image_shape), classes, model["width"], gate, rates.input, rates.hidden, convention)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.hidden(self.input_gate(x.flatten(1))))

    @staticmethod
    def stacked_forward(run: StackedPass, x: torch.Tensor) -> torch.Tensor:
        x = run.gate(x.flatten(2), 0)
        hidden = run.layers - 1
        for i in range(hidden):
            x = run.gate(torch.relu(run.linear(x, i)), i + 1)
        return run.linear(x, hidden)


@register
class CNN(Network):
    """len(conv_rates) x [conv k x k, ReLU, 2x2 max-pool] -> len(fc_rates) x fc_width (ReLU) -> classes."""

    architecture = ARCHITECTURES["cnn"]

    def __init__(self, in_channels: int, image_size: int, classes: int, channels: Sequence[int], kernel_size: int,
                 fc_width: int, gate: str, input_rate: float, conv_rates: Sequence[float], fc_rates: Sequence[float],
                 convention: str = "inverted") -> None:
        super().__init__()
        if len(channels) != len(conv_rates):
            raise ValueError(f"{len(channels)} conv blocks but {len(conv_rates)} conv dropout rates")
        sizes = {"channels": list(channels), "kernel_size": kernel_size, "fc_depth": len(fc_rates),
                 "fc_width": fc_width}
        convs, dense = self.architecture.layer_shapes(sizes, (in_channels, image_size), classes)
        self.input_gate = make_gate(gate, input_rate, convention)
        blocks: list[nn.Module] = []
        for (c_in, c_out, k, _), rate in zip(convs, conv_rates):
            blocks += [nn.Conv2d(c_in, c_out, k, padding=k // 2), nn.ReLU(), nn.MaxPool2d(2),
                       make_gate(gate, rate, convention)]
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(*_fully_connected(dense[:-1], fc_rates, gate, convention))
        self.output = Linear(*dense[-1])
        attach_weight_gates([self.input_gate, *self.features, *self.classifier, self.output])

    @classmethod
    def build(cls, model: Mapping[str, Any], rates: Rates, image_shape: Sequence[int], classes: int, gate: str,
              convention: str) -> CNN:
        return cls(image_shape[0], image_shape[-1], classes, list(model["channels"]), model["kernel_size"],
                   model["fc_width"], gate, rates.input, rates.conv, rates.fc, convention)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.input_gate(x))
        return self.output(self.classifier(x.flatten(1)))

    @staticmethod
    def stacked_forward(run: StackedPass, x: torch.Tensor) -> torch.Tensor:
        convs = run.kinds.count("conv")
        # The conv blocks run model by model, in channels-last layout (pooling is several
        # times faster in it on CPUs, and tensor cores want it); then the models are stacked.
        xs = run.gate_each([xk.contiguous(memory_format=torch.channels_last) for xk in x.unbind()], 0)
        for i in range(convs):
            xs = run.gate_each([F.max_pool2d(torch.relu(xk), 2) for xk in run.conv_each(xs, i)], i + 1)
        x = torch.stack([xk.flatten(1) for xk in xs])
        for i in range(convs, run.layers - 1):
            x = run.gate(torch.relu(run.linear(x, i)), i + 1)
        return run.linear(x, run.layers - 1)


def weight_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every Linear and Conv2d layer by its dotted name, in the order they were made in."""
    return {name: m for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}


@torch.no_grad()
def effective_weight_norms(model: nn.Module) -> dict[str, float]:
    """Frobenius norm of the weights each layer uses at inference.

    With mean-1 gates (the inverted convention) the stored weights are the
    inference weights. Under the scaled convention the gate before a layer
    multiplies its input by p at inference, so that layer's effective weights
    are p times the stored ones. ReLU and max-pooling commute with that
    positive scaling, so the gate met last before a layer (in forward order)
    is the one that applies.
    """
    norms, pending = {}, 1.0
    for name, module in model.named_modules():
        if isinstance(module, Gate):
            pending = module.inference_scale
        elif isinstance(module, (nn.Linear, nn.Conv2d)):
            norms[name] = pending * float(module.weight.norm())
            pending = 1.0
    return norms
