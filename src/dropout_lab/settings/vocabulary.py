"""The project's shared vocabulary: the names every wing reads, each defined here once.

Run statuses, inference conventions, the reference gate, model kinds and their dropout
slots, gate names and the learning-rate protocols. Gate names are the files of
config/gate/ (a gate is its class and its YAML, nothing else), so this module lists
them without importing torch; `training.gates.REGISTRY` is checked against them by a
test. The workflow's schema enums and wildcards are checked against this module too
(tests/test_vocabulary.py).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from dropout_lab.settings.architectures import ARCHITECTURES

# A run's status (settings.health decides it from metrics.json).
OK, DIVERGED, COLLAPSED = "ok", "diverged", "collapsed"
STATUSES = (OK, DIVERGED, COLLAPSED)

# Inverted: mean-1 noise, nothing to do at inference (PyTorch). Scaled: the article's
# mean-p noise, activations scaled by p at inference.
INVERTED, SCALED = "inverted", "scaled"
CONVENTIONS = (INVERTED, SCALED)

# The gate every other gate is compared with, and the gate that cannot drop.
REFERENCE_GATE = "bernoulli"
NO_GATE = "none"

# Model kind -> its dropout slots, in the order the rates of a run are listed (each kind's
# architecture says them: settings.architectures).
MODEL_SLOTS: dict[str, tuple[str, ...]] = {name: kind.slots for name, kind in ARCHITECTURES.items()}
MODELS = tuple(MODEL_SLOTS)
# Every slot of every model, in table order (the aggregate tables' <slot>_rate columns).
SLOTS = tuple(dict.fromkeys(slot for slots in MODEL_SLOTS.values() for slot in slots))
SLOT_TITLES = {"input": "input", "hidden": "hidden", "conv": "conv", "fc": "fully connected"}

# The learning-rate protocols, in the order they are reported (fixed first).
PROTOCOLS = ("fixed", "tuned")
# Claim 1b's statistic (claims.optimum.gap): the test-minus-train loss gap or the train-minus-test accuracy gap.
GAPS = ("loss", "accuracy")

# A gate's name: a folder of results/runs/, a Snakemake wildcard and a Hydra choice (digits allowed).
GATE_NAME = r"[a-z][a-z0-9_]*"
# A gate's folder of results/runs/<experiment>/: its name, then -CONVENTION where that is not the
# inverted one (planning.grid.Run.folder); the workflow's gate and pack wildcards use it.
GATE_FOLDER = rf"{GATE_NAME}(?:-(?:{'|'.join(c for c in CONVENTIONS if c != INVERTED)}))?"
# How the paper writes a gate's name where it is not the name itself.
_GATE_TITLES = {"bernoulli": "Bernoulli", "gaussian": "Gaussian", "dropconnect": "DropConnect"}

_CONFIG_DIR = os.environ.get("DROPOUT_LAB_CONFIG_DIR", str((Path(__file__).parents[1] / "config").resolve()))


def gate_names(config_dir: str | Path = _CONFIG_DIR) -> tuple[str, ...]:
    """Every gate the project knows: the YAML files of config/gate/, sorted."""
    return tuple(sorted(path.stem for path in Path(config_dir, "gate").glob("*.yaml")))


def gate_title(gate: str) -> str:
    """The gate's name as the paper writes it."""
    return _GATE_TITLES.get(gate, gate)


def valid_gate_name(name: str) -> bool:
    """Whether `name` can name a gate (GATE_NAME), whether or not the gate exists."""
    return re.fullmatch(GATE_NAME, name) is not None


def parity_key(gate: str) -> str:
    """The claims.json key of a gate's parity claim against the reference gate."""
    return f"parity_{gate}"


def rate_ranges(rates: list[float], grid: list[float]) -> str:
    """Rates named as runs of neighbours on their grid: [0.1, 0.2, 0.3, 0.8] -> '0.1-0.3, 0.8'."""
    order = sorted(grid)
    chosen = sorted(rates, key=order.index)
    parts: list[list[float]] = []
    for rate in chosen:
        if parts and order.index(rate) == order.index(parts[-1][-1]) + 1:
            parts[-1].append(rate)
        else:
            parts.append([rate])
    return ", ".join(f"{p[0]:g}" if len(p) == 1 else f"{p[0]:g}-{p[-1]:g}" for p in parts)
