"""The figures of the theory checks (results/theory/theory.json), in the look of analysis.plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from dropout_lab.analysis.plots import panels, retain_axis, save


def theory_gradient(result: Mapping[str, Any], stem: Path) -> None:
    """Relative error of the averaged sampled gradient against n, with the 1/sqrt(n) line."""
    fig, ax = panels(1, 2.6)
    for name, check in result["checks"].items():
        ax.plot(check["samples"], check["relative_error"], marker="o", markersize=4, label=name.replace("_", ", "))
    n = np.array(next(iter(result["checks"].values()))["samples"], dtype=float)
    first = max(c["relative_error"][0] for c in result["checks"].values())
    ax.plot(n, first * np.sqrt(n[0] / n), "k--", lw=1, label="1/sqrt(n)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("sampled gates averaged, n")
    ax.set_ylabel("relative error vs. gradient of E_R")
    ax.legend()
    save(fig, stem)


def theory_regression(result: Mapping[str, Any], stem: Path) -> None:
    """Penalty coefficients in both parametrisations, and the effective weights' shrinkage, against the rate."""
    rows = pd.DataFrame(result["rows"])
    fig, axes = panels(2, 2.7)
    axes[0].plot(rows["rate"], rows["raw_penalty"], marker="o", markersize=4, label="on raw weights w: p(1-p)")
    axes[0].plot(rows["rate"], rows["effective_penalty"], marker="s", markersize=4,
                 label="on effective weights pw: (1-p)/p")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("penalty coefficient")
    axes[0].legend()
    axes[1].plot(rows["rate"], rows["shrinkage_closed_form"], marker="o", markersize=4, label="closed form")
    axes[1].plot(rows["rate"], rows["shrinkage_sgd"], marker="x", linestyle="none", label="SGD with real masks")
    axes[1].set_ylabel("||effective w|| / ||least squares w||")
    axes[1].legend()
    for ax in axes:
        ax.set_xlabel("drop rate (1 - p)")
        retain_axis(ax)
    save(fig, stem)
