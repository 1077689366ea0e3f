"""The final numbers of a pack's finished runs, computed for all its models at once.

One evaluator (dropout_lab.training.engine.PackTrainer) serves every number, so all of
them follow the pack's precision setting: the deterministic net on both splits
(the generalisation gap sets train against test measured the same way), the
Monte-Carlo average over sampled masks, and, for runs of the scaled convention,
the net without its inference factor p.
"""

from __future__ import annotations

from typing import Sequence

import torch
from omegaconf import DictConfig

from dropout_lab.training.engine import PackTrainer


def final_metrics(trainer: PackTrainer, cfgs: Sequence[DictConfig], mc_seeds: Sequence[int],
                  x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
                  histories: Sequence[list[dict]]) -> list[tuple[dict, dict | None, dict | None]]:
    """(final, mc, unscaled) for each run of the pack; the test numbers are those of its last epoch."""
    cfg = cfgs[0]  # a pack shares its evaluation settings (train.check_pack)
    batch = cfg.eval.batch_size
    # The gap uses the deterministic net on both splits, not the running training
    # accuracy, which is measured with the gates on.
    train_loss, train_acc = trainer.evaluate(x_train, y_train, batch)
    mc = None
    if cfg.eval.mc_samples > 0:
        mc = trainer.evaluate_mc(x_test, y_test, batch, cfg.eval.mc_samples, mc_seeds)
    unscaled = None
    if any(c.gate.convention == "scaled" for c in cfgs):
        unscaled = trainer.evaluate(x_test, y_test, batch, scaled_inference=False)

    results = []
    for k, c in enumerate(cfgs):
        last = histories[k][-1] if histories[k] else {"test_loss": float("nan"), "test_acc": float("nan")}
        final = {
            "train_loss": float(train_loss[k]), "train_acc": float(train_acc[k]),
            "test_loss": last["test_loss"], "test_acc": last["test_acc"],
            # The validation split's numbers (the tuned protocol chooses on them); absent without one.
            **{key: last[key] for key in ("val_loss", "val_acc") if key in last},
            "gap_acc": float(train_acc[k]) - last["test_acc"], "gap_loss": last["test_loss"] - float(train_loss[k]),
        }
        run_mc = None
        if mc is not None:
            loss, acc, curve = mc
            run_mc = {"samples": c.eval.mc_samples, "test_loss": float(loss[k]), "test_acc": float(acc[k]),
                      "curve": {str(n): float(a[k]) for n, a in curve.items()}}
        run_unscaled = None
        if unscaled is not None and c.gate.convention == "scaled":
            run_unscaled = {"test_loss": float(unscaled[0][k]), "test_acc": float(unscaled[1][k])}
        results.append((final, run_mc, run_unscaled))
    return results
