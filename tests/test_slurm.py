"""The smoke workflow through the SLURM profile, on a real single-node SLURM started for the test.

tools/local-slurm starts munged, slurmctld and slurmd as root; the scheduler's
job completion log is the record that the training jobs went through SLURM.
Without root or the Debian packages the test is skipped with the reason; in CI
(CI=true, where .ci/run installs them) it must run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from dropout_lab.planning import grid
from dropout_lab.planning.packs import make_packs, runs_per_job
from tests.conftest import ROOT, as_snakemake_sees, grids_overlay

LOCAL_SLURM = ROOT / "tools" / "local-slurm"

# The cluster path, not every sweep: the fixed protocol's hidden and input sweeps, two parity gates, the
# placement presets and the conventions (12 cells, 24 runs at two seeds).
SLURM_GRIDS = {
    "mnist_mlp": {
        "dataset": "mnist",
        "model": "mlp",
        "hidden_sweep": {"vary": "hidden", "rates": [0.0, 0.2, 0.5, 0.9], "fixed": {"input": 0.0}},
        "input_sweep": {"vary": "input", "rates": [0.0, 0.2, 0.5], "fixed": {"hidden": 0.5}},
        "gate_parity": {"vary": "hidden", "rates": [0.2, 0.5, 0.9], "fixed": {"input": 0.0},
                        "gates": ["bernoulli", "gaussian"]},
        "placement": ["none", "input", "hidden", "both"],
        "conventions": {"vary": "hidden", "rates": [0.5], "fixed": {"input": 0.0}, "gates": ["bernoulli", "gaussian"]},
    },
}


@pytest.fixture
def slurm():
    # munged needs every folder above its socket to be world-searchable; pytest's are not.
    state = Path(tempfile.mkdtemp(prefix="dropout-lab-slurm-", dir="/tmp"))
    state.chmod(0o755)
    proc = subprocess.run([str(LOCAL_SLURM), "start", str(state)], capture_output=True, text=True, timeout=120)
    if proc.returncode == 3:
        reason = proc.stderr.strip()
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must be able to start SLURM: {reason}")
        pytest.skip(reason)
    try:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        yield state
    finally:
        subprocess.run([str(LOCAL_SLURM), "stop", str(state)], timeout=120)
        shutil.rmtree(state, ignore_errors=True)


@pytest.mark.slow
def test_smoke_workflow_through_the_slurm_profile(tmp_path, slurm, mnist_mirror):
    if shutil.which("latexmk") is None:
        pytest.skip("latexmk is not installed (see the README's TeX line)")
    work = tmp_path / "work"
    work.mkdir()
    overrides = {"scale": "smoke", "experiments": ["mnist_mlp"], "data": {"mirrors": {"mnist": mnist_mirror}},
                 "protocols": {"run": ["fixed"], "judge": "fixed"}, "grids": grids_overlay(SLURM_GRIDS)}
    (work / "test-config.yaml").write_text(yaml.safe_dump(overrides))
    env = {**os.environ, "SLURM_CONF": str(slurm / "slurm.conf")}
    # The profile as users run it; the overrides are this cluster's facts: two cores per
    # group job, and no accounting database, so job states come from squeue.
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "snakemake"), "-s", str(ROOT / "Snakefile"), "--directory", str(work),
         "--profile", str(ROOT / "profiles" / "slurm"), "--configfile", str(work / "test-config.yaml"),
         "--cores", "2", "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "2"],
        capture_output=True, text=True, timeout=1500, env=env,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-5000:]
    assert (work / "results" / "paper" / "paper.pdf").stat().st_size > 0

    runs = grid.expand_runs(as_snakemake_sees(overrides))  # the runs of SLURM_GRIDS, as the workflow plans them
    cells = {(r.gate, r.convention, r.cell) for r in runs}
    # 4 hidden + 2 input (its 0.0 is the hidden sweep's 0.5) + 3 Gaussian parity + 1 placement-only (input 0.2
    # alone) + 2 scaled conventions, at two seeds
    assert len(runs) == 2 * len(cells) == 2 * (4 + 2 + 3 + 1 + 2)
    assert len(list((work / "results" / "runs").rglob("metrics.json"))) == len(runs)
    assert "localrule train" not in output  # training never ran on the submitting machine

    # The scheduler's own record: one completed job per group of eight training jobs (packs as runs_per_job
    # auto makes them on a CPU), in our folder.
    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    per_group = int(profile["group-components"][0].split("=")[1])
    records = (slurm / "log" / "jobcomp.log").read_text().splitlines()
    ours = [r for r in records if f"WorkDir={work}" in r]
    assert len(ours) == -(-len(make_packs(runs, runs_per_job(as_snakemake_sees(overrides)))) // per_group)
    assert all("JobState=COMPLETED" in r for r in ours)
    submitted = set(re.findall(r"submitted with SLURM jobid (\d+)", output))
    assert {re.search(r"JobId=(\d+)", r).group(1) for r in ours} == submitted


def test_a_link_left_by_a_killed_local_cluster_does_not_block_the_next(tmp_path):
    system_conf = Path("/etc/slurm/slurm.conf")
    if os.geteuid() != 0 or shutil.which("slurmctld") is None:
        pytest.skip("needs root and the SLURM packages, as the cluster test does")
    if system_conf.exists() or system_conf.is_symlink():
        pytest.skip(f"{system_conf} is present; this test plants its own")
    # What a cluster killed before its stop leaves: the link, and a state folder whose daemons are gone.
    dead = Path(tempfile.mkdtemp(prefix="dropout-lab-slurm-", dir="/tmp"))
    (dead / "run").mkdir()
    (dead / "slurm.conf").write_text("ClusterName=dropoutlab\n")
    (dead / "run" / "slurmctld.pid").write_text("999999\n")
    system_conf.parent.mkdir(parents=True, exist_ok=True)
    system_conf.symlink_to(dead / "slurm.conf")
    state = Path(tempfile.mkdtemp(prefix="dropout-lab-slurm-", dir="/tmp"))
    state.chmod(0o755)
    try:
        proc = subprocess.run([str(LOCAL_SLURM), "start", str(state)], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "removing the stale link" in proc.stderr
        assert system_conf.resolve() == state / "slurm.conf"
    finally:
        subprocess.run([str(LOCAL_SLURM), "stop", str(state)], timeout=120)
        if system_conf.is_symlink() and system_conf.resolve() == dead / "slurm.conf":
            system_conf.unlink()
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(dead, ignore_errors=True)
    assert not system_conf.is_symlink()
