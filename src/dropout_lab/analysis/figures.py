"""Which rows each figure of the paper draws, from the aggregated tables (the figure rule's `draw`).

Each figure kind of settings.experiments has an entry in FIGURES: it picks its runs from the
tables for one experiment and hands them to its drawing function in analysis.plots.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from dropout_lab.analysis import protocol
from dropout_lab.analysis.claims import budget_claim, inference_runs
from dropout_lab.analysis.plots import (
    Marks,
    budget_sweep,
    conventions,
    gate_parity,
    learning_curves,
    mc_inference,
    placement,
    protocols_figure,
    rate_sweep,
    weight_norms,
    width_sweep,
)
from dropout_lab.settings import claims as registry
from dropout_lab.settings import experiments, protocols
from dropout_lab.settings.datasets import SPECS
from dropout_lab.settings.vocabulary import OK, REFERENCE_GATE, SCALED


def _published(anchors: list[Mapping[str, Any]], experiment: str, figure: str) -> list[dict[str, Any]]:
    """The published values drawn on one figure (anchors.yaml entries with `figure:` naming it)."""
    points = []
    for anchor in anchors:
        ours = anchor["ours"]
        if ours["experiment"] == experiment and anchor.get("figure") == figure:
            points.append({"error_pct": anchor["error_pct"], "where": anchor["where"],
                           "gate": ours.get("gate", REFERENCE_GATE), "placement": ours.get("placement"),
                           "rate": anchor.get("rate")})
    return points


@dataclass
class Context:
    """What a figure of one experiment is drawn from."""

    name: str  # the experiment
    sweep: str  # the sweep the figure belongs to (its stem's suffix for a sweep's own figure)
    grid: Mapping[str, Any]
    own: pd.DataFrame  # the experiment's runs
    curves: pd.DataFrame
    mc: pd.DataFrame | None
    anchors: list[Mapping[str, Any]]
    config: Mapping[str, Any]
    stem: Path
    every: pd.DataFrame | None = None  # the experiment's runs under every protocol (for the protocols figure)
    protocol: str | None = None  # the protocol whose runs `own` marks, named in titles when several ran
    chosen: pd.DataFrame | None = None  # the tuned protocol's choices (protocol.selection)
    computed: Mapping[str, Any] | None = None  # the claims rule's document (claims.json), when drawn after it

    @property
    def hidden_sweep(self) -> pd.DataFrame:
        return self.own[self.own["in_hidden_sweep"] & (self.own["gate"] == REFERENCE_GATE)]

    def titled(self, rows: pd.DataFrame, what: str, shown: str = "left out") -> str:
        label = f"{self.grid['dataset'].upper()} {self.grid['model'].upper()}"
        if self.protocol and self.sweep in self.protocol_figures:
            label += f", {self.protocol} protocol"  # drawn from the runs this protocol reads
        failed = int((rows["status"] != OK).sum())
        return f"{label}: {what}" + (f" ({failed} failed run{'s' if failed > 1 else ''} {shown})" if failed else "")

    @property
    def protocol_figures(self) -> set[str]:
        """The figures drawn from the runs of a sweep the protocols read differently (the tuned sweeps)."""
        tuned = protocols.tuned_sweeps(self.config)
        names = {name for s in experiments.SWEEPS if s.name in tuned for name in (s.name, *s.more_figures)}
        if "gate_parity" in self.grid:  # the inference figure then reads the gate-parity runs (inference_runs)
            names.discard("mc_inference")
        return names

    def band(self, claim: str) -> list[float] | None:
        """A claim's published band, when the claim is judged on this experiment."""
        return self.marks(claim).band

    def marks(self, claim: str) -> Marks:
        """A claim's lines and bands (config claims.<claim>), when the claim is judged on this experiment."""
        settings = self.config["claims"].get(claim) or {}
        if settings.get("experiment") != self.name:
            return Marks()
        return Marks(band=settings.get("published_band"), threshold=settings.get("threshold"),
                     claimed=settings.get("claimed_rate"), window=settings.get("sharp_window"),
                     margin=settings.get("margin"))


def _rate_sweep(c: Context) -> None:
    """Any sweep's default figure: its reference gate's runs against the rate, with its first claim's band."""
    spec = c.grid[c.sweep]
    rows = c.own[c.own[f"in_{c.sweep}"] & (c.own["gate"] == spec.get("gates", [REFERENCE_GATE])[0])]
    first = next((claim.settings for claim in registry.CLAIMS if claim.reads == c.sweep), None)
    rate_sweep(rows, spec["vary"], c.titled(rows, f"{spec['vary']}-rate sweep"), c.stem,
               c.marks(first) if first else Marks())


def paired_differences(runs: pd.DataFrame, col: str, gates: list[str]) -> pd.DataFrame:
    """Each gate minus the first in test accuracy (points), paired by seed at each rate, over the runs that
    trained: one row per (rate, seed, gate)."""
    ok = runs[runs["status"] == OK]
    wide = ok.pivot_table(index=[col, "seed"], columns="gate", values="test_acc").reindex(columns=gates)
    return pd.concat([pd.DataFrame({col: pair.index.get_level_values(0), "gate": gate,
                                    "diff": 100 * (pair[gate] - pair[gates[0]])})
                      for gate in gates[1:] for pair in [wide[[gates[0], gate]].dropna()]], ignore_index=True)


def _gate_parity(c: Context) -> None:
    spec, settings = c.grid["gate_parity"], c.config["claims"]["gate_parity"]
    rows = c.own[c.own["in_gate_parity"] & (c.own["convention"] == "inverted")]
    gates = list(spec["gates"])
    gate_parity(rows, paired_differences(rows, f"{spec['vary']}_rate", gates), spec["vary"], gates,
                settings["margin"], c.titled(rows, f"each gate vs {gates[0]}"), c.stem,
                _published(c.anchors, c.name, "gate_parity"), settings.get("published_effect"))


def _width_sweep(c: Context) -> None:
    rows = c.own[c.own["in_width_sweep"]]
    # n fixed beside p * n fixed at the same learning rate: the fixed protocol's hidden sweep (the width sweep is
    # not tuned), whichever protocol the other figures show.
    every = c.every if c.every is not None else c.own
    fixed_n = every[every["in_hidden_sweep"] & (every["gate"] == REFERENCE_GATE)]
    width_sweep(fixed_n, rows, c.titled(rows, "rate sweep with p·n fixed"), c.stem, c.band("width_optimum"))


def _learning_curves(c: Context) -> None:
    rows = c.curves[c.curves["run"].isin(c.hidden_sweep["run"])]
    learning_curves(rows, c.grid["hidden_sweep"]["vary"], SPECS[c.grid["dataset"]].classes,
                    c.titled(c.hidden_sweep, "learning curves", "shown apart"), c.stem)


def _placement(c: Context) -> None:
    rows = c.own[c.own["placement"].isin(list(c.grid["placement"]))]
    placement(rows, list(c.grid["placement"]), c.titled(rows, "placement"), c.stem,
              _published(c.anchors, c.name, "placement"))


def _weight_norms(c: Context) -> None:
    weight_norms(c.hidden_sweep, c.grid["hidden_sweep"]["vary"], c.titled(c.hidden_sweep, "weight norms"),
                 c.stem)


def _mc_inference(c: Context) -> None:
    hidden = inference_runs(c.own, c.name)
    rows = c.mc[c.mc["run"].isin(hidden["run"]) & (c.mc["hidden_rate"] > 0)]
    settings = c.config["claims"]["inference"]
    k = min(settings["k"], int(rows["k"].max())) if len(rows) else settings["k"]
    present = set(rows["gate"])
    gates = [g for g in c.grid.get("gate_parity", {}).get("gates", [REFERENCE_GATE]) if g in present]
    mc_inference(rows, k, settings["margin"], c.titled(hidden[hidden["hidden_rate"] > 0], "Monte-Carlo averaging"),
                 c.stem, gates + sorted(present - set(gates)))


def _conventions(c: Context) -> None:
    rows = c.own[c.own["in_conventions"]]
    long = []  # each net under the inference rule it prescribes and, for the scaled convention, without scaling
    for _, r in rows[rows["status"] == OK].iterrows():
        net = f"{r['gate']}, {r['convention']}"
        long.append({"net": net, "inference": "as prescribed", "loss": r["test_loss"], "acc": 100 * r["test_acc"]})
        if r["convention"] == SCALED:
            long.append({"net": net, "inference": "no scaling by p", "loss": r["unscaled_test_loss"],
                         "acc": 100 * r["unscaled_test_acc"]})
    conventions(pd.DataFrame(long, columns=["net", "inference", "loss", "acc"]), c.titled(rows, "inference conventions"),
                c.stem)


def _budget_sweep(c: Context) -> None:
    spec = c.grid["budget_sweep"]
    rows = c.own[c.own["in_budget_sweep"] & (c.own["gate"] == REFERENCE_GATE)]
    claims = c.config["claims"]
    judged = (c.computed or {}).get("claims", {}).get("budget")
    if judged is not None and claims["budget"].get("experiment") == c.name:
        budgets = judged["budgets"]  # the claims rule's numbers, as the verdict table states them
    else:  # an experiment the claim is not judged on: its own best rates, computed here only
        col = f"{spec['vary']}_rate"
        budgets = budget_claim(rows, col, claims["budget"], claims["alpha"], claims["bootstrap_samples"])["budgets"]
    budget_sweep(rows, spec["vary"], budgets, c.titled(rows, "the optimum against the training budget"), c.stem)


def _protocols(c: Context) -> None:
    """The tuned protocol's choices over the first tuned sweep of this grid (the hidden sweep by default)."""
    sweep = next(s for s in protocols.tuned_sweeps(c.config) if s in c.grid)
    spec = c.grid[sweep]
    every = c.every if c.every is not None else c.own
    chosen = c.chosen[c.chosen["experiment"] == c.name]
    vary = spec["vary"]
    fixed_rates = dict(spec.get("fixed", {}))
    own = chosen[chosen["gate"] == REFERENCE_GATE]
    for slot, rate in fixed_rates.items():
        own = own[np.isclose(own[f"{slot}_rate"], rate)]
    tuned_runs = protocol.view(every, "tuned", c.config, c.chosen)
    pick = lambda rows: rows[rows[f"in_{sweep}"] & (rows["gate"] == REFERENCE_GATE)]  # noqa: E731
    protocols_figure(every, own, pick(every), pick(tuned_runs), vary,
                     c.titled(pick(tuned_runs), f"learning rate chosen on validation ({sweep.replace('_', ' ')})"),
                     c.stem)


# Figure kinds (dropout_lab.settings.experiments names each sweep's): how each is drawn from its experiment's runs.
FIGURES = {
    "rate_sweep": _rate_sweep,
    "hidden_sweep": lambda c: rate_sweep(c.hidden_sweep, c.grid["hidden_sweep"]["vary"],
                                         c.titled(c.hidden_sweep, "rate sweep"), c.stem, c.marks("optimum")),
    "input_sweep": _rate_sweep,
    "gate_parity": _gate_parity,
    "width_sweep": _width_sweep,
    "learning_curves": _learning_curves,
    "weight_norms": _weight_norms,
    "mc_inference": _mc_inference,
    "conventions": _conventions,
    "placement": _placement,
    "budget_sweep": _budget_sweep,
    "protocols": _protocols,
}


def chosen_rates(runs: pd.DataFrame, config: Mapping[str, Any],
                 computed: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """The tuned protocol's choice per cell: the claims rule's (claims.json), else computed from the runs."""
    if computed is None:
        return protocol.selection(runs, config)
    columns = protocol.selection(runs.iloc[:0], config).columns
    table = pd.DataFrame(computed["protocols"]["selection"], columns=columns)
    floats = ["input_rate", "hidden_rate", "conv_rate", "fc_rate", "lr", "val_mean"]
    return table.astype({**dict.fromkeys(floats, float), "runs": int, "failed": int, "chosen": bool})


def draw(stem: str, runs: pd.DataFrame, curves: pd.DataFrame, config: Mapping[str, Any], out_dir: Path,
         mc: pd.DataFrame | None = None, anchors: list[Mapping[str, Any]] | None = None,
         computed: Mapping[str, Any] | None = None, chosen: pd.DataFrame | None = None) -> None:
    """Draw one figure named by `dropout_lab.planning.grid.figure_stems` (dropout_lab.settings.experiments says its kind).

    Each figure plots the runs that trained and counts the failed ones (diverged or
    collapsed) in its title and at their rate. `computed` is the claims rule's document: what it computed (the
    tuned protocol's choices, the budget claim's best rates) is read from there, not computed again;
    `chosen` is chosen_rates(), passed when several figures are drawn from one table.
    """
    name = next(n for n in config["experiments"] if stem.startswith(f"{n}_"))
    grid = config["grids"][name]
    kinds = dict(experiments.figures(name, grid, protocols.tuned_sweeps(config)))
    if stem not in kinds:
        raise ValueError(f"unknown figure {stem!r}")
    sweep = stem[len(name) + 1:]
    judged = protocols.judged_protocol(config)  # the figures show the runs the headline verdicts read
    chosen = chosen_rates(runs, config, computed) if chosen is None else chosen
    own = protocol.view(runs, judged, config, chosen)
    context = Context(name, sweep, grid, own[own["experiment"] == name], curves, mc, anchors or [], config,
                      out_dir / stem, runs[runs["experiment"] == name],
                      judged if len(protocols.protocols(config)) > 1 else None, chosen, computed)
    FIGURES[kinds[stem]](context)
