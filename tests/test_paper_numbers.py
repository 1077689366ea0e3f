"""The paper from a synthetic grid whose answers are known: a collapsed cell, a scaled-convention cell, a rate
where the Gaussian gate is worse. Every run goes through the real aggregate, claims and report code."""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from dropout_lab.analysis import aggregate, claims, facts, theory
from dropout_lab.planning import grid
from dropout_lab.paper import report
from dropout_lab.settings.atomic import write_json

ROOT = Path(__file__).resolve().parents[1]
SEEDS = 3


def accuracy(run: grid.Run) -> float:
    """The known answer of each cell: a flat optimum around hidden 0.5, input 0.1-0.2 best, Gaussian 1 point worse
    at hidden 0.8, and the article's scaled convention far worse (so averaging it in would show)."""
    rates = dict(run.rates)
    hidden, inp = rates.get("hidden", 0.0), rates.get("input", 0.0)
    acc = 0.985 - 0.05 * (hidden - 0.5) ** 2 - 0.02 * max(inp - 0.2, 0.0)
    if run.gate == "gaussian" and math.isclose(hidden, 0.8):
        acc -= 0.01
    if run.convention == "scaled":
        acc = 0.90
    return acc


def collapses(run: grid.Run) -> bool:
    return math.isclose(dict(run.rates).get("hidden", 0.0), 0.9)


def metrics(run: grid.Run, rng: np.random.Generator) -> dict:
    acc = accuracy(run) + rng.normal(0, 0.0002)  # small enough for 3 seeds to show 0.1-point equivalence
    if collapses(run):  # the loss falls, then climbs back to ln 10: the net unlearnt
        losses, acc, train_acc = [1.6, 2.1, 2.2, 1.9], 0.55, 0.56
    else:
        losses, train_acc = [0.5, 0.3, 0.2, 0.1], min(acc + 0.01, 1.0)
    rates = dict(run.rates)
    history = [{"epoch": e + 1, "train_loss": loss, "train_acc": train_acc, "test_loss": 0.1, "test_acc": acc,
                "train_seconds": 1.5} for e, loss in enumerate(losses)]
    return {
        "config": {"dataset": {"name": "mnist"},
                   "model": {"name": "mlp", "depth": 2, "width": run.width or 64, "channels": None, "fc_depth": None,
                             "fc_width": None, "max_norm": None},
                   "gate": {"name": run.gate, "convention": run.convention},
                   "train": {"epochs": run.epochs or 1, "lr": run.lr or 0.1, "momentum": 0.9, "batch_size": 128, "weight_decay": 0.0,
                             "schedule": "cosine"},
                   "scale": {"name": "smoke"}},
        "seed": run.seed, "status": "ok", "diverged_epoch": None,
        "rates": {"input": rates.get("input", 0.0), "hidden": [rates.get("hidden", 0.0)] * 2, "conv": [], "fc": []},
        "train_samples": 5900, "test_samples": 1000, "validation_samples": 1000, "history": history,
        "final": {"train_acc": train_acc, "train_loss": losses[-1], "test_acc": acc, "test_loss": 0.1,
                  "val_acc": acc, "val_loss": 0.1,
                  "gap_acc": train_acc - acc, "gap_loss": 0.0},
        "mc": {"samples": 50, "test_acc": acc, "curve": {"1": acc - 0.01, "50": acc + rng.normal(0, 0.0003)}},
        "unscaled_inference": {"test_acc": acc - 0.001, "test_loss": 0.3} if run.convention == "scaled" else None,
        "weight_norms": {"hidden.0": 10 + 10 * rates.get("hidden", 0.0)},
        "engine": {"precision": "fp32", "pack_size": 1}, "pack_fingerprint": None, "wall_seconds": 7.0,
        "device": {"type": "cpu", "name": "test cpu"}, "versions": {"torch": "2.x", "python": "3.x"},
        "git": {"commit": None, "dirty": None}, "data_sha256": {"train-images-idx3-ubyte": "ab" * 32},
    }


# The synthetic grid these tests judge: their own, so that a change of the shipped grid changes no expected answer.
ALL_RATES = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
PAPER_GRID = {
    "dataset": "mnist", "model": "mlp",
    "hidden_sweep": {"vary": "hidden", "rates": ALL_RATES, "fixed": {"input": 0.0}},
    "input_sweep": {"vary": "input", "rates": ALL_RATES[:8], "fixed": {"hidden": 0.5}},
    "gate_parity": {"vary": "hidden", "rates": ALL_RATES[1:], "fixed": {"input": 0.0},
                    "gates": ["bernoulli", "gaussian", "uniform", "dropconnect"]},
    "width_sweep": {"vary": "hidden", "rates": ALL_RATES, "fixed": {"input": 0.0}, "retained_share": 0.25},
    "budget_sweep": {"vary": "hidden", "rates": ALL_RATES, "fixed": {"input": 0.0},
                     "epochs": {"paper": [5, 20, 50, 200], "quick": [1, 3, 6], "smoke": [1, 2]}},
    "placement": ["none", "input", "hidden", "both"],
    "conventions": {"vary": "hidden", "rates": [0.5], "fixed": {"input": 0.0}, "gates": ["bernoulli", "gaussian"]},
    "anchor_parity": {"vary": "hidden", "rates": [0.5], "fixed": {"input": 0.2}, "gates": ["bernoulli", "gaussian"]},
}
PAPER_PROTOCOLS = {"run": ["fixed", "tuned"], "judge": "tuned",
                   "tuned": {"sweeps": ["hidden_sweep", "input_sweep"], "lrs": {"paper": [0.015, 0.05],
                                                                             "quick": [0.015, 0.05],
                                                                             "smoke": [0.03, 0.1]}}}


def paper_config() -> dict:
    """The shipped config's claims, theory and failure settings over this module's own grid, at smoke scale."""
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config.update(scale="smoke", experiments=["mnist_mlp"], seeds={**config["seeds"], "smoke": SEEDS},
                  grids={"mnist_mlp": copy.deepcopy(PAPER_GRID)}, protocols=copy.deepcopy(PAPER_PROTOCOLS))
    return config


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    """The generated LaTeX and claims.json of a synthetic MNIST grid."""
    work = tmp_path_factory.mktemp("paper")
    config = paper_config()
    config["theory"]["gradient"]["samples"] = [10, 100, 1000]
    config["theory"]["regression"]["epochs"] = 20
    runs = grid.expand_runs(config)
    rng = np.random.default_rng(0)
    for run in runs:
        write_json(work / run.folder / "metrics.json", metrics(run, rng))
    loaded = aggregate.load(grid.run_table(runs), root=work)
    table, _, mc = aggregate.collect(loaded, config["failure"])
    anchors = yaml.safe_load((ROOT / "paper" / "anchors.yaml").read_text())["anchors"]
    built = {"commit": {"commit": None, "dirty": None}, "versions": {"pandas": "x"}, "known_commits": {}}
    doc = facts.claims_document(claims.evaluate_claims(table, config, mc), theory.run_checks(config["theory"]),
                                table, aggregate.provenance(loaded), config, anchors, built)
    write_json(work / "claims.json", doc)
    doc = json.loads((work / "claims.json").read_text())
    report.write_report(doc, config, work / "generated")
    return {"doc": doc, "table": table, "tex": work / "generated", "runs": runs, "config": config}


def test_collapsed_cell_is_recorded_excluded_and_counted(paper):
    table, doc = paper["table"], paper["doc"]
    assert set(table.loc[table["hidden_rate"] == 0.9, "status"]) == {"collapsed"}
    assert set(table.loc[table["hidden_rate"] != 0.9, "status"]) == {"ok"}
    optimum = doc["claims"]["optimum"]
    row = next(r for r in optimum["table"] if r["rate"] == 0.9)
    assert (row["n"], row["failed"]) == (0, SEEDS)
    cells = doc["facts"]["failed"]["cells"]
    assert {(c["gate"], c["cell"], c["failed"], c["of"]) for c in cells} == {
        (gate, "input0_hidden0.9", SEEDS, SEEDS) for gate in ("bernoulli", "gaussian", "uniform", "dropconnect")} | {
        ("bernoulli", "input0_hidden0.9_width160", SEEDS, SEEDS),  # the width sweep's cell at that rate
        ("bernoulli", "input0_hidden0.9_lr0.03", SEEDS, SEEDS),  # the tuned protocol's other learning rate
        ("bernoulli", "input0_hidden0.9_ep2", SEEDS, SEEDS)}  # the budget sweep's other budget
    assert "climbed back" in cells[0]["reason"] and cells[0]["epochs"] == [2]
    failed_tex = (paper["tex"] / "failed.tex").read_text()
    assert "input 0, hidden 0.9" in failed_tex and f"{SEEDS}/{SEEDS}" in failed_tex


def test_the_width_sweep_holds_p_times_n_and_is_judged_by_claim_1a_statistic(paper):
    width = paper["doc"]["claims"]["width_optimum"]
    # smoke width 64, retained share 0.25: p * n = 16 at every rate
    assert all(abs((1 - float(rate)) * n - 16) <= 0.5 for rate, n in width["widths"].items())
    assert width["best"] == paper["doc"]["claims"]["optimum"]["best"]  # the known answer ignores the width
    assert "Claim 1d" in (paper["tex"] / "claims" / "width_optimum.tex").read_text()


def test_gate_parity_is_judged_per_rate(paper):
    parity = paper["doc"]["claims"]["parity_gaussian"]
    verdicts = {r["rate"]: r["verdict"] for r in parity["table"]}
    assert verdicts[0.8] == "gaussian worse" and verdicts[0.9] == "no runs"
    assert all(v == "equivalent" for r, v in verdicts.items() if r < 0.8)
    assert parity["verdict"] == claims.NOT_SUPPORTED
    assert parity["headline"].startswith("equivalent at 0.1-0.7; gaussian worse at 0.8 (-1.0")
    assert parity["headline"].endswith("every run failed at 0.9")
    assert parity["headline"] in (paper["tex"] / "verdicts.tex").read_text()


def test_anchors_compare_like_with_like(paper):
    # Table 10's rows: each gate's inverted runs at Table 10's own setting (input 0.2, hidden 0.5), never the
    # gate-parity sweep's runs without input dropout, and never the scaled-convention ones.
    table = paper["table"]
    for gate in ("bernoulli", "gaussian"):
        own = table[(table["gate"] == gate) & (table["convention"] == "inverted") & (table["cell"] == "input0.2_hidden0.5")]
        assert len(own) == SEEDS
        row = next(r for r in paper["doc"]["facts"]["anchors"] if r["where"] == "Table 10" and r.get("gate") == gate)
        assert row["n"] == SEEDS and row["convention"] == "inverted" and row["error_sd"] == 0.04
        assert row["mean"] == pytest.approx(own["test_error_pct"].mean())
    anchors = (paper["tex"] / "anchors.tex").read_text()
    assert "1.08 $\\pm$ 0.04" in anchors and "far shorter training" in anchors
    # and claim 3 is judged there too, paired by seed, beside the sweep without input dropout
    at_table_10 = paper["doc"]["claims"]["anchor_parity"]
    assert [r["rate"] for r in at_table_10["table"]] == [0.5] and at_table_10["table"][0]["n"] == SEEDS
    pooled = table[(table["gate"] == "gaussian") & (table["cell"].isin(["input0.2_hidden0.5", "input0_hidden0.5"]))]
    assert not math.isclose(pooled["test_error_pct"].mean(), row["mean"])  # the sweep's runs are not averaged in


# Reference labels of the prose (Fig.~9, Table~10, Section 6) and LaTeX layout are not results.
_NOT_RESULTS = [r"\\begin\{tabularx?\}(\{\\linewidth\})?\{[^}]*\}", r"Y\{[\d.]+\}", r"P\{[\d.]+cm\}", r"p\{[\d.]+cm\}", r"width=\\linewidth",
                r"(Fig|Figure|Table|Tables|Section|Sec)\.?~?\s?\d+", r"\\label\{[^}]*\}", r"\\ref\{[^}]*\}",
                r"figures/[\w/]+\.pdf", r"slope \$-0\.5\$", r"1/\\sqrt\{n\}", r"\\citet\[[^\]]*\]",
                r"srivastava2014|baldi2013|baldi2014", r"\\\w+"]


def _printed_numbers(text: str) -> list[str]:
    for pattern in _NOT_RESULTS:
        text = re.sub(pattern, " ", text)
    return re.findall(r"(?<![\w.])[-+]?\d+(?:\.\d+)?", text)


def _values(node) -> set[float]:
    """Every number in the document, with the forms the paper prints it in: as is, in % or points, as a retain
    probability (1 - rate), in minutes."""
    found: set[float] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            found |= _values(key) | _values(value)
    elif isinstance(node, list):
        for value in node:
            found |= _values(value)
    elif isinstance(node, bool) or node is None:
        pass
    elif isinstance(node, (int, float)):
        found |= {float(node), 100.0 * node, 1.0 - node, node / 60.0}
    elif isinstance(node, str):
        for match in re.findall(r"[-+]?\d+(?:\.\d+)?", node):
            found |= _values(float(match))
    return found


def test_every_number_the_paper_prints_is_in_claims_json(paper):
    values = _values(paper["doc"])
    missing = []
    for path in sorted(paper["tex"].rglob("*.tex")):
        for printed in _printed_numbers(path.read_text()):
            digits = len(printed.split(".")[1]) if "." in printed else 0
            target = float(printed)
            if not any(abs(round(v, digits) - target) < 1e-9 or abs(v - target) < 0.5 * 10 ** -digits + 1e-12
                       for v in values):
                missing.append(f"{path.name}: {printed}")
    assert not missing, missing


# Numbers a template may type: figure and table numbers of the article, claim labels, the figures' 90% interval
# (seaborn's, plots.py), the loss of a uniform guess over 10 classes, names (CIFAR-10, SHA-256) and $1-p$.
_TEMPLATE_WORDS = [r"[Cc]laim \d[a-e]?\b", r"90\\% CI", r"\\ln 10", r"CIFAR-10", r"SHA-256", r"\(?1-p\)?"]


def test_the_templates_type_no_number_of_the_results():
    """Every number of the generated text comes from the values the report passes (claims.json, the config):
    the templates' own text (outside their \\VAR and \\BLOCK tags) holds none."""
    from dropout_lab.paper.render import TEMPLATES, environment

    env = environment(TEMPLATES)
    typed = []
    for path in sorted(TEMPLATES.glob("*.j2")):
        text = " ".join(value for _, kind, value in env.lex(path.read_text(), path.name) if kind == "data")
        for pattern in _TEMPLATE_WORDS:
            text = re.sub(pattern, " ", text)
        typed += [f"{path.name}: {number}" for number in _printed_numbers(text)]
    assert not typed, typed


def _edited_templates(tmp_path: Path, name: str, old: str, new: str) -> Path:
    import shutil

    from dropout_lab.paper.render import TEMPLATES

    folder = tmp_path / "templates"
    shutil.copytree(TEMPLATES, folder)
    text = (folder / name).read_text()
    assert old in text
    (folder / name).write_text(text.replace(old, new, 1))
    return folder


def test_a_template_edit_changes_only_its_file(paper, tmp_path):
    templates = _edited_templates(tmp_path, "discussion.tex.j2", r"\subsection{Where each claim holds}",
                                  r"\subsection{Where the claims hold}")
    report.write_report(paper["doc"], paper["config"], tmp_path / "out", templates)
    for path in sorted(paper["tex"].rglob("*.tex")):
        edited = (tmp_path / "out" / path.relative_to(paper["tex"])).read_text()
        if path.name == "discussion.tex":
            assert "Where the claims hold" in edited and "Where the claims hold" not in path.read_text()
            assert edited.replace("Where the claims hold", "Where each claim holds") == path.read_text()
        else:
            assert edited == path.read_text(), path.name


def test_a_template_naming_a_missing_value_fails_in_one_line_naming_both(paper, tmp_path):
    from dropout_lab.paper.render import TemplateError

    templates = _edited_templates(tmp_path, "optimum.tex.j2", r"\VAR{verdict(result)}", r"\VAR{result.best_rat}")
    with pytest.raises(TemplateError) as err:
        report.write_report(paper["doc"], paper["config"], tmp_path / "out", templates)
    message = str(err.value)
    assert "\n" not in message and "optimum.tex.j2 line " in message and "best_rat" in message, message
    assert not (tmp_path / "out").exists()  # every file renders before any is written


def test_a_rate_sweep_with_its_claim_is_one_registry_entry(tmp_path, monkeypatch):
    """README, "Adding a rate sweep with its claim": a registry entry, the sweep and its claim settings in the
    config, the claim's function and its section; grid, aggregate, claims, figures and report follow."""
    from dropout_lab.settings import experiments
    from dropout_lab.analysis import figures

    from dropout_lab.settings import claims as registry

    sweep = experiments.Sweep("deep_input_sweep")
    monkeypatch.setattr(experiments, "SWEEPS", (*experiments.SWEEPS, sweep))
    monkeypatch.setitem(experiments.BY_NAME, sweep.name, sweep)
    claim = registry.Claim("deep_input", "4", lambda c, r: "deep input", "deep_input", "deep_input_sweep",
                           "deep_input", section="deep_input")
    monkeypatch.setattr(registry, "CLAIMS", (*registry.CLAIMS, claim))
    monkeypatch.setitem(claims.STATISTICS, "deep_input", lambda rows, spec, s, alpha, n, claim: claims.optimum_claim(
        rows, "input_rate", {**s["optimum"], **s["deep_input"]}, alpha, n))
    monkeypatch.setitem(report.SECTIONS, "deep_input", lambda c, config, templates=None: "DEEP INPUT: best rate "
                        f"{c['deep_input']['best']:g}\n" if "deep_input" in c else None)

    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config.update(scale="smoke", experiments=["mnist_mlp"], seeds={**config["seeds"], "smoke": SEEDS})
    config["grids"]["mnist_mlp"] = {"dataset": "mnist", "model": "mlp", "hidden_sweep": PAPER_GRID["hidden_sweep"],
                                    "deep_input_sweep": {"vary": "input", "rates": [0.3, 0.4, 0.6],
                                                         "fixed": {"hidden": 0.3}}}
    config["claims"]["deep_input"] = {"experiment": "mnist_mlp", "published_band": [0.1, 0.2]}
    runs = grid.expand_runs(config)
    assert sum("deep_input_sweep" in r.sweeps for r in runs) == 3 * SEEDS
    rng = np.random.default_rng(1)
    for run in runs:
        write_json(tmp_path / run.folder / "metrics.json", metrics(run, rng))
    table, curves, mc = aggregate.collect(aggregate.load(grid.run_table(runs), root=tmp_path), config["failure"])
    assert table["in_deep_input_sweep"].sum() == 3 * SEEDS
    verdicts = claims.evaluate_claims(table, config, mc)
    assert verdicts["deep_input"]["best"] == 0.3  # the known answer: each input rate above 0.2 loses accuracy
    assert "mnist_mlp_deep_input_sweep" in grid.figure_stems(config)
    figures.draw("mnist_mlp_deep_input_sweep", table, curves, config, tmp_path, mc)
    assert (tmp_path / "mnist_mlp_deep_input_sweep.pdf").stat().st_size > 0
    assert "deep_input" in registry.sections()
    assert report.SECTIONS["deep_input"](verdicts, config) == "DEEP INPUT: best rate 0.3\n"


def test_the_report_writes_exactly_the_files_the_workflow_lists(paper):
    from dropout_lab.settings.claims import sections

    written = {str(p.relative_to(paper["tex"])) for p in paper["tex"].rglob("*") if p.is_file()}
    listed = {f"{name}.tex" for name in report.GENERATED} | {f"claims/{s}.tex" for s in sections()} | {"verdicts.csv"}
    assert written == listed


def test_every_registered_claim_has_a_statistic_its_runs_and_a_row(paper):
    import csv

    from dropout_lab.settings import experiments
    from dropout_lab.settings.claims import CLAIMS, registered

    assert all(c.statistic in claims.STATISTICS for c in CLAIMS)
    assert all(c.reads in claims.SELECTIONS or c.reads in experiments.BY_NAME for c in CLAIMS)
    assert all(c.section is None or c.section in report.SECTIONS for c in CLAIMS)
    keys = [c.key for c in registered(paper_config())]
    assert set(keys) <= set(paper["doc"]["claims"])  # the synthetic grid runs every claim: none vanished
    rows = list(csv.reader((paper["tex"] / "verdicts.csv").open()))[1:]
    claim_rows = [row for row in rows if not row[0].startswith("theory:")]
    assert [row[2] for row in claim_rows] == [paper["doc"]["claims"][key]["verdict"] for key in keys]
