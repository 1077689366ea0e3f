"""Train K nets of one architecture at once, the models as a batch dimension.

The runs of a grid are hundreds of small nets; one at a time they leave a GPU
idle. Here the K models' weights are stacked ((K, in, out) for linear layers)
and on a GPU every fully connected layer is one batched matrix product; on a
CPU, and for the convolutions everywhere, the layer runs model by model (each
convolution is large enough on its own). The stacked net and its gate noise are
dropout_lab.training.stacked; how the layers of a model kind are stacked is said by
the kind's own network (dropout_lab.training.models). Each model keeps everything
of its own:

- initial weights: taken from its own network, built under its own seed;
- data order: its own CPU generator draws its permutation each epoch;
- gate noise: one generator per (model, dropout slot), drawn `noise_chunk`
  steps at a time; a slot at rate 0 draws nothing;
- gate and convention: any registered gate (dropout_lab.training.gates), inverted or
  scaled, as per-model constants (the models of a pack may differ in them);
  a weight gate (DropConnect) masks only its own models' next layer.

So a model's random streams do not depend on which other models share its
pack, and on the CPU a run trained in a pack is bit-identical to the same run
alone (tested). The data sits on the device as one tensor; there is no
DataLoader and no host copy per step.

Speed switches (`EngineSettings`): bf16 autocast (weights, gradients and
momenta stay float32) and TF32 matrix products, both on by default on a GPU
and off on a CPU ("auto"), and torch.compile.

Evaluation is batched across the pack too: the deterministic net on any split
(with or without the scaled convention's factor p) and Monte-Carlo averaging
over sampled masks, each model drawing its masks from its own generator in the
order its own network would (gates.Gate), so a model's Monte-Carlo numbers
do not depend on its pack either. The layers before the first slot where some
model draws run once per batch, not once per mask (stacked.StackedPass).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from tqdm import tqdm

from dropout_lab.settings.config import PRECISIONS, TF32
from dropout_lab.training.gates import REGISTRY
from dropout_lab.training.models import Network
from dropout_lab.training.sgd import SGD
from dropout_lab.training.stacked import EngineError, GateNoise, SlotNoise, StackedNet

MC_CURVE = (1, 2, 5, 10, 20, 50, 100)  # Monte-Carlo accuracy is also read after this many masks


@dataclass(frozen=True)
class EngineSettings:
    precision: str = "auto"  # auto | fp32 | bf16 (autocast on the matrix products); auto: bf16 on CUDA only
    tf32: bool | str = "auto"  # float32 matrix products on TF32 tensor cores (CUDA); auto: on with CUDA
    compile: bool = False  # torch.compile the forward pass and the update
    noise_chunk: int = 8  # steps of gate noise drawn per generator call; part of the random streams


@dataclass(frozen=True)
class Hyper:
    """What every model of a pack shares."""

    epochs: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    schedule: str  # constant | cosine (per step, to zero) | exponential (per step, to lr * lr_final)
    max_norm: float | None = None
    momentum_start: float | None = None  # ramp linearly from this to `momentum`; None: constant momentum
    momentum_ramp: float = 0.0  # the fraction of the training steps the ramp takes
    dampen_momentum: bool = False  # velocity = m v + (1 - m) g: the step is lr times a running average of gradients
    lr_final: float = 0.01  # exponential schedule: the last step's lr as a fraction of lr


@dataclass
class Member:
    """One model of a pack: its network (holding its initial weights) and its seeds."""

    model: Network
    order_seed: int
    gate_seed: int


class PackTrainer:
    """Train the members of a pack together; every result is per model."""

    def __init__(self, members: Sequence[Member], x_train: torch.Tensor, y_train: torch.Tensor,
                 hyper: Hyper, settings: EngineSettings, device: torch.device) -> None:
        if settings.precision not in PRECISIONS:
            raise EngineError(f"precision={settings.precision!r} is unknown; choose one of {list(PRECISIONS)}")
        if settings.noise_chunk < 1:
            raise EngineError(f"noise_chunk={settings.noise_chunk} must be at least 1")
        self.members, self.hyper, self.settings, self.device = list(members), hyper, settings, device
        self.image_shape = tuple(x_train.shape[1:])
        self.net = StackedNet([m.model for m in members], self.image_shape).to(device)
        self.net.batched_matmul = device.type == "cuda"
        self.K = self.net.K
        self.x_train, self.y_train = x_train.to(device), y_train.to(device)
        self.noise = GateNoise(self.net, [m.gate_seed for m in members], hyper.batch_size,
                               settings.noise_chunk, device)
        self.orders = [torch.Generator().manual_seed(m.order_seed) for m in members]
        self.params = list(self.net.parameters())
        self.step = 0
        self.steps_per_epoch = math.ceil(len(self.y_train) / hyper.batch_size)
        self.total_steps = hyper.epochs * self.steps_per_epoch
        self.effective = self._configure()
        compiled = self.effective["compile"]
        self.optimizer = self._optimizer(compiled)
        self._forward = self._losses
        self._update = self.optimizer.step
        if compiled:
            self._forward = torch.compile(self._losses)
            self._update = torch.compile(self.optimizer.step)

    def _optimizer(self, compiled: bool) -> SGD:
        # SGD is elementwise, so each model is updated exactly as alone. On a GPU the fused
        # kernel reads and writes each weight once per step; compiled, lr is a tensor so
        # that a new value does not recompile. torch's update without its class (dropout_lab.training.sgd).
        h, cuda = self.hyper, self.device.type == "cuda"
        return SGD(
            self.params, lr=torch.tensor(h.lr, device=self.device) if compiled else h.lr,
            momentum=h.momentum, weight_decay=h.weight_decay, fused=True if cuda and not compiled else None,
        )

    def _configure(self) -> dict:
        """Apply the speed settings; return what is in effect on this device (recorded per run)."""
        cuda = self.device.type == "cuda"
        precision = self.settings.precision
        tf32 = self.settings.tf32
        if tf32 not in TF32:
            raise EngineError(f"tf32={tf32!r} is unknown; choose true, false or auto")
        effective = asdict(self.settings)
        effective["precision"] = ("bf16" if cuda else "fp32") if precision == "auto" else precision
        effective["tf32"] = cuda and tf32 in (True, "auto")
        if cuda:
            torch.backends.cuda.matmul.allow_tf32 = effective["tf32"]
            torch.backends.cudnn.allow_tf32 = effective["tf32"]
        effective["pack_size"] = self.K
        effective["device"] = str(self.device)
        return effective

    def lr_at(self, step: int) -> float:
        h = self.hyper
        if h.schedule == "cosine":
            return 0.5 * h.lr * (1.0 + math.cos(math.pi * step / self.total_steps))
        if h.schedule == "exponential":  # lr at the first step, lr * lr_final at the last, geometric between
            return h.lr * h.lr_final ** (step / max(self.total_steps - 1, 1))
        return h.lr

    def momentum_at(self, step: int) -> float:
        """The momentum of this step: from momentum_start linearly to momentum over the first momentum_ramp
        of the steps, then momentum (Hinton et al. 2012); momentum throughout when momentum_start is None."""
        h = self.hyper
        if h.momentum_start is None:
            return h.momentum
        ramp = h.momentum_ramp * self.total_steps
        return h.momentum_start + (h.momentum - h.momentum_start) * min(step / ramp, 1.0)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.effective["precision"] == "bf16")

    def _losses(self, xb: torch.Tensor, yb: torch.Tensor, noise: list) -> tuple[torch.Tensor, torch.Tensor]:
        with self._autocast():
            logits = self.net(xb, noise)
        K, B = yb.shape
        losses = F.cross_entropy(logits.float().flatten(0, 1), yb.flatten(), reduction="none").view(K, B).mean(1)
        return losses, logits.detach()

    def train_epoch(self, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass, each model in its own order; returns each model's mean loss and accuracy (CPU tensors)."""
        self.net.train()
        n, B, chunk = len(self.y_train), self.hyper.batch_size, self.settings.noise_chunk
        order = torch.stack([torch.randperm(n, generator=g) for g in self.orders]).to(self.device)
        loss_sum = torch.zeros(self.K, device=self.device)
        correct = torch.zeros(self.K, device=self.device, dtype=torch.int64)
        starts = tqdm(range(0, n, B), leave=False, disable=None if progress else True, unit="step")
        for i, start in enumerate(starts):
            if i % chunk == 0:
                self.noise.draw()
            idx = order[:, start : start + B]
            xb, yb = self.x_train[idx], self.y_train[idx]
            for group in self.optimizer.param_groups:
                if isinstance(group["lr"], torch.Tensor):
                    group["lr"].fill_(self.lr_at(self.step))
                else:
                    group["lr"] = self.lr_at(self.step)
                if self.hyper.momentum_start is not None or self.hyper.dampen_momentum:
                    # SGD reads both from the group at every step (its fused kernel too). With dampening
                    # the buffer is m v + (1 - m) g; torch starts it at the first gradient, not (1 - m) g.
                    group["momentum"] = self.momentum_at(self.step)
                    if self.hyper.dampen_momentum:
                        group["dampening"] = group["momentum"]
            losses, logits = self._forward(xb, yb, self.noise.step(i % chunk, idx.shape[1]))
            self.optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()  # the models share no weights: each gets its own gradient
            self._update()
            if self.hyper.max_norm is not None:
                self.net.apply_max_norm(self.hyper.max_norm)
            self.step += 1
            with torch.no_grad():
                loss_sum += losses.detach() * idx.shape[1]
                correct += (logits.argmax(2) == yb).sum(1)
        return (loss_sum / n).cpu(), (correct.double() / n).cpu()

    def _stacked_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Shared samples (B, ...) as every model's input (K, B, ...), without a copy."""
        return x.unsqueeze(0).expand(self.K, *x.shape)

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, batch_size: int,
                 scaled_inference: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss and accuracy of each model's deterministic net on (x, y) (shared data, on the device).

        scaled_inference=False leaves out the scaled convention's factor p at inference
        (what the article's convention costs when it is forgotten).
        """
        self.net.eval()
        loss_sum = torch.zeros(self.K, dtype=torch.float64, device=self.device)
        correct = torch.zeros(self.K, dtype=torch.int64, device=self.device)
        for start in range(0, len(y), batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            with self._autocast():
                logits = self.net(self._stacked_inputs(xb), None, scaled_inference=scaled_inference).float()
            target = yb.unsqueeze(0).expand(self.K, -1)
            loss_sum += F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="none").view(
                self.K, -1).double().sum(1)
            correct += (logits.argmax(2) == target).sum(1)
        return (loss_sum / len(y)).cpu(), (correct.double() / len(y)).cpu()

    @torch.no_grad()
    def evaluate_mc(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, samples: int,
                    seeds: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, dict[int, torch.Tensor]]:
        """Each model's loss and accuracy of its predicted probabilities averaged over `samples` masks.

        Model k draws from one generator seeded with seeds[k], for each batch and each
        mask, slot by slot in forward order: exactly the draws its own network makes
        with that generator set on its gates (gates.set_generator), so its numbers are
        those of the model evaluated alone. Also returns each model's accuracy after
        the first k masks, for each k of MC_CURVE below `samples` and for `samples`.
        """
        self.net.eval()
        generators = [torch.Generator(device=self.device).manual_seed(int(s)) for s in seeds]
        ks = sorted({k for k in MC_CURVE if k < samples} | {samples})
        loss_sum = torch.zeros(self.K, dtype=torch.float64, device=self.device)
        correct = {k: torch.zeros(self.K, dtype=torch.int64, device=self.device) for k in ks}
        for start in range(0, len(y), batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            inputs, target = self._stacked_inputs(xb), yb.unsqueeze(0).expand(self.K, -1)
            buffers = self._mc_buffers(len(yb))
            probs, unmasked = None, {}  # the layers before any mask run once per batch (StackedPass)
            for k in range(1, samples + 1):
                noise = self._draw_mc(buffers, len(yb), generators)
                with self._autocast():
                    logits = self.net(inputs, noise, unmasked=unmasked).float()
                probs = F.softmax(logits, dim=2) if probs is None else probs + F.softmax(logits, dim=2)
                if k in correct:
                    correct[k] += (probs.argmax(2) == target).sum(1)
            mean = (probs / samples).clamp_min(1e-12).log()
            loss_sum += F.nll_loss(mean.flatten(0, 1), target.flatten(), reduction="none").view(
                self.K, -1).double().sum(1)
        curve = {k: (c.double() / len(y)).cpu() for k, c in correct.items()}
        return (loss_sum / len(y)).cpu(), curve[samples], curve

    def _mc_buffers(self, rows: int) -> list[dict[str, torch.Tensor]]:
        """Zeroed storage for one mask per model, for a batch of `rows` samples; rows of models that do
        not draw stay zero."""
        buffers = []
        for s, classes in enumerate(self.net.classes):
            buffers.append({
                cls.name: torch.zeros(self.K, cls.storage(math.prod(self.net.factor_shape(s, cls.name, rows))),
                                      dtype=cls.storage_dtype, device=self.device)
                for cls in classes})
        return buffers

    def _draw_mc(self, buffers, rows: int, generators: Sequence[torch.Generator]) -> list[SlotNoise]:
        """One mask per model: slot by slot, each model's draws as its own gates make them (gates.Gate)."""
        noise = []
        for s, slot in enumerate(buffers):
            self.net.fill(slot, s, lambda k: generators[k])
            shapes = {name: self.net.factor_shape(s, name, rows) for name in slot}
            noise.append({name: REGISTRY[name].raw(stored, math.prod(shapes[name])).reshape(self.K, *shapes[name])
                          for name, stored in slot.items()})
        return noise

    def trained_models(self) -> list[Network]:
        """Each member's own network holding its trained weights (for per-run evaluation)."""
        models = [m.model for m in self.members]
        self.net.copy_into(models)
        return models

    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "params": [p.detach().clone() for p in self.params],
            "optimizer": self.optimizer.state_dict(),
            "orders": [g.get_state() for g in self.orders],
            "noise": self.noise.state(),
        }

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        self.step = state["step"]
        for p, saved in zip(self.params, state["params"]):
            p.copy_(saved)
        self.optimizer.load_state_dict(state["optimizer"])
        for g, saved in zip(self.orders, state["orders"]):
            g.set_state(saved)
        self.noise.load_state(state["noise"])
