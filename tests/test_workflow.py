"""The whole workflow at smoke scale: interrupted, resumed, finished, then nothing left to do.

Real MNIST comes through the mirror setting; CIFAR-10 is a small archive in the
genuine layout served over loopback, with its digest given in the config.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from dropout_lab.paper import layout
from dropout_lab.planning import grid
from dropout_lab.planning.packs import make_packs, runs_per_job
from tests.conftest import ROOT, as_snakemake_sees, grids_overlay, make_cifar_archive

SNAKEMAKE = Path(sys.executable).parent / "snakemake"

# The test's own grids, with every sweep and placement preset of both experiments (so that every claim, figure
# and section is made); each count below is derived from them as the workflow plans them.
# Few rates per sweep: every rule, claim and section runs, at a CI-sized cost (each job is a process).
RATES = [0.0, 0.2, 0.5, 0.9]
WORKFLOW_GRIDS = {
    "mnist_mlp": {
        "dataset": "mnist",
        "model": "mlp",
        "hidden_sweep": {"vary": "hidden", "rates": RATES, "fixed": {"input": 0.0}},
        "input_sweep": {"vary": "input", "rates": RATES[:3], "fixed": {"hidden": 0.5}},
        "gate_parity": {"vary": "hidden", "rates": RATES[1:], "fixed": {"input": 0.0},
                        "gates": ["bernoulli", "gaussian", "uniform", "dropconnect"]},
        "width_sweep": {"vary": "hidden", "rates": RATES, "fixed": {"input": 0.0}, "retained_share": 0.25},
        "budget_sweep": {"vary": "hidden", "rates": RATES, "fixed": {"input": 0.0},
                         "epochs": {"paper": [5, 20, 50, 200], "quick": [1, 3, 6], "smoke": [1, 2]}},
        "placement": ["none", "input", "hidden", "both"],
        "conventions": {"vary": "hidden", "rates": [0.5], "fixed": {"input": 0.0}, "gates": ["bernoulli", "gaussian"]},
        "anchor_parity": {"vary": "hidden", "rates": [0.5], "fixed": {"input": 0.2}, "gates": ["bernoulli", "gaussian"]},
    },
    "cifar10_cnn": {
        "dataset": "cifar10",
        "model": "cnn",
        "hidden_sweep": {"vary": "fc", "rates": [0.0, 0.25, 0.5, 0.75], "fixed": {"input": 0.0, "conv": 0.0}},
        "placement": ["none", "fc-only", "all-layers"],
    },
}


def _require(tool: str) -> None:
    if shutil.which(tool) is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must have {tool} (.ci/run installs it)")
        pytest.skip(f"{tool} is not installed (Debian: see the README's TeX line)")


def snakemake(workdir: Path, config: dict, *extra: str, background: bool = False, env: dict | None = None):
    overrides = workdir / "test-config.yaml"
    overrides.write_text(yaml.safe_dump(config))
    args = [
        str(SNAKEMAKE), "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), "--cores", "2",
        *extra, "--configfile", str(overrides),  # --configfile takes several values: it goes last
    ]
    env = {**os.environ, **(env or {})}
    if background:  # output to a file: a full pipe would stall Snakemake while the test waits
        log = open(workdir / "snakemake-background.log", "w")
        # Ctrl-C must reach it however the tests were started: a shell without job control starts background
        # commands with SIGINT ignored, and a child would inherit that.
        return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                                env=env, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return subprocess.run(args, capture_output=True, text=True, timeout=900, env=env)


@pytest.mark.slow
def test_smoke_workflow_end_to_end(tmp_path, mnist_mirror, http_folder):
    _require("latexmk")
    _require("pdftotext")
    folder, url = http_folder
    # 1,000 training images: the smoke scale holds out 500 of them for validation
    archive = make_cifar_archive(folder / "cifar-10-python.tar.gz", per_batch=200)
    config = {
        "scale": "smoke",
        "experiments": list(WORKFLOW_GRIDS),
        "data": {
            "dir": "data",
            "mirrors": {"mnist": mnist_mirror, "cifar10": url},
            "checksums": {"mnist": None, "cifar10": {"cifar-10-python.tar.gz": archive["sha256"]}},
        },
        "grids": grids_overlay(WORKFLOW_GRIDS),
    }
    full = as_snakemake_sees(config)  # the workflow config the runs below plan from
    expected = {f"{run.folder}/metrics.json" for run in grid.expand_runs(full)}
    work = tmp_path / "work"
    work.mkdir()

    # Interrupt it (Ctrl-C) once Snakemake has recorded a pack as finished: its log says so ("Finished jobid: N
    # (Rule: train)") after the job's metadata is written. Packed as runs_per_job auto packs them here (on a CPU, up
    # to 32 runs of an experiment, a stack per architecture and schedule), other packs are then still to train.
    per_job = runs_per_job(full)
    packs = {f"results/packs/{p.name}/pack.json" for p in make_packs(grid.expand_runs(full), per_job)}
    assert len(expected) > len(packs) > 2
    proc = snakemake(work, config, background=True)
    background = work / "snakemake-background.log"
    while proc.poll() is None:  # no wall-clock limit: a busy machine is only slower
        if re.search(r"Finished jobid: \d+ \(Rule: train\)", background.read_text(errors="replace")):
            break
        time.sleep(0.2)
    assert proc.poll() is None, (work / "snakemake-background.log").read_text()[-3000:]
    os.killpg(proc.pid, signal.SIGINT)
    proc.communicate()  # Snakemake finishes the jobs it is stopping, however long that takes
    kept = {p: p.stat().st_mtime_ns for p in (work / "results" / "packs").rglob("pack.json")}
    assert kept
    for path in [*kept, *(work / "results" / "runs").rglob("metrics.json")]:
        json.loads(path.read_text())  # every file left behind is complete

    # Jobs killed between writing their output and Snakemake recording it are marked
    # incomplete; the default profile (profiles/default) reruns just those.
    probe = snakemake(work, config, "-n", "--workflow-profile", "none")
    # Without the profile's rerun-incomplete the dry run stops, naming them; else it plans (naming every pack
    # whose runs are still to unpack, finished or not).
    marked = probe.stdout + probe.stderr if probe.returncode != 0 else ""
    incomplete = {p for p in kept if str(p.relative_to(work)) in marked}
    finished = {p: t for p, t in kept.items() if p not in incomplete}
    assert finished, (probe.returncode, probe.stdout[-2000:], probe.stderr[-3000:], kept)
    # The interrupt left work: a pack not written, or one written but stopped before Snakemake recorded it.
    assert len(finished) < len(packs), (kept, incomplete)

    # Resume: only the unfinished packs are trained.
    done = snakemake(work, config)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in finished} == finished
    trained = done.stdout.count("rule train:") + done.stderr.count("rule train:")
    assert trained == len(packs) - len(finished)

    results = work / "results"
    runs = pd.read_parquet(results / "aggregate" / "runs.parquet")
    assert len(runs) == len(expected) == len(pd.read_csv(results / "aggregate" / "runs.csv"))
    assert set(runs["experiment"]) == {"mnist_mlp", "cifar10_cnn"}
    verdicts = json.loads((results / "claims" / "claims.json").read_text())["claims"]
    parity = {f"parity_{gate}" for gate in full["grids"]["mnist_mlp"]["gate_parity"]["gates"][1:]}
    assert set(verdicts) == {"optimum", "regularisation", "weight_norm", "width_optimum", "input_rate", "inference",
                             "conventions", "budget", "placement", "anchor_parity"} | parity
    # Every claim under each protocol, and the tuned protocol's choice for every tuned cell.
    protocols = json.loads((results / "claims" / "claims.json").read_text())["protocols"]
    assert set(protocols["by_protocol"]) == {"fixed", "tuned"} and protocols["judge"] == "tuned"
    assert set(protocols["by_protocol"]["fixed"]) == set(protocols["by_protocol"]["tuned"]) == set(verdicts)
    chosen = [row for row in protocols["selection"] if row["chosen"]]
    tuned_cells = {(r.gate, r.design_cell) for r in grid.expand_runs(full) if any(
        tag.startswith("tuned:") for tag in r.sweeps)}
    assert {(row["gate"], row["design_cell"]) for row in chosen} == tuned_cells
    theory = json.loads((results / "claims" / "claims.json").read_text())["theory"]
    assert theory["gradient"]["verdict"] == "supported" and theory["regression"]["verdict"] == "supported"
    assert theory["raw_reading"]["verdict"] == "supported"
    assert theory["effective_reading"]["verdict"] == "not supported"
    assert all(v["verdict"] in {"supported", "not supported", "inconclusive"} for v in verdicts.values())
    stems = grid.figure_stems(full) + ["theory/gradient", "theory/regression"]
    for stem in stems:
        assert (results / "figures" / f"{stem}.pdf").stat().st_size > 0
        assert (results / "figures" / f"{stem}.png").stat().st_size > 0

    text = subprocess.run(["pdftotext", str(results / "paper" / "paper.pdf"), "-"],
                          capture_output=True, text=True, check=True).stdout
    for heading in ("SMOKE run", "The mathematics and where it stops", "Methods", "Protocols", "Claim 1e", "Claim 2",
                    "Claim 3", "The mathematics, checked numerically", "Where to drop", "Our numbers beside the published ones", "Provenance"):
        assert heading in text, heading
    assert "not run" not in text  # both experiments ran: every section has its numbers
    for verdict in verdicts.values():
        assert verdict["verdict"] in text
    # The paper's form: no line wider than the text by more than 1 pt, no page under a third full but the last.
    log = (results / "paper" / "build" / "paper.log").read_text(errors="replace")
    assert not (bad := [str(b) for b in layout.overfull_boxes(log, 1.0)] + [
        f"page {n} is under a third full" for n in layout.sparse_pages(layout.page_fill(results / "paper" / "paper.pdf"))]), bad

    again = snakemake(work, config)
    assert again.returncode == 0
    assert "Nothing to be done" in again.stdout + again.stderr
    # A data cache rebuilt or touched (the same verified content) retrains no finished pack.
    for cache in (work / "data").rglob("*.pt"):
        os.utime(cache)
    touched = snakemake(work, config, "-n")
    assert touched.returncode == 0 and "Nothing to be done" in touched.stdout + touched.stderr, touched.stdout[-3000:]
    # A claims setting the verdicts read reruns the claims and the paper, and trains nothing.
    stricter = snakemake(work, {**config, "claims": {**full["claims"], "alpha": 0.01}}, "-n")
    planned = stricter.stdout + stricter.stderr
    assert stricter.returncode == 0 and "rule claims:" in planned and "rule train:" not in planned, planned[-3000:]
    report = snakemake(work, config, "--report", str(tmp_path / "report.html"))
    assert report.returncode == 0 and "Report created" in report.stdout + report.stderr, report.stderr[-3000:]
    verdict_table = (results / "claims" / "verdicts.csv").read_text()
    assert all(v["verdict"] in verdict_table for v in verdicts.values())

    # Only what defines a run retrains it. More threads and another mirror with the same
    # files change nothing; an edit to the MLP part of the smoke scale retrains exactly the
    # MNIST runs.
    moved = {**config, "threads_per_run": 2}
    if Path(mnist_mirror).is_dir():
        shutil.copytree(mnist_mirror, tmp_path / "mirror-copy")
        moved["data"] = {**config["data"], "mirrors": {**config["data"]["mirrors"], "mnist": str(tmp_path / "mirror-copy")}}
    plan = snakemake(work, moved, "-n")
    assert plan.returncode == 0 and "Nothing to be done" in plan.stdout + plan.stderr, plan.stdout[-3000:]
    configs = tmp_path / "hydra-config"
    shutil.copytree(ROOT / "config", configs)
    scale = configs / "scale" / "smoke.yaml"
    scale.write_text(scale.read_text().replace("mlp:\n  epochs: 1", "mlp:\n  epochs: 2"))
    plan = snakemake(work, config, "-n", env={"DROPOUT_LAB_CONFIG_DIR": str(configs)})
    planned = plan.stdout + plan.stderr
    # Every MNIST run retrains: at the scale's epochs their identity changed, and the budget sweep's 1-epoch
    # budget is now a run of its own (packed as runs_per_job auto packs them).
    edited = grid.expand_runs(full, str(configs))
    mnist_packs = [p for p in make_packs(edited, per_job) if p.runs[0].experiment == "mnist_mlp"]
    assert plan.returncode == 0 and planned.count("rule train:") == len(mnist_packs), planned[-3000:]
    assert "wildcards: pack=cifar10_cnn" not in planned

    # A metrics.json copied into another cell's folder is refused before aggregation, with one
    # line naming the run and the setting; no finished result is lost or changed.
    runs_dir = results / "runs" / "mnist_mlp" / "bernoulli"
    source, target = runs_dir / "input0_hidden0.2" / "seed0" / "metrics.json", runs_dir / "input0_hidden0.5" / "seed0" / "metrics.json"
    saved = {p: p.read_bytes() for p in (source, target)}
    aggregate_before = (results / "aggregate" / "runs.parquet").read_bytes()
    target.write_bytes(saved[source])
    refused = snakemake(work, config)
    assert refused.returncode != 0
    # The metrics schema refuses it first (its rates are not its folder's), in the check_runs log.
    said = refused.stdout + refused.stderr + (results / "logs" / "check_runs.log").read_text()
    line = next(l for l in said.splitlines() if l.startswith("error:") and "input0_hidden0.5/seed0/metrics.json" in l)
    assert "0.2" in line and "0.5" in line, line
    assert source.read_bytes() == saved[source]
    assert (results / "aggregate" / "runs.parquet").read_bytes() == aggregate_before
    target.write_bytes(saved[target])

    # The same MNIST runs trained as packs (every run of a gate and convention in one job)
    # give the same numbers: on the CPU a run's results do not depend on its pack.
    packed = tmp_path / "packed"
    packed.mkdir()
    (packed / "data").symlink_to(work / "data")
    result = snakemake(packed, {**config, "experiments": ["mnist_mlp"], "runs_per_job": "all"},
                       "results/aggregate/runs.csv")
    assert result.returncode == 0, result.stderr[-4000:]
    packs = make_packs(grid.expand_runs({**full, "experiments": ["mnist_mlp"]}), "all")
    assert (result.stdout + result.stderr).count("rule train:") == len(packs)  # a pack per architecture

    alone = pd.read_csv(results / "aggregate" / "runs.csv")
    together = pd.read_csv(packed / "results" / "aggregate" / "runs.csv")
    alone = alone[alone["experiment"] == "mnist_mlp"]
    mnist_only = {**full, "experiments": ["mnist_mlp"]}
    assert set(together["pack_size"]) == {len(p.runs) for p in make_packs(grid.expand_runs(mnist_only), "all")}
    volatile = [c for c in alone.columns if "seconds" in c or c in ("commit", "pack_size")]
    key = ["run"]

    def comparable(table: pd.DataFrame) -> pd.DataFrame:
        # Columns empty for MNIST (CNN channels, reasons of failures) read back as text or as floats.
        return table.drop(columns=volatile).dropna(axis=1, how="all").sort_values(key).reset_index(drop=True)

    pd.testing.assert_frame_equal(comparable(alone), comparable(together))

