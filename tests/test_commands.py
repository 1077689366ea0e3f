"""The README's command lines mean what they say: one --config carries the scale and every setting."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dropout_lab.planning import grid, packs
from tests.conftest import ROOT, SHIPPED


def make_dry(*args: str) -> list[str]:
    """The snakemake command `make -n ...` would run, as arguments."""
    proc = subprocess.run(["make", "-n", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    line = next(l for l in proc.stdout.splitlines() if "snakemake" in l and "--config" in l)
    return shlex.split(line)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("target", ["paper", "report"])
def test_make_passes_scale_and_settings_in_one_config(target):
    args = make_dry(target, "SCALE=quick", "CONFIG=experiments=[mnist_mlp]")
    assert args.count("--config") == 1
    settings = args[args.index("--config") + 1:]
    assert settings[:2] == ["scale=quick", "experiments=[mnist_mlp]"]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_refuses_a_second_config_in_args():
    proc = subprocess.run(["make", "-n", "-C", str(ROOT), "paper", "ARGS=--config experiments=[mnist_mlp]"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "ARGS holds --config, which would replace scale=auto" in proc.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_the_readme_recipe_plans_the_quick_mnist_grid(tmp_path):
    # make paper SCALE=quick CONFIG="experiments=[mnist_mlp]", as a dry run in an empty folder: the README's
    # command plans the shipped grid (its counts come from the planning, whatever that grid holds).
    args = make_dry("paper", "SCALE=quick", "CONFIG=experiments=[mnist_mlp]")
    snakemake = str(Path(sys.executable).parent / "snakemake")
    command = [snakemake, "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path), "-n",
               *args[args.index("--cores"):]]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    quick = {**SHIPPED, "scale": "quick", "experiments": ["mnist_mlp"]}
    expected = len(packs.make_packs(grid.expand_runs(quick), packs.runs_per_job(quick)))
    planned = proc.stdout + proc.stderr
    assert planned.count("rule train:") == expected
    assert "wildcards: pack=cifar10_cnn" not in planned and "scale=quick" in planned


def test_the_gpu_profile_keeps_its_settings_when_the_command_line_adds_config(tmp_path):
    # From the checkout's root, as the README runs it: --config scale=smoke must not drop the profile's packs.
    snakemake = str(Path(sys.executable).parent / "snakemake")
    proc = subprocess.run(
        [snakemake, "--directory", str(tmp_path), "-n", "--profile", "profiles/slurm-gpu",
         "--executor", "local", "--cores", "2", "--config", "scale=smoke", "experiments=[mnist_mlp]"],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    planned = proc.stdout + proc.stderr
    assert proc.returncode == 0, planned[-3000:]
    smoke = {**SHIPPED, "scale": "smoke", "experiments": ["mnist_mlp"]}
    runs = grid.expand_runs(smoke)
    # The profile's runs_per_job: all, one pack per architecture and schedule (width, learning rate, budget).
    assert planned.count("rule train:") == len(packs.make_packs(runs, "all")) == len(
        {(r.width, r.lr, r.epochs) for r in runs}) > 1


@pytest.mark.slow
def test_an_installed_package_trains_from_any_folder(tmp_path, mnist_data_dir):
    # A wheel (not an editable install) carries the Hydra configs; its command runs from another folder.
    wheels, target, work = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(ROOT)], check=True, capture_output=True, timeout=600)
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                    *map(str, wheels.glob("*.whl"))], check=True, capture_output=True, timeout=600)
    work.mkdir()
    env = {**__import__("os").environ, "PYTHONPATH": str(target)}
    probe = subprocess.run([sys.executable, "-c", "import dropout_lab; print(dropout_lab.__file__)"],
                           capture_output=True, text=True, cwd=work, env=env, check=True)
    assert probe.stdout.startswith(str(target))
    proc = subprocess.run([sys.executable, "-m", "dropout_lab.cli", "train", "scale=smoke", "out=run",
                           f"data_dir={mnist_data_dir}", "progress=false", "eval.mc_samples=0"],
                          capture_output=True, text=True, cwd=work, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (work / "run" / "metrics.json").is_file()


def test_missing_tex_stops_the_workflow_before_any_training(tmp_path):
    # A PATH with every tool of this machine but latexmk. The paper is a target, so nothing may start.
    import os

    tools = tmp_path / "bin"
    tools.mkdir()
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        for tool in Path(folder).glob("*") if Path(folder).is_dir() else []:
            if tool.name != "latexmk" and not (tools / tool.name).exists():
                (tools / tool.name).symlink_to(tool)
    work = tmp_path / "work"
    work.mkdir()
    snakemake = str(Path(sys.executable).parent / "snakemake")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{tools}"}
    tmp_path = work
    proc = subprocess.run([snakemake, "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path), "--cores", "1",
                           "--config", "scale=smoke", "experiments=[mnist_mlp]"],
                          capture_output=True, text=True, timeout=300, env=env)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "latexmk is not installed, so the paper cannot be built" in output
    assert not (tmp_path / "results" / "packs").exists() and not (tmp_path / "data").exists()
