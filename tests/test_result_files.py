"""A result file is checked before it is believed (settings.metrics_schema): a metrics.json that cannot be believed is
refused in one line naming the file, the field and the fix, by the workflow's check_runs and aggregate scripts, with
every finished file left byte-identical; a run whose final numbers are not finite is a failed run, counted as such;
a claim whose runs all failed is judged inconclusive, not a crash."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dropout_lab.analysis import aggregate, claims
from dropout_lab.planning import grid
from dropout_lab.settings import health
from dropout_lab.settings.atomic import write_json
from dropout_lab.settings.identity import defining_settings
from dropout_lab.settings.metrics_schema import MetricsError, read_metrics
from tests.test_paper_numbers import metrics, paper_config

ROOT = Path(__file__).resolve().parents[1]
FAILURE = {"rebound_fraction": 0.85, "chance_multiple": 2.0}
HALF = grid.Run("mnist_mlp", "mnist", "mlp", "bernoulli", (("input", 0.0), ("hidden", 0.5)), 0)
# Runs a workflow script with a stand-in for Snakemake's `snakemake` object (its fields from argv[1]).
RUNNER = """
import json, runpy, sys, types
spec = json.loads(sys.argv[1])
output = type("Output", (list,), {})(spec["output"].values())
output.__dict__.update(spec["output"])
runpy.run_path(sys.argv[2], run_name="__main__", init_globals={"snakemake": types.SimpleNamespace(
    input=spec["input"], output=output, log=[spec["log"]], params=types.SimpleNamespace(**spec["params"]),
    config=spec["config"])})
"""


def valid(run: grid.Run = HALF, seed: int = 0) -> dict:
    """A finished run's metrics.json as the trainer writes it (tests/test_paper_numbers.py), with its dropout config."""
    record = metrics(grid.Run(**{**run.__dict__, "seed": seed}), np.random.default_rng(seed))
    record["config"]["dropout"] = dict(run.rates)
    record["config"]["seed"] = seed
    return record


def runs_in(work: Path, seeds: int = 2) -> list[grid.Run]:
    """Two seeds of the 0.5 cell and two of the 0 cell, each with a finished metrics.json under `work`."""
    runs = [grid.Run(**{**cell.__dict__, "seed": s}) for cell in (HALF, grid.Run(**{**HALF.__dict__, "rates": (
        ("input", 0.0), ("hidden", 0.0))})) for s in range(seeds)]
    for run in runs:
        write_json(work / run.folder / "metrics.json", valid(run, run.seed))
    return runs


def digests(work: Path) -> dict[str, str]:
    """sha256 of every file under work/results (the finished results, and the tables built from them)."""
    return {str(p.relative_to(work)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((work / "results").rglob("*")) if p.is_file() and "logs" not in p.parts}


def script(name: str, work: Path, spec: dict) -> tuple[int, list[str]]:
    """Run workflow/scripts/<name> in `work`; its exit status and the lines of its log (its stderr)."""
    log = work / "results" / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    spec = {"input": [], "output": {}, "params": {}, "config": {}, **spec, "log": str(log)}
    done = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(spec), str(ROOT / "workflow" / "scripts" / name)],
                          cwd=work, capture_output=True, text=True, check=False)
    return done.returncode, log.read_text().splitlines()


def check_runs(work: Path, runs: list[grid.Run]) -> tuple[int, list[str]]:
    """The check_runs rule's script over `runs`, each expected to hold the settings it records."""
    paths = [f"{run.folder}/metrics.json" for run in runs]
    expected = {}
    for path in paths:
        try:
            expected[str(Path(path).parent)] = defining_settings(json.loads((work / path).read_text())["config"])
        except (ValueError, KeyError, TypeError):  # a damaged file: the settings the workflow expects at its path
            expected[str(Path(path).parent)] = defining_settings(valid()["config"])
    return script("check_runs.py", work, {"input": paths, "output": {"checked": "results/aggregate/checked.json"},
                                          "params": {"expected": expected}})


def aggregate_job(work: Path, runs: list[grid.Run]) -> tuple[int, list[str]]:
    names = {"runs": "runs.parquet", "csv": "runs.csv", "curves": "curves.parquet", "mc": "mc_curves.parquet",
             "provenance": "provenance.json"}
    return script("aggregate.py", work, {"output": {k: f"results/aggregate/{v}" for k, v in names.items()},
                                         "params": {"records": grid.run_table(runs)},
                                         "config": {"failure": FAILURE}})


def edit(path: Path, change) -> None:
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))


# Each damaged file, and what its one line must name: the field and the fix.
DAMAGED = {
    "missing_rates": (lambda p: edit(p, lambda m: m.pop("rates")), "rates is missing"),
    "missing_config": (lambda p: edit(p, lambda m: m.pop("config")), "config is missing"),
    "a_list": (lambda p: p.write_text("[1, 2, 3]"), "holds [1, 2, 3], not a run's record (a JSON object)"),
    "truncated": (lambda p: p.write_text(p.read_text()[:200]), "is not valid JSON"),
    "missing_final": (lambda p: edit(p, lambda m: m.pop("final")), "final is missing"),
    "rates_moved": (lambda p: edit(p, lambda m: m["rates"].update(hidden=[0.9, 0.9])),
                    "rates.hidden is [0.9, 0.9] but its config records dropout.hidden=0.5"),
    "a_string": (lambda p: edit(p, lambda m: m["final"].update(test_acc="0.98")),
                 'final.test_acc is "0.98", not a number or null'),
    "non_finite_setting": (lambda p: edit(p, lambda m: m.update(wall_seconds=math.inf)),
                           "wall_seconds is Infinity, not a finite number; a finished run records finite numbers"),
    "seed_moved": (lambda p: edit(p, lambda m: m.update(seed=7)), "seed is 7 but its folder is seed0"),
}


@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_a_file_that_cannot_be_believed_is_refused_by_check_runs_in_one_line_and_nothing_is_written(tmp_path, case):
    runs = runs_in(tmp_path)
    damage, field = DAMAGED[case]
    path = tmp_path / runs[0].folder / "metrics.json"
    damage(path)
    before = digests(tmp_path)
    status, lines = check_runs(tmp_path, runs)
    assert status == 2
    assert len(lines) == 1 and lines[0].startswith(f"error: {runs[0].folder}/metrics.json: ")
    assert field in lines[0]
    assert "retrain it (delete its folder)" in lines[0] or "delete the folder to retrain it" in lines[0]  # the fix
    assert digests(tmp_path) == before  # nothing written: no checked.json, every result as it was


def test_rates_that_disagree_with_the_folder_are_refused_where_the_config_does_not_record_them(tmp_path):
    run = runs_in(tmp_path)[0]
    path = tmp_path / run.folder / "metrics.json"
    edit(path, lambda m: (m["config"].pop("dropout"), m["rates"].update(hidden=[0.9, 0.9])))
    with pytest.raises(MetricsError) as err:
        read_metrics(path)
    assert str(err.value) == (f"{path}: rates.hidden is [0.9, 0.9] but its folder's cell input0_hidden0.5 has hidden "
                              "0.5; the file is not the run of its folder: put it back where it belongs, or delete "
                              "the folder to retrain it")


def test_every_finished_file_passes_and_check_runs_records_them(tmp_path):
    runs = runs_in(tmp_path)
    status, lines = check_runs(tmp_path, runs)
    assert status == 0 and lines == [f"{len(runs)} runs hold the settings expected at their paths"]
    assert len(json.loads((tmp_path / "results/aggregate/checked.json").read_text())["runs"]) == len(runs)


def test_a_refused_file_leaves_the_earlier_aggregate_tables_byte_identical(tmp_path):
    runs = runs_in(tmp_path)
    assert aggregate_job(tmp_path, runs)[0] == 0
    tables = sorted((tmp_path / "results/aggregate").iterdir())
    assert {p.name for p in tables} == {"runs.parquet", "runs.csv", "curves.parquet", "mc_curves.parquet",
                                        "provenance.json"}
    (tmp_path / runs[1].folder / "metrics.json").write_text('{"config": {"dataset"')  # truncated since
    before = digests(tmp_path)
    status, lines = aggregate_job(tmp_path, runs)
    assert status == 2 and len(lines) == 1
    assert lines[0].startswith(f"error: {runs[1].folder}/metrics.json: is not valid JSON")
    assert digests(tmp_path) == before


NON_FINITE = {
    "nan_test_accuracy": (lambda m: m["final"].update(test_acc=math.nan), "final.test_acc is NaN"),
    "infinite_loss": (lambda m: m["final"].update(test_loss=math.inf), "final.test_loss is Infinity"),
    "null_weight_norm": (lambda m: m["weight_norms"].update({"hidden.0": None}), "weight_norms.hidden.0 is null"),
}


@pytest.mark.parametrize("case", sorted(NON_FINITE))
def test_a_run_with_non_finite_final_numbers_is_a_failed_run_counted_as_such(tmp_path, case):
    runs = runs_in(tmp_path, seeds=3)
    change, named = NON_FINITE[case]
    path = tmp_path / runs[0].folder / "metrics.json"
    edit(path, change)  # json.dumps writes NaN and Infinity as JSON's extensions, as a damaged writer would
    table, _, _ = aggregate.collect(aggregate.load(grid.run_table(runs), root=tmp_path), FAILURE)
    row = table.set_index("run").loc[runs[0].folder]
    assert row["status"] == "diverged" and row["failed_epoch"] == 4
    assert row["failed_reason"] == f"{health.NON_FINITE} ({named})"
    assert (table["status"] == "ok").sum() == len(runs) - 1
    half = table[table["hidden_rate"] == 0.5]
    assert len(half) == 3 and (half["status"] != "ok").sum() == 1  # in the table, counted as failed, never dropped


def test_a_finished_runs_numbers_keep_it_ok():
    assert health.classify(valid(), 10, FAILURE) == health.Health("ok", None, "")


def _all_failed(status: str) -> pd.DataFrame:
    """The synthetic grid of test_paper_numbers with every run diverged (no numbers) or collapsed."""
    config = paper_config()
    rows = []
    for run in grid.expand_runs(config):
        record = metrics(run, np.random.default_rng(run.seed))
        if status == "diverged":
            record.update(status="diverged", diverged_epoch=2, final=None, mc=None, weight_norms=None,
                          unscaled_inference=None)
        else:
            record["history"] = [dict(e, train_loss=loss) for e, loss in zip(record["history"], [1.6, 2.1, 2.2, 1.9])]
        rows.append((grid.run_table([run])[0], record))
    return aggregate.collect(rows, config["failure"])


@pytest.mark.parametrize("status", ["diverged", "collapsed"])
def test_a_claim_whose_runs_all_failed_is_inconclusive_with_the_failures_counted(status):
    config = paper_config()
    table, _, mc = _all_failed(status)
    assert (table["status"] == status).all()
    config["claims"]["bootstrap_samples"] = 200
    verdicts = claims.evaluate_claims(table, config, mc)
    assert {"optimum", "regularisation", "input_rate", "placement", "conventions"} <= set(verdicts)
    for name, result in verdicts.items():
        assert result["verdict"] == "inconclusive" and result["every_run_failed"], name
        assert result["reason"].startswith(f"{claims.EVERY_RUN_FAILED} (")
        assert result["failed"][status] > 0 and sum(result["failed"].values()) == result["failed"][status]
