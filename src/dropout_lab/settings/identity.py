"""A run's identity: the resolved settings that define its numbers, and their digest.

Everything in a run's resolved Hydra config defines it except what cannot change
its numbers: where it writes and reads (out, data_dir, dataset.mirror), how it is
run (device, threads, progress, checkpointing, torch.compile, CUDA graphs, the
evaluation batch size, the experiment tracker) and the `scale` block, whose values for this run's model
are already resolved into train.*, eval.*, dataset.* and model.* (so an edit to
the CNN part of a scale does not touch an MLP run).

Each run records its identity in metrics.json; the workflow computes the identity
it expects at each run folder from the same Hydra files, retrains the runs whose
identity changed, and refuses a run whose recorded identity differs from the
expected one, naming the first setting that differs.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Mapping, Sequence

# engine.cuda_graphs: a setting of earlier versions (how steps were replayed, never what they computed);
# runs that still carry it keep their identity.
NOT_DEFINING = ("out", "data_dir", "device", "threads", "progress", "checkpoint", "checkpoint_seconds",
                "dataset.mirror", "engine.compile", "engine.cuda_graphs", "eval.batch_size", "logger", "scale")
# Settings added after runs were trained, at the value that reproduces those runs: at that value a
# setting is left out of the identity, so an older run (which does not record it) keeps its identity
# and is not retrained, and a run that sets it otherwise is a different run.
LEGACY_DEFAULTS: dict[str, Any] = {
    "dataset.validation": 0,  # no validation split held out of the training images
    "train.momentum_start": None,  # constant momentum (no ramp)
    "train.momentum_ramp": 0.0,
    "train.dampen_momentum": False,  # undampened momentum
    "train.lr_final": 0.01,  # read by the exponential schedule only
}


class IdentityError(ValueError):
    """A run's recorded settings differ from those the workflow expects at its path; one line."""


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: node}


def _under(key: str, names: Sequence[str]) -> bool:
    return any(key == name or key.startswith(f"{name}.") for name in names)


def _normal(value: Any) -> Any:
    """One spelling per value: a per-layer list of equal rates stays a list; ints that are floats stay floats."""
    if isinstance(value, (list, tuple)):
        return [_normal(v) for v in value]
    if isinstance(value, float) and value.is_integer() and not math.isinf(value):
        return float(value)
    return value


def defining_settings(resolved: Mapping[str, Any], keep: Sequence[str] = ()) -> dict[str, Any]:
    """The dotted settings that define a run, from its resolved config (as metrics.json records it); `keep`: those
    of NOT_DEFINING to keep all the same (a checkpoint's fingerprint keeps the device: training.checkpoint)."""
    return {key: _normal(value) for key, value in sorted(_flatten(resolved).items())
            if (_under(key, keep) or not _under(key, NOT_DEFINING))
            and not (key in LEGACY_DEFAULTS and _normal(value) == LEGACY_DEFAULTS[key])}


def digest(settings: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def identity(resolved: Mapping[str, Any]) -> dict[str, Any]:
    """{"digest": sha256, "settings": {dotted key: value}} of one resolved run config."""
    settings = defining_settings(resolved)
    return {"digest": digest(settings), "settings": settings}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, list) and not isinstance(b, list):
        return all(_same(x, b) for x in a)  # [0.5, 0.5] per layer is 0.5 for every layer
    if isinstance(b, list) and not isinstance(a, list):
        return _same(b, a)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0)
    return a == b


def difference(found: Mapping[str, Any], expected: Mapping[str, Any]) -> tuple[str, Any, Any] | None:
    """The first defining setting whose value differs: (key, found, expected), or None."""
    for key in sorted(set(found) | set(expected)):
        a, b = found.get(key, "<absent>"), expected.get(key, "<absent>")
        if not _same(a, b):
            return key, a, b
    return None


def check_run(where: str, metrics: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    """Refuse a run whose recorded settings differ from the expected ones: one line naming the setting.

    The recorded identity is recomputed from the run's resolved `config`, so runs written
    before identities were recorded are checked the same way.
    """
    found = defining_settings(metrics["config"])
    diff = difference(found, expected)
    if diff:
        key, a, b = diff
        raise IdentityError(
            f"{where} was trained with {key}={json.dumps(a, default=str)}, but the workflow expects "
            f"{key}={json.dumps(b, default=str)} at this path; rerun with the settings it was trained with "
            f"(scale, train_overrides, config/ files) or delete it to retrain")
