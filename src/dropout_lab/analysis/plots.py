"""The seaborn figures, each a function of tidy tables; each is written as vector PDF and PNG.

analysis.figures chooses each figure's rows from the aggregated tables; these functions only draw.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import matplotlib

matplotlib.use("Agg")  # isort: skip  (before pyplot: figures are drawn without a display)
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from dropout_lab.analysis.claims import budget_claim  # noqa: E402
from dropout_lab.settings.atomic import atomic_path  # noqa: E402
from dropout_lab.settings.vocabulary import OK, SCALED, SLOT_TITLES  # noqa: E402

# Vector text that venues accept (TrueType, not Type 3), and print-resolution PNGs.
matplotlib.rcParams.update({"pdf.fonttype": 42, "ps.fonttype": 42})
PNG_DPI = 300
FAILED_COLOUR = "tab:red"


def save(fig: plt.Figure, stem: Path) -> None:
    """Write STEM.pdf and STEM.png atomically."""
    for suffix in (".pdf", ".png"):
        target = stem.with_suffix(suffix)
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=suffix[1:], dpi=PNG_DPI, bbox_inches="tight")
    plt.close(fig)


def _retain_axis(ax: plt.Axes) -> None:
    """A top axis in the theory's retain probability p = 1 - rate."""
    top = ax.secondary_xaxis("top", functions=(lambda r: 1 - r, lambda p: 1 - p))
    top.set_xlabel("retain probability p")


def _mark_failed(ax: plt.Axes, failed: Mapping[float, tuple[int, int]]) -> None:
    """At each rate with failed runs, 'k/n failed' along the bottom of the axes (the numbers are not plotted)."""
    for rate, (bad, total) in sorted(failed.items()):
        ax.annotate(f"{bad}/{total}\nfailed", xy=(rate, 0), xycoords=("data", "axes fraction"), xytext=(0, 3),
                    textcoords="offset points", ha="center", va="bottom", fontsize=6, color=FAILED_COLOUR)
        ax.axvline(rate, color=FAILED_COLOUR, lw=0.6, ls=":", alpha=0.7)


def _failed_by_rate(runs: pd.DataFrame, col: str) -> dict[float, tuple[int, int]]:
    counts = runs.groupby(col)["status"].agg(lambda s: (int((s != OK).sum()), int(len(s))))
    return {float(r): c for r, c in counts.items() if c[0]}


def _with_failed_range(ax: plt.Axes, rates: list[float]) -> None:
    """The x-axis spans every rate of the sweep, failed ones included (they are marked, not plotted)."""
    if rates:
        pad = 0.03 * max(max(rates) - min(rates), 0.1)
        ax.set_xlim(min(rates) - pad, max(rates) + pad)


def rate_sweep(runs: pd.DataFrame, vary: str, title: str, stem: Path, band: list[float] | None = None) -> None:
    """Test accuracy and train-test gap against the drop rate over the runs that trained, mean +/- sd over seeds,
    each seed a dot; failed runs counted at their rate along the bottom; the published flat band shaded."""
    col = f"{vary}_rate"
    failed = _failed_by_rate(runs, col)
    ok = runs[runs["status"] == OK]
    data = ok.assign(test_pct=100 * ok["test_acc"], gap_pct=100 * ok["gap_acc"])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, metric, label in (
        (axes[0], "test_pct", "test accuracy (%)"),
        (axes[1], "gap_pct", "train - test accuracy (points)"),
    ):
        if len(data):
            sns.lineplot(data=data, x=col, y=metric, errorbar="sd", marker="o", ax=ax)
            sns.stripplot(data=data, x=col, y=metric, native_scale=True, color="0.3", size=3, alpha=0.6, ax=ax)
        if band:
            ax.axvspan(band[0], band[1], color="tab:green", alpha=0.12, lw=0,
                       label="flat band, Srivastava et al. Fig. 9")
        _mark_failed(ax, failed)
        _with_failed_range(ax, sorted({float(r) for r in runs[col]}))
        ax.set_xlabel(f"{SLOT_TITLES[vary]} drop rate (1 - p)")
        ax.set_ylabel(label)
        _retain_axis(ax)
    if band:
        axes[0].legend(loc="lower left", fontsize="x-small")
    fig.suptitle(title, y=1.08)
    save(fig, stem)


def gate_parity(runs: pd.DataFrame, vary: str, gates: list[str], margin: float, title: str, stem: Path,
                published: list[Mapping[str, Any]] | None = None) -> None:
    """The gates against the rate, and each gate's paired difference from the first (the reference) with the
    margin band, over the runs that trained; failed runs counted at their rate; published values drawn at their
    rate."""
    col = f"{vary}_rate"
    failed = _failed_by_rate(runs, col)
    ok = runs[runs["status"] == OK]
    data = ok.assign(test_pct=100 * ok["test_acc"])
    wide = data.pivot_table(index=[col, "seed"], columns="gate", values="test_pct").reindex(columns=gates)
    reference = gates[0]
    wide = pd.concat([
        pd.DataFrame({col: pair.index.get_level_values(0), "gate": gate, "diff": pair[gate] - pair[reference]})
        for gate in gates[1:] for pair in [wide[[reference, gate]].dropna()]], ignore_index=True)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    palette = dict(zip(gates, sns.color_palette(n_colors=len(gates))))
    if len(data):
        sns.lineplot(data=data, x=col, y="test_pct", hue="gate", hue_order=gates, palette=palette, errorbar="sd",
                     marker="o", ax=axes[0])
    for point in published or []:
        axes[0].scatter([point["rate"]], [100 - point["error_pct"]], marker="*", s=90, zorder=5,
                        color=palette.get(point["gate"], "k"), edgecolor="k", lw=0.5,
                        label=f"{point['gate']}, {point['where']}")
    axes[0].legend(fontsize="x-small", loc="lower left")
    axes[0].set_ylabel("test accuracy (%)")
    if len(wide):
        others = gates[1:]
        sns.pointplot(data=wide, x=col, y="diff", hue="gate", hue_order=others, palette=palette, native_scale=True,
                      errorbar=("ci", 90), dodge=0.02 * len(others) if len(others) > 1 else False, ax=axes[1],
                      linestyle="none", markersize=4)
    axes[1].axhspan(-100 * margin, 100 * margin, color="tab:green", alpha=0.15, label="equivalence margin")
    axes[1].axhline(0, color="0.5", lw=0.8)
    axes[1].set_ylabel(f"gate - {reference} (points)")
    axes[1].legend(loc="lower left", fontsize="x-small")
    for ax in axes:
        _mark_failed(ax, failed)
        _with_failed_range(ax, sorted({float(r) for r in runs[col]}))
        ax.set_xlabel(f"{SLOT_TITLES[vary]} drop rate (1 - p)")
        _retain_axis(ax)
    fig.suptitle(title, y=1.08)
    save(fig, stem)


def width_sweep(fixed_n: pd.DataFrame, fixed_pn: pd.DataFrame, title: str, stem: Path,
                band: list[float] | None = None) -> None:
    """Test accuracy against the hidden rate with the width n fixed and with p * n fixed (Srivastava et al., Fig. 9a
    and 9b), mean +/- sd over the runs that trained; each rate's width under p * n fixed on the right."""
    col = "hidden_rate"
    runs = pd.concat([fixed_n.assign(family="n fixed"), fixed_pn.assign(family="p·n fixed")], ignore_index=True)
    failed = _failed_by_rate(fixed_pn, col)
    ok = runs[runs["status"] == OK]
    data = ok.assign(test_pct=100 * ok["test_acc"])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    if len(data):
        sns.lineplot(data=data, x=col, y="test_pct", hue="family", errorbar="sd", marker="o", ax=axes[0])
    if band:
        axes[0].axvspan(band[0], band[1], color="tab:green", alpha=0.12, label="published best (p·n fixed)")
    axes[0].legend(fontsize="x-small", loc="lower left")
    axes[0].set_ylabel("test accuracy (%)")
    widths = fixed_pn.groupby(col)["width"].first()
    axes[1].plot(widths.index, widths.to_numpy(), marker="o", color="tab:orange")
    axes[1].set_ylabel("hidden width n (p·n fixed)")
    for ax in axes:
        _mark_failed(ax, failed)
        _with_failed_range(ax, sorted({float(r) for r in runs[col]}))
        ax.set_xlabel("hidden drop rate (1 - p)")
        _retain_axis(ax)
    fig.suptitle(title, y=1.08)
    save(fig, stem)


def placement(runs: pd.DataFrame, presets: list[str], title: str, stem: Path,
              published: list[Mapping[str, Any]] | None = None) -> None:
    """Test accuracy for each placement preset, mean +/- sd over the runs that trained; published values as stars."""
    ok = runs[runs["placement"].isin(presets) & (runs["status"] == OK)]
    data = ok.assign(test_pct=100 * ok["test_acc"])
    fig, ax = plt.subplots(figsize=(5, 3.2))
    sns.pointplot(data=data, x="placement", y="test_pct", order=presets, errorbar="sd", linestyle="none", ax=ax)
    sns.stripplot(data=data, x="placement", y="test_pct", order=presets, color="0.3", size=3, alpha=0.6, ax=ax)
    for point in published or []:
        if point["placement"] in presets:
            ax.scatter([presets.index(point["placement"])], [100 - point["error_pct"]], marker="*", s=90, zorder=5,
                       color="tab:orange", edgecolor="k", lw=0.5)
    if published:
        ax.scatter([], [], marker="*", s=90, color="tab:orange", edgecolor="k", lw=0.5,
                   label="Srivastava et al. (their nets)")
        ax.legend(fontsize="x-small", loc="lower right")
    ax.set_xlabel("where dropout is applied (preset)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    save(fig, stem)


def weight_norms(runs: pd.DataFrame, vary: str, title: str, stem: Path) -> None:
    """Norm of the weights used at inference, and the train-test gap, against the rate, over the runs that trained."""
    col = f"{vary}_rate"
    failed = _failed_by_rate(runs, col)
    ok = runs[runs["status"] == OK]
    data = ok.assign(gap_pct=100 * ok["gap_acc"])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, metric, label in ((axes[0], "weight_norm", "effective weight norm"),
                              (axes[1], "gap_pct", "train - test accuracy (points)")):
        if len(data):
            sns.lineplot(data=data, x=col, y=metric, errorbar="sd", marker="o", ax=ax)
        _mark_failed(ax, failed)
        _with_failed_range(ax, sorted({float(r) for r in runs[col]}))
        ax.set_xlabel(f"{SLOT_TITLES[vary]} drop rate (1 - p)")
        ax.set_ylabel(label)
        _retain_axis(ax)
    fig.suptitle(title, y=1.08)
    save(fig, stem)


def mc_inference(mc: pd.DataFrame, k: int, margin: float, title: str, stem: Path) -> None:
    """Left: MC(k) minus deterministic test accuracy per rate and gate, with the margin band (the decision).
    Right: the same difference against k, one line per rate. Runs that trained, rate > 0."""
    col = "hidden_rate"
    failed = _failed_by_rate(mc[mc["k"] == mc["k"].min()], col)
    ok = mc[mc["status"] == OK]
    data = ok.assign(diff=100 * (ok["mc_test_acc"] - ok["test_acc"]))
    at_k = data[data["k"] == k]
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.4))
    if len(at_k):
        sns.pointplot(data=at_k, x=col, y="diff", hue="gate", native_scale=True, errorbar=("ci", 90),
                      dodge=0.02, linestyle="none", ax=axes[0])
    axes[0].axhspan(-100 * margin, 100 * margin, color="tab:green", alpha=0.15, label="margin")
    axes[0].axhline(0, color="0.5", lw=0.8)
    _mark_failed(axes[0], failed)
    _with_failed_range(axes[0], sorted({float(r) for r in mc[col]}))
    axes[0].set_xlabel("hidden drop rate (1 - p)")
    axes[0].set_ylabel(f"MC (k = {k}) - deterministic (points)")
    axes[0].legend(fontsize="x-small", loc="upper left")
    _retain_axis(axes[0])
    if len(data):
        curves = data.assign(rate=data[col].map(lambda r: f"{r:g}"))
        sns.lineplot(data=curves, x="k", y="diff", hue="rate", errorbar=None, palette="viridis", marker="o",
                     markersize=3, ax=axes[1])
        axes[1].legend(title="hidden rate", fontsize="x-small", ncol=2)
    axes[1].axhline(0, color="0.5", lw=0.8)
    axes[1].set_xscale("log")
    axes[1].set_xlabel("sampled masks averaged, k")
    axes[1].set_ylabel("MC - deterministic (points)")
    fig.suptitle(title, y=1.08)
    save(fig, stem)


def conventions(runs: pd.DataFrame, title: str, stem: Path) -> None:
    """Test loss and accuracy of each gate and convention, with and without the inference scaling."""
    rows = []
    for _, r in runs.iterrows():
        label = f"{r['gate']}, {r['convention']}"
        rows.append({"net": label, "inference": "as prescribed", "loss": r["test_loss"], "acc": 100 * r["test_acc"]})
        if r["convention"] == SCALED:
            rows.append({"net": label, "inference": "no scaling by p", "loss": r["unscaled_test_loss"],
                         "acc": 100 * r["unscaled_test_acc"]})
    data = pd.DataFrame(rows)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for ax, metric, label in ((axes[0], "loss", "test loss (cross-entropy)"), (axes[1], "acc", "test accuracy (%)")):
        # Points with sd, not bars from zero: the accuracies differ by tenths of a point.
        sns.pointplot(data=data, x="net", y=metric, hue="inference", errorbar="sd", dodge=0.3, linestyle="none",
                      ax=ax)
        sns.stripplot(data=data, x="net", y=metric, hue="inference", dodge=True, size=3, alpha=0.5, ax=ax,
                      legend=False)
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


def learning_curves(curves: pd.DataFrame, vary: str, classes: int, title: str, stem: Path) -> None:
    """Test accuracy and training loss per epoch for each rate of the sweep (mean over seeds); failed runs are
    drawn dashed so that a collapse shows, with the loss of a uniform guess, ln(classes), dotted."""
    col = f"{vary}_rate"
    data = curves.assign(test_pct=100 * curves["test_acc"], rate=curves[col].map(lambda r: f"{r:g}"),
                         trained=np.where(curves["status"] == OK, "trained", "failed"))
    order = [f"{r:g}" for r in sorted(curves[col].unique())]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, metric, label in ((axes[0], "test_pct", "test accuracy (%)"), (axes[1], "train_loss", "training loss")):
        sns.lineplot(data=data, x="epoch", y=metric, hue="rate", hue_order=order, style="trained",
                     style_order=["trained", "failed"], errorbar=None, palette="viridis", ax=ax)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.get_legend().remove()
    axes[1].axhline(np.log(classes), color="0.4", lw=0.8, ls=":")
    axes[1].set_yscale("log")
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=8, fontsize="x-small",
               title=f"{SLOT_TITLES[vary]} drop rate; line style: runs that trained or failed")
    fig.suptitle(title, y=1.04)
    save(fig, stem)


def budget_sweep(runs: pd.DataFrame, vary: str, settings: Mapping[str, Any], alpha: float, samples: int,
                 title: str, stem: Path) -> None:
    """Left: test accuracy against the rate at each epoch budget (mean over the seeds that trained). Right: the
    best rate and the best set (rates not significantly worse, claim 1a's statistic) against the budget."""
    col = f"{vary}_rate"
    ok = runs[runs["status"] == OK]
    data = ok.assign(test_pct=100 * ok["test_acc"], budget=ok["epochs"].map(lambda e: f"{int(e)}"))
    order = [f"{int(e)}" for e in sorted(runs["epochs"].unique())]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    if len(data):
        sns.lineplot(data=data, x=col, y="test_pct", hue="budget", hue_order=order, errorbar=None, marker="o",
                     palette="crest", ax=axes[0])
        axes[0].legend(title="epochs", fontsize="x-small", title_fontsize="x-small")
    axes[0].set_xlabel(f"{SLOT_TITLES[vary]} drop rate (1 - p)")
    axes[0].set_ylabel("test accuracy (%)")
    result = budget_claim(runs, col, settings, alpha, samples)
    for row in result["budgets"]:
        axes[1].vlines(row["epochs"], min(row["set"]), max(row["set"]), color="tab:blue", lw=6, alpha=0.3)
        axes[1].scatter([row["epochs"]] * len(row["set"]), row["set"], color="tab:blue", s=10)
    axes[1].plot([r["epochs"] for r in result["budgets"]], [r["best"] for r in result["budgets"]], "o-",
                 color="tab:red", label="best rate")
    axes[1].set_xscale("log")
    axes[1].set_xticks([r["epochs"] for r in result["budgets"]], [str(r["epochs"]) for r in result["budgets"]])
    axes[1].xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    axes[1].set_xlabel("training budget (epochs)")
    axes[1].set_ylabel(f"{SLOT_TITLES[vary]} drop rate")
    axes[1].set_ylim(-0.05, max(0.95, float(runs[col].max()) + 0.05))
    axes[1].legend(loc="best", fontsize="x-small", title="bars: best set", title_fontsize="x-small")
    fig.suptitle(title, y=1.04)
    save(fig, stem)


def protocols_figure(every: pd.DataFrame, chosen: pd.DataFrame, fixed: pd.DataFrame, tuned: pd.DataFrame,
                     vary: str, title: str, stem: Path) -> None:
    """Left: mean validation accuracy against the learning rate for each rate of the sweep, the chosen learning
    rate ringed. Middle: the chosen learning rate against the rate. Right: test accuracy against the rate under
    the fixed and the tuned protocol (mean +/- sd over the seeds that trained)."""
    col = f"{vary}_rate"
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    curves = chosen.assign(val_pct=100 * chosen["val_mean"], rate=chosen[col].map(lambda r: f"{r:g}"))
    order = [f"{r:g}" for r in sorted(chosen[col].unique())]
    if len(curves):
        sns.lineplot(data=curves, x="lr", y="val_pct", hue="rate", hue_order=order, palette="viridis", marker="o",
                     errorbar=None, ax=axes[0])
        picked = curves[curves["chosen"]]
        axes[0].scatter(picked["lr"], picked["val_pct"], s=80, facecolors="none", edgecolors="tab:red", zorder=3)
        axes[0].legend(title=f"{SLOT_TITLES[vary]} rate", fontsize="xx-small", title_fontsize="x-small", ncol=2)
        axes[1].plot(picked[col], picked["lr"], "o-", color="tab:red")
    grid_lrs = sorted(chosen["lr"].unique())
    for ax, axis in ((axes[0], "x"), (axes[1], "y")):  # the learning-rate grid itself as the ticks
        getattr(ax, f"set_{axis}scale")("log")
        getattr(ax, f"set_{axis}ticks")(grid_lrs, [f"{lr:g}" for lr in grid_lrs])
        getattr(ax, f"{axis}axis").set_minor_locator(matplotlib.ticker.NullLocator())
    axes[0].set_xlabel("learning rate")
    axes[0].set_ylabel("validation accuracy (%), failed runs as guesses")
    axes[1].set_xlabel(f"{SLOT_TITLES[vary]} drop rate (1 - p)")
    axes[1].set_ylabel("chosen learning rate")
    both = pd.concat([fixed.assign(protocol="fixed"), tuned.assign(protocol="tuned")])
    both = both[both["status"] == OK]
    if len(both):
        sns.lineplot(data=both.assign(test_pct=100 * both["test_acc"]), x=col, y="test_pct", hue="protocol",
                     hue_order=["fixed", "tuned"], errorbar="sd", marker="o", ax=axes[2])
        axes[2].legend(fontsize="x-small")
    axes[2].set_xlabel(f"{SLOT_TITLES[vary]} drop rate (1 - p)")
    axes[2].set_ylabel("test accuracy (%)")
    fig.suptitle(title, y=1.04)
    fig.tight_layout()
    save(fig, stem)
