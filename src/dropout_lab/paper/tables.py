"""The rows of the paper's tables: each cell a formatted number or escaped text; the templates lay them out.

Where a cell chooses among phrases ("not run", "failed, left out"), the row carries the facts and the
template says the words.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from dropout_lab.paper.render import cell_text, count, math_tex, num, pct, pvalue, rate, tex
from dropout_lab.settings.vocabulary import rate_ranges

Row = Mapping[str, Any]


def sd(row: Row) -> str:
    return pct(row["sd"]) if row.get("n", 0) > 1 else "--"


def failed_runs(table: list[Row]) -> int:
    return sum(row.get("failed", 0) for row in table)


def sweep_rows(result: Row) -> list[dict[str, Any]]:
    """A hidden-rate sweep (claims 1a and 1d): accuracy per rate, its width, best set and P(best)."""
    freq, widths = result["argmax_frequency"], result.get("widths", {})
    rows = []
    for row in result["table"]:
        key = rate(row["rate"])
        rows.append({"rate": key, "retain": rate(1 - row["rate"]), "width": str(widths.get(key, "")),
                     "mean": pct(row["mean"]), "sd": sd(row), "n": str(row["n"]), "failed": str(row["failed"]),
                     "best": row["rate"] in result["set"], "p_best": num(freq.get(key, math.nan))})
    return rows


def input_rows(result: Row) -> list[list[str]]:
    adjusted = result.get("p_worse_adjusted", {})
    return [[rate(row["rate"]), pct(row["mean"]), sd(row), str(row["n"]), str(row["failed"]),
             pvalue(adjusted.get(rate(row["rate"]), math.nan))] for row in result["table"]]


def budget_rows(result: Row) -> list[list[str]]:
    """Per epoch budget: the best rate, its accuracy, the best set and the failed runs."""
    return [[str(row["epochs"]), rate(row["best"]), pct(row["best_mean"]),
             rate_ranges(row["set"], [r["rate"] for r in row["table"]]), str(failed_runs(row["table"]))]
            for row in result["budgets"]]


def equivalence_rows(result: Row) -> list[dict[str, str]]:
    """A per-rate equivalence table (gate parity, Monte-Carlo inference): difference, CI, runs, TOST p, verdict."""
    rows = []
    for row in result["table"]:
        lo, hi = row["ci"]
        tested = row["n"] > 1
        rows.append({"gate": tex(row.get("gate", "")), "rate": rate(row["rate"]), "diff": pct(row["mean_diff"]),
                     "ci": f"[{pct(lo)}, {pct(hi)}]" if tested else "--", "n": str(row["n"]),
                     "failed": str(row.get("failed", 0)), "p": pvalue(row["p_tost"]) if tested else "--",
                     "verdict": tex(row["verdict"])})
    return rows


def ci_level(alpha: float) -> str:
    """The confidence level of a TOST at `alpha`, in %: 90 at 0.05."""
    return rate(100 * (1 - 2 * alpha))


def placement_rows(rows: list[Row]) -> list[list[str]]:
    return [[tex(r["preset"]), tex(cell_text(r["cell"])), num(r["mean"]), num(r["sd"]), str(r["n"]), str(r["failed"])]
            for r in rows]


def gradient_rows(gradient: Row) -> list[list[str]]:
    return [[tex(name.replace("_", ", ")), count(check["samples"][-1]),
             num(check["relative_error"][-1], 4), num(check["bound"][-1], 4), num(check["slope"], 2)]
            for name, check in gradient["checks"].items()]


def regression_rows(regression: Row) -> list[list[str]]:
    return [[rate(r["rate"]), num(r["raw_penalty"], 3), num(r["effective_penalty"], 3),
             num(r["shrinkage_closed_form"], 3), num(r["shrinkage_sgd"], 3), num(r["sgd_vs_closed_form"], 4)]
            for r in regression["rows"]]


def convention_rows(result: Row) -> list[list[str]]:
    return [[tex(r["gate"]), pct(r["inverted_test_acc"]), pct(r["scaled_test_acc"]), pct(r["unscaled_test_acc"]),
             num(r["scaled_test_loss"], 3), num(r["unscaled_test_loss"], 3), pvalue(r["p_loss_worse_unscaled"])]
            for r in result["table"]]


def anchor_rows(rows: list[Row]) -> list[dict[str, Any]]:
    """The published numbers beside ours; a row that did not run keeps only the published side."""
    out = []
    for row in rows:
        cells = {"cite": row["cite"], "where": tex(row["where"]), "setting": math_tex(row["setting"]),
                 "theirs": num(row["error_pct"]), "ran": row["ran"]}
        if row["ran"]:
            cells.update(mean=num(row["mean"]), sd=num(row["sd"]) if row["n"] > 1 else None, n=row["n"],
                         failed=row["failed"], gate=tex(row["gate"]), convention=tex(row["convention"]),
                         cell=tex(cell_text(row["cell"])), epochs=row["epochs"], images=row["train_samples"])
        out.append(cells)
    return out


def digest_rows(prov: Row) -> list[list[str]]:
    """Each data file's SHA-256, breakable in the middle."""
    return [[tex(f"{dataset}: {name}"), f"\\texttt{{{digest[:32]}\\allowbreak{{}}{digest[32:]}}}"]
            for dataset, digests in sorted(prov["data_sha256"].items()) for name, digest in sorted(digests.items())]


def failed_rows(failed: Row, inverted: str) -> list[dict[str, str]]:
    """Per cell with failed runs: where, how many, how and why (its first failed run)."""
    return [{"experiment": tex(c["experiment"]), "gate": tex(c["gate"]),
             "convention": "" if c["convention"] == inverted else tex(c["convention"]),
             "cell": tex(cell_text(c["cell"])),
             "failed": f"{c['failed']}/{c['of']}", "statuses": tex(", ".join(c["statuses"])),
             "epochs": tex(", ".join(str(e) for e in c["epochs"]) or "--"), "reason": math_tex(c["reason"])}
            for c in failed["cells"]]


def tuned_choice_rows(chosen: list[Row], lr_grid: list[float]) -> list[dict[str, Any]]:
    """Per tuned cell, its mean validation accuracy at each learning rate of the grid (None where none ran)."""
    cells: dict[str, dict[float, Row]] = {}
    for row in chosen:
        cells.setdefault(row["design_cell"], {})[row["lr"]] = row
    return [{"cell": tex(cell_text(cell)),
             "marks": [None if by_lr.get(lr) is None else
                       {"val": pct(by_lr[lr]["val_mean"]), "failed": by_lr[lr]["failed"], "chosen": by_lr[lr]["chosen"]}
                       for lr in lr_grid]}
            for cell, by_lr in cells.items()]
