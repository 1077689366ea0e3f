"""Bad input is refused in one line before any work: `dropout-lab plan`, the workflow at DAG time (snakemake -n),
`python -m dropout_lab.data` and a run's Hydra overrides. Each case runs the real command in a folder whose
finished results/ must come out byte-identical, and its output holds exactly one `error:` line naming the value
and the fix, and no traceback."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

BIN = Path(sys.executable).parent


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A folder with finished results (a run's metrics, a pack record, claims) and a file where a folder belongs."""
    for name, text in {"runs/mnist_mlp/bernoulli/input0_hidden0.5/seed0/metrics.json": '{"status": "ok"}\n',
                       "packs/mnist_mlp/bernoulli/input0_hidden0.5/pack.json": '{"runs": 2}\n',
                       "claims/claims.json": '{"optimum": "supported"}\n'}.items():
        path = tmp_path / "results" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (tmp_path / "afile").write_text("not a folder\n")
    return tmp_path


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def refused(command: list[str], work: Path, status: int, *expected: str) -> str:
    """Run `command` in `work`; assert the exit status, one `error:` line holding every `expected` text, no
    traceback, and results/ byte-identical. Return the line."""
    before = digests(work / "results")
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=work)
    output = proc.stdout + proc.stderr
    lines = [line for line in output.splitlines() if "error:" in line]
    assert proc.returncode == status, output[-3000:]
    assert len(lines) == 1, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    for text in expected:
        assert text in lines[0], lines[0]
    assert digests(work / "results") == before
    return lines[0]


def configfile(work: Path, settings: dict) -> str:
    path = work / "bad-config.yaml"
    path.write_text(yaml.safe_dump(settings))
    return str(path)


# A YAML value the project's own parse would read, as a --configfile gives it.
MISSPELT_SWEEP = {"grids": {"mnist_mlp": {"hiden_sweep": {"vary": "hidden", "rates": [0.1], "fixed": {"input": 0.0}}}}}
MISSPELT_NULL = {"grids": {"mnist_mlp": {"hiden_sweep": None}}}  # meant to switch the hidden sweep off
RATE_NOT_IN_GRID = {"claims": {"optimum": {"claimed_rate": 0.45}}}
THRESHOLD_NOT_IN_GRID = {"claims": {"input_rate": {"threshold": 0.25}}}
DATA_IN_A_FILE = {"data": {"dir": "afile"}}
DATA_UNDER_A_FILE = {"data": {"dir": "afile/mnist"}}

# (the workflow config's change, the texts its one line holds: the value and the fix)
BAD_CONFIGS = {
    "runs_per_job=0": ({"runs_per_job": 0}, ["runs_per_job=0", "give an integer >= 1, cell, all or auto"]),
    "runs_per_job<0": ({"runs_per_job": -2}, ["runs_per_job=-2", "give an integer >= 1, cell, all or auto"]),
    "runs_per_job=word": ({"runs_per_job": "cells"}, ["runs_per_job='cells'", "cell, all or auto"]),
    "misspelt sweep": (MISSPELT_SWEEP, ["grids.mnist_mlp.hiden_sweep", "did you mean hidden_sweep?", "input_sweep"]),
    "misspelt null sweep": (MISSPELT_NULL, ["grids.mnist_mlp.hiden_sweep", "did you mean hidden_sweep?"]),
    "claimed rate": (RATE_NOT_IN_GRID, ["claims.optimum.claimed_rate=0.45", "grids.mnist_mlp.hidden_sweep.rates",
                                        "add 0.45 to"]),
    "threshold": (THRESHOLD_NOT_IN_GRID, ["claims.input_rate.threshold=0.25", "grids.mnist_mlp.input_sweep.rates"]),
    "data.dir a file": (DATA_IN_A_FILE, ["data.dir='afile' is a file, not a folder", "set data.dir to the folder"]),
    "data.dir in a file": (DATA_UNDER_A_FILE, ["data.dir='afile/mnist' is inside afile", "set data.dir"]),
}


@pytest.mark.parametrize("change, expected", BAD_CONFIGS.values(), ids=BAD_CONFIGS)
def test_the_workflow_refuses_a_bad_config_in_one_line_at_dag_time(work, change, expected):
    command = [str(BIN / "snakemake"), "-s", str(ROOT / "Snakefile"), "--directory", str(work), "-n", "--cores", "1",
               "--configfile", configfile(work, change), "--config", "scale=smoke", "experiments=[mnist_mlp]"]
    line = refused(command, work, 1, *expected)
    assert line.startswith("error: config: ")


@pytest.mark.parametrize("change, expected", BAD_CONFIGS.values(), ids=BAD_CONFIGS)
def test_plan_refuses_the_configs_the_workflow_refuses_with_the_same_line(work, change, expected):
    command = [str(BIN / "dropout-lab"), "plan", "--configfile", configfile(work, change), "scale=smoke"]
    refused(command, work, 2, *expected)


# (plan's KEY=VALUE arguments, the texts of the one line) for what a command line gets wrong
BAD_PLAN_ARGUMENTS = {
    "unknown scale": (["scale=bogus"], ["scale='bogus' is not allowed", "choose one of ['auto', 'paper', 'quick', 'smoke']"]),
    "runs_per_job=0": (["runs_per_job=0"], ["runs_per_job=0", "give an integer >= 1"]),
    "runs_per_job<0": (["runs_per_job=-1"], ["runs_per_job=-1", "give an integer >= 1"]),
    "runs_per_job=word": (["runs_per_job=many"], ["runs_per_job='many'", "cell, all or auto"]),
    "seeds not per scale": (["seeds=3"], ["seeds=3 is not a mapping", "seeds={paper: 5, quick: 3, smoke: 2}"]),
    "YAML typo": (["seeds={paper: 5"], ["'seeds={paper: 5' is not YAML (line 1, column 10)",
                                        "'seeds={paper: 5, quick: 3, smoke: 2}'"]),
    "unknown key": (["colour=red"], ["'colour=red' is not KEY=VALUE", "'runs_per_job'"]),
    "misspelt sweep": (["grids={mnist_mlp: {hiden_sweep: null}}"], ["grids.mnist_mlp.hiden_sweep", "hidden_sweep?"]),
    "claimed rate": (["claims={optimum: {claimed_rate: 0.45}}"], ["claimed_rate=0.45 is not a rate", "add 0.45"]),
}


@pytest.mark.parametrize("arguments, expected", BAD_PLAN_ARGUMENTS.values(), ids=BAD_PLAN_ARGUMENTS)
def test_plan_refuses_a_bad_argument_in_one_line(work, arguments, expected):
    refused([str(BIN / "dropout-lab"), "plan", *arguments], work, 2, *expected)


def test_plan_names_a_yaml_typo_in_a_configfile_by_file_line_and_column(work):
    typo = work / "typo.yaml"
    typo.write_text("scale: smoke\nseeds: {paper: 5, quick: 3\nruns_per_job: cell\n")
    refused([sys.executable, "-m", "dropout_lab.cli", "plan", "--configfile", str(typo)], work, 2,
            f"--configfile {typo} is not YAML (line 3, column 13)", "fix the YAML at that place")
    refused([sys.executable, "-m", "dropout_lab.cli", "plan", "--configfile", str(work / "absent.yaml")], work, 2,
            "absent.yaml cannot be read (No such file or directory)")


def test_plan_of_a_good_config_still_plans(work):
    proc = subprocess.run([str(BIN / "dropout-lab"), "plan", "scale=smoke", "experiments=[mnist_mlp]",
                           "runs_per_job=cell", "--configfile", configfile(work, {"claims": {"alpha": 0.01}})],
                          capture_output=True, text=True, timeout=300, cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("plan: scale=smoke, ") and "(runs_per_job=cell)" in proc.stdout


DIGEST = "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"
# (arguments of python -m dropout_lab.data mnist, the texts of the one line)
BAD_DATA_ARGUMENTS = {
    "data dir a file": (["--data-dir", "afile"], ["--data-dir 'afile' is a file, not a folder", "--data-dir data"]),
    "data dir in a file": (["--data-dir", "afile/sub"], ["'afile/sub' is inside afile, which is a file"]),
    "short digest": (["--sha256", "train-images-idx3-ubyte=xyz"],
                     ["train-images-idx3-ubyte='xyz' is not a SHA-256 digest", "64 hex digits"]),
    "non-hex digest": (["--sha256", f"train-images-idx3-ubyte={DIGEST[:-1]}g"], ["is not a SHA-256", "64 hex"]),
    "no file name": (["--sha256", DIGEST], [f"--sha256 '{DIGEST}' is not FILE=DIGEST", "t10k-images-idx3-ubyte"]),
    "unknown file": (["--sha256", f"train-images={DIGEST}"], ["is not FILE=DIGEST with FILE one of"]),
}


@pytest.mark.parametrize("arguments, expected", BAD_DATA_ARGUMENTS.values(), ids=BAD_DATA_ARGUMENTS)
def test_the_data_command_refuses_a_bad_folder_or_digest_without_blaming_the_mirror(work, arguments, expected):
    # An empty mirror and no official ones: had the command tried a source, its line would blame the mirror.
    (work / "empty-mirror").mkdir()
    command = [sys.executable, "-m", "dropout_lab.data", "mnist", "--data-dir", "data", "--mirror-only", "--mirror",
               str(work / "empty-mirror"), *arguments]
    line = refused(command, work, 2, *expected)
    assert "mirror" not in line
    assert not (work / "data").exists()


def test_a_run_with_an_unquoted_non_ascii_folder_is_told_to_quote_it(work):
    command = [sys.executable, "-m", "dropout_lab.train", "scale=smoke", "out=résultats/run", "data_dir=data"]
    refused(command, work, 2, "out=résultats/run: 'é' is not ASCII", """'out="résultats/run"'""")
    assert not (work / "data").exists() and not (work / "résultats").exists()
