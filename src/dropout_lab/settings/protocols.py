"""The learning-rate protocols a workflow configuration asks for (config `protocols:`).

`fixed` trains every run at its scale's learning rate; `tuned` trains the sweeps it covers at
each learning rate of its grid and chooses one per cell on validation accuracy
(analysis.protocol). These accessors read the workflow's config; planning, analysis and the
paper all ask them.
"""

from __future__ import annotations

from typing import Any, Mapping

from dropout_lab.settings.vocabulary import PROTOCOLS


def protocols(config: Mapping[str, Any]) -> tuple[str, ...]:
    """The protocols that run (config `protocols.run`), fixed first."""
    return tuple(p for p in PROTOCOLS if p in ((config.get("protocols") or {}).get("run") or ["fixed"]))


def judged_protocol(config: Mapping[str, Any]) -> str:
    """The protocol the article's claims are judged under (config `protocols.judge`)."""
    return (config.get("protocols") or {}).get("judge") or "fixed"


def tuned_sweeps(config: Mapping[str, Any]) -> list[str]:
    """The sweeps the tuned protocol covers, where it runs."""
    return list(config["protocols"]["tuned"]["sweeps"]) if "tuned" in protocols(config) else []


def tuned_lrs(config: Mapping[str, Any]) -> list[float]:
    """The tuned protocol's learning rates at the chosen scale."""
    return [float(lr) for lr in config["protocols"]["tuned"]["lrs"][config["scale"]]]
