"""Dropout gates: multiplicative noise with mean 1 in training, the identity in eval mode.

`rate` is the drop probability (PyTorch's and Keras's convention); the theory's
retain probability is p = 1 - rate. Both noisy gates have mean 1 and variance
rate / (1 - rate), so the network needs no rescaling at inference:

- BernoulliGate: d / p with d ~ Bernoulli(p) ("inverted" dropout);
- GaussianGate:  1 + sigma * eps with eps ~ N(0, 1) and sigma^2 = rate / (1 - rate).
"""

from __future__ import annotations

import math

import torch
from torch import nn

GATES = ("bernoulli", "gaussian", "none")
# inverted: mean-1 noise in training, the identity at inference (PyTorch, Keras).
# scaled: the article's convention: noise with mean p in training (Bernoulli
# d ~ B(p), Gaussian N(p, p(1-p))), and activations scaled by p at inference,
# which is the same as scaling the next layer's weights by p.
CONVENTIONS = ("inverted", "scaled")

# The Bernoulli mask is drawn as 16-bit random integers, four per 64-bit draw:
# on CPU this is about twice as fast as torch.rand and seven times faster than
# bernoulli_. The retain probability is therefore a multiple of 1/65536; the
# mask is scaled by the inverse of that realised probability, so the mean stays
# exactly 1 and the variance is within 2e-5 of rate / (1 - rate).
_LEVELS = 1 << 16


class Gate(nn.Module):
    """Base class: subclasses draw noise in `sample`; eval mode or rate 0 is the identity."""

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

    @property
    def retain(self) -> float:
        return 1.0 - self.rate

    @property
    def variance(self) -> float:
        """Variance of the mean-1 (inverted) noise; the scaled convention's is p^2 times this."""
        return self.rate / (1.0 - self.rate)

    @property
    def inference_scale(self) -> float:
        """What eval mode multiplies by: p under the scaled convention, else 1."""
        return self.retain if self.scaled else 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rate == 0.0:
            return x
        if not self.training:
            return x * self.inference_scale if self.scaled else x
        return self.sample(x)

    def sample(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


class BernoulliGate(Gate):
    def __init__(self, rate: float, convention: str = "inverted") -> None:
        super().__init__(rate, convention)
        keep_levels = round(self.retain * _LEVELS)
        if self.rate > 0 and keep_levels == _LEVELS:
            keep_levels -= 1  # a rate below 1/65536 still drops something
        self._threshold = keep_levels - _LEVELS // 2  # compared with int16 values in [-32768, 32767]
        self._realised_retain = keep_levels / _LEVELS
        self._scale = 1.0 if self.scaled else _LEVELS / keep_levels

    @property
    def inference_scale(self) -> float:
        return self._realised_retain if self.scaled else 1.0

    def mask(self, shape: torch.Size, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Dropout mask: 1/p (inverted) or 1 (scaled) with probability p, else 0."""
        numel = math.prod(shape)
        words = torch.empty((numel + 3) // 4, dtype=torch.int64, device=device)
        # The full signed range: plain random_() leaves the top bit 0, which would
        # bias every fourth 16-bit draw.
        words.random_(-(1 << 63), None, generator=self.generator)
        draws = words.view(torch.int16)[:numel].view(shape)
        keep = (draws < self._threshold).to(dtype)
        return keep if self._scale == 1.0 else keep.mul_(self._scale)

    def sample(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask(x.shape, x.device, x.dtype)


class GaussianGate(Gate):
    def __init__(self, rate: float, convention: str = "inverted") -> None:
        super().__init__(rate, convention)
        self.sigma = math.sqrt(self.variance)

    def sample(self, x: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(x.shape, generator=self.generator, device=x.device, dtype=x.dtype)
        if self.scaled:  # p * (1 + sigma * noise) = N(p, p(1-p))
            x = x * self.retain
        return torch.addcmul(x, x, noise, value=self.sigma)  # x * (1 + sigma * noise), one pass


class NoGate(Gate):
    """No dropout: accepts only rate 0 so that a rate is never silently ignored."""

    def __init__(self, rate: float = 0.0, convention: str = "inverted") -> None:
        super().__init__(rate, convention)
        if rate != 0.0:
            raise ValueError(f"gate 'none' cannot drop at rate {rate}")

    def sample(self, x: torch.Tensor) -> torch.Tensor:
        return x


def make_gate(kind: str, rate: float, convention: str = "inverted") -> Gate:
    if kind == "bernoulli":
        return BernoulliGate(rate, convention)
    if kind == "gaussian":
        return GaussianGate(rate, convention)
    if kind == "none":
        return NoGate(rate, convention)
    raise ValueError(f"unknown gate {kind!r}; choose one of {list(GATES)}")


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
