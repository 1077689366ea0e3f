"""Momentum SGD for the pack's stacked weights: torch's own update function, without torch.optim.SGD's class.

The step is `torch.optim.sgd.sgd`, the function torch.optim.SGD.step calls, given the same arguments it
would be given (the fused kernel on a GPU, torch's own choice of loop elsewhere), so the numbers are
torch.optim.SGD's bit for bit (tests/test_engine.py). The class is left out because its first method call
imports torch._dynamo, about 2.5 s of every training job's start-up on a CPU, for a compiler that only
`engine.compile` uses. The interface is the part of torch.optim.SGD the engine reads: `param_groups[0]`
holds lr, momentum and dampening, which the engine sets before each step; `state_dict()` has torch's layout,
so checkpoints written by either load in either.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch.optim.sgd import sgd


class SGD:
    def __init__(self, params: Sequence[torch.Tensor], lr: float | torch.Tensor, momentum: float,
                 weight_decay: float, fused: bool | None = None) -> None:
        self.params = list(params)
        self.momentum_buffers: list[torch.Tensor | None] = [None] * len(self.params)
        self.param_groups = [{"lr": lr, "momentum": momentum, "dampening": 0.0, "weight_decay": weight_decay,
                              "nesterov": False, "maximize": False, "foreach": None, "differentiable": False,
                              "fused": fused}]

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        # As torch.optim.SGD: only the weights that received a gradient, a momentum buffer only with momentum.
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        buffers = [self.momentum_buffers[i] for i in live] if group["momentum"] != 0 else []
        sgd([self.params[i] for i in live], [self.params[i].grad for i in live], buffers,
            weight_decay=group["weight_decay"], momentum=group["momentum"], lr=group["lr"],
            dampening=group["dampening"], nesterov=False, maximize=False, foreach=group["foreach"],
            fused=group["fused"])
        for i, buffer in zip(live, buffers):  # sgd() creates a buffer at the first step, in the list
            self.momentum_buffers[i] = buffer

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    def state_dict(self) -> dict:
        """torch.optim.SGD's layout: per-weight state by position, then the group without its tensors."""
        state = {i: {"momentum_buffer": b} for i, b in enumerate(self.momentum_buffers) if b is not None}
        group = {key: value for key, value in self.param_groups[0].items()}
        group["params"] = list(range(len(self.params)))
        return {"state": state, "param_groups": [group]}

    def load_state_dict(self, saved: dict) -> None:
        (group,) = saved["param_groups"]
        if len(group["params"]) != len(self.params):
            raise ValueError(f"the saved optimizer holds {len(group['params'])} weights, this pack {len(self.params)}")
        for key in ("momentum", "dampening", "weight_decay"):
            self.param_groups[0][key] = group[key]
        lr = self.param_groups[0]["lr"]
        if isinstance(lr, torch.Tensor):
            lr.fill_(float(group["lr"]))
        else:
            self.param_groups[0]["lr"] = float(group["lr"])
        by_position = {int(k): v for k, v in saved["state"].items()}
        self.momentum_buffers = [
            by_position[i]["momentum_buffer"].to(p.device, p.dtype) if "momentum_buffer" in by_position.get(i, {})
            else None for i, p in enumerate(self.params)]
