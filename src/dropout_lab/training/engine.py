"""Train K nets of one architecture at once, the models as a batch dimension.

The runs of a grid are hundreds of small nets; one at a time they leave a GPU
idle. Here the K models' weights are stacked ((K, in, out) for linear layers)
and on a GPU every fully connected layer is one batched matrix product; on a
CPU, and for the convolutions everywhere, the layer runs model by model (each
convolution is large enough on its own). Each model keeps everything of its own:

- initial weights: taken from its own `MLP`/`CNN`, built under its own seed;
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
order its own `MLP`/`CNN` would (gates.Gate), so a model's Monte-Carlo numbers
do not depend on its pack either.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from dropout_lab.settings.config import PRECISIONS, TF32
from dropout_lab.training.gates import REGISTRY, Gate
from dropout_lab.training.models import CNN, MLP, weight_layers

MC_CURVE = (1, 2, 5, 10, 20, 50, 100)  # Monte-Carlo accuracy is also read after this many masks


class EngineError(ValueError):
    """Models that cannot share a pack, or settings the device cannot honour; one line."""


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
    """One model of a pack: its net (holding its initial weights) and its seeds."""

    model: nn.Module
    order_seed: int
    gate_seed: int


# --------------------------------------------------------------------------- the stacked net


def _ops(model: nn.Module) -> list[tuple[str, nn.Module | None]]:
    """The forward pass of an MLP or CNN as a flat list of (op, module)."""
    if isinstance(model, MLP):
        ops = [("flatten", None), ("gate", model.input_gate)]
        blocks = [model.hidden]
    elif isinstance(model, CNN):
        ops = [("gate", model.input_gate)]
        blocks = [model.features, "flatten", model.classifier]
    else:
        raise EngineError(f"cannot stack a {type(model).__name__}; the engine knows MLP and CNN")
    for block in blocks:
        if block == "flatten":
            ops.append(("flatten", None))
            continue
        for m in block:
            if isinstance(m, Gate):
                ops.append(("gate", m))
            elif isinstance(m, nn.Linear):
                ops.append(("linear", m))
            elif isinstance(m, nn.Conv2d):
                ops.append(("conv", m))
            elif isinstance(m, nn.ReLU):
                ops.append(("relu", None))
            elif isinstance(m, nn.MaxPool2d):
                ops.append(("pool", None))
            else:
                raise EngineError(f"cannot stack layer {m!r}")
    ops.append(("linear", model.output))
    return ops


def _per_model(fn, *stacked: torch.Tensor) -> torch.Tensor:
    """fn applied to each model's slice of the stacked tensors, results stacked again."""
    if stacked[0].shape[0] == 1:  # views only: no copies in either direction
        return fn(*(t.squeeze(0) for t in stacked)).unsqueeze(0)
    return torch.stack([fn(*slices) for slices in zip(*(t.unbind() for t in stacked))])


# One slot's noise for a step: the raw draws of each gate class some model of the pack draws
# there, by gate name, shaped (K, *factor shape); rows of models that do not draw it are zero,
# which that class's identity constants turn into a factor of exactly 1.
SlotNoise = dict[str, torch.Tensor]


class StackedNet(nn.Module):
    """K copies of one architecture with their own weights and gates; input (K, B, ...).

    Each slot applies, for every gate class some model draws there, that class's
    factor (gates.Gate.factor) with per-model constants: the model's own, or the
    class's identity constants for the other models. A unit gate multiplies the
    slot's activations; a weight gate (DropConnect) multiplies the weights of the
    next fully connected layer.
    """

    def __init__(self, models: Sequence[nn.Module], image_shape: Sequence[int]) -> None:
        super().__init__()
        plans = [_ops(m) for m in models]
        first = plans[0]
        for k, plan in enumerate(plans[1:], 1):
            if [op for op, _ in plan] != [op for op, _ in first]:
                raise EngineError(f"model {k} of the pack has another architecture than model 0")
        self.K = len(models)
        # One batched product per layer (GPUs), or one product per model (CPUs): the CPU's
        # batched kernel picks its blocking by the batch size for some shapes, so a model's
        # bits would depend on its pack; per model they are exactly those of the model alone.
        self.batched_matmul = False
        self.ops: list[tuple[str, int]] = []  # (op, index into weights / gates)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.paddings: list[int] = []
        gate_slots: list[list[Gate]] = []
        for i, (op, _) in enumerate(first):
            column = [plan[i][1] for plan in plans]
            if op in ("linear", "conv"):
                shapes = {tuple(m.weight.shape) for m in column}
                if len(shapes) != 1:
                    raise EngineError(f"layer {len(self.weights)} has different shapes in the pack: {sorted(shapes)}")
                self.ops.append((op, len(self.weights)))
                # Linear weights are kept as (K, in, out) so that x @ W needs no transpose and the
                # weight gradient comes out of the batched product contiguous (no copy per step).
                stacked = torch.stack([m.weight.detach() for m in column])
                stacked = stacked.transpose(1, 2).contiguous() if op == "linear" else stacked
                self.weights.append(nn.Parameter(stacked))
                self.biases.append(nn.Parameter(torch.stack([m.bias.detach() for m in column])))
                self.paddings.append(column[0].padding[0] if op == "conv" else 0)
            elif op == "gate":
                self.ops.append((op, len(gate_slots)))
                gate_slots.append(column)
            else:
                self.ops.append((op, -1))
        self.kinds = [type(slot[k]).name for slot in gate_slots[:1] for k in range(self.K)] or ["none"] * self.K
        self.rates = torch.tensor([[g.rate for g in slot] for slot in gate_slots], dtype=torch.float64).T  # (K, S)
        unit_shapes = self._unit_shapes(models[0], image_shape)
        # Per slot: the gate classes drawn there, in registry order, and each one's factor shape per model.
        self.classes: list[list[type[Gate]]] = []
        self.factor_shapes: list[dict[str, tuple[int, ...]]] = []
        self._eval_scaled: list[bool] = []
        self._all_weighted: list[bool] = []
        for s, slot in enumerate(gate_slots):
            drawn = {type(g) for g in slot if g.draws}
            classes = [cls for cls in REGISTRY.values() if cls in drawn]
            shapes = {}
            for cls in classes:
                if cls.target == "weights":
                    reader = self._reader(s)
                    if reader is None:
                        raise EngineError(f"gate {cls.name} masks the weights of the fully connected layer after "
                                          f"its slot, but slot {s} is read by a convolution")
                    k_in, k_out = self.weights[reader].shape[1:]
                    shapes[cls.name] = (k_out, k_in)  # nn.Linear's layout, as the model alone draws it
                else:
                    shapes[cls.name] = unit_shapes[s]
            self.classes.append(classes)
            self.factor_shapes.append(shapes)
            for cls in classes:
                batch_dims = 0 if cls.target == "weights" else 1
                for key in cls.IDENTITY:
                    values = [g.constants()[key] if type(g) is cls and g.draws else cls.IDENTITY[key] for g in slot]
                    self.register_buffer(self._const_name(s, cls, key), torch.tensor(values, dtype=torch.float32).view(
                        self.K, *([1] * (batch_dims + len(shapes[cls.name])))))
            # The models whose weight gate draws here: only they pay for a mask over their weights.
            weighted = [k for k, g in enumerate(slot) if g.target == "weights" and g.draws]
            self.register_buffer(f"weight_rows{s}", torch.tensor(weighted, dtype=torch.int64))
            self._all_weighted.append(len(weighted) == self.K)
            eval_scale = [g.inference_scale if g.draws else 1.0 for g in slot]
            self.register_buffer(f"eval_scale{s}", torch.tensor(eval_scale, dtype=torch.float32).view(
                self.K, *([1] * (1 + len(unit_shapes[s])))))
            self._eval_scaled.append(any(v != 1.0 for v in eval_scale))

    @staticmethod
    def _const_name(s: int, cls: type[Gate], key: str) -> str:
        return f"gate{s}_{cls.name}_{key}"

    def _reader(self, s: int) -> int | None:
        """The index of the fully connected layer that reads slot s (None if a convolution does)."""
        at = self.ops.index(("gate", s))
        for op, i in self.ops[at + 1:] if at + 1 < len(self.ops) else []:
            if op in ("linear", "conv"):
                return i if op == "linear" else None
        return None

    @staticmethod
    def _unit_shapes(model: nn.Module, image_shape: Sequence[int]) -> list[tuple[int, ...]]:
        shapes: list[tuple[int, ...]] = []
        hooks = [g.register_forward_hook(lambda m, inp, out: shapes.append(tuple(inp[0].shape[1:])))
                 for g in model.modules() if isinstance(g, Gate)]
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *image_shape))
        model.train(was_training)
        for hook in hooks:
            hook.remove()
        return shapes

    @property
    def slots(self) -> int:
        return len(self.classes)

    def factor_shape(self, s: int, name: str, rows: int) -> tuple[int, ...]:
        """One model's factor from gate `name` in slot s for `rows` samples (a weight gate's: its layer's)."""
        shape = self.factor_shapes[s][name]
        return shape if REGISTRY[name].target == "weights" else (rows, *shape)

    def fill(self, slot: Mapping[str, torch.Tensor], s: int, generator_of: Callable[[int], torch.Generator]) -> None:
        """Fresh draws into slot s's storage (K rows per gate class) for each model that drops there, from its
        own generator; the rows of the other models are left as they are (zero)."""
        for k, kind in enumerate(self.kinds):
            if kind in slot and self.rates[k, s] > 0:
                REGISTRY[kind].fill(slot[kind][k], generator_of(k))

    def _factor(self, s: int, cls: type[Gate], raw: torch.Tensor, k: int | None) -> torch.Tensor:
        consts = {key: getattr(self, self._const_name(s, cls, key)) for key in cls.IDENTITY}
        if k is not None:
            consts = {key: value[k] for key, value in consts.items()}
        return cls.factor(raw, consts)

    def _gate(self, x: torch.Tensor, s: int, noise: SlotNoise | None, k: int | None = None,
              scaled_inference: bool = True) -> torch.Tensor:
        """Slot s's unit gates on the stacked activations, or (k given) on model k's own."""
        if noise is None:  # deterministic net: the identity, or times p under the scaled convention
            if self._eval_scaled[s] and scaled_inference:
                scale = self.eval_scale_of(s)
                return x * (scale if k is None else scale[k]).to(x.dtype)
            return x
        for cls in self.classes[s]:
            if cls.target == "units":
                x = x * self._factor(s, cls, noise[cls.name] if k is None else noise[cls.name][k], k).to(x.dtype)
        return x

    def _weight_factor(self, s: int, noise: SlotNoise | None) -> tuple[torch.Tensor | None, torch.Tensor] | None:
        """Slot s's weight gate on the next fully connected layer: (the models it masks, None for all; their
        factors (R, in, out))."""
        for cls in self.classes[s] if noise is not None else ():
            if cls.target == "weights":
                if self._all_weighted[s]:
                    return None, self._factor(s, cls, noise[cls.name], None).transpose(1, 2)
                rows = getattr(self, f"weight_rows{s}")
                consts = {key: getattr(self, self._const_name(s, cls, key))[rows] for key in cls.IDENTITY}
                return rows, cls.factor(noise[cls.name][rows], consts).transpose(1, 2)
        return None

    def _linear(self, i: int, x: torch.Tensor, masked: tuple[torch.Tensor | None, torch.Tensor] | None
                ) -> torch.Tensor:
        """Fully connected layer i of every model; the models a weight gate masks use their masked weights
        (computed apart, so that the other models of the pack do not pay for a mask over their weights)."""
        def product(bias, inputs, weights):
            if self.batched_matmul:
                return torch.baddbmm(bias.unsqueeze(1), inputs, weights)
            return _per_model(torch.addmm, bias, inputs, weights)

        w, b = self.weights[i], self.biases[i]
        if masked is None:
            return product(b, x, w)
        rows, factor = masked
        if rows is None:
            return product(b, x, w * factor.to(w.dtype))
        out = product(b, x, w)
        return out.index_copy(0, rows, product(b[rows], x[rows], w[rows] * factor.to(w.dtype)))

    def eval_scale_of(self, s: int) -> torch.Tensor:
        return getattr(self, f"eval_scale{s}")

    def forward(self, x: torch.Tensor, noise: Sequence[SlotNoise] | None = None,
                scaled_inference: bool = True) -> torch.Tensor:
        """Logits (K, B, classes) for inputs (K, B, ...); `noise` per slot, or None for the deterministic net
        (without the scaled convention's factor p if not scaled_inference)."""
        ops = self.ops
        pending = None  # a weight gate's factor for the next fully connected layer
        if ("conv", 0) in ops:
            # The conv blocks run model by model, in channels-last layout (pooling is several
            # times faster in it on CPUs, and tensor cores want it); then the models are stacked.
            cut = ops.index(("flatten", -1))
            xs = [xk.contiguous(memory_format=torch.channels_last) for xk in x.unbind()]
            for op, i in ops[:cut]:
                if op == "conv":
                    xs = [F.conv2d(xk, w, b, padding=self.paddings[i])
                          for xk, w, b in zip(xs, self.weights[i].unbind(), self.biases[i].unbind())]
                elif op == "gate":
                    slot_noise = None if noise is None else noise[i]
                    xs = [self._gate(xk, i, slot_noise, k, scaled_inference) for k, xk in enumerate(xs)]
                    pending = self._weight_factor(i, slot_noise)
                elif op == "relu":
                    xs = [torch.relu(xk) for xk in xs]
                elif op == "pool":
                    xs = [F.max_pool2d(xk, 2) for xk in xs]
            x = torch.stack([xk.flatten(1) for xk in xs])
            ops = ops[cut + 1 :]
        for op, i in ops:
            if op == "linear":
                x, pending = self._linear(i, x, pending), None
            elif op == "gate":
                slot_noise = noise[i] if noise is not None else None
                x = self._gate(x, i, slot_noise, None, scaled_inference)
                pending = self._weight_factor(i, slot_noise)
            elif op == "relu":
                x = torch.relu(x)
            elif op == "flatten":
                x = x.flatten(2)
        return x

    @torch.no_grad()
    def apply_max_norm(self, max_norm: float) -> None:
        """Rescale each unit's incoming weights to L2 norm <= max_norm, per model."""
        for (op, i) in self._weight_ops():
            w = self.weights[i]
            if op == "linear":  # (K, in, out): a unit's incoming weights are a column
                w.mul_(max_norm / w.norm(dim=1, keepdim=True).clamp_(min=max_norm))
            else:  # (K, out, in, kh, kw)
                norms = w.flatten(2).norm(dim=2).clamp_(min=max_norm)
                w.mul_((max_norm / norms).view(*norms.shape, 1, 1, 1))

    def _weight_ops(self) -> list[tuple[str, int]]:
        return [(op, i) for op, i in self.ops if op in ("linear", "conv")]

    @torch.no_grad()
    def copy_into(self, models: Sequence[nn.Module]) -> None:
        """Write each model's trained weights back into its own MLP/CNN."""
        for k, model in enumerate(models):
            for (op, j), layer in zip(self._weight_ops(), weight_layers(model).values()):
                layer.weight.copy_(self.weights[j][k].T if op == "linear" else self.weights[j][k])
                layer.bias.copy_(self.biases[j][k])


# --------------------------------------------------------------------------- gate noise


class GateNoise:
    """Noise for `chunk` steps at a time, from one generator per (model, slot).

    Each gate class stores its draws its own way (gates.Gate.storage/fill/raw; the
    Bernoulli gates four int16 draws per 64-bit word). A model draws only its own
    gate's noise, and only in slots where it drops; the other rows stay zero, which
    the net's identity constants turn into a factor of 1. A unit gate draws
    batch x units values per step, a weight gate out x in.
    """

    def __init__(self, net: StackedNet, seeds: Sequence[int], batch_size: int, chunk: int,
                 device: torch.device) -> None:
        self.net, self.batch_size, self.chunk = net, batch_size, chunk
        self.generators = [
            [torch.Generator(device=device).manual_seed(int(s))
             for s in np.random.SeedSequence(seed).generate_state(net.slots, dtype=np.uint64)]
            for seed in seeds
        ]
        self.buffers: list[dict[str, torch.Tensor]] = []
        for s, classes in enumerate(net.classes):
            self.buffers.append({
                cls.name: torch.zeros(net.K, cls.storage(chunk * self.per_step(s, cls)), dtype=cls.storage_dtype,
                                      device=device)
                for cls in classes})

    def per_step(self, s: int, cls: type[Gate]) -> int:
        return math.prod(self.net.factor_shape(s, cls.name, self.batch_size))

    def draw(self) -> None:
        """Refill the buffers with the next `chunk` steps of each model's noise."""
        for s, buffers in enumerate(self.buffers):
            self.net.fill(buffers, s, lambda k: self.generators[k][s])

    def step(self, i: int, rows: int) -> list[SlotNoise]:
        """The noise of step i of the chunk, for a batch of `rows` samples, per slot."""
        out = []
        for s, buffers in enumerate(self.buffers):
            slot = {}
            for name, stored in buffers.items():
                cls = REGISTRY[name]
                per_step = self.per_step(s, cls)
                raw = cls.raw(stored, self.chunk * per_step)[:, i * per_step : (i + 1) * per_step]
                raw = raw.reshape(self.net.K, *self.net.factor_shape(s, name, self.batch_size))
                slot[name] = raw if cls.target == "weights" else raw[:, :rows]  # a short last batch
            out.append(slot)
        return out

    def state(self) -> list[list[torch.Tensor]]:
        return [[g.get_state() for g in row] for row in self.generators]

    def load_state(self, states: list[list[torch.Tensor]]) -> None:
        for row, row_states in zip(self.generators, states):
            for g, state in zip(row, row_states):
                g.set_state(state)


# --------------------------------------------------------------------------- training


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
        flat = isinstance(members[0].model, MLP)
        self.x_train = (x_train.flatten(1) if flat else x_train).to(device)
        self.y_train = y_train.to(device)
        self.flat = flat
        self.noise = GateNoise(self.net, [m.gate_seed for m in members], hyper.batch_size,
                               settings.noise_chunk, device)
        self.orders = [torch.Generator().manual_seed(m.order_seed) for m in members]
        self.params = list(self.net.parameters())
        self.step = 0
        self.steps_per_epoch = math.ceil(len(self.y_train) / hyper.batch_size)
        self.total_steps = hyper.epochs * self.steps_per_epoch
        self.effective = self._configure()
        compiled = self.effective["compile"]
        # SGD is elementwise, so each model is updated exactly as alone. On a GPU the fused
        # kernel reads and writes each weight once per step; compiled, lr is a tensor so
        # that a new value does not recompile.
        self.optimizer = torch.optim.SGD(
            self.params, lr=torch.tensor(hyper.lr, device=device) if compiled else hyper.lr,
            momentum=hyper.momentum, weight_decay=hyper.weight_decay,
            fused=True if device.type == "cuda" and not compiled else None,
        )
        self._forward = self._losses
        self._update = self.optimizer.step
        if compiled:
            self._forward = torch.compile(self._losses)
            self._update = torch.compile(self.optimizer.step)

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
        x = x.flatten(1) if self.flat else x
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
        mask, slot by slot in forward order: exactly the draws its own MLP/CNN makes
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
            probs = None
            for k in range(1, samples + 1):
                noise = self._draw_mc(buffers, len(yb), generators)
                with self._autocast():
                    logits = self.net(inputs, noise).float()
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

    def trained_models(self) -> list[nn.Module]:
        """Each member's own MLP/CNN holding its trained weights (for per-run evaluation)."""
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


def flops_per_step(model: nn.Module, image_shape: Sequence[int], batch_size: int) -> int:
    """Matrix-product and convolution FLOPs of one training step of one model (forward and backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(batch_size, *image_shape)
    y = torch.zeros(batch_size, dtype=torch.int64)
    counter = FlopCounterMode(display=False)
    with counter:
        F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())
