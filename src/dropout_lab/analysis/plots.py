"""The seaborn figures, each a function of tidy tables; each is written as vector PDF and PNG.

analysis.figures chooses each figure's rows and the claim's marks from the aggregated tables and the config;
these functions only draw. Every figure is drawn at the paper's text width, so a font size here is its size in
print (the paper includes each at \\linewidth).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import matplotlib
matplotlib.use("Agg")  # isort: skip  (before pyplot: figures are drawn without a display)
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from dropout_lab.settings.atomic import atomic_path  # noqa: E402
from dropout_lab.settings.vocabulary import OK, SLOT_TITLES  # noqa: E402

# paper/paper.tex: a4paper with geometry margin=2.5cm, so \linewidth is 210 - 2 * 25 = 160 mm.
TEXT_WIDTH_IN = 160 / 25.4
FONT_PT = 8  # labels, titles and legends
SMALL_PT = 7  # ticks and marks: the smallest text in print
PNG_DPI = 300
FAILED_COLOUR = "tab:red"
STYLE = {"font.size": FONT_PT, "axes.labelsize": FONT_PT, "axes.titlesize": FONT_PT, "figure.titlesize": FONT_PT + 1,
         **dict.fromkeys(("legend.fontsize", "legend.title_fontsize", "xtick.labelsize", "ytick.labelsize"), SMALL_PT),
         "pdf.fonttype": 42, "ps.fonttype": 42}  # vector text that venues accept (TrueType, not Type 3)


def use_style() -> None:
    """The one look of every figure (the workflow's figure scripts and the tests draw with it)."""
    sns.set_theme(context="paper", style="whitegrid", rc=STYLE)


use_style()


@dataclass(frozen=True)
class Marks:
    """A claim's lines and bands on a test-accuracy axis (analysis.figures reads them from config["claims"])."""

    band: list[float] | None = None  # the published flat band of rates, shaded
    threshold: float | None = None  # a claimed threshold rate: a vertical line
    claimed: float | None = None  # a claimed optimum rate, with +/- window around it
    window: float | None = None
    margin: float | None = None  # equivalence margin (accuracy fraction): a band below the best mean


def panels(n: int, height: float = 2.5) -> tuple[plt.Figure, Any]:
    """A row of n axes at the paper's text width."""
    return plt.subplots(1, n, figsize=(TEXT_WIDTH_IN, height), layout="constrained")


def _seeds(ax: plt.Axes, data: pd.DataFrame, x: str, y: str) -> None:
    """Mean +/- sd over seeds against x, each seed a dot."""
    if len(data):
        sns.lineplot(data=data, x=x, y=y, errorbar="sd", marker="o", markersize=4, ax=ax)
        sns.stripplot(data=data, x=x, y=y, native_scale=True, color="0.3", size=2.5, alpha=0.6, ax=ax)


def save(fig: plt.Figure, stem: Path) -> None:
    """Write STEM.pdf and STEM.png atomically, at the drawn size (no cropping: the width is the text width)."""
    for suffix in (".pdf", ".png"):
        with atomic_path(stem.with_suffix(suffix)) as tmp:
            fig.savefig(tmp, format=suffix[1:], dpi=PNG_DPI)
        fig.set_layout_engine("none")  # the PNG keeps the layout solved for the PDF (a second solve is a draw)
    plt.close(fig)


def retain_axis(ax: plt.Axes) -> None:
    """A top axis in the theory's retain probability p = 1 - rate."""
    top = ax.secondary_xaxis("top", functions=(lambda r: 1 - r, lambda p: 1 - p))
    top.set_xlabel("retain probability p")
    top.xaxis.set_major_locator(matplotlib.ticker.MultipleLocator(0.2))
    top.grid(False)


def _legend_below(fig: plt.Figure, *axes: plt.Axes, ncol: int = 3, title: str | None = None) -> None:
    """One legend under the panels, where it covers no data, of the labelled artists of `axes`."""
    found: dict[str, Any] = {}
    for ax in axes:
        if ax.get_legend():
            ax.get_legend().remove()
        for handle, label in zip(*ax.get_legend_handles_labels()):
            found.setdefault(label, handle)
    if found:
        fig.legend(found.values(), found.keys(), loc="outside lower center", ncol=min(len(found), ncol), title=title)


def _mark_failed(ax: plt.Axes, failed: Mapping[float, tuple[int, int]], line: bool = True) -> None:
    """At each x with failed runs, 'k/n failed' at the bottom: not plotted, so the axis fits the runs that trained."""
    for x, (bad, total) in sorted(failed.items()):
        ax.annotate(f"{bad}/{total} failed", xy=(x, 0), xycoords=("data", "axes fraction"), xytext=(-1, 2),
                    textcoords="offset points", ha="right", va="bottom", rotation=90, fontsize=SMALL_PT,
                    color=FAILED_COLOUR)
        if line:
            ax.axvline(x, color=FAILED_COLOUR, lw=0.6, ls=":", alpha=0.7)


def _failed_by_rate(runs: pd.DataFrame, col: str) -> dict[float, tuple[int, int]]:
    counts = runs.groupby(col)["status"].agg(lambda s: (int((s != OK).sum()), int(len(s))))
    return {(r if isinstance(r, str) else float(r)): c for r, c in counts.items() if c[0]}


def _rate_axis(ax: plt.Axes, runs: pd.DataFrame, col: str, title: str) -> None:
    """The x-axis spans every rate of the sweep, failed ones included (marked, not plotted), with p on top."""
    _mark_failed(ax, _failed_by_rate(runs, col))
    rates = sorted({float(r) for r in runs[col]})
    if rates:
        pad = 0.04 * max(max(rates) - min(rates), 0.1)
        ax.set_xlim(min(rates) - pad, max(rates) + pad)
        ax.xaxis.set_major_locator(matplotlib.ticker.MultipleLocator(0.2))
    ax.set_xlabel(f"{title} drop rate (1 - p)")
    retain_axis(ax)


def _draw_marks(ax: plt.Axes, marks: Marks, best_pct: float | None) -> None:
    """The claim's published band, threshold, claimed rate with its window, and the margin below the best mean."""
    if marks.band:
        ax.axvspan(*marks.band, color="tab:green", alpha=0.12, lw=0,
                   label=f"flat band {marks.band[0]:g}-{marks.band[1]:g} (Srivastava et al. Fig. 9)")
    if marks.threshold is not None:
        ax.axvline(marks.threshold, color="tab:purple", lw=1.2, ls="--", label=f"claimed threshold {marks.threshold:g}")
    if marks.claimed is not None:
        ax.axvline(marks.claimed, color="0.15", lw=1.0, label=f"claimed optimum {marks.claimed:g}")
        if marks.window:
            for edge in (marks.claimed - marks.window, marks.claimed + marks.window):
                ax.axvline(edge, color="0.15", lw=0.8, ls="--",
                           label=f"window ±{marks.window:g}" if edge < marks.claimed else None)
    if marks.margin and best_pct is not None:
        ax.axhspan(best_pct - 100 * marks.margin, best_pct, color="0.5", alpha=0.3, lw=0,
                   label=f"within {100 * marks.margin:g} points of the best mean")


def rate_sweep(runs: pd.DataFrame, vary: str, title: str, stem: Path, marks: Marks = Marks()) -> None:
    """Test accuracy, the test-minus-train loss gap and the train-minus-test accuracy gap against the drop rate over
    the runs that trained, mean +/- sd over seeds, each seed a dot; failed runs counted at their rate along the
    bottom; the claim's marks on the accuracy panel."""
    col = f"{vary}_rate"
    data = runs[runs["status"] == OK].eval("test_pct = 100 * test_acc\ngap_pct = 100 * gap_acc")
    fig, axes = panels(3, 2.7)
    for ax, metric, label in ((axes[0], "test_pct", "test accuracy (%)"),
                              (axes[1], "gap_loss", "test - train loss (nats)"),
                              (axes[2], "gap_pct", "train - test accuracy (points)")):
        _seeds(ax, data, col, metric)
        _rate_axis(ax, runs, col, SLOT_TITLES[vary])
        ax.set_ylabel(label)
    best = data.groupby(col)["test_pct"].mean().max() if len(data) else None
    _draw_marks(axes[0], marks, best)
    _legend_below(fig, axes[0])
    fig.suptitle(title)
    save(fig, stem)


def gate_parity(runs: pd.DataFrame, diffs: pd.DataFrame, vary: str, gates: list[str], margin: float, title: str,
                stem: Path, published: list[Mapping[str, Any]] | None = None,
                published_effect: float | None = None) -> None:
    """The gates against the rate, and each gate's paired difference from the first (the reference; `diffs`, in
    points) with the margin band and the published Gaussian effect, over the runs that trained; failed runs counted
    at their rate; published values drawn at their rate."""
    col = f"{vary}_rate"
    data, reference = runs[runs["status"] == OK].eval("test_pct = 100 * test_acc"), gates[0]
    fig, axes = panels(2, 2.9)
    palette = dict(zip(gates, sns.color_palette(n_colors=len(gates))))
    if len(data):
        sns.lineplot(data=data, x=col, y="test_pct", hue="gate", hue_order=gates, palette=palette, errorbar="sd",
                     marker="o", markersize=4, ax=axes[0])
    for point in published or []:
        axes[0].scatter([point["rate"]], [100 - point["error_pct"]], marker="*", s=70, zorder=5,
                        color=palette.get(point["gate"], "k"), edgecolor="k", lw=0.5,
                        label=f"{point['gate']}, {point['where']}")
    axes[0].set_ylabel("test accuracy (%)")
    if len(diffs):
        others = gates[1:]
        sns.pointplot(data=diffs, x=col, y="diff", hue="gate", hue_order=others, palette=palette, native_scale=True,
                      errorbar=("ci", 90), dodge=0.02 * len(others) if len(others) > 1 else False, ax=axes[1],
                      linestyle="none", markersize=4)
    axes[1].axhspan(-100 * margin, 100 * margin, color="tab:green", alpha=0.15, lw=0,
                    label=f"equivalence margin ±{100 * margin:g} points")
    if published_effect is not None and "gaussian" in gates[1:]:
        axes[1].axhline(100 * published_effect, color=palette["gaussian"], lw=1.0, ls="--",
                        label=f"published gaussian - bernoulli, +{100 * published_effect:g} (Table 10)")
    axes[1].axhline(0, color="0.5", lw=0.8)
    axes[1].set_ylabel(f"gate - {reference} (points)")
    _legend_below(fig, *axes)
    for ax in axes:
        _rate_axis(ax, runs, col, SLOT_TITLES[vary])
    fig.suptitle(title)
    save(fig, stem)


def width_sweep(fixed_n: pd.DataFrame, fixed_pn: pd.DataFrame, title: str, stem: Path,
                band: list[float] | None = None) -> None:
    """Test accuracy against the hidden rate with the width n fixed and with p * n fixed (Srivastava et al., Fig. 9a
    and 9b), mean +/- sd over the runs that trained; each rate's width under p * n fixed on the right."""
    col = "hidden_rate"
    runs = pd.concat([fixed_n.assign(family="n fixed"), fixed_pn.assign(family="p·n fixed")], ignore_index=True)
    data = runs[runs["status"] == OK].eval("test_pct = 100 * test_acc")
    fig, axes = panels(2, 2.7)
    if len(data):
        sns.lineplot(data=data, x=col, y="test_pct", hue="family", errorbar="sd", marker="o", markersize=4,
                     ax=axes[0])
    if band:
        axes[0].axvspan(band[0], band[1], color="tab:green", alpha=0.12, lw=0, label="published best (p·n fixed)")
    _legend_below(fig, axes[0])
    axes[0].set_ylabel("test accuracy (%)")
    widths = fixed_pn.groupby(col)["width"].first()
    axes[1].plot(widths.index, widths.to_numpy(), marker="o", color="tab:orange")
    axes[1].set_ylabel("hidden width n (p·n fixed)")
    for ax in axes:
        _rate_axis(ax, runs, col, "hidden")  # failed runs of both families counted
    fig.suptitle(title)
    save(fig, stem)


def placement(runs: pd.DataFrame, presets: list[str], title: str, stem: Path,
              published: list[Mapping[str, Any]] | None = None) -> None:
    """Test accuracy for each placement preset, mean +/- sd over the runs that trained; published values as stars;
    failed runs counted at their preset."""
    rows = runs[runs["placement"].isin(presets)]
    data = rows[rows["status"] == OK].eval("test_pct = 100 * test_acc")
    fig, ax = panels(1, 2.4)
    sns.pointplot(data=data, x="placement", y="test_pct", order=presets, errorbar="sd", linestyle="none", ax=ax)
    sns.stripplot(data=data, x="placement", y="test_pct", order=presets, color="0.3", size=2.5, alpha=0.6, ax=ax)
    _mark_failed(ax, {presets.index(p): c for p, c in _failed_by_rate(rows, "placement").items()}, line=False)
    for point in published or []:
        if point["placement"] in presets:
            ax.scatter([presets.index(point["placement"])], [100 - point["error_pct"]], marker="*", s=70, zorder=5,
                       color="tab:orange", edgecolor="k", lw=0.5)
    if published:
        ax.scatter([], [], marker="*", s=70, color="tab:orange", edgecolor="k", lw=0.5,
                   label="Srivastava et al. (their nets)")
        ax.legend(loc="lower right")
    ax.set_xlabel("where dropout is applied (preset)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    save(fig, stem)


def weight_norms(runs: pd.DataFrame, vary: str, title: str, stem: Path) -> None:
    """Norm of the weights used at inference against the rate, mean +/- sd over the runs that trained, each seed a
    dot (the gaps are claim 1b's, in the rate-sweep figure)."""
    col = f"{vary}_rate"
    data = runs[runs["status"] == OK]
    fig, ax = panels(1, 2.5)
    _seeds(ax, data, col, "weight_norm")
    _rate_axis(ax, runs, col, SLOT_TITLES[vary])
    ax.set_ylabel("effective weight norm")
    fig.suptitle(title)
    save(fig, stem)


def mc_inference(mc: pd.DataFrame, k: int, margin: float, title: str, stem: Path,
                 gates: list[str] | None = None) -> None:
    """First panel: MC(k) minus deterministic test accuracy per rate and gate, with the margin band (the decision).
    Then one panel per gate, never pooled: the same difference against k, one line per rate (mean over that
    gate's seeds). Runs that trained, rate > 0; failed runs counted at their rate and in each gate's title."""
    col = "hidden_rate"
    gates = gates or sorted(mc["gate"].unique())
    data = mc[mc["status"] == OK].eval("diff = 100 * (mc_test_acc - test_acc)")
    at_k, first_k = data[data["k"] == k], mc[mc["k"] == mc["k"].min()]
    rows, cols = -(-(1 + len(gates)) // 3), min(1 + len(gates), 3)
    fig = plt.figure(figsize=(TEXT_WIDTH_IN, 2.5 * rows + 0.4), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    palette = dict(zip(gates, sns.color_palette(n_colors=len(gates))))
    if len(at_k):
        sns.pointplot(data=at_k, x=col, y="diff", hue="gate", hue_order=gates, palette=palette, native_scale=True,
                      errorbar=("ci", 90), dodge=0.02, linestyle="none", markersize=4, ax=axes[0])
    _rate_axis(axes[0], first_k, col, "hidden")
    axes[0].set_ylabel(f"MC (k = {k}) - deterministic (points)")
    rates = [f"{r:g}" for r in sorted(data[col].unique())]  # a rate whose runs all failed is in the titles
    colours = dict(zip(rates, sns.color_palette("viridis", len(rates))))
    for ax, gate in zip(axes[1:], gates):
        for rate, own in data[data["gate"] == gate].groupby(col):  # the mean over this gate's seeds at each k
            mean = own.groupby("k")["diff"].mean()
            ax.plot(mean.index, mean.to_numpy(), color=colours[f"{rate:g}"], marker="o", markersize=3,
                    label=f"hidden rate {rate:g}")
        failed = _failed_by_rate(first_k[first_k["gate"] == gate], col)
        ax.set_title("\n".join([gate, *(f"{b}/{n} failed at rate {r:g}" for r, (b, n) in failed.items())]))
        ax.set(xscale="log", xlabel="masks averaged, k", ylabel="MC - deterministic (points)")
        ax.sharey(axes[1])
    for ax in axes[:1 + len(gates)]:
        ax.axhspan(-100 * margin, 100 * margin, color="tab:green", alpha=0.15, lw=0,
                   label=f"margin ±{100 * margin:g} points")
        ax.axhline(0, color="0.5", lw=0.8)
    for ax in axes[1 + len(gates):]:
        ax.set_visible(False)
    _legend_below(fig, *axes, ncol=5)
    fig.suptitle(title)
    save(fig, stem)


def conventions(data: pd.DataFrame, title: str, stem: Path) -> None:
    """Test loss and accuracy (columns loss, acc in %) of each net (gate, convention) under each inference rule."""
    fig, axes = panels(2, 2.8)
    for ax, metric, label in ((axes[0], "loss", "test loss (cross-entropy)"), (axes[1], "acc", "test accuracy (%)")):
        # Points with sd, not bars from zero: the accuracies differ by tenths of a point.
        sns.pointplot(data=data, x="net", y=metric, hue="inference", errorbar="sd", dodge=0.3, linestyle="none",
                      markersize=4, ax=ax)
        sns.stripplot(data=data, x="net", y=metric, hue="inference", dodge=True, size=2.5, alpha=0.5, ax=ax,
                      legend=False)
        ax.set_xlabel("")
        ax.set_ylabel(label)
        ax.tick_params(axis="x", labelrotation=20)
    fig.suptitle(title)
    save(fig, stem)


def learning_curves(curves: pd.DataFrame, vary: str, classes: int, title: str, stem: Path) -> None:
    """Test accuracy and training loss per epoch for each rate (mean over seeds) of the runs that trained, on axes
    scaled to them; the failed runs apart on the right, on their own axes, with ln(classes) (a uniform guess)."""
    col = f"{vary}_rate"
    data = curves.assign(test_pct=100 * curves["test_acc"], rate=curves[col].map(lambda r: f"{r:g}"))
    order = [f"{r:g}" for r in sorted(curves[col].unique())]
    colours = dict(zip(order, sns.color_palette("viridis", len(order))))
    failed = data[data["status"] != OK]
    fig = plt.figure(figsize=(TEXT_WIDTH_IN, 3.0), layout="constrained")
    axes = fig.subplot_mosaic([["acc", "loss", "failed acc"], ["acc", "loss", "failed loss"]] if len(failed) else
                              [["acc", "loss"]], width_ratios=[1, 1, 0.55] if len(failed) else None)
    for shown, prefix, style in ((data[data["status"] == OK], "", "-"), (failed, "failed ", "--")):
        for metric, name in (("test_pct", "acc"), ("train_loss", "loss")):
            for rate, own in shown.groupby("rate"):  # the mean over seeds at each epoch
                mean = own.groupby("epoch")[metric].mean()
                axes[prefix + name].plot(mean.index, mean.to_numpy(), color=colours[rate], ls=style, lw=1.2,
                                         label=rate + (" (failed)" if prefix else ""))
    for name, label in (("acc", "test accuracy (%)"), ("loss", "training loss")):
        axes[name].set(xlabel="epoch", ylabel=label + ", runs that trained")
    axes["loss"].set_yscale("log")
    if len(failed):
        axes["failed acc"].set_title("failed runs", color=FAILED_COLOUR)
        axes["failed acc"].set(xlabel="", ylabel="test acc. (%)")
        axes["failed loss"].axhline(np.log(classes), color="0.4", ls=":", label=f"ln {classes}, a uniform guess")
        axes["failed loss"].set(xlabel="epoch", ylabel="training loss", ylim=(0, 1.2 * np.log(classes)))
    _legend_below(fig, *axes.values(), ncol=6, title=f"{SLOT_TITLES[vary]} drop rate")
    fig.suptitle(title)
    save(fig, stem)


def budget_sweep(runs: pd.DataFrame, vary: str, budgets: list[Mapping[str, Any]], title: str, stem: Path) -> None:
    """Left: test accuracy against the rate at each epoch budget (mean over the seeds that trained; failed runs
    counted at their rate). Right: each budget's best rate and best set (claim 1a's statistic, `budgets`)."""
    col = f"{vary}_rate"
    ok = runs[runs["status"] == OK]
    data = ok.assign(test_pct=100 * ok["test_acc"], budget=ok["epochs"].map(lambda e: f"{int(e)}"))
    order = [f"{int(e)}" for e in sorted(runs["epochs"].unique())]
    fig, axes = panels(2, 2.8)
    if len(data):
        sns.lineplot(data=data, x=col, y="test_pct", hue="budget", hue_order=order, errorbar=None, marker="o",
                     markersize=4, palette="crest", ax=axes[0])
        axes[0].legend(title="epochs")
    _rate_axis(axes[0], runs, col, SLOT_TITLES[vary])
    axes[0].set_ylabel("test accuracy (%)")
    epochs = [r["epochs"] for r in budgets]
    for row in budgets:
        axes[1].vlines(row["epochs"], min(row["set"]), max(row["set"]), color="tab:blue", lw=6, alpha=0.3)
        axes[1].scatter([row["epochs"]] * len(row["set"]), row["set"], color="tab:blue", s=10)
    axes[1].plot(epochs, [r["best"] for r in budgets], "o-", color="tab:red", label="best rate")
    axes[1].set_xscale("log")
    axes[1].set_xticks(epochs, [str(e) for e in epochs])
    axes[1].xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    axes[1].set(xlabel="training budget (epochs)", ylabel=f"{SLOT_TITLES[vary]} drop rate",
                ylim=(-0.05, max(0.95, float(runs[col].max()) + 0.05)))
    axes[1].legend(loc="best", title="bars: best set")
    fig.suptitle(title)
    save(fig, stem)


def protocols_figure(every: pd.DataFrame, chosen: pd.DataFrame, fixed: pd.DataFrame, tuned: pd.DataFrame,
                     vary: str, title: str, stem: Path) -> None:
    """Left: mean validation accuracy against the learning rate per rate, cells whose runs all trained (cells with
    failed runs crossed at the bottom edge), the choice ringed. Middle: the chosen learning rate against the rate.
    Right: test accuracy against the rate under each protocol (mean +/- sd over the seeds that trained)."""
    col = f"{vary}_rate"
    fig, axes = panels(3, 2.8)
    name = lambda r: f"{SLOT_TITLES[vary]} rate {r:g}"  # noqa: E731
    curves = chosen.assign(val_pct=100 * chosen["val_mean"], rate=chosen[col].map(name))
    order = [name(r) for r in sorted(chosen[col].unique())]
    colours = dict(zip(order, sns.color_palette("viridis", len(order))))
    if len(curves):
        clean, hit = curves[curves["failed"] == 0], curves[curves["failed"] > 0]
        sns.lineplot(data=clean, x="lr", y="val_pct", hue="rate", hue_order=order, palette=colours, marker="o",
                     markersize=4, errorbar=None, ax=axes[0])
        axes[0].scatter(hit["lr"], np.zeros(len(hit)), marker="x", color=[colours[r] for r in hit["rate"]],
                        transform=axes[0].get_xaxis_transform(), clip_on=False, label="with failed runs")
        axes[0].scatter(clean[clean["chosen"]]["lr"], clean[clean["chosen"]]["val_pct"], s=60, facecolors="none",
                        edgecolors="tab:red", zorder=3)
        axes[1].plot(curves[curves["chosen"]][col], curves[curves["chosen"]]["lr"], "o-", color="tab:red")
    grid_lrs = sorted(chosen["lr"].unique())
    for ax, axis in ((axes[0], "x"), (axes[1], "y")):  # the learning-rate grid itself as the ticks
        getattr(ax, f"set_{axis}scale")("log")
        getattr(ax, f"set_{axis}ticks")(grid_lrs, [f"{lr:g}" for lr in grid_lrs])
        getattr(ax, f"{axis}axis").set_minor_locator(matplotlib.ticker.NullLocator())
    axes[0].set(xlabel="learning rate", ylabel="validation accuracy (%)")
    axes[1].set_ylabel("chosen learning rate")
    both = pd.concat([fixed.assign(protocol="fixed protocol"), tuned.assign(protocol="tuned protocol")])
    if len(ok := both[both["status"] == OK].eval("test_pct = 100 * test_acc")):
        sns.lineplot(data=ok, x=col, y="test_pct", hue="protocol", hue_order=["fixed protocol", "tuned protocol"],
                     errorbar="sd", marker="o", markersize=4, ax=axes[2])
    for ax in axes[1:]:
        _rate_axis(ax, both, col, SLOT_TITLES[vary])
    axes[2].set_ylabel("test accuracy (%)")
    _legend_below(fig, *axes, ncol=5)
    fig.suptitle(title)
    save(fig, stem)
