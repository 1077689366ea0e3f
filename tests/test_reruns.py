"""The workflow never retrains finished work it does not have to, and never loses it.

One small grid (two hidden rates, two seeds, smoke scale) trained once; then each change a user makes, and what
exactly reruns: a seed added trains only the new seed; the data folder deleted and a rate added trains only the new
rate (the finished packs read no data); a pack.json deleted retrains nothing; a damaged one stops the workflow in
one line before any job runs. Every finished metrics.json is byte-identical afterwards. (A finished pack may still
run again, as Snakemake reruns a job whose set of inputs changed when the data folder came or went: it then keeps
all its runs, trains none and writes the same pack.json.)
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, grids_overlay

SNAKEMAKE = Path(sys.executable).parent / "snakemake"


def grid(rates: list[float]) -> dict:
    return {"mnist_mlp": {"dataset": "mnist", "model": "mlp",
                          "hidden_sweep": {"vary": "hidden", "rates": rates, "fixed": {"input": 0.0}}}}


def run(work: Path, mirror: str, rates: list[float], seeds: int = 2, *args: str) -> subprocess.CompletedProcess:
    # A pack per cell, so that each cell's pack and log can be named (runs_per_job auto packs them all together).
    overlay = {"scale": "smoke", "experiments": ["mnist_mlp"], "seeds": {"smoke": seeds}, "runs_per_job": "cell",
               "data": {"dir": "data", "mirrors": {"mnist": mirror}}, "protocols": {"run": ["fixed"], "judge": "fixed"},
               "grids": grids_overlay(grid(rates))}
    (work / "grid.yaml").write_text(yaml.safe_dump(overlay))
    return subprocess.run([str(SNAKEMAKE), "-s", str(ROOT / "Snakefile"), "--directory", str(work), "--cores", "2",
                           "--configfile", str(work / "grid.yaml"), "--until", "aggregate", *args],
                          capture_output=True, text=True, timeout=900)


def metrics(work: Path) -> dict[str, str]:
    return {str(p.relative_to(work)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((work / "results" / "runs").rglob("metrics.json"))}


def trained(work: Path) -> dict[str, int]:
    """Per pack log: how many runs it trained (an epoch line per run) and kept."""
    out = {}
    for log in (work / "results" / "logs" / "train").rglob("*.log"):
        text = log.read_text()
        kept = re.search(r"kept (\d+) finished run", text)
        out[str(log.relative_to(work / "results" / "logs" / "train"))] = int(kept.group(1)) if kept else 0
    return out


@pytest.mark.slow
def test_finished_runs_survive_every_change_and_only_new_runs_train(tmp_path, mnist_mirror):
    work = tmp_path / "work"
    work.mkdir()
    first = run(work, mnist_mirror, [0.0, 0.5])
    assert first.returncode == 0, first.stderr[-3000:]
    finished = metrics(work)
    assert len(finished) == 4

    # A third seed: both packs run again, each keeps its two finished runs and trains the new seed only.
    more = run(work, mnist_mirror, [0.0, 0.5], 3)
    assert more.returncode == 0, more.stderr[-3000:]
    now = metrics(work)
    assert {k: now[k] for k in finished} == finished and len(now) == 6
    assert sorted(trained(work).values()) == [2, 2]

    # The data folder gone (as for runs imported from another machine) and a rate added: the data is fetched for
    # the new pack only; no finished pack trains, and every finished result is kept byte for byte.
    shutil.rmtree(work / "data")
    for log in (work / "results" / "logs" / "train").rglob("*.log"):
        log.unlink()
    wider = run(work, mnist_mirror, [0.0, 0.5, 0.9], 3)
    assert wider.returncode == 0, wider.stderr[-3000:]
    after = metrics(work)
    assert {k: after[k] for k in now} == now and len(after) == 9
    logs = trained(work)
    assert logs["mnist_mlp/bernoulli/input0_hidden0.9.log"] == 0  # the new pack trained all three seeds
    assert all(kept == 3 for name, kept in logs.items() if "hidden0.9" not in name)  # no-ops, if they ran at all

    # A pack.json deleted (e.g. by a kill just after it was written): nothing trains; if the pack runs at all, it
    # rebuilds the same pack.json from its runs' files.
    pack = work / "results" / "packs" / "mnist_mlp" / "bernoulli" / "input0_hidden0.5" / "pack.json"
    kept_pack = pack.read_bytes()
    pack.unlink()
    for log in (work / "results" / "logs" / "train").rglob("*.log"):
        log.unlink()
    again = run(work, mnist_mirror, [0.0, 0.5, 0.9], 3)
    assert again.returncode == 0, again.stderr[-3000:]
    assert all(kept == 3 for kept in trained(work).values())
    assert metrics(work) == after and (not pack.exists() or pack.read_bytes() == kept_pack)

    # A damaged pack.json: one line naming it and the fix, before any job; every result as it was.
    pack.write_bytes(kept_pack[: len(kept_pack) // 2])
    damaged = run(work, mnist_mirror, [0.0, 0.5, 0.9], 3)
    assert damaged.returncode != 0 and "rule train:" not in damaged.stdout + damaged.stderr
    line = next(line for line in damaged.stderr.splitlines() if line.startswith("error:"))
    assert line.startswith(f"error: results/packs/mnist_mlp/bernoulli/input0_hidden0.5/pack.json cannot be read")
    assert line.endswith("delete it and run again: its runs' finished metrics.json are kept, and the pack is "
                         "rebuilt from them without training")
    assert metrics(work) == after
