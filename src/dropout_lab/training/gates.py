"""Dropout gates: multiplicative noise with mean 1 in training, the identity in eval mode.

`rate` is the drop probability (PyTorch's and Keras's convention); the theory's
retain probability is p = 1 - rate. Every noisy gate has mean 1 and variance
rate / (1 - rate), so the network needs no rescaling at inference:

- BernoulliGate:   d / p with d ~ Bernoulli(p) ("inverted" dropout), on units;
- GaussianGate:    1 + sigma * eps, eps ~ N(0, 1), sigma^2 = rate / (1 - rate), on units;
- UniformGate:     U(1 - a, 1 + a) with a^2 / 3 = rate / (1 - rate), on units (above
                   rate 0.25, a > 1 and some factors are negative);
- DropConnectGate: Bernoulli d / p on the weights of the layer that reads the slot
                   (Wan et al., 2013), one mask per model and mini-batch.

A gate owns its noise law; the single-model path (dropout_lab.training.models) and the
batched engine (dropout_lab.training.engine) both use it through the class methods `storage`,
`fill`, `raw`, `factor`, `constants` and `IDENTITY`. A new gate is a subclass registered with
`@register`, plus config/gate/NAME.yaml (README, "Adding a gate"). It keeps the gate contract
the engine relies on (dropout_lab.training.gate_contract, which `register` runs).
"""

from __future__ import annotations

import math
from typing import ClassVar, Mapping

import torch
from torch import nn

from dropout_lab.settings.vocabulary import CONVENTIONS
from dropout_lab.training.gate_contract import check_contract

# The conventions (settings.vocabulary): inverted is mean-1 noise in training and the identity
# at inference (PyTorch, Keras); scaled is the article's: noise with mean p in training
# (Bernoulli d ~ B(p), Gaussian N(p, p(1-p))), and activations scaled by p at inference,
# which is the same as scaling the next layer's weights by p.

REGISTRY: dict[str, type["Gate"]] = {}  # gate=NAME -> its class, in registration order
TARGETS = ("units", "weights")  # what a gate multiplies: the slot's activations, or the next layer's weights


def register(cls: type["Gate"]) -> type["Gate"]:
    """Class decorator: make a gate available as gate=NAME (config/gate/NAME.yaml names it), once its class
    keeps the gate contract."""
    check_contract(cls, TARGETS)
    if cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
        raise ValueError(f"gate {cls.name!r} is registered twice")
    REGISTRY[cls.name] = cls
    return cls


class Gate(nn.Module):
    """Base class: eval mode or rate 0 is the identity (times p under the scaled convention in eval).

    A subclass keeps the gate contract (this module's docstring): its own `name`, a `fill` and
    `factor` whose zero rows with IDENTITY give exactly 1, and the moments `mean` and `variance` say.
    """

    name: ClassVar[str] = "gate"
    target: ClassVar[str] = "units"  # one of TARGETS
    storage_dtype: ClassVar[torch.dtype] = torch.float32
    IDENTITY: ClassVar[Mapping[str, float]] = {}  # constants for which `factor` is exactly 1

    def __init__(self, rate: float, convention: str = "inverted") -> None:
        super().__init__()
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout rate {rate} is outside [0, 1)")
        if convention not in CONVENTIONS:
            raise ValueError(f"unknown convention {convention!r}; choose one of {list(CONVENTIONS)}")
        self.rate = float(rate)
        self.scaled = convention == "scaled"
        # Set by the trainer so gate noise has its own stream, independent of
        # initialisation and data order. None means torch's global generator.
        self.generator: torch.Generator | None = None

    # ---- the noise law, shared with the batched engine

    @staticmethod
    def storage(numel: int) -> int:
        """How many stored values hold `numel` raw draws."""
        return numel

    @staticmethod
    def fill(stored: torch.Tensor, generator: torch.Generator | None) -> None:  # pragma: no cover - abstract
        """Overwrite `stored` with fresh draws from `generator`, in one call."""
        raise NotImplementedError

    @staticmethod
    def raw(stored: torch.Tensor, numel: int) -> torch.Tensor:
        """The first `numel` raw draws held in `stored` (along its last dimension)."""
        return stored[..., :numel]

    @staticmethod
    def factor(raw: torch.Tensor, c: Mapping[str, torch.Tensor | float]) -> torch.Tensor:  # pragma: no cover
        """The multiplicative noise (float32) from raw draws and constants (scalars or broadcastable tensors)."""
        raise NotImplementedError

    def constants(self) -> dict[str, float]:
        """This gate's constants for `factor`."""
        return dict(self.IDENTITY)

    # ---- statistics

    @property
    def retain(self) -> float:
        return 1.0 - self.rate

    @property
    def variance(self) -> float:
        """Variance of the mean-1 (inverted) noise; the scaled convention's is p^2 times this."""
        return self.rate / (1.0 - self.rate)

    @property
    def mean(self) -> float:
        """Mean of the noise in training: 1, or p under the scaled convention."""
        return self.retain if self.scaled else 1.0

    @property
    def inference_scale(self) -> float:
        """What eval mode multiplies the activations by: p under the scaled convention, else 1."""
        return self.retain if self.scaled else 1.0

    @property
    def draws(self) -> bool:
        """Whether this gate draws noise in training at all."""
        return self.rate > 0.0

    # ---- the single-model path

    def sample_factor(self, shape: torch.Size, device: torch.device) -> torch.Tensor:
        """Fresh noise of `shape` from this gate's generator (one `fill` call), as float32."""
        numel = math.prod(shape)
        stored = torch.empty(self.storage(numel), dtype=self.storage_dtype, device=device)
        self.fill(stored, self.generator)
        constants = self.constants()
        return self.factor(self.raw(stored, numel), constants).view(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.draws:
            return x
        if not self.training:
            return x * self.inference_scale if self.scaled else x
        if self.target == "weights":  # the next layer masks its weights (models.GatedLinear)
            return x
        return x * self.sample_factor(x.shape, x.device).to(x.dtype)

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


# ---- the gate contract, checked at registration on tiny tensors (about a millisecond a class)

# The Bernoulli mask is drawn as 16-bit random integers, four per 64-bit draw:
# on CPU this is about twice as fast as torch.rand and seven times faster than
# bernoulli_. The retain probability is therefore a multiple of 1/65536; the
# mask is scaled by the inverse of that realised probability, so the mean stays
# exactly 1 and the variance is within 2e-5 of rate / (1 - rate).
_LEVELS = 1 << 16


@register
class BernoulliGate(Gate):
    name = "bernoulli"
    storage_dtype = torch.int64
    IDENTITY = {"threshold": float(_LEVELS // 2 - 1), "scale": 1.0}  # every int16 draw is kept, times 1

    def __init__(self, rate: float, convention: str = "inverted") -> None:
        super().__init__(rate, convention)
        keep_levels = round(self.retain * _LEVELS)
        if self.rate > 0 and keep_levels == _LEVELS:
            keep_levels -= 1  # a rate below 1/65536 still drops something
        self._threshold = keep_levels - _LEVELS // 2 - 1  # keep: int16 draw <= threshold
        self._realised_retain = keep_levels / _LEVELS
        self._scale = 1.0 if self.scaled else _LEVELS / keep_levels

    @staticmethod
    def storage(numel: int) -> int:
        return (numel + 3) // 4  # 64-bit words

    @staticmethod
    def fill(stored: torch.Tensor, generator: torch.Generator | None) -> None:
        # The full signed range: plain random_() leaves the top bit 0, which would
        # bias every fourth 16-bit draw.
        stored.random_(-(1 << 63), None, generator=generator)

    @staticmethod
    def raw(stored: torch.Tensor, numel: int) -> torch.Tensor:
        return stored.view(torch.int16)[..., :numel]

    @staticmethod
    def factor(raw, c):
        return (raw <= c["threshold"]).to(torch.float32) * c["scale"]

    def constants(self) -> dict[str, float]:
        return {"threshold": float(self._threshold), "scale": self._scale}

    @property
    def inference_scale(self) -> float:
        return self._realised_retain if self.scaled else 1.0


@register
class GaussianGate(Gate):
    name = "gaussian"
    IDENTITY = {"mean": 1.0, "sigma": 0.0}

    def __init__(self, rate: float, convention: str = "inverted") -> None:
        super().__init__(rate, convention)
        self.sigma = math.sqrt(self.variance)

    @staticmethod
    def fill(stored, generator):
        stored.normal_(generator=generator)

    @staticmethod
    def factor(raw, c):
        # mean * (1 + sigma * eps): N(1, rate/(1-rate)), or N(p, p(1-p)) under the scaled convention
        return (1.0 + raw * c["sigma"]) * c["mean"]

    def constants(self) -> dict[str, float]:
        return {"mean": self.mean, "sigma": self.sigma}


@register
class UniformGate(Gate):
    name = "uniform"
    IDENTITY = {"mean": 1.0, "half_width": 0.0}

    def __init__(self, rate: float, convention: str = "inverted") -> None:
        super().__init__(rate, convention)
        self.half_width = math.sqrt(3.0 * self.variance)  # U(1-a, 1+a) has variance a^2 / 3

    @staticmethod
    def fill(stored, generator):
        stored.uniform_(generator=generator)

    @staticmethod
    def factor(raw, c):
        return (1.0 + (2.0 * raw - 1.0) * c["half_width"]) * c["mean"]

    def constants(self) -> dict[str, float]:
        return {"mean": self.mean, "half_width": self.half_width}


@register
class DropConnectGate(BernoulliGate):
    """Bernoulli noise on each weight of the layer that reads this slot (one mask per mini-batch and model:
    in*out draws per step, against batch*units for a unit gate)."""

    name = "dropconnect"
    target = "weights"


@register
class NoGate(Gate):
    """No dropout: accepts only rate 0 so that a rate is never silently ignored."""

    name = "none"

    def __init__(self, rate: float = 0.0, convention: str = "inverted") -> None:
        super().__init__(rate, convention)
        if rate != 0.0:
            raise ValueError(f"gate 'none' cannot drop at rate {rate}")


def gate_names() -> list[str]:
    """Every registered gate, as gate=NAME accepts it."""
    return list(REGISTRY)


def make_gate(kind: str, rate: float, convention: str = "inverted") -> Gate:
    if kind not in REGISTRY:
        raise ValueError(f"unknown gate {kind!r}; choose one of {gate_names()}")
    return REGISTRY[kind](rate, convention)


def gates_of(model: nn.Module) -> list[Gate]:
    return [m for m in model.modules() if isinstance(m, Gate)]


def set_generator(model: nn.Module, generator: torch.Generator | None) -> None:
    for gate in gates_of(model):
        gate.generator = generator


class sampling_gates:
    """Context manager: gates draw noise (as in training) while the rest of the model stays in eval mode."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __enter__(self) -> nn.Module:
        self._was_training = self.model.training
        self.model.eval()
        for gate in gates_of(self.model):
            gate.train()
        return self.model

    def __exit__(self, *exc) -> None:
        self.model.train(self._was_training)
