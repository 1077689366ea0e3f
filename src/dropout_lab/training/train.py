"""Train and evaluate one configured run; write OUT/metrics.json.

    python -m dropout_lab.training.train dataset=mnist model=mlp gate=gaussian \
        dropout.input=0.2 dropout.hidden=0.5 seed=3 out=results/runs/example

`train_runs` trains several runs together as one pack (dropout_lab.training.engine,
used by dropout_lab.training.pack); a single run is a pack of one, so a run gives the
same numbers alone or in a pack. The whole dataset sits on the device as one
tensor; there is no DataLoader.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import Sequence

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from dropout_lab.settings import run_folder
from dropout_lab.settings.architectures import architecture
from dropout_lab.settings.atomic import WriteError, write_result
from dropout_lab.settings.config import (
    COMPOSITION_ERRORS,
    CONFIG_DIR,
    MIN_IMAGES,
    PER_RUN,
    ConfigError,
    Rates,
    compose_config,
    describe_composition_error,
    validate,
)
from dropout_lab.settings.datasets import SPECS
from dropout_lab.settings.provenance import git_commit
from dropout_lab.training import checkpoint, data, tracking
from dropout_lab.training.engine import EngineSettings, Hyper, Member, PackTrainer
from dropout_lab.training.evaluation import final_metrics, run_record
from dropout_lab.training.gates import REGISTRY
from dropout_lab.training.machine import device_info, keep_freed_memory, training_versions
from dropout_lab.training.models import Network, network

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
    """uint8 images -> float (N, C, H, W), scaled to [0, 1] so that a dropped pixel is background, and standardised
    per channel where the dataset says so (CIFAR-10)."""
    if x.dim() == 3:
        x = x.unsqueeze(1)
    x = x.float().div_(255.0)
    if SPECS[dataset].standardise:
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        std = x.std(dim=(0, 2, 3), keepdim=True)
        x = x.sub_(mean).div_(std)
    return x


def validation_split(n: int, held_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(validation indices, the rest) of n training images: a fixed draw, the same for every run and seed,
    and independent of the training subset drawn from the rest (fixed_subset)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(1))
    return order[:held_out].sort().values, order[held_out:].sort().values


def split_digest(indices: torch.Tensor) -> str:
    """SHA-256 of the validation images' indices in the training split, recorded with every run."""
    return hashlib.sha256(indices.numpy().astype("<i8").tobytes()).hexdigest()


def load_tensors(cfg: DictConfig, device: torch.device) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], str]:
    """({"train", "validation", "test": (images, labels)}, the validation split's digest); validation is
    empty when none is held out."""
    splits = data.load(cfg.dataset.name, cfg.data_dir, cfg.dataset.mirror, dict(cfg.dataset.checksums or {}))
    n = len(splits.train_y)
    if cfg.dataset.validation > n - MIN_IMAGES:  # a re-packed copy can hold fewer images than the official split
        raise data.DataError(f"dataset.validation={cfg.dataset.validation} leaves {max(n - cfg.dataset.validation, 0)} "
                             f"of this copy's {n} {cfg.dataset.name} training images to train on; hold out fewer, "
                             f"e.g. dataset.validation={n // 6 if n // 6 >= MIN_IMAGES else 0}")
    held, rest = validation_split(n, cfg.dataset.validation)
    parts = {"validation": (splits.train_x[held], splits.train_y[held])}
    keep = fixed_subset(len(rest), cfg.dataset.train_fraction)
    rest = rest if keep is None else rest[keep]
    parts["train"] = (splits.train_x[rest], splits.train_y[rest])
    keep = fixed_subset(len(splits.test_y), cfg.dataset.test_fraction)
    parts["test"] = (splits.test_x, splits.test_y) if keep is None else (splits.test_x[keep], splits.test_y[keep])
    tensors = {name: (prepare_images(x, cfg.dataset.name).to(device), y.to(device)) for name, (x, y) in parts.items()}
    return tensors, split_digest(held)


def build_model(cfg: DictConfig, rates: Rates, image_shape: torch.Size) -> Network:
    """The run's network (its model kind's, dropout_lab.training.models), initialised from torch's global seed."""
    return network(cfg.model.name).build(cfg.model, rates, tuple(image_shape), SPECS[cfg.dataset.name].classes,
                                         cfg.gate.name, cfg.gate.convention)


# --------------------------------------------------------------------------- main


def _shared(cfg: DictConfig) -> dict:
    """A run's settings but PER_RUN: what the runs stacked in one trainer must share."""
    settings = OmegaConf.to_container(cfg, resolve=True)
    return {key: value for key, value in settings.items() if key not in PER_RUN}


def stacks(cfgs: Sequence[DictConfig]) -> list[list[int]]:
    """The positions of the runs that share everything but PER_RUN, by first appearance: the runs one trainer
    stacks (a job of several architectures or schedules trains its stacks one after another)."""
    groups: dict[str, list[int]] = {}
    for i, cfg in enumerate(cfgs):
        groups.setdefault(json.dumps(_shared(cfg), sort_keys=True, default=str), []).append(i)
    return list(groups.values())


def check_pack(cfgs: Sequence[DictConfig]) -> None:
    """Runs train together only if they differ in nothing but PER_RUN; else one line naming the key."""
    shared = _shared
    first = shared(cfgs[0])
    for k, cfg in enumerate(cfgs[1:], 1):
        other = shared(cfg)
        for key in sorted(set(first) | set(other)):
            if first.get(key) != other.get(key):
                diff = _first_difference(first.get(key), other.get(key), key)
                raise ConfigError(f"runs 0 and {k} of a pack differ in {diff}; a pack shares everything "
                                  f"but {', '.join(PER_RUN)}: train them in separate packs")


def _first_difference(a, b, where: str) -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{where}.{key}")
    return f"{where} ({a!r} against {b!r})"


def engine_settings(cfg: DictConfig) -> EngineSettings:
    """The run's engine block, field by field by name (config.EngineConfig mirrors EngineSettings)."""
    return EngineSettings(**{f.name: cfg.engine[f.name] for f in fields(EngineSettings)})


def hyper(cfg: DictConfig) -> Hyper:
    t = cfg.train
    return Hyper(t.epochs, t.batch_size, t.lr, t.momentum, t.weight_decay, t.schedule, cfg.model.max_norm,
                 momentum_start=t.momentum_start, momentum_ramp=t.momentum_ramp, dampen_momentum=t.dampen_momentum,
                 lr_final=t.lr_final)


def epoch_line(epoch: int, epochs: int, seconds: float, live: list[int], runs: int, test_acc, train_loss,
               eta: float) -> str:
    """One line per epoch: a single run speaks of itself, a pack of its runs; both with the time left."""
    head = f"epoch {epoch}/{epochs} ({seconds:.1f} s, about {eta:.0f} s to go)"
    if runs == 1:
        return head + (f"  test acc {float(test_acc[0]):.4f}  train loss {float(train_loss[0]):.4f}" if live else "")
    best = max(live, key=lambda k: float(test_acc[k])) if live else None
    return head + f"  {len(live)}/{runs} runs training" + (
        f"  best test acc {float(test_acc[best]):.4f} (train loss {float(train_loss[best]):.4f})"
        if best is not None else "")


def check_trainable(cfg: DictConfig, rates: Rates) -> None:
    """What only the training stack can check: the gate's target on this model, the network, and the device."""
    if REGISTRY[cfg.gate.name].target == "weights":
        architecture(cfg.model.name).check_weight_gate(cfg.gate.name, rates)
    network(cfg.model.name)
    if str(cfg.device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={cfg.device} was asked for but no CUDA device is available; use device=cpu or "
                          "device=auto")


def check_run(cfg: DictConfig) -> Rates:
    """Every check of one run's settings, before anything is built; its rates."""
    rates = validate(cfg)
    check_trainable(cfg, rates)
    return rates


def check_runs(cfgs: Sequence[DictConfig], state_path: Path) -> list[Rates]:
    """Every check that can fail before any data is touched: settings, pack and folders; each run's rates."""
    rates = [check_run(cfg) for cfg in cfgs]
    check_pack(cfgs)
    tracking.check(cfgs[0])  # the pack shares its logger (check_pack)
    run_folder.distinct_outs([c.out for c in cfgs])
    for c in cfgs:  # a result that cannot be written is found now, not after training
        run_folder.writable_folder("out", Path(c.out))
    run_folder.writable_folder("data_dir", Path(cfgs[0].data_dir))
    run_folder.writable_folder("the pack folder", state_path.parent)
    return rates


def _train_epoch(trainer: PackTrainer, cfgs: Sequence[DictConfig], tensors: dict, histories: checkpoint.Histories, epoch: int,
                 started: float, tracker: tracking.PackTracker) -> list[int]:
    """Train and evaluate one epoch, add it to the history of each run still training (and to its tracker);
    return those runs."""
    cfg, K = cfgs[0], len(cfgs)
    (x_val, y_val), (x_test, y_test) = tensors["validation"], tensors["test"]
    epoch_start = time.perf_counter()
    train_loss, train_acc = trainer.train_epoch(progress=cfg.progress)
    train_seconds = time.perf_counter() - epoch_start
    test_loss, test_acc = trainer.evaluate(x_test, y_test, cfg.eval.batch_size)
    val = trainer.evaluate(x_val, y_val, cfg.eval.batch_size) if len(y_val) else None
    for k in range(K):
        if histories.diverged[k] is not None:
            continue
        histories.runs[k].append({
            "epoch": epoch, "train_loss": float(train_loss[k]), "train_acc": float(train_acc[k]),
            "test_loss": float(test_loss[k]), "test_acc": float(test_acc[k]), "train_seconds": train_seconds,
            **({"val_loss": float(val[0][k]), "val_acc": float(val[1][k])} if val is not None else {}),
        })
        if not (math.isfinite(train_loss[k]) and math.isfinite(test_loss[k])):
            histories.diverged[k] = epoch
            print(f"{cfgs[k].out}: diverged in epoch {epoch}: the loss is not finite; its run stops", flush=True)
    tracker.log_new_epochs(histories.runs)
    live = [k for k in range(K) if histories.diverged[k] is None]
    epochs = cfg.train.epochs
    eta = (time.perf_counter() - started) / (epoch - histories.first_epoch + 1) * (epochs - epoch)
    print(epoch_line(epoch, epochs, train_seconds, live, K, test_acc, train_loss, eta), flush=True)
    return live


def train_runs(cfgs: Sequence[DictConfig], state_path: Path, rates: Sequence[Rates] | None = None) -> list[dict]:
    """Train the runs `cfgs` together (one pack) and return each run's metrics.

    A checkpoint of the whole pack is kept at `state_path` while it trains
    (dropout_lab.training.checkpoint); a rerun with the same runs resumes from it. `rates`: what check_runs
    returned for these runs when the caller has just checked them; else they are checked here.
    """
    rates = check_runs(cfgs, state_path) if rates is None else list(rates)
    cfg = cfgs[0]
    started = time.perf_counter()
    keep_freed_memory()  # before the data and the models are made
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    seeds = [stream_seeds(c.seed) for c in cfgs]
    tensors, validation_digest = load_tensors(cfg, device)
    (x_train, y_train), (x_test, y_test) = tensors["train"], tensors["test"]
    members = []
    for c, r, s in zip(cfgs, rates, seeds):
        torch.manual_seed(s["init"])
        members.append(Member(build_model(c, r, x_train.shape[1:]), s["order"], s["gates"]))
    trainer = PackTrainer(members, x_train, y_train, hyper(cfg), engine_settings(cfg), device)
    fingerprint = checkpoint.fingerprint(cfgs)
    with tracking.PackTracker(cfgs) as tracker:  # logger=none: a tracker that does nothing
        histories, saves = checkpoint.train_resumably(
            trainer, cfgs[0], len(cfgs), state_path, fingerprint,
            lambda histories, epoch: _train_epoch(trainer, cfgs, tensors, histories, epoch, started, tracker))

        evaluated_at = time.perf_counter()
        finals = final_metrics(trainer, cfgs, [s["mc"] for s in seeds], x_train, y_train, x_test, y_test,
                               histories.runs)
        pack = {"resumed_after_epoch": histories.first_epoch - 1 if histories.first_epoch > 1 else None,
                "train_samples": len(y_train), "test_samples": len(y_test),
                "validation_samples": len(tensors["validation"][1]), "validation_sha256": validation_digest,
                "engine": trainer.effective, "pack_fingerprint": fingerprint, "started": started,
                "evaluation_seconds": time.perf_counter() - evaluated_at, "checkpoints_saved": saves,
                "device": device_info(device), "versions": training_versions(), "git": git_commit()}
        records = [run_record(c, r, s, model, histories.runs[k], histories.diverged[k], finals[k], pack)
                   for k, (c, r, s, model) in enumerate(zip(cfgs, rates, seeds, trainer.trained_models()))]
        tracker.finish(records)
    return records


def main(cfg: DictConfig) -> dict:
    """Validate, train, evaluate, write OUT/metrics.json atomically; return the metrics.

    The run holds OUT's lock throughout. A folder that holds this run's finished result is left as it is (its
    metrics are returned); one that holds another run's is refused before anything is trained.
    """
    validate(cfg)  # first: a missing out= is one line, not a traceback
    out = Path(cfg.out)
    state = out / checkpoint.CHECKPOINT
    check_runs([cfg], state)
    with run_folder.writing([out]):
        if run_folder.finished(out, OmegaConf.to_container(cfg, resolve=True)):
            print(f"{out / run_folder.METRICS} is this run's finished result; nothing to do (delete it to train "
                  "again)", flush=True)
            return json.loads((out / run_folder.METRICS).read_text())
        metrics = train_runs([cfg], state)[0]
        write_result(out / run_folder.METRICS, metrics)
        state.unlink(missing_ok=True)  # the run is finished; metrics.json is its record
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
    except KeyboardInterrupt as err:
        print(checkpoint.interrupted_line(err), file=sys.stderr)
        sys.exit(130)


def check_sweep(overrides: Sequence[str]) -> None:
    """Every job of a Hydra multirun checked before the first trains: each combination of the swept values, as
    Hydra's basic sweeper forms them; one line naming the first bad job."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    fixed, swept = [], []
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.get_key_element()
        if key == "out":
            continue  # each job's own folder, named by Hydra's resolvers
        if not override.is_sweep_override():
            fixed.append(override.input_line)
        elif override.is_discrete_sweep():
            swept.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            return  # a sweep the basic sweeper does not run: Hydra names it
    for num, job in enumerate(itertools.product(*swept)):
        try:
            check_run(compose_config([*fixed, *job, f"out=multirun-job-{num}"]))
        except ConfigError as err:
            raise ConfigError(f"job {num} of the sweep ({' '.join(job)}): {err}; no job was started") from err


def cli() -> None:
    """Check the overrides first so a bad one ends with one line, then hand over to Hydra.

    Under -m every job of the sweep is checked before the first trains. Hydra's own flags (--help, --cfg ...)
    go to Hydra unchecked.
    """
    argv = sys.argv[1:]
    multirun = any(arg in ("-m", "--multirun") for arg in argv)
    overrides = [arg for arg in argv if arg not in ("-m", "--multirun")]
    if multirun:
        outs = [arg.split("=", 1)[1] for arg in overrides if arg.startswith("out=")]
        if not outs or "${" not in outs[-1]:
            print("error: with -m every job needs its own folder, but out is the same for all of them; give "
                  "out='runs/${hydra:job.num}' (or name it after a swept setting, e.g. out='runs/${dropout.hidden}')",
                  file=sys.stderr)
            sys.exit(2)
    if not any(arg.startswith("-") for arg in overrides):
        try:
            check_sweep(overrides) if multirun else compose_config(overrides)
        except COMPOSITION_ERRORS as err:
            print(f"error: {describe_composition_error(err)}", file=sys.stderr)
            sys.exit(2)
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
    app()


if __name__ == "__main__":
    cli()
