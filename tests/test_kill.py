"""SIGKILL the whole workflow (Snakemake and its training jobs) at random moments, several times;
the rerun finishes, and its aggregate equals that of an uninterrupted run with the same seeds."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import ROOT

SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
TIMING = ["wall_seconds", "commit"]  # time, and the commit (a commit made while the test runs)


def small_config(mirror: str | None) -> dict:
    return {
        "scale": "smoke",
        "experiments": ["kill_test"],  # a grid of its own: --configfile merges into the shipped grids
        "data": {"mirrors": {"mnist": mirror}},
        "protocols": {"run": ["fixed"], "judge": "fixed"},  # three packs: kills land in and between them
        "grids": {"kill_test": {"dataset": "mnist", "model": "mlp",
                                "hidden_sweep": {"vary": "hidden", "rates": [0.0, 0.5, 0.9],
                                                 "fixed": {"input": 0.0}}}},
    }


def command(work: Path) -> list[str]:
    return [SNAKEMAKE, "results/aggregate/runs.parquet", "-s", str(ROOT / "Snakefile"), "--directory", str(work),
            "--cores", "2", "--configfile", str(work / "test-config.yaml")]


def prepare(work: Path, mirror: str | None) -> None:
    work.mkdir()
    (work / "test-config.yaml").write_text(yaml.safe_dump(small_config(mirror)))


@pytest.mark.slow
def test_killed_workflow_resumes_to_the_same_aggregate(tmp_path, mnist_mirror):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    for work in (reference, killed):
        prepare(work, mnist_mirror)
    done = subprocess.run(command(reference), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]

    rng = random.Random(7)
    kills = 0
    for _ in range(3):
        proc = subprocess.Popen(command(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        time.sleep(rng.uniform(1.0, 6.0))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # no chance to clean up: the hardest interruption
            kills += 1
        proc.wait()
        # A hard kill leaves Snakemake's lock behind; unlocking is the documented first step.
        subprocess.run([*command(killed), "--unlock"], capture_output=True, timeout=120)
    assert kills >= 2

    finished = subprocess.run(command(killed), capture_output=True, text=True, timeout=900)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert (killed / "results" / "aggregate" / "runs.parquet").exists(), finished.stdout + finished.stderr
    a = pd.read_parquet(reference / "results" / "aggregate" / "runs.parquet").drop(columns=TIMING)
    b = pd.read_parquet(killed / "results" / "aggregate" / "runs.parquet").drop(columns=TIMING)
    key = ["experiment", "gate", "convention", "cell", "seed"]
    pd.testing.assert_frame_equal(a.sort_values(key).reset_index(drop=True), b.sort_values(key).reset_index(drop=True))
    again = subprocess.run(command(killed), capture_output=True, text=True, timeout=300)
    assert "Nothing to be done" in again.stdout + again.stderr
