"""Did a run's training work? The rules that mark a run as failed, read from its metrics.json.

A run has one status:
- `ok`: its numbers enter the statistics;
- `diverged`: its loss became non-finite, so training stopped (recorded by the trainer),
  or it finished with a final number that is not finite (NaN, an infinity, or the null the
  trainer writes for one) in `final`, `mc`, `unscaled_inference` or `weight_norms`: its
  numbers cannot be averaged, and it is counted as failed, never silently dropped;
- `collapsed`: training finished with finite numbers but failed, by one of the rules
  below (thresholds in `failure:` of config/config.yaml). Its numbers describe an
  optimiser that lost what it had learnt, not the effect of dropout.

The rules, each with its reason:
- **rebound**: the training loss (noisy, as optimised) fell below
  `rebound_fraction` x ln(classes), the loss of a uniform guess, and later climbed back
  to it or above: the net unlearnt. The epoch is the first one back.
- **chance**: the deterministic net's final training accuracy is below
  `chance_multiple` / classes: the net never left chance. The epoch is the last one.

Failed runs are left out of every statistic and counted per cell; the claims say
whether including them would change a verdict.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, NamedTuple

from dropout_lab.settings.metrics_schema import describe
from dropout_lab.settings.vocabulary import COLLAPSED, DIVERGED, OK


class Health(NamedTuple):
    status: str
    epoch: int | None
    reason: str


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def rebound(history: list[Mapping[str, Any]], classes: int, fraction: float) -> Health | None:
    """The first epoch at which the training loss is back at `fraction` ln(classes) after falling below it."""
    threshold = fraction * math.log(classes)
    lowest = math.inf
    for epoch in history:
        loss = epoch.get("train_loss")
        if not _finite(loss):
            continue
        if lowest < threshold <= loss:
            return Health(COLLAPSED, int(epoch["epoch"]), (
                f"training loss fell to {lowest:.2f}, then climbed back to {loss:.2f} at epoch {epoch['epoch']} "
                f"(at least {fraction:g} ln {classes} = {threshold:.2f}; ln {classes} is a uniform guess's loss)"))
        lowest = min(lowest, loss)
    return None


def near_chance(final: Mapping[str, Any], last_epoch: int | None, classes: int, multiple: float) -> Health | None:
    """The deterministic net's final training accuracy below `multiple` times chance."""
    acc = final.get("train_acc")
    limit = multiple / classes
    if _finite(acc) and acc < limit:
        return Health(COLLAPSED, last_epoch, (
            f"final training accuracy {100 * acc:.1f} % is below {multiple:g} x chance ({100 * limit:.0f} %)"))
    return None


# The reason of a run marked ok that finished with a non-finite final number.
NON_FINITE = "non-finite final numbers"
RESULT_SECTIONS = ("final", "mc", "unscaled_inference", "weight_norms")


def non_finite_result(metrics: Mapping[str, Any]) -> str | None:
    """The first final number of a run that is not finite (null included), as `section.key is value`, or None."""
    for section in RESULT_SECTIONS:
        numbers = metrics.get(section) or {}
        if section == "mc":  # its sample count is a setting; its curve holds numbers
            numbers = {**{k: v for k, v in numbers.items() if k not in ("samples", "curve")},
                       **{f"curve.{k}": v for k, v in (numbers.get("curve") or {}).items()}}
        for key, value in numbers.items():
            if not _finite(value):
                return f"{section}.{key} is {describe(value)}"
    return None


def classify(metrics: Mapping[str, Any], classes: int, rules: Mapping[str, Any]) -> Health:
    """The run's status, the epoch where it failed (None if it did not) and why."""
    history = metrics.get("history") or []
    if metrics.get("status", OK) != OK:
        epoch = metrics.get("diverged_epoch")
        reason = metrics.get("diverged_reason") or "the loss became non-finite"  # the trainer's, where it says
        return Health(DIVERGED, None if epoch is None else int(epoch), reason)
    last = int(history[-1]["epoch"]) if history else None
    bad = non_finite_result(metrics)
    if bad:
        return Health(DIVERGED, last, f"{NON_FINITE} ({bad})")
    found = rebound(history, classes, rules["rebound_fraction"]) \
        or near_chance(metrics.get("final") or {}, last, classes, rules["chance_multiple"])
    return found or Health(OK, None, "")
