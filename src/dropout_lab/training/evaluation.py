"""The final numbers of a pack's finished runs, computed for all its models at once.

One evaluator (dropout_lab.training.engine.PackTrainer) serves every number, so all of
them follow the pack's precision setting: the deterministic net on both splits
(the generalisation gap sets train against test measured the same way), the
Monte-Carlo average over sampled masks, and, for runs of the scaled convention,
the net without its inference factor p.

`run_record` makes one run's metrics.json of them; a run whose final numbers are
not all finite is recorded as diverged, with the number that is not and no final
numbers that could be averaged in by mistake.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from typing import Any, Sequence

import torch
from omegaconf import DictConfig, OmegaConf

from dropout_lab.settings.atomic import finite_or_none
from dropout_lab.settings.config import Rates
from dropout_lab.settings.identity import identity
from dropout_lab.settings.vocabulary import DIVERGED, OK
from dropout_lab.training import data
from dropout_lab.training.engine import PackTrainer
from dropout_lab.training.models import Network, effective_weight_norms


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


def first_non_finite(node: Any, where: str = "") -> str | None:
    """The dotted name of the first number in `node` that is NaN or infinite; None if every one is finite."""
    if isinstance(node, float) and not math.isfinite(node):
        return where
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, (list, tuple)) else ()
    for key, value in items:
        found = first_non_finite(value, f"{where}.{key}" if where else str(key))
        if found:
            return found
    return None


def _divergence(history: list[dict], diverged: int | None, numbers: dict) -> tuple[int | None, str | None]:
    """(the epoch, the reason) a run failed in: its loss during training, or a final number; (None, None) if not."""
    if diverged is not None:
        last = history[-1] if history else {}
        losses = [key for key in ("train_loss", "test_loss") if not math.isfinite(last.get(key, math.nan))]
        return diverged, f"{' and '.join(losses) or 'the loss'} not finite in epoch {diverged}"
    bad = first_non_finite(numbers)
    if bad is None:
        return None, None
    return (int(history[-1]["epoch"]) if history else None), f"{bad} not finite after training"


def run_record(c: DictConfig, rates: Rates, seeds: dict[str, int], model: Network, history: list[dict],
               diverged: int | None, numbers: tuple, pack: dict) -> dict:
    """One run's metrics.json: its settings, identity and streams, its history and final numbers (`numbers`:
    final, mc, unscaled) and what its pack shares (`pack`: data sizes, engine, fingerprint, timings, provenance)."""
    finals: dict = {}
    if diverged is None:
        finals = dict(zip(("final", "mc", "unscaled_inference"), numbers), weight_norms=effective_weight_norms(model))
    epoch, reason = _divergence(history, diverged, finals)
    if reason is not None:  # recorded as diverged, with no final numbers that could be averaged in by mistake
        if diverged is None:
            print(f"{c.out}: diverged: {reason}; recorded as a failed run", flush=True)
        finals = {}
    resolved = OmegaConf.to_container(c, resolve=True)
    return finite_or_none({
        "config": resolved,
        "identity": identity(resolved)["digest"],  # of the settings that define the run (dropout_lab.settings.identity)
        "seed": c.seed,
        "stream_seeds": seeds,
        "rates": {key: list(v) if isinstance(v, tuple) else v for key, v in asdict(rates).items()},
        **{key: pack[key] for key in ("resumed_after_epoch", "train_samples", "test_samples")},
        # The validation split: how many training images were held out, and which (tuned protocol's choices).
        **{key: pack[key] for key in ("validation_samples", "validation_sha256")},
        "history": history,
        "status": OK if reason is None else DIVERGED,
        "diverged_epoch": epoch,
        "diverged_reason": reason,
        **{key: finals.get(key) for key in ("final", "mc", "unscaled_inference", "weight_norms")},
        "engine": pack["engine"],
        "pack_fingerprint": pack["pack_fingerprint"],  # the runs trained together share it, and their wall time
        "wall_seconds": time.perf_counter() - pack["started"],
        "evaluation_seconds": pack["evaluation_seconds"],  # the pack's final evaluation, all its runs at once
        **{key: pack[key] for key in ("checkpoints_saved", "device", "versions", "git")},
        "data_sha256": data.raw_checksums(c.dataset.name, dict(c.dataset.checksums or {})),
    })
