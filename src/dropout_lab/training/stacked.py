"""K nets of one architecture as one: stacked weights, per-model gates, and each model's gate noise.

The pack engine (dropout_lab.training.engine, whose docstring says what a model keeps of its
own) trains a `StackedNet`. It stacks layer i and slot s of every model (Network.layers,
Network.gates, in forward order), and its forward pass is the models' own network's
`stacked_forward`, written in the operations of a `StackedPass`; `GateNoise` draws each
model's noise from its own generators.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dropout_lab.training.gates import REGISTRY, Gate
from dropout_lab.training.models import Network


class EngineError(ValueError):
    """Models that cannot share a pack, or settings the device cannot honour; one line."""


# One slot's noise for a step: the raw draws of each gate class some model of the pack draws
# there, by gate name, shaped (K, *factor shape); rows of models that do not draw it are zero,
# which that class's identity constants turn into a factor of exactly 1.
SlotNoise = dict[str, torch.Tensor]
# A weight gate's factor for the layer that reads its slot: (the models it masks, None for all; their factors).
Masked = tuple[torch.Tensor | None, torch.Tensor]


def _per_model(fn, *stacked: torch.Tensor) -> torch.Tensor:
    """fn applied to each model's slice of the stacked tensors, results stacked again."""
    if stacked[0].shape[0] == 1:  # views only: no copies in either direction
        return fn(*(t.squeeze(0) for t in stacked)).unsqueeze(0)
    return torch.stack([fn(*slices) for slices in zip(*(t.unbind() for t in stacked))])


def _check_stackable(models: Sequence[nn.Module]) -> None:
    """The models are networks of one architecture: one class, the same kinds of layers, as many slots."""
    if not isinstance(models[0], Network):
        raise EngineError(f"cannot stack a {type(models[0]).__name__}; the engine stacks the networks of "
                          "dropout_lab.training.models")

    def structure(model: Network) -> tuple:
        return type(model), [type(layer) for layer in model.layers()], len(model.gates())

    for k, model in enumerate(models[1:], 1):
        if not isinstance(model, Network) or structure(model) != structure(models[0]):
            raise EngineError(f"model {k} of the pack has another architecture than model 0")


def _trace(model: Network, image_shape: Sequence[int]) -> tuple[list[tuple[int, ...]], list[int | None]]:
    """One image through the model alone: per slot, the activation shape (one sample) its gate sees, and the
    fully connected layer that reads it (None where a convolution or nothing does)."""
    layers, gates, events = model.layers(), model.gates(), []
    hooks = [g.register_forward_hook(lambda m, inp, out, s=s: events.append(("gate", s, tuple(inp[0].shape[1:]))))
             for s, g in enumerate(gates)]
    hooks += [layer.register_forward_pre_hook(lambda m, inp, i=i: events.append(("layer", i, None)))
              for i, layer in enumerate(layers)]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, *image_shape))
    model.train(was_training)
    for hook in hooks:
        hook.remove()
    shapes: list[tuple[int, ...]] = [()] * len(gates)
    readers: list[int | None] = [None] * len(gates)
    for at, (event, s, shape) in enumerate(events):
        if event == "gate":
            shapes[s] = shape
            reader = next((i for later, i, _ in events[at + 1:] if later == "layer"), None)
            readers[s] = reader if reader is not None and isinstance(layers[reader], nn.Linear) else None
    return shapes, readers


class StackedNet(nn.Module):
    """K copies of one architecture with their own weights and gates; input (K, B, ...).

    Each slot applies, for every gate class some model draws there, that class's
    factor (gates.Gate.factor) with per-model constants: the model's own, or the
    class's identity constants for the other models. A unit gate multiplies the
    slot's activations; a weight gate (DropConnect) multiplies the weights of the
    next fully connected layer.
    """

    def __init__(self, models: Sequence[Network], image_shape: Sequence[int]) -> None:
        super().__init__()
        _check_stackable(models)
        self.K = len(models)
        self.stacked_forward = type(models[0]).stacked_forward  # a plain function: the models are not submodules
        # One batched product per layer (GPUs), or one product per model (CPUs): the CPU's
        # batched kernel picks its blocking by the batch size for some shapes, so a model's
        # bits would depend on its pack; per model they are exactly those of the model alone.
        self.batched_matmul = False
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.layer_kinds: list[str] = []  # per layer: linear | conv
        self.paddings: list[int] = []
        for column in zip(*(m.layers() for m in models)):
            self._stack_layer(column)
        gate_slots = [list(column) for column in zip(*(m.gates() for m in models))]
        self.kinds = [type(slot[k]).name for slot in gate_slots[:1] for k in range(self.K)] or ["none"] * self.K
        self.rates = torch.tensor([[g.rate for g in slot] for slot in gate_slots], dtype=torch.float64).T  # (K, S)
        unit_shapes, readers = _trace(models[0], image_shape)
        # Per slot: the gate classes drawn there, in registry order, and each one's factor shape per model.
        self.classes: list[list[type[Gate]]] = []
        self.factor_shapes: list[dict[str, tuple[int, ...]]] = []
        self._eval_scaled: list[bool] = []
        self._all_weighted: list[bool] = []
        for s, slot in enumerate(gate_slots):
            self._stack_slot(s, slot, unit_shapes[s], readers[s])

    def _stack_layer(self, column: Sequence[nn.Module]) -> None:
        """One layer of every model as a parameter (K, ...), its biases as another."""
        shapes = {tuple(m.weight.shape) for m in column}
        if len(shapes) != 1:
            raise EngineError(f"layer {len(self.weights)} has different shapes in the pack: {sorted(shapes)}")
        linear = isinstance(column[0], nn.Linear)
        # Linear weights are kept as (K, in, out) so that x @ W needs no transpose and the
        # weight gradient comes out of the batched product contiguous (no copy per step).
        stacked = torch.stack([m.weight.detach() for m in column])
        self.weights.append(nn.Parameter(stacked.transpose(1, 2).contiguous() if linear else stacked))
        self.biases.append(nn.Parameter(torch.stack([m.bias.detach() for m in column])))
        self.layer_kinds.append("linear" if linear else "conv")
        self.paddings.append(0 if linear else column[0].padding[0])

    def _stack_slot(self, s: int, slot: Sequence[Gate], unit_shape: tuple[int, ...], reader: int | None) -> None:
        """Slot s of every model: its gate classes, their factor shapes and per-model constants, and the factor
        at inference."""
        drawn = {type(g) for g in slot if g.draws}
        classes = [cls for cls in REGISTRY.values() if cls in drawn]
        shapes = {}
        for cls in classes:
            if cls.target == "weights":
                if reader is None:
                    raise EngineError(f"gate {cls.name} masks the weights of the fully connected layer after "
                                      f"its slot, but slot {s} is read by a convolution")
                k_in, k_out = self.weights[reader].shape[1:]
                shapes[cls.name] = (k_out, k_in)  # nn.Linear's layout, as the model alone draws it
            else:
                shapes[cls.name] = unit_shape
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
            self.K, *([1] * (1 + len(unit_shape)))))
        self._eval_scaled.append(any(v != 1.0 for v in eval_scale))

    @staticmethod
    def _const_name(s: int, cls: type[Gate], key: str) -> str:
        return f"gate{s}_{cls.name}_{key}"

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

    def gate(self, x: torch.Tensor, s: int, noise: SlotNoise | None, k: int | None = None,
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

    def weight_factor(self, s: int, noise: SlotNoise | None) -> Masked | None:
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

    def linear(self, i: int, x: torch.Tensor, masked: Masked | None) -> torch.Tensor:
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

    def conv(self, i: int, xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Conv layer i, model by model (each convolution is large enough on its own)."""
        return [F.conv2d(xk, w, b, padding=self.paddings[i])
                for xk, w, b in zip(xs, self.weights[i].unbind(), self.biases[i].unbind())]

    def eval_scale_of(self, s: int) -> torch.Tensor:
        return getattr(self, f"eval_scale{s}")

    def forward(self, x: torch.Tensor, noise: Sequence[SlotNoise] | None = None,
                scaled_inference: bool = True, unmasked: dict | None = None) -> torch.Tensor:
        """Logits (K, B, classes) for inputs (K, B, ...); `noise` per slot, or None for the deterministic net
        (without the scaled convention's factor p if not scaled_inference). `unmasked`: see StackedPass."""
        return self.stacked_forward(StackedPass(self, noise, scaled_inference, unmasked), x)

    @torch.no_grad()
    def apply_max_norm(self, max_norm: float) -> None:
        """Rescale each unit's incoming weights to L2 norm <= max_norm, per model."""
        for w, kind in zip(self.weights, self.layer_kinds):
            if kind == "linear":  # (K, in, out): a unit's incoming weights are a column
                w.mul_(max_norm / w.norm(dim=1, keepdim=True).clamp_(min=max_norm))
            else:  # (K, out, in, kh, kw)
                norms = w.flatten(2).norm(dim=2).clamp_(min=max_norm)
                w.mul_((max_norm / norms).view(*norms.shape, 1, 1, 1))

    @torch.no_grad()
    def copy_into(self, models: Sequence[Network]) -> None:
        """Write each model's trained weights back into its own network."""
        for k, model in enumerate(models):
            for w, b, kind, layer in zip(self.weights, self.biases, self.layer_kinds, model.layers()):
                layer.weight.copy_(w[k].T if kind == "linear" else w[k])
                layer.bias.copy_(b[k])


class StackedPass:
    """One forward pass of a StackedNet: the operations a network's `stacked_forward` is written in.

    Layer i and slot s are numbered in forward order (Network.layers, Network.gates). `gate`
    and `linear` act on the stacked activations (K, B, ...); `gate_each` and `conv_each` on
    a list of each model's own (B, ...), for the layers that run model by model. A weight
    gate's factor waits here for the fully connected layer that reads its slot.

    `unmasked` (a dict, by layer) keeps the outputs of the layers that no mask reaches: those before
    the first slot where some model draws. Monte-Carlo evaluation passes one dict for all the masks
    of a batch, so those layers run once per batch, not once per mask (with no input dropout, an
    MLP's first layer, most of its work); a kept output is the very tensor the layer would make again.
    """

    def __init__(self, net: StackedNet, noise: Sequence[SlotNoise] | None, scaled_inference: bool,
                 unmasked: dict | None = None) -> None:
        self.net, self.noise, self.scaled_inference = net, noise, scaled_inference
        self.kinds = net.layer_kinds  # per layer: linear | conv
        self.layers = len(net.layer_kinds)
        self._pending: Masked | None = None
        self._unmasked = unmasked
        self._masked = False  # some model has drawn noise in a slot before the layer that runs now

    def _slot_noise(self, s: int) -> SlotNoise | None:
        slot_noise = None if self.noise is None else self.noise[s]
        self._masked = self._masked or bool(slot_noise)
        self._pending = self.net.weight_factor(s, slot_noise)
        return slot_noise

    def _layer(self, i: int, compute: Callable[[], torch.Tensor | list[torch.Tensor]]):
        if self._unmasked is None or self._masked:
            return compute()
        if i not in self._unmasked:
            self._unmasked[i] = compute()
        return self._unmasked[i]

    def gate(self, x: torch.Tensor, s: int) -> torch.Tensor:
        return self.net.gate(x, s, self._slot_noise(s), None, self.scaled_inference)

    def gate_each(self, xs: Sequence[torch.Tensor], s: int) -> list[torch.Tensor]:
        slot_noise = self._slot_noise(s)
        return [self.net.gate(xk, s, slot_noise, k, self.scaled_inference) for k, xk in enumerate(xs)]

    def linear(self, x: torch.Tensor, i: int) -> torch.Tensor:
        masked, self._pending = self._pending, None
        return self._layer(i, lambda: self.net.linear(i, x, masked))

    def conv_each(self, xs: Sequence[torch.Tensor], i: int) -> list[torch.Tensor]:
        return self._layer(i, lambda: self.net.conv(i, xs))


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
