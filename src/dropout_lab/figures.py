"""seaborn figures from the aggregated tables; each is written as vector PDF and PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from dropout_lab.atomic import atomic_path  # noqa: E402

SLOT_NAMES = {"hidden": "hidden", "input": "input", "conv": "conv", "fc": "fully connected"}


def save(fig: plt.Figure, stem: Path) -> None:
    """Write STEM.pdf and STEM.png atomically."""
    for suffix in (".pdf", ".png"):
        target = stem.with_suffix(suffix)
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=suffix[1:], dpi=150, bbox_inches="tight")
    plt.close(fig)


def _retain_axis(ax: plt.Axes) -> None:
    """A top axis in the theory's retain probability p = 1 - rate."""
    top = ax.secondary_xaxis("top", functions=(lambda r: 1 - r, lambda p: 1 - p))
    top.set_xlabel("retain probability p")


def rate_sweep(runs: pd.DataFrame, vary: str, title: str, stem: Path) -> None:
    """Test accuracy and train-test gap against the drop rate, mean +/- sd over seeds, each seed a dot."""
    col = f"{vary}_rate"
    data = runs.assign(test_pct=100 * runs["test_acc"], gap_pct=100 * runs["gap_acc"])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, metric, label in (
        (axes[0], "test_pct", "test accuracy (%)"),
        (axes[1], "gap_pct", "train - test accuracy (points)"),
    ):
        sns.lineplot(data=data, x=col, y=metric, errorbar="sd", marker="o", ax=ax)
        sns.stripplot(data=data, x=col, y=metric, native_scale=True, color="0.3", size=3, alpha=0.6, ax=ax)
        ax.set_xlabel(f"{SLOT_NAMES[vary]} drop rate (1 - p)")
        ax.set_ylabel(label)
        _retain_axis(ax)
    fig.suptitle(title, y=1.08)
    save(fig, stem)


def gate_parity(runs: pd.DataFrame, vary: str, gates: list[str], margin: float, title: str, stem: Path) -> None:
    """Both gates against the rate, and the paired difference (second minus first) with the margin."""
    col = f"{vary}_rate"
    data = runs.assign(test_pct=100 * runs["test_acc"])
    wide = data.pivot_table(index=[col, "seed"], columns="gate", values="test_pct").dropna().reset_index()
    wide["diff"] = wide[gates[1]] - wide[gates[0]]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    sns.lineplot(data=data, x=col, y="test_pct", hue="gate", hue_order=gates, errorbar="sd", marker="o", ax=axes[0])
    axes[0].set_ylabel("test accuracy (%)")
    sns.pointplot(data=wide, x=col, y="diff", native_scale=True, errorbar=("ci", 90), ax=axes[1], linestyle="none")
    sns.stripplot(data=wide, x=col, y="diff", native_scale=True, color="0.3", size=3, alpha=0.6, ax=axes[1])
    axes[1].axhspan(-100 * margin, 100 * margin, color="tab:green", alpha=0.15, label="equivalence margin")
    axes[1].axhline(0, color="0.5", lw=0.8)
    axes[1].set_ylabel(f"{gates[1]} - {gates[0]} (points)")
    axes[1].legend(loc="lower right", fontsize="small")
    for ax in axes:
        ax.set_xlabel(f"{SLOT_NAMES[vary]} drop rate (1 - p)")
        _retain_axis(ax)
    fig.suptitle(title, y=1.08)
    save(fig, stem)


def placement(runs: pd.DataFrame, presets: list[str], title: str, stem: Path) -> None:
    """Test accuracy for each placement preset, mean +/- sd over seeds."""
    data = runs[runs["placement"].isin(presets)].assign(test_pct=100 * runs["test_acc"])
    fig, ax = plt.subplots(figsize=(5, 3.2))
    sns.pointplot(data=data, x="placement", y="test_pct", order=presets, errorbar="sd", linestyle="none", ax=ax)
    sns.stripplot(data=data, x="placement", y="test_pct", order=presets, color="0.3", size=3, alpha=0.6, ax=ax)
    ax.set_xlabel("where dropout is applied (preset)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    save(fig, stem)


def weight_norms(runs: pd.DataFrame, vary: str, title: str, stem: Path) -> None:
    """Norm of the weights used at inference, and the train-test gap, against the rate."""
    col = f"{vary}_rate"
    data = runs.assign(gap_pct=100 * runs["gap_acc"])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, metric, label in ((axes[0], "weight_norm", "effective weight norm"),
                              (axes[1], "gap_pct", "train - test accuracy (points)")):
        sns.lineplot(data=data, x=col, y=metric, errorbar="sd", marker="o", ax=ax)
        ax.set_xlabel(f"{SLOT_NAMES[vary]} drop rate (1 - p)")
        ax.set_ylabel(label)
        _retain_axis(ax)
    fig.suptitle(title, y=1.08)
    save(fig, stem)


def mc_inference(mc: pd.DataFrame, title: str, stem: Path) -> None:
    """Monte-Carlo test accuracy after k masks minus the deterministic net's, per gate."""
    data = mc.assign(diff=100 * (mc["mc_test_acc"] - mc["test_acc"]))
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    sns.lineplot(data=data, x="k", y="diff", hue="gate", errorbar="sd", marker="o", ax=ax)
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("sampled masks averaged, k")
    ax.set_ylabel("MC - deterministic accuracy (points)")
    ax.set_title(title)
    save(fig, stem)


def conventions(runs: pd.DataFrame, title: str, stem: Path) -> None:
    """Test loss and accuracy of each gate and convention, with and without the inference scaling."""
    rows = []
    for _, r in runs.iterrows():
        label = f"{r['gate']}, {r['convention']}"
        rows.append({"net": label, "inference": "as prescribed", "loss": r["test_loss"], "acc": 100 * r["test_acc"]})
        if r["convention"] == "scaled":
            rows.append({"net": label, "inference": "no scaling by p", "loss": r["unscaled_test_loss"],
                         "acc": 100 * r["unscaled_test_acc"]})
    data = pd.DataFrame(rows)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for ax, metric, label in ((axes[0], "loss", "test loss (cross-entropy)"), (axes[1], "acc", "test accuracy (%)")):
        sns.barplot(data=data, x="net", y=metric, hue="inference", errorbar="sd", ax=ax)
        ax.set_xlabel("")
        ax.set_ylabel(label)
        ax.tick_params(axis="x", labelrotation=20)
    fig.suptitle(title, y=1.04)
    save(fig, stem)


def theory_gradient(result: Mapping[str, Any], stem: Path) -> None:
    """Relative error of the averaged sampled gradient against n, with the 1/sqrt(n) line."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name, check in result["checks"].items():
        ax.plot(check["samples"], check["relative_error"], marker="o", label=name.replace("_", ", "))
    n = np.array(next(iter(result["checks"].values()))["samples"], dtype=float)
    first = max(c["relative_error"][0] for c in result["checks"].values())
    ax.plot(n, first * np.sqrt(n[0] / n), "k--", lw=1, label="1/sqrt(n)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("sampled gates averaged, n")
    ax.set_ylabel("relative error vs. gradient of E_R")
    ax.legend(fontsize="small")
    save(fig, stem)


def theory_regression(result: Mapping[str, Any], stem: Path) -> None:
    """Penalty coefficients in both parametrisations, and the effective weights' shrinkage, against the rate."""
    rows = pd.DataFrame(result["rows"])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    axes[0].plot(rows["rate"], rows["raw_penalty"], marker="o", label="on raw weights w: p(1-p)")
    axes[0].plot(rows["rate"], rows["effective_penalty"], marker="s", label="on effective weights pw: (1-p)/p")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("penalty coefficient")
    axes[0].legend(fontsize="small")
    axes[1].plot(rows["rate"], rows["shrinkage_closed_form"], marker="o", label="closed form")
    axes[1].plot(rows["rate"], rows["shrinkage_sgd"], marker="x", linestyle="none", label="SGD with real masks")
    axes[1].set_ylabel("||effective w|| / ||least squares w||")
    axes[1].legend(fontsize="small")
    for ax in axes:
        ax.set_xlabel("drop rate (1 - p)")
        _retain_axis(ax)
    save(fig, stem)


def learning_curves(curves: pd.DataFrame, vary: str, title: str, stem: Path) -> None:
    """Test accuracy per epoch for each rate of the sweep, mean over seeds."""
    col = f"{vary}_rate"
    data = curves.assign(test_pct=100 * curves["test_acc"], rate=curves[col].map(lambda r: f"{r:g}"))
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    sns.lineplot(data=data, x="epoch", y="test_pct", hue="rate", errorbar=None, palette="viridis", ax=ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(title=f"{SLOT_NAMES[vary]} drop rate", fontsize="small", ncol=2)
    ax.set_title(title)
    save(fig, stem)


def draw(stem: str, runs: pd.DataFrame, curves: pd.DataFrame, config: Mapping[str, Any], out_dir: Path,
         mc: pd.DataFrame | None = None) -> None:
    """Draw one figure named by `dropout_lab.grid.figure_stems`."""
    name = next(n for n in config["experiments"] if stem.startswith(f"{n}_"))
    kind = stem[len(name) + 1 :]
    grid = config["grids"][name]
    label = f"{grid['dataset'].upper()} {grid['model'].upper()}"
    own = runs[runs["experiment"] == name]
    diverged = int((own["status"] != "ok").sum())
    if diverged:  # counted in the title, never plotted as numbers
        label += f" ({diverged} diverged run{'s' if diverged > 1 else ''} excluded)"
    own = own[own["status"] == "ok"]
    curves = curves[curves["run"].isin(own["run"])]
    if mc is not None and len(mc):
        mc = mc[mc["run"].isin(own["run"])]
    bernoulli_sweep = own[own["in_hidden_sweep"] & (own["gate"] == "bernoulli")]
    if kind == "hidden_sweep":
        rate_sweep(bernoulli_sweep, grid[kind]["vary"], f"{label}: rate sweep", out_dir / stem)
    elif kind == "input_sweep":
        rows = own[own["in_input_sweep"] & (own["gate"] == "bernoulli")]
        rate_sweep(rows, grid[kind]["vary"], f"{label}: input-rate sweep", out_dir / stem)
    elif kind == "gate_parity":
        spec = grid[kind]
        margin = config["claims"]["gaussian_parity"]["margin"]
        gate_parity(own[own["in_gate_parity"]], spec["vary"], list(spec["gates"]), margin,
                    f"{label}: {spec['gates'][0]} vs {spec['gates'][1]}", out_dir / stem)
    elif kind == "learning_curves":
        rows = curves[curves["run"].isin(bernoulli_sweep["run"])]
        learning_curves(rows, grid["hidden_sweep"]["vary"], f"{label}: learning curves", out_dir / stem)
    elif kind == "placement":
        placement(own, list(grid["placement"]), f"{label}: placement", out_dir / stem)
    elif kind == "weight_norms":
        weight_norms(bernoulli_sweep, grid["hidden_sweep"]["vary"], f"{label}: weight norms and gap", out_dir / stem)
    elif kind == "mc_inference":
        rows = mc[(mc["experiment"] == name) & (mc["convention"] == "inverted")
                  & mc["run"].isin(own[own["in_hidden_sweep"] | own["in_gate_parity"]]["run"])]
        mc_inference(rows, f"{label}: Monte-Carlo averaging", out_dir / stem)
    elif kind == "conventions":
        conventions(own[own["in_conventions"]], f"{label}: inference conventions", out_dir / stem)
    else:
        raise ValueError(f"unknown figure {stem!r}")
