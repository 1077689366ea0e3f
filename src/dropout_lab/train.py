"""Train and evaluate one configured run; write OUT/metrics.json.

    python -m dropout_lab.train dataset=mnist model=mlp gate=gaussian \
        dropout.input=0.2 dropout.hidden=0.5 seed=3 out=results/runs/example

The whole dataset sits in memory (on the GPU when there is one) as one float
tensor; each epoch draws a permutation and slices batches from it. There is no
DataLoader: for nets this small its per-sample collation costs more than the
arithmetic.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import hydra
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn
from tqdm import tqdm

from dropout_lab import data
from dropout_lab.atomic import atomic_path, finite_or_none, write_json
from dropout_lab.config import (
    COMPOSITION_ERRORS, CONFIG_DIR, ConfigError, Rates, compose_config, describe_composition_error, validate,
)
from dropout_lab.gates import Gate, sampling_gates, set_generator
from dropout_lab.models import CNN, MLP, apply_max_norm, effective_weight_norms

CLASSES = 10


# --------------------------------------------------------------------------- set-up


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def stream_seeds(seed: int) -> dict[str, int]:
    """Independent seeds for each random stream of a run, all derived from `seed`."""
    init, order, gates, mc = np.random.SeedSequence(seed).generate_state(4, dtype=np.uint64)
    return {"init": int(init), "order": int(order), "gates": int(gates), "mc": int(mc)}


def fixed_subset(n: int, fraction: float) -> torch.Tensor | None:
    """The same subset for every run and seed, so runs differ only in what they should."""
    if fraction >= 1.0:
        return None
    keep = max(1, round(n * fraction))
    return torch.randperm(n, generator=torch.Generator().manual_seed(0))[:keep].sort().values


def prepare_images(x: torch.Tensor, dataset: str) -> torch.Tensor:
    """uint8 images -> float (N, C, H, W). MNIST is scaled to [0, 1] so a dropped
    pixel is background; CIFAR-10 is standardised per channel."""
    if x.dim() == 3:
        x = x.unsqueeze(1)
    x = x.float().div_(255.0)
    if dataset == "cifar10":
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        std = x.std(dim=(0, 2, 3), keepdim=True)
        x = x.sub_(mean).div_(std)
    return x


def load_tensors(cfg: DictConfig, device: torch.device) -> tuple[torch.Tensor, ...]:
    splits = data.load(cfg.dataset.name, cfg.data_dir, cfg.dataset.mirror, dict(cfg.dataset.checksums or {}))
    tensors = []
    for x, y, fraction in (
        (splits.train_x, splits.train_y, cfg.dataset.train_fraction),
        (splits.test_x, splits.test_y, cfg.dataset.test_fraction),
    ):
        idx = fixed_subset(len(y), fraction)
        if idx is not None:
            x, y = x[idx], y[idx]
        tensors += [prepare_images(x, cfg.dataset.name).to(device), y.to(device)]
    return tuple(tensors)


def build_model(cfg: DictConfig, rates: Rates, image_shape: torch.Size) -> nn.Module:
    channels, size = image_shape[0], image_shape[-1]
    m = cfg.model
    gate, convention = cfg.gate.name, cfg.gate.convention
    if m.name == "mlp":
        return MLP(int(np.prod(image_shape)), CLASSES, m.width, gate, rates.input, rates.hidden, convention)
    return CNN(
        channels, size, CLASSES, list(m.channels), m.kernel_size, m.fc_width,
        gate, rates.input, rates.conv, rates.fc, convention,
    )


# --------------------------------------------------------------------------- loops


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    order: torch.Generator,
    lr_at,
    step: int,
    max_norm: float | None,
    progress: bool,
) -> tuple[float, float, int]:
    """One pass over the data in a fresh random order; returns mean loss, accuracy, next step."""
    model.train()
    n = len(y)
    perm = torch.randperm(n, generator=order).to(x.device)
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.int64)
    starts = range(0, n, batch_size)
    for start in tqdm(starts, leave=False, disable=None if progress else True, unit="batch"):
        idx = perm[start : start + batch_size]
        xb, yb = x.index_select(0, idx), y.index_select(0, idx)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        logits = model(xb)
        loss = F.cross_entropy(logits, yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if max_norm is not None:
            apply_max_norm(model, max_norm)
        step += 1
        with torch.no_grad():
            loss_sum += loss.detach() * len(idx)
            correct += (logits.argmax(1) == yb).sum()
    return float(loss_sum) / n, float(correct) / n, step


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """Loss and accuracy of the deterministic net (every gate the identity)."""
    model.eval()
    loss_sum, correct = 0.0, 0
    for start in range(0, len(y), batch_size):
        logits = model(x[start : start + batch_size])
        yb = y[start : start + batch_size]
        loss_sum += float(F.cross_entropy(logits, yb, reduction="sum"))
        correct += int((logits.argmax(1) == yb).sum())
    return loss_sum / len(y), correct / len(y)


MC_CURVE = (1, 2, 5, 10, 20, 50, 100)


@torch.no_grad()
def evaluate_mc(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, samples: int, generator: torch.Generator
) -> tuple[float, float, dict[int, float]]:
    """Loss and accuracy of the average of the predicted probabilities over `samples` sampled masks.

    Also returns the accuracy after the first k masks for each k of MC_CURVE up
    to `samples` (one pass: the running average is read off on the way).
    """
    set_generator(model, generator)
    ks = sorted({k for k in MC_CURVE if k < samples} | {samples})
    loss_sum, correct = 0.0, 0
    curve = {k: 0 for k in ks}
    with sampling_gates(model):
        for start in range(0, len(y), batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            probs = torch.zeros(len(yb), CLASSES, device=x.device)
            for k in range(1, samples + 1):
                probs += F.softmax(model(xb), dim=1)
                if k in curve:
                    curve[k] += int((probs.argmax(1) == yb).sum())
            probs /= samples
            loss_sum += float(F.nll_loss(probs.clamp_min(1e-12).log(), yb, reduction="sum"))
            correct += int((probs.argmax(1) == yb).sum())
    return loss_sum / len(y), correct / len(y), {k: c / len(y) for k, c in curve.items()}


@torch.no_grad()
def evaluate_unscaled(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """The deterministic net without the scaled convention's multiplication by p at inference."""
    gates = [g for g in model.modules() if isinstance(g, Gate) and g.scaled]
    for gate in gates:
        gate.scaled = False
    try:
        return evaluate(model, x, y, batch_size)
    finally:
        for gate in gates:
            gate.scaled = True


def final_evaluation(cfg, model, x_train, y_train, x_test, y_test, history, device, seeds):
    """Final numbers of a finished run: deterministic net on both splits, Monte-Carlo, unscaled."""
    # The generalisation gap uses the deterministic net on both splits, not the
    # running training accuracy, which is measured with the gates on.
    train_loss, train_acc = evaluate(model, x_train, y_train, cfg.eval.batch_size)
    test_loss, test_acc = history[-1]["test_loss"], history[-1]["test_acc"]
    final = {
        "train_loss": train_loss, "train_acc": train_acc, "test_loss": test_loss, "test_acc": test_acc,
        "gap_acc": train_acc - test_acc, "gap_loss": test_loss - train_loss,
    }
    mc = None
    if cfg.eval.mc_samples > 0:
        mc_gen = torch.Generator(device=device).manual_seed(seeds["mc"])
        mc_loss, mc_acc, curve = evaluate_mc(model, x_test, y_test, cfg.eval.batch_size, cfg.eval.mc_samples, mc_gen)
        mc = {"samples": cfg.eval.mc_samples, "test_loss": mc_loss, "test_acc": mc_acc,
              "curve": {str(k): acc for k, acc in curve.items()}}
    unscaled = None
    if cfg.gate.convention == "scaled":
        loss, acc = evaluate_unscaled(model, x_test, y_test, cfg.eval.batch_size)
        unscaled = {"test_loss": loss, "test_acc": acc}
    return final, mc, unscaled


# --------------------------------------------------------------------------- checkpoints

CHECKPOINT = "checkpoint.pt"


class WriteError(OSError):
    """A result could not be written; the message is one line and names the file."""

# Settings that do not change what a run computes; a checkpoint survives changes to them.
_NOT_FINGERPRINTED = ("out", "progress", "checkpoint", "threads", "data_dir")


def config_fingerprint(cfg: DictConfig) -> str:
    settings = OmegaConf.to_container(cfg, resolve=True)
    for key in _NOT_FINGERPRINTED:
        settings.pop(key, None)
    settings["dataset"].pop("mirror", None)
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def load_checkpoint(path: Path, fingerprint: str) -> dict | None:
    """The state saved after the last finished epoch, if it belongs to this exact run."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, weights_only=True)  # never unpickles arbitrary objects
    except Exception as err:  # a damaged checkpoint costs a restart, never a wrong result
        print(f"ignoring unreadable checkpoint {path}: {err}", file=sys.stderr)
        return None
    if state.get("fingerprint") != fingerprint:
        print(f"ignoring checkpoint {path}: it belongs to other settings", file=sys.stderr)
        return None
    return state


# --------------------------------------------------------------------------- provenance


def git_commit() -> dict[str, object]:
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
        return {"commit": commit, "dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def library_versions() -> dict[str, str]:
    import hydra as hydra_pkg
    import omegaconf

    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "hydra": hydra_pkg.__version__,
        "omegaconf": omegaconf.__version__,
    }
    if torch.version.cuda:
        versions["cuda"] = torch.version.cuda
    return versions


def device_info(device: torch.device) -> dict[str, object]:
    info: dict[str, object] = {"type": device.type, "threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["name"] = torch.cuda.get_device_name(device)
    else:
        info["name"] = cpu_name()
    return info


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return platform.processor() or platform.machine()


# --------------------------------------------------------------------------- main


def main(cfg: DictConfig) -> dict:
    """Validate, train, evaluate, write OUT/metrics.json atomically; return the metrics."""
    rates = validate(cfg)  # before any data is touched
    started = time.perf_counter()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    seeds = stream_seeds(cfg.seed)

    x_train, y_train, x_test, y_test = load_tensors(cfg, device)
    torch.manual_seed(seeds["init"])
    model = build_model(cfg, rates, x_train.shape[1:]).to(device)
    gate_gen = torch.Generator(device=device).manual_seed(seeds["gates"])
    set_generator(model, gate_gen)
    order = torch.Generator().manual_seed(seeds["order"])

    t = cfg.train
    optimizer = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    steps_per_epoch = math.ceil(len(y_train) / t.batch_size)
    total_steps = t.epochs * steps_per_epoch
    if t.schedule == "cosine":
        lr_at = lambda step: 0.5 * t.lr * (1.0 + math.cos(math.pi * step / total_steps))  # noqa: E731
    else:
        lr_at = lambda step: t.lr  # noqa: E731

    history, step, first_epoch = [], 0, 1
    checkpoint = Path(cfg.out) / CHECKPOINT
    fingerprint = config_fingerprint(cfg)
    state = load_checkpoint(checkpoint, fingerprint) if cfg.checkpoint else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        order.set_state(state["order"])
        gate_gen.set_state(state["gates"])
        history, step, first_epoch = state["history"], state["step"], state["epoch"] + 1
        print(f"resuming after epoch {state['epoch']} from {checkpoint}", flush=True)
    diverged_epoch = None
    for epoch in range(first_epoch, t.epochs + 1):
        epoch_start = time.perf_counter()
        train_loss, train_acc, step = train_epoch(
            model, optimizer, x_train, y_train, t.batch_size, order, lr_at, step, cfg.model.max_norm, cfg.progress
        )
        train_seconds = time.perf_counter() - epoch_start
        test_loss, test_acc = evaluate(model, x_test, y_test, cfg.eval.batch_size)
        history.append({
            "epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
            "test_loss": test_loss, "test_acc": test_acc, "train_seconds": train_seconds,
        })
        print(
            f"epoch {epoch}/{t.epochs}  train loss {train_loss:.4f} acc {train_acc:.4f}  "
            f"test loss {test_loss:.4f} acc {test_acc:.4f}  ({train_seconds:.1f} s)",
            flush=True,
        )
        if not (math.isfinite(train_loss) and math.isfinite(test_loss)):
            diverged_epoch = epoch
            print(f"diverged in epoch {epoch}: the loss is not finite; stopping this run", flush=True)
            break
        if cfg.checkpoint and epoch < t.epochs:
            try:
                with atomic_path(checkpoint) as tmp:
                    torch.save({
                        "fingerprint": fingerprint, "epoch": epoch, "step": step, "history": history,
                        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "order": order.get_state(), "gates": gate_gen.get_state(),
                    }, tmp)
            except (OSError, RuntimeError) as err:  # torch.save reports a full disk as RuntimeError
                raise WriteError(f"could not write {checkpoint}: {err}; free space or make the folder "
                                 "writable, then run again (the run resumes from its last good checkpoint)") from err

    if diverged_epoch is None:
        final, mc, unscaled = final_evaluation(cfg, model, x_train, y_train, x_test, y_test, history, device, seeds)
        norms = effective_weight_norms(model)
    else:  # recorded as diverged, with no final numbers that could be averaged in by mistake
        final, mc, unscaled, norms = None, None, None, None

    metrics = {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "seed": cfg.seed,
        "stream_seeds": seeds,
        "rates": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(rates).items()},
        "resumed_after_epoch": first_epoch - 1 if first_epoch > 1 else None,
        "train_samples": len(y_train),
        "test_samples": len(y_test),
        "history": history,
        "status": "ok" if diverged_epoch is None else "diverged",
        "diverged_epoch": diverged_epoch,
        "final": final,
        "mc": mc,
        "unscaled_inference": unscaled,
        "weight_norms": norms,
        "wall_seconds": time.perf_counter() - started,
        "device": device_info(device),
        "versions": library_versions(),
        "git": git_commit(),
        "data_sha256": data.raw_checksums(cfg.dataset.name, dict(cfg.dataset.checksums or {})),
    }
    metrics = finite_or_none(metrics)
    target = Path(cfg.out) / "metrics.json"
    try:
        write_json(target, metrics)
    except OSError as err:
        raise WriteError(f"could not write {target}: {err.strerror or err}; nothing there was changed; "
                         "free space or make the folder writable, then run again") from err
    checkpoint.unlink(missing_ok=True)  # the run is finished; metrics.json is its record
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def app(cfg: DictConfig) -> None:
    try:
        main(cfg)
    except (ConfigError, data.DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except WriteError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)


def cli() -> None:
    """Check the overrides first so a bad one ends with one line, then hand over to Hydra.

    Hydra's own flags (--help, --cfg, -m ...) go to Hydra unchecked.
    """
    overrides = sys.argv[1:]
    if not any(arg.startswith("-") for arg in overrides):
        try:
            compose_config(overrides)
        except COMPOSITION_ERRORS as err:
            print(f"error: {describe_composition_error(err)}", file=sys.stderr)
            sys.exit(2)
    app()


if __name__ == "__main__":
    cli()
