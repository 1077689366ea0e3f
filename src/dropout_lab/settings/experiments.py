"""One registry of the sweeps: sweep -> aggregate column -> figures.

Each grid of config/config.yaml is made of sweeps (a rate grid over one slot,
with fixed rates elsewhere and, for some, several gates or a width rule). Every
part of the pipeline reads this table instead of naming the sweeps itself:
`grid` expands the sweeps that a grid lists, `aggregate` marks each run with
the sweeps it belongs to (`in_<sweep>`), `figures` draws each sweep's figure,
and the workflow's rules list the figures. The claims that read a sweep's runs
name it themselves (settings.claims). Nothing here imports torch or pandas, so
building the workflow's DAG stays light.

A new sweep with its claim: an entry here, the sweep and its claim settings in
config/config.yaml, and the claim in settings.claims (README, "Adding a rate
sweep with its claim").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence


@dataclass(frozen=True)
class Sweep:
    name: str  # its key under grids.<experiment> in config/config.yaml
    figure: str = "rate_sweep"  # the figure drawn from its runs (figures.FIGURES), as <experiment>_<name>; "": none
    more_figures: tuple[str, ...] = ()  # figures drawn from the same runs, as <experiment>_<figure>

    @property
    def column(self) -> str:
        """The aggregate tables' column marking the runs of this sweep."""
        return f"in_{self.name}"


SWEEPS: tuple[Sweep, ...] = (
    # Claim 1a-1c: the hidden rate, no input dropout.
    Sweep("hidden_sweep", "hidden_sweep", ("learning_curves", "weight_norms", "mc_inference")),
    # Claim 2: the input rate at a fixed hidden rate.
    Sweep("input_sweep", "input_sweep"),
    # Claim 3: each gate against the first, at each hidden rate, paired by seed.
    Sweep("gate_parity", "gate_parity"),
    # The article's scaled convention beside the inverted one.
    Sweep("conventions", "conventions"),
    # Claim 1d: the hidden sweep with p * n fixed.
    Sweep("width_sweep", "width_sweep"),
    # Does the optimum move with training length? The hidden sweep at several epoch budgets.
    Sweep("budget_sweep", "budget_sweep"),
    # Claim 3 at the published setting (Srivastava et al. 2014, Table 10: input 0.2, hidden 0.5), each gate: its
    # table is the anchors' and the parity section's, so it draws no figure of its own.
    Sweep("anchor_parity", ""),
)

BY_NAME = {sweep.name: sweep for sweep in SWEEPS}


def names() -> tuple[str, ...]:
    return tuple(sweep.name for sweep in SWEEPS)


def columns() -> dict[str, str]:
    """Sweep name -> the aggregate column that marks its runs."""
    return {sweep.name: sweep.column for sweep in SWEEPS}


def figures(name: str, grid: Mapping[str, Any], tuned: Sequence[str] = ()) -> list[tuple[str, str]]:
    """(stem, figure kind) of every figure an experiment's grid draws, in drawing order; `tuned`: the sweeps the
    tuned protocol covers where it runs (their learning-rate choices get a figure)."""
    out = []
    if any(sweep in grid for sweep in tuned):
        out.append((f"{name}_protocols", "protocols"))
    for sweep in SWEEPS:
        if sweep.name in grid and sweep.figure:
            out.append((f"{name}_{sweep.name}", sweep.figure))
            out += [(f"{name}_{kind}", kind) for kind in sweep.more_figures]
    if grid.get("placement"):
        out.append((f"{name}_placement", "placement"))
    return out
