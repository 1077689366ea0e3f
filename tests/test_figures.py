"""The paper's figures, drawn from the synthetic grid of test_paper_numbers (a collapsed hidden rate 0.9, a rate
where the Gaussian gate is worse): legible in print, failed runs apart, the claims' thresholds and margins drawn,
the Monte-Carlo curves per gate, and no picture twice."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib.axis
import matplotlib.pyplot as plt
import matplotlib.text
import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from dropout_lab.analysis import aggregate, figures, plots, theory, theory_plots
from dropout_lab.planning import grid
from dropout_lab.settings.atomic import write_json
from tests.test_paper_numbers import metrics, paper_config

ROOT = Path(__file__).resolve().parents[1]
PRINT_MIN_PT = 7


def paper_text_width_in() -> float:
    """\\linewidth of paper/paper.tex, from its paper size and geometry margin (the only layout it sets)."""
    tex = (ROOT / "paper" / "paper.tex").read_text()
    paper_cm = {"a4paper": 21.0, "letterpaper": 21.59}[re.search(r"\\documentclass\[[^]]*?(\w+paper)", tex)[1]]
    margin_cm = float(re.search(r"\\usepackage\[margin=([\d.]+)cm\]\{geometry\}", tex)[1])
    return (paper_cm - 2 * margin_cm) / 2.54


@pytest.fixture(scope="module")
def drawn(tmp_path_factory) -> dict[str, dict]:
    """Every figure of the synthetic grid and both theory figures: stem -> the open figure and its printed scale
    (\\linewidth over the width of the PDF it was saved as)."""
    work = tmp_path_factory.mktemp("figures")
    config = paper_config()
    runs = grid.expand_runs(config)
    rng = np.random.default_rng(0)
    for run in runs:
        write_json(work / run.folder / "metrics.json", metrics(run, rng))
    table, curves, mc = aggregate.collect(aggregate.load(grid.run_table(runs), root=work), config["failure"])
    captured: dict[str, plt.Figure] = {}
    real_save = plots.save

    def keep(fig, stem):
        captured[Path(stem).name] = fig
        real_save(fig, stem)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plots, "save", keep)
        patch.setattr(theory_plots, "save", keep)
        for stem in grid.figure_stems(config):
            figures.draw(stem, table, curves, config, work, mc)
        checks = theory.run_checks({"gradient": {**config["theory"]["gradient"], "samples": [10, 100, 1000]},
                                    "regression": {**config["theory"]["regression"], "epochs": 20}})
        theory_plots.theory_gradient(checks["gradient"], work / "gradient")
        theory_plots.theory_regression(checks["regression"], work / "regression")
    out = {}
    for stem, fig in captured.items():
        width_pt = float(re.search(rb"/MediaBox \[ *0 0 ([\d.]+)", (work / f"{stem}.pdf").read_bytes())[1])
        out[stem] = {"fig": fig, "scale": paper_text_width_in() * 72 / width_pt, "config": config}
    return out


def _texts(fig: plt.Figure) -> list[matplotlib.text.Text]:
    """The texts a reader sees: visible, not empty, on a visible axes."""
    return [t for t in fig.findobj(matplotlib.text.Text)
            if t.get_visible() and t.get_text().strip() and (t.axes is None or t.axes.get_visible())]


def _labels(fig: plt.Figure) -> list[str]:
    return [t.get_text() for t in _texts(fig)]


def test_every_figure_of_the_paper_is_drawn(drawn):
    stems = set(grid.figure_stems(paper_config()))
    assert stems | {"gradient", "regression"} == set(drawn)


def test_every_text_prints_at_7_pt_or_more_and_at_one_size_across_figures(drawn):
    small, sizes = [], set()
    for stem, entry in drawn.items():
        assert entry["scale"] == pytest.approx(1, abs=0.01), f"{stem} is not drawn at the text width"
        for text in _texts(entry["fig"]):
            printed = text.get_fontsize() * entry["scale"]
            sizes.add(round(printed, 1))
            if printed < PRINT_MIN_PT:
                small.append(f"{stem}: {text.get_text()!r} at {printed:.1f} pt")
    assert small == []
    assert max(sizes) <= plots.FONT_PT + 1  # titles at most one point over the labels, no figure blown up


def test_no_title_label_legend_or_note_is_cut_off_at_the_figure_edge(drawn):
    cut = []
    for stem, entry in drawn.items():
        fig = entry["fig"]
        canvas = FigureCanvasAgg(fig)  # a closed figure keeps a canvas that cannot render
        canvas.draw()
        box = fig.bbox
        ticks = {id(label) for axis in fig.findobj(matplotlib.axis.Axis)
                 for tick in axis.get_major_ticks() + axis.get_minor_ticks() for label in (tick.label1, tick.label2)}
        for text in _texts(fig):
            if id(text) in ticks:
                continue  # matplotlib keeps undrawn tick labels outside the view limits
            ext = text.get_window_extent(canvas.get_renderer())
            if ext.x0 < box.x0 - 1 or ext.x1 > box.x1 + 1 or ext.y0 < box.y0 - 1 or ext.y1 > box.y1 + 1:
                cut.append(f"{stem}: {text.get_text()!r}")
    assert cut == [], "\n".join(cut[:40])


def _data_lines(ax: plt.Axes) -> frozenset:
    """The data an axes draws as lines (more than two points: not a reference line), rounded."""
    return frozenset(tuple(np.round(np.asarray(line.get_xydata(), dtype=float), 6).ravel())
                     for line in ax.get_lines() if len(line.get_xdata()) > 2)


def test_no_panel_is_drawn_in_two_figures(drawn):
    seen: dict[frozenset, str] = {}
    twice = []
    for stem, entry in drawn.items():
        for ax in entry["fig"].axes:
            lines = _data_lines(ax)
            if lines and lines in seen and seen[lines] != stem:
                twice.append(f"{seen[lines]} and {stem}: {ax.get_ylabel()!r}")
            seen.setdefault(lines, stem)
    assert twice == []


def test_the_rate_sweep_figures_draw_the_claims_thresholds_margins_and_both_gaps(drawn):
    config = drawn["mnist_mlp_hidden_sweep"]["config"]["claims"]
    hidden = drawn["mnist_mlp_hidden_sweep"]["fig"]
    labels = _labels(hidden)
    optimum = config["optimum"]
    assert f"claimed optimum {optimum['claimed_rate']:g}" in labels
    assert f"window ±{optimum['sharp_window']:g}" in labels
    assert f"within {100 * optimum['margin']:g} points of the best mean" in labels
    assert any(label.startswith("flat band") for label in labels)
    accuracy = hidden.axes[0]
    vertical = {round(line.get_xdata()[0], 6) for line in accuracy.get_lines() if len(set(line.get_xdata())) == 1}
    rate, window = optimum["claimed_rate"], optimum["sharp_window"]
    assert {rate, round(rate - window, 6), round(rate + window, 6)} <= vertical
    band = next(p for p in accuracy.patches if p.get_label().startswith("within"))
    best = max(line.get_ydata().max() for line in accuracy.get_lines() if len(line.get_xdata()) > 2)
    assert band.get_y() + band.get_height() == pytest.approx(best)
    assert band.get_y() == pytest.approx(best - 100 * optimum["margin"])
    assert [ax.get_ylabel() for ax in hidden.axes[:3]] == [
        "test accuracy (%)", "test - train loss (nats)", "train - test accuracy (points)"]
    assert f"claimed threshold {config['input_rate']['threshold']:g}" in _labels(drawn["mnist_mlp_input_sweep"]["fig"])


def test_the_gate_parity_and_inference_figures_draw_their_margins_and_the_published_effect(drawn):
    config = drawn["mnist_mlp_gate_parity"]["config"]["claims"]
    parity = _labels(drawn["mnist_mlp_gate_parity"]["fig"])
    assert f"equivalence margin ±{100 * config['gate_parity']['margin']:g} points" in parity
    assert f"published gaussian - bernoulli, +{100 * config['gate_parity']['published_effect']:g} (Table 10)" in parity
    diff = drawn["mnist_mlp_gate_parity"]["fig"].axes[1]
    assert any(np.allclose(line.get_ydata(), 100 * config["gate_parity"]["published_effect"])
               for line in diff.get_lines())
    assert f"margin ±{100 * config['inference']['margin']:g} points" in _labels(drawn["mnist_mlp_mc_inference"]["fig"])


def test_failed_runs_are_drawn_apart_and_the_axes_fit_the_runs_that_trained(drawn):
    curves = drawn["mnist_mlp_learning_curves"]["fig"]
    trained = next(ax for ax in curves.axes if ax.get_ylabel() == "test accuracy (%), runs that trained")
    failed = next(ax for ax in curves.axes if ax.get_title() == "failed runs")
    assert trained.get_ylim()[0] > 90  # the synthetic collapsed runs sit at 55 %
    assert min(line.get_ydata().min() for line in failed.get_lines() if len(line.get_xdata()) > 2) < 60
    for stem in ("mnist_mlp_hidden_sweep", "mnist_mlp_weight_norms", "mnist_mlp_gate_parity"):
        assert any(re.fullmatch(r"\d+/\d+ failed", label) for label in _labels(drawn[stem]["fig"])), stem
    assert drawn["mnist_mlp_hidden_sweep"]["fig"].axes[0].get_ylim()[0] > 90


def test_the_monte_carlo_curves_are_drawn_per_gate_never_pooled(tmp_path, monkeypatch):
    """Bernoulli matches its deterministic net at every k, Gaussian is 1 point better: each gate's panel shows its
    own difference, and no line shows their mean (0.5)."""
    rows = [{"run": f"{gate}{seed}", "gate": gate, "seed": seed, "status": "ok", "hidden_rate": 0.5, "k": k,
             "test_acc": 0.98, "mc_test_acc": 0.98 + (0.01 if gate == "gaussian" else 0.0)}
            for gate in ("bernoulli", "gaussian") for seed in range(3) for k in (1, 10, 50)]
    captured = {}
    monkeypatch.setattr(plots, "save", lambda fig, stem: captured.setdefault("fig", fig))
    plots.mc_inference(pd.DataFrame(rows), 50, 0.001, "MC", tmp_path / "mc", ["bernoulli", "gaussian"])
    panels = {ax.get_title().split("\n")[0]: ax for ax in captured["fig"].axes if ax.get_title()}
    assert set(panels) == {"bernoulli", "gaussian"}
    for gate, expected in (("bernoulli", 0.0), ("gaussian", 1.0)):
        curve = [line for line in panels[gate].get_lines() if len(line.get_xdata()) == 3]
        assert len(curve) == 1 and np.allclose(curve[0].get_ydata(), expected), gate
