"""The typed schema of one training run, and the checks that run before any work.

Hydra composes `config/train.yaml` with the groups under `config/` on top of
`RunConfig`; OmegaConf rejects unknown keys and wrong types. `validate` then
checks ranges and combinations (a model kind's own settings through its
architecture, dropout_lab.settings.architectures) and returns the per-slot dropout
rates, raising `ConfigError` with one line that names the bad value and the fix.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field, fields, is_dataclass, make_dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException, OverrideParseException
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, OmegaConfBaseException

from dropout_lab.settings.architectures import ARCHITECTURES, Architecture, architecture, check_size
from dropout_lab.settings.checks import ConfigError  # noqa: F401 - the error of every check; imported from here
from dropout_lab.settings.checks import check_rate, fail, is_zero, layer_rates, positive_int
from dropout_lab.settings.datasets import SPECS
from dropout_lab.settings.vocabulary import CONVENTIONS, NO_GATE, gate_names

# The Hydra configs: config/ of the checkout, reached through the package's config link (which an
# installed package carries as files); DROPOUT_LAB_CONFIG_DIR points elsewhere.
CONFIG_DIR = os.environ.get("DROPOUT_LAB_CONFIG_DIR", str((Path(__file__).parents[1] / "config").resolve()))
# What may differ between the runs of one pack (dropout_lab.training.train.check_pack, dropout_lab.planning.packs.Pack):
# seeds, gates, rates and folders; everything else, the architecture included, is shared.
PER_RUN = ("seed", "gate", "dropout", "out")
# auto: bf16 and TF32 where the run trains on a GPU, fp32 on a CPU; each run records what it used.
PRECISIONS = ("auto", "fp32", "bf16")
TF32 = ("auto", True, False)
SCHEDULES = ("constant", "cosine", "exponential")


@dataclass
class DatasetConfig:
    name: str = MISSING
    mirror: Optional[str] = None  # http(s) URL or local folder tried before the official mirrors
    train_fraction: float = 1.0  # a fixed subset, the same for every run and seed
    test_fraction: float = 1.0
    # Training images held out as the validation split, on which every choice is made (the tuned
    # protocol's learning rate): a fixed set, the same for every run; train_fraction is of the rest.
    validation: int = 0
    checksums: Any = None  # {FILE: SHA-256} replacing pinned digests (a mapping; Any so overrides can set it)


@dataclass
class ModelConfig:
    """The settings of every model kind (dropout_lab.settings.architectures); a kind sets its own, the rest stay null."""

    name: str = MISSING
    # MLP
    depth: Optional[int] = None  # hidden layers
    width: Optional[int] = None
    # CNN
    channels: Any = None  # one conv block per entry (Any: the scale fills it in by interpolation)
    kernel_size: Optional[int] = None
    fc_depth: Optional[int] = None
    fc_width: Optional[int] = None
    # both
    max_norm: Optional[float] = None  # cap on each unit's incoming weight norm


@dataclass
class GateConfig:
    name: str = MISSING
    convention: str = "inverted"  # inverted (mean-1 noise) | scaled (mean-p noise, scale by p at inference)


@dataclass
class DropoutConfig:
    """Drop rates (1 - retain probability), one field per dropout slot of any model kind. A slot group takes one
    rate or a list, one per layer."""

    input: float = 0.0
    hidden: Any = 0.0  # MLP hidden layers
    conv: Any = 0.0  # CNN conv blocks
    fc: Any = 0.0  # CNN fully connected hidden layers


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"  # constant | cosine (per step, to zero) | exponential (per step, to lr * lr_final)
    lr_final: float = 0.01  # exponential schedule: the last step's lr as a fraction of train.lr
    # Ramp momentum linearly from this to `momentum` over `momentum_ramp` of training; null: constant momentum.
    momentum_start: Optional[float] = None
    momentum_ramp: float = 0.0  # the fraction of the epochs the ramp takes (Srivastava/Hinton: 500 of 3000 = 1/6)
    # The step is lr times a running average of gradients (velocity = m v + (1 - m) g; Hinton et al. 2012),
    # so raising m does not raise the step size.
    dampen_momentum: bool = False


@dataclass
class EvalConfig:
    mc_samples: int = 20  # masks averaged for the Monte-Carlo test accuracy; 0 skips it
    batch_size: int = 1000


@dataclass
class EngineConfig:
    """How the runs are computed (dropout_lab.training.engine); recorded in each run's metrics."""

    precision: str = "auto"  # auto | fp32 | bf16 (autocast on the matrix products; weights stay float32)
    tf32: Any = "auto"  # auto | true | false: float32 matrix products on TF32 tensor cores (CUDA only)
    compile: bool = False  # torch.compile the step (needs a C++ compiler on CPU, Triton on GPU)
    noise_chunk: int = 8  # steps of gate noise drawn per call; part of each run's random streams


@dataclass
class LoggerConfig:
    """The experiment tracker (config/logger/, dropout_lab.training.tracking); never part of a run's identity."""

    name: str = "none"  # none | tensorboard | mlflow | csv
    dir: Optional[str] = None  # tensorboard, csv: the folder that holds one folder per run
    tracking_uri: Optional[str] = None  # mlflow: sqlite:///PATH (a local store) or http(s)://HOST:PORT (a server)
    experiment: str = "dropout-lab"  # mlflow: the experiment the runs are logged under


@dataclass
class ModelScale:
    """How big and how long one model trains at a scale (config/scale/)."""

    epochs: int = MISSING
    lr: float = MISSING
    train_fraction: float = MISSING
    test_fraction: float = MISSING
    mc_samples: int = MISSING
    validation: int = MISSING  # training images held out for validation (dataset.validation)
    depth: Optional[int] = None
    width: Optional[int] = None
    channels: Optional[List[int]] = None
    kernel_size: Optional[int] = None
    fc_depth: Optional[int] = None
    fc_width: Optional[int] = None


# The scale: its name and one ModelScale per model kind (scale.<model>.*, config/scale/*.yaml).
ScaleConfig = make_dataclass("ScaleConfig", [("name", str, MISSING), *(
    (name, ModelScale, field(default_factory=ModelScale)) for name in ARCHITECTURES)])


@dataclass
class RunConfig:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    dropout: DropoutConfig = field(default_factory=DropoutConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    seed: int = 0
    out: str = MISSING  # the run directory; the caller (Snakemake) owns it
    data_dir: str = "data"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: Optional[int] = None  # CPU threads; None keeps torch's default
    progress: bool = True  # a progress bar when stderr is a terminal
    checkpoint: bool = True  # save OUT/checkpoint.pt after each epoch; a rerun resumes from it
    checkpoint_seconds: float = 0.0  # at most one checkpoint per this many seconds; 0: after every epoch


ConfigStore.instance().store(name="run_schema", node=RunConfig)


@dataclass(frozen=True)
class Rates:
    """A run's drop rate per slot (one per layer of a slot group); a slot its model lacks has none."""

    input: float
    hidden: tuple[float, ...] = ()
    conv: tuple[float, ...] = ()
    fc: tuple[float, ...] = ()


def compose_config(overrides: Sequence[str] = (), config_dir: str = CONFIG_DIR) -> DictConfig:
    """Compose config/train.yaml with Hydra overrides, as the command line does."""
    with initialize_config_dir(config_dir, version_base="1.3"):
        return compose("train", list(overrides))


def _schema_keys(dotted: str) -> list[str]:
    node: Any = RunConfig
    for part in filter(None, dotted.split(".")):
        node = {f.name: f for f in fields(node)}[part].default_factory
    return [f.name for f in fields(node)] if is_dataclass(node) else []


def _describe_override_syntax(override: str) -> str:
    """One line for an override Hydra's grammar cannot read (an unquoted non-ASCII or special character)."""
    key, sep, value = override.partition("=")
    odd = next((c for c in value if not c.isascii()), None)
    why = f"{odd!r} is not ASCII, which Hydra reads only in a quoted value" if odd else "Hydra cannot read it"
    quoted = f"{key}=\"{value}\"" if sep else f"KEY=\"{override}\""
    return f"{override}: {why}; quote the value for Hydra (inside shell quotes): '{quoted}'"


def describe_composition_error(err: Exception) -> str:
    """One line for a Hydra or OmegaConf composition error, naming the key and what is allowed."""
    if isinstance(err, OverrideParseException):
        return _describe_override_syntax(err.override)
    options, missing = getattr(err, "options", None), getattr(err, "missing_cfg_file", None)
    if options and missing and "/" in missing:
        group, choice = missing.rsplit("/", 1)
        return f"{group}={choice} is unknown; choose one of {', '.join(options)} (files in config/{group}/)"
    cause = err.__cause__
    key = getattr(cause, "full_key", None)
    if isinstance(cause, OmegaConfBaseException) and key:
        if isinstance(cause, ConfigAttributeError):
            parent = key.rsplit(".", 1)[0] if "." in key else ""
            try:
                allowed = ", ".join(_schema_keys(parent))
            except (KeyError, TypeError):
                allowed = "see dropout_lab.settings.config.RunConfig"
            return f"{key} is not a setting; {parent or 'the top level'} has: {allowed}"
        override = str(err).splitlines()[0].removeprefix("Error merging override ")
        return f"{override}: {str(cause).splitlines()[0]} (key {key})"
    return " ".join(str(err).split())


COMPOSITION_ERRORS = (HydraException, OmegaConfBaseException)


MIN_IMAGES = 100  # fewer test or training images than this make an accuracy meaningless


def _check_fractions(dataset: DictConfig) -> None:
    spec = SPECS[dataset.name]
    held = dataset.validation
    if isinstance(held, bool) or not isinstance(held, int) or held < 0 or 0 < held < MIN_IMAGES:
        fail(f"dataset.validation={held!r} must be 0 (no validation split) or at least {MIN_IMAGES} images, "
             f"e.g. {spec.train_images // 6}")
    if held > spec.train_images - MIN_IMAGES:
        fail(f"dataset.validation={held} leaves fewer than {MIN_IMAGES} of the {spec.train_images} training images "
             f"to train on; hold out fewer, e.g. {spec.train_images // 6}")
    for key, total in (("train_fraction", spec.train_images - held), ("test_fraction", spec.test_images)):
        value = dataset[key]
        if not (isinstance(value, (int, float)) and 0.0 < value <= 1.0):
            fail(f"dataset.{key}={value} must be in (0, 1]; 1.0 uses the whole split")
        kept = int(value * total)
        if kept < MIN_IMAGES:
            fail(f"dataset.{key}={value} keeps {kept} of the {total} {key.split('_')[0]} images; at least "
                 f"{MIN_IMAGES} are needed, e.g. dataset.{key}={math.ceil(MIN_IMAGES / total * 1000) / 1000:g}")


def _check_checksums(dataset: DictConfig) -> None:
    checksums = dataset.checksums
    if checksums is None:
        return
    files = sorted(SPECS[dataset.name].files)
    if not isinstance(checksums, DictConfig):
        fail(f"dataset.checksums={checksums!r} must be a mapping {{FILE: SHA-256}} with FILE in {files}")
    for name, digest in checksums.items():
        if name not in files:
            fail(f"dataset.checksums names {name!r}, which is not a file of {dataset.name}; its files are {files}")
        if not re.fullmatch(r"[0-9a-f]{64}", str(digest)):
            fail(f"dataset.checksums[{name}]={digest!r} is not a SHA-256 (64 lowercase hex digits)")


def _check_device(device: str) -> None:
    if device in ("auto", "cpu"):
        return
    if not re.fullmatch(r"cuda(:\d+)?", device):
        fail(f"device={device!r} is not one of auto, cpu, cuda, cuda:N")


def _check_sections(cfg: DictConfig) -> None:
    """No key the schema does not have (one that a `+key=value` override or a config file added)."""
    for section in ("", "dataset", "model", "gate", "dropout", "train", "eval", "scale", "engine", "logger"):
        node = cfg[section] if section else cfg
        allowed = _schema_keys(section)
        for key in node.keys():
            if key not in allowed:
                where = f"{section}.{key}" if section else key
                fail(f"{where} is not a setting; {section or 'the top level'} has: {', '.join(allowed)}")


def _check_rates(cfg: DictConfig, kind: Architecture) -> Rates:
    """The drop rates of the model's slots, one per layer; a slot the model lacks must be 0."""
    drop = cfg.dropout
    for slot in (f.name for f in fields(DropoutConfig)):
        if slot not in kind.slots and not is_zero(drop[slot]):
            owners = ", ".join(name for name, other in ARCHITECTURES.items() if slot in other.slots)
            *others, last = [f"dropout.{own}" for own in kind.slots]
            fail(f"dropout.{slot}={drop[slot]} applies to model={owners}; for model={kind.name} set "
                 f"{', '.join(others)} and {last}")
    layers = {group.slot: kind.layer_count(cfg.model, group) for group in kind.groups}
    for group in kind.groups:
        if layers[group.slot] == 0 and not is_zero(drop[group.slot]):
            fail(f"dropout.{group.slot}={drop[group.slot]} has no {group.layer} to act on (model.{group.count}=0); "
                 f"set dropout.{group.slot}=0 or model.{group.count} >= 1")
    rates = Rates(input=check_rate("dropout.input", drop.input),
                  **{slot: layer_rates(f"dropout.{slot}", drop[slot], n) for slot, n in layers.items()})
    if cfg.gate.name == NO_GATE:
        nonzero = [r for r in (rates.input, *rates.hidden, *rates.conv, *rates.fc) if r]
        if nonzero:
            fail(f"gate=none cannot drop, but a dropout rate is {nonzero[0]}; add dropout=none or pick gate=bernoulli")
    return rates


def _check_train(train: DictConfig) -> None:
    positive_int("train.epochs", train.epochs)
    positive_int("train.batch_size", train.batch_size)
    if not (isinstance(train.lr, (int, float)) and math.isfinite(train.lr) and train.lr > 0):
        fail(f"train.lr={train.lr} must be a finite positive number, e.g. 0.05")
    if not 0.0 <= train.momentum < 1.0:
        fail(f"train.momentum={train.momentum} must be in [0, 1), e.g. 0.9")
    if not (isinstance(train.weight_decay, (int, float)) and math.isfinite(train.weight_decay)
            and train.weight_decay >= 0):
        fail(f"train.weight_decay={train.weight_decay} must be a finite number >= 0, e.g. 0 or 5e-4")
    if train.schedule not in SCHEDULES:
        fail(f"train.schedule={train.schedule!r} is unknown; choose one of {list(SCHEDULES)}")
    if not 0.0 < train.lr_final <= 1.0:
        fail(f"train.lr_final={train.lr_final} must be in (0, 1]: the exponential schedule's last lr as a "
             "fraction of train.lr, e.g. 0.01")
    if train.momentum_start is not None and not 0.0 <= train.momentum_start < 1.0:
        fail(f"train.momentum_start={train.momentum_start} must be in [0, 1), e.g. 0.5, or null for constant "
             "momentum")
    if not 0.0 <= train.momentum_ramp <= 1.0:
        fail(f"train.momentum_ramp={train.momentum_ramp} must be in [0, 1]: the fraction of the epochs the momentum "
             "ramp takes, e.g. 0.1667")
    if train.momentum_start is not None and train.momentum_ramp == 0:
        fail(f"train.momentum_start={train.momentum_start} ramps over no time (train.momentum_ramp=0); set "
             "train.momentum_ramp to the fraction of the epochs the ramp takes, e.g. 0.1667, or "
             "train.momentum_start=null")


def _check_execution(cfg: DictConfig) -> None:
    """How the run is evaluated and computed: evaluation, seed, threads, device, engine, checkpoints."""
    positive_int("eval.mc_samples", cfg.eval.mc_samples, minimum=0)
    positive_int("eval.batch_size", cfg.eval.batch_size)
    positive_int("seed", cfg.seed, minimum=0)
    if cfg.threads is not None:
        positive_int("threads", cfg.threads)
    _check_device(cfg.device)
    if cfg.engine.precision not in PRECISIONS:
        fail(f"engine.precision={cfg.engine.precision!r} is unknown; choose one of {list(PRECISIONS)}")
    if cfg.engine.tf32 not in TF32 or isinstance(cfg.engine.tf32, int) and not isinstance(cfg.engine.tf32, bool):
        fail(f"engine.tf32={cfg.engine.tf32!r} is unknown; choose auto, true or false")
    positive_int("engine.noise_chunk", cfg.engine.noise_chunk)
    if not (math.isfinite(cfg.checkpoint_seconds) and cfg.checkpoint_seconds >= 0):
        fail(f"checkpoint_seconds={cfg.checkpoint_seconds} must be >= 0; 0 saves after every epoch")


def validate(cfg: DictConfig) -> Rates:
    """Check every setting of one run; return its dropout rates per slot."""
    _check_sections(cfg)
    if OmegaConf.is_missing(cfg, "out"):
        fail("out is not set; pass out=PATH, the folder that receives metrics.json")
    if not str(cfg.out).strip():
        fail("out is empty; pass out=PATH, the folder that receives metrics.json")
    if cfg.dataset.name not in SPECS:
        fail(f"dataset={cfg.dataset.name!r} is unknown; choose one of {sorted(SPECS)}")
    kind = architecture(cfg.model.name)
    if cfg.gate.name not in gate_names():
        fail(f"gate={cfg.gate.name!r} is unknown; choose one of {list(gate_names())} (config/gate/)")
    if cfg.gate.convention not in CONVENTIONS:
        fail(f"gate.convention={cfg.gate.convention!r} is unknown; choose one of {list(CONVENTIONS)}")
    _check_fractions(cfg.dataset)
    _check_checksums(cfg.dataset)
    # first of the model's checks: a depth of 10**9 is refused before any check lists its layers
    scale = cfg.get("scale")
    check_size(OmegaConf.to_container(cfg.model, resolve=True),
               (OmegaConf.to_container(scale, resolve=True).get(kind.name) or {}) if scale is not None else {},
               cfg.dataset.name)
    kind.check_settings(cfg.model)
    if cfg.model.max_norm is not None and not cfg.model.max_norm > 0:
        fail(f"model.max_norm={cfg.model.max_norm} must be positive (Srivastava et al. use 3 to 4), or null for none")
    rates = _check_rates(cfg, kind)
    _check_train(cfg.train)
    _check_execution(cfg)
    return rates
