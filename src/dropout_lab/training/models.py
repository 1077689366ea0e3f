"""The two networks: an MLP for MNIST and a small CNN for CIFAR-10, with dropout slots.

Dropout placement is given per slot as a drop rate:
- MLP: `input` (on the pixels) and one rate per hidden layer (after its ReLU);
- CNN: `input`, one rate per conv block (after its pooling) and one per fully
  connected hidden layer (after its ReLU), as in Srivastava et al. (2014), Table 4.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dropout_lab.training.gates import Gate, make_gate


class Linear(nn.Linear):
    """nn.Linear whose weights a weight gate (DropConnect) of the slot it reads may mask in training."""

    weight_gate: Gate | None = None  # set by _attach_weight_gates; not a submodule (the slot holds it)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.weight_gate
        if gate is None or not (gate.training and gate.draws):
            return super().forward(x)
        mask = gate.sample_factor(self.weight.shape, self.weight.device).to(self.weight.dtype)
        return F.linear(x, self.weight * mask, self.bias)


def _attach_weight_gates(layers: Sequence[nn.Module]) -> None:
    """Give each weight gate (gates.Gate.target == "weights") to the layer that reads its slot."""
    pending: Gate | None = None
    for module in layers:
        if isinstance(module, Gate):
            pending = module if module.target == "weights" and module.draws else None
        elif isinstance(module, Linear):
            module.__dict__["weight_gate"], pending = pending, None  # plain attribute: no second registration
        elif isinstance(module, nn.Conv2d) and pending is not None:
            raise ValueError(f"gate {pending.name} masks fully connected weights, but a convolution reads its "
                             "slot; give it rate 0 there (on model=cnn only dropout.fc and the last conv block)")


class MLP(nn.Module):
    """in_features -> len(hidden_rates) x width (ReLU) -> classes."""

    def __init__(
        self,
        in_features: int,
        classes: int,
        width: int,
        gate: str,
        input_rate: float,
        hidden_rates: Sequence[float],
        convention: str = "inverted",
    ) -> None:
        super().__init__()
        self.input_gate = make_gate(gate, input_rate, convention)
        layers: list[nn.Module] = []
        fan_in = in_features
        for rate in hidden_rates:
            layers += [Linear(fan_in, width), nn.ReLU(), make_gate(gate, rate, convention)]
            fan_in = width
        self.hidden = nn.Sequential(*layers)
        self.output = Linear(fan_in, classes)
        _attach_weight_gates([self.input_gate, *self.hidden, self.output])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.hidden(self.input_gate(x.flatten(1))))


class CNN(nn.Module):
    """len(conv_rates) x [conv k x k, ReLU, 2x2 max-pool] -> len(fc_rates) x fc_width (ReLU) -> classes."""

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        classes: int,
        channels: Sequence[int],
        kernel_size: int,
        fc_width: int,
        gate: str,
        input_rate: float,
        conv_rates: Sequence[float],
        fc_rates: Sequence[float],
        convention: str = "inverted",
    ) -> None:
        super().__init__()
        if len(channels) != len(conv_rates):
            raise ValueError(f"{len(channels)} conv blocks but {len(conv_rates)} conv dropout rates")
        self.input_gate = make_gate(gate, input_rate, convention)
        blocks: list[nn.Module] = []
        size, fan_in = image_size, in_channels
        for width, rate in zip(channels, conv_rates):
            blocks += [
                nn.Conv2d(fan_in, width, kernel_size, padding=kernel_size // 2),
                nn.ReLU(),
                nn.MaxPool2d(2),
                make_gate(gate, rate, convention),
            ]
            fan_in, size = width, size // 2
        self.features = nn.Sequential(*blocks)
        fc: list[nn.Module] = []
        fan_in = fan_in * size * size
        for rate in fc_rates:
            fc += [Linear(fan_in, fc_width), nn.ReLU(), make_gate(gate, rate, convention)]
            fan_in = fc_width
        self.classifier = nn.Sequential(*fc)
        self.output = Linear(fan_in, classes)
        _attach_weight_gates([self.input_gate, *self.features, *self.classifier, self.output])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.input_gate(x))
        return self.output(self.classifier(x.flatten(1)))


def weight_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every Linear and Conv2d layer by its dotted name, in forward order."""
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
