"""The claims' own paper sections (results/claims/claims/<section>.tex): each claim's table, figure and verdict.

Each section function takes the claims (claims.json's `claims`), the configuration and the templates folder, and
gives the section's LaTeX, or None when its claims did not run; SECTIONS maps the registry's section names
(settings.claims) to them. The rows here carry formatted cells; the templates say the words.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

from dropout_lab.paper import tables
from dropout_lab.paper.render import TEMPLATES, num, pct, render
from dropout_lab.settings.claims import registered
from dropout_lab.settings.vocabulary import gate_title, rate_ranges


def finite(value: Any) -> bool:
    """A number that is there (claims.json writes NaN as null)."""
    return isinstance(value, (int, float)) and math.isfinite(value)


# Each takes the claims (claims.json's `claims`), the configuration and the templates folder, and gives the
# section's LaTeX, or None when its claims did not run.


def optimum_rows(result: Mapping[str, Any]) -> list[dict[str, str]]:
    """Claim 1a's table: per rate its accuracy, its difference from the best with the interval, whether it lies
    within the margin of the best or is significantly worse, and P(best)."""
    rows = []
    for row in result["table"]:
        key = f"{row['rate']:g}"
        against = result.get("comparisons", {}).get(key)
        best = math.isclose(row["rate"], result["best"])
        rows.append({"rate": key, "retain": f"{1 - row['rate']:g}", "mean": pct(row["mean"]),
                     "sd": pct(row["sd"]) if row["n"] > 1 else "--", "n": str(row["n"]), "failed": str(row["failed"]),
                     "diff": "best" if best else (pct(against["diff"]) if against else "--"),
                     "ci": f"[{pct(against['ci'][0])}, {pct(against['ci'][1])}]" if against and not best else "",
                     "within": "yes" if against and against.get("equivalent") else "",
                     "worse": "yes" if against and against.get("worse") else "",
                     "p_best": num(result["argmax_frequency"].get(key, math.nan))})
    return rows


def gap_rows(result: Mapping[str, Any]) -> list[list[str]]:
    """Claim 1b's gaps per rate: the loss gap, the accuracy gap and the training accuracy."""
    return [[f"{row['rate']:g}", num(row["gap_loss"], 3), pct(row["gap_acc"]), pct(row["train_acc"])]
            for row in result.get("gaps", [])]


def optimum_section(claims: Mapping[str, Any], config: Mapping[str, Any], templates: Path = TEMPLATES) -> str | None:
    """Claims 1a and 1b: the hidden-rate sweep."""
    if "optimum" not in claims:
        return None
    settings, result = config["claims"], claims["optimum"]
    return render(templates, "optimum.tex.j2", result=result, regularisation=claims["regularisation"],
                  experiment=settings["optimum"]["experiment"], alpha=settings["alpha"],
                  band=settings["optimum"]["published_band"], rows=optimum_rows(result),
                  gaps=gap_rows(claims["regularisation"]), ci=tables.ci_level(settings["alpha"]),
                  margin=num(100 * result["margin"]), failed=tables.failed_runs(result["table"]))


def width_section(claims: Mapping[str, Any], config: Mapping[str, Any], templates: Path = TEMPLATES) -> str | None:
    """Claim 1d: the hidden sweep with p * n fixed."""
    if "width_optimum" not in claims:
        return None
    result = claims["width_optimum"]
    widths = result.get("widths", {})
    return render(templates, "width_optimum.tex.j2", result=result,
                  experiment=config["claims"]["width_optimum"]["experiment"],
                  rows=[{**row, "width": str(widths.get(row["rate"], ""))} for row in optimum_rows(result)],
                  margin=num(100 * result["margin"]), ci=tables.ci_level(config["claims"]["alpha"]),
                  failed=tables.failed_runs(result["table"]))


def input_section(claims: Mapping[str, Any], config: Mapping[str, Any], templates: Path = TEMPLATES) -> str | None:
    """Claim 2: the input-rate sweep."""
    if "table" not in claims.get("input_rate", {}):
        return None
    result = claims["input_rate"]
    return render(templates, "input_rate.tex.j2", result=result,
                  experiment=config["claims"]["input_rate"]["experiment"], rows=tables.input_rows(result),
                  failed=tables.failed_runs(result["table"]))


def budget_section(claims: Mapping[str, Any], config: Mapping[str, Any], templates: Path = TEMPLATES) -> str | None:
    """Claim 1e: does the optimum move with training length? The best rate and best set at each epoch budget."""
    if "budget" not in claims:
        return None
    result = claims["budget"]
    return render(templates, "budget.tex.j2", result=result, experiment=config["claims"]["budget"]["experiment"],
                  alpha=config["claims"]["alpha"], rows=tables.budget_rows(result) if result["estimate"] is not None
                  else [])


def seen_rows(result: Mapping[str, Any]) -> list[dict[str, str]]:
    """A per-rate equivalence table's rows with the narrowest margin each rate's pairs could show (analysis.power)."""
    return [{**row, "seen": num(100 * raw["smallest_margin"]) if finite(raw.get("smallest_margin")) else "--"}
            for row, raw in zip(tables.equivalence_rows(result), result["table"])]


def parity_section(claims: Mapping[str, Any], config: Mapping[str, Any], templates: Path = TEMPLATES) -> str | None:
    """Claim 3: the gate-parity figure, then each gate against the reference: its table, per-rate headline and
    verdict."""
    results = [claims[c.key] for c in registered(config) if c.statistic == "gate_parity" and c.key in claims]
    if not results:
        return None
    settings = config["claims"]
    gates = [{"title": gate_title(r["gates"][1]), "reference": gate_title(r["gates"][0]), "result": r,
              "rows": seen_rows(r), "margin": num(100 * r["margin"]),
              "excluded": rate_ranges(r.get("excludes_published_at", []), [row["rate"] for row in r["table"]])}
             for r in results]
    return render(templates, "gate_parity.tex.j2", experiment=settings["gate_parity"]["experiment"],
                  reference=results[0]["gates"][0], gates=[results[0]["gates"][0]] + [r["gates"][1] for r in results],
                  compared=gates, ci=tables.ci_level(settings["alpha"]))


# Each claim's paper section (dropout_lab.settings.claims names it), results/claims/claims/<section>.tex,
# \input by paper/paper.tex: (claims, config, templates folder) -> its LaTeX, or None when its claims did not run.
SECTIONS = {"optimum": optimum_section, "width_optimum": width_section, "input_rate": input_section,
            "gate_parity": parity_section, "budget": budget_section}
