"""The workflow as the Snakemake workflow catalog takes it: workflow/Snakefile, `snakemake --lint` and `snakefmt
--check` clean, the `.test` config run by `--directory .test`, parsing and planning with only the DAG-time
dependencies; `scale: auto` chosen by the machine; and the reference build from the shipped H200 runs."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from dropout_lab.planning import packs, scales
from tests.conftest import ROOT, copy_checkout

BIN = Path(sys.executable).parent
SNAKEMAKE_FILES = [ROOT / "Snakefile", ROOT / "workflow" / "Snakefile", *sorted((ROOT / "workflow" / "rules").glob("*.smk"))]
# What planning may import, besides Snakemake and the standard library (docs/workflow.md names them).
DAG_TIME = ("yaml", "omegaconf", "hydra", "jsonschema")
RUN_TIME = ("torch", "torchvision", "numpy", "pandas", "scipy", "matplotlib", "seaborn", "statsmodels", "pyarrow",
            "tqdm")


def test_snakemake_lint_finds_nothing(tmp_path):
    proc = subprocess.run([str(BIN / "snakemake"), "-s", str(ROOT / "workflow" / "Snakefile"), "--lint"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr


def test_every_snakemake_file_is_snakefmt_formatted():
    proc = subprocess.run([str(BIN / "snakefmt"), "--check", *map(str, SNAKEMAKE_FILES)], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_snakefmt_check_fails_on_a_file_it_would_change(tmp_path):
    # The check above can fail: the same command refuses a rule written on one badly spaced line.
    bad = tmp_path / "bad.smk"
    bad.write_text('rule x:\n    output: "a"\n    shell: "touch {output}"\n')
    proc = subprocess.run([str(BIN / "snakefmt"), "--check", str(bad)], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0


def job_counts(output: str) -> dict[str, int]:
    table = output[output.index("Job stats:"):]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, flags=re.MULTILINE)}


def test_the_test_directory_plans_its_own_small_grid(tmp_path):
    # snakemake --directory .test, in a copy: its config/config.yaml is laid over the shipped one.
    shutil.copytree(ROOT / ".test" / "config", tmp_path / "config")
    proc = subprocess.run([str(BIN / "snakemake"), "-s", str(ROOT / "workflow" / "Snakefile"), "--directory",
                           str(tmp_path), "-n", "--cores", "2"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    test_config = yaml.safe_load((ROOT / ".test" / "config" / "config.yaml").read_text())
    assert f"plan: scale={test_config['scale']}, " in out  # the dry run prints its plan, for the test grid
    counts = job_counts(out)
    planned = re.search(r"plan: scale=smoke, (\d+) runs in (\d+) packs", out)
    assert counts["train"] == int(planned.group(2)) and counts["paper"] == 1
    assert "cifar10" not in out  # MNIST only
    # ... and the shipped grid, without that folder, is the paper's (both experiments)
    alone = subprocess.run([str(BIN / "snakemake"), "-s", str(ROOT / "workflow" / "Snakefile"), "--directory",
                            str(tmp_path / "elsewhere"), "-n", "--cores", "2", "--config", "scale=smoke"],
                           capture_output=True, text=True, timeout=300)
    assert alone.returncode == 0 and job_counts(alone.stdout + alone.stderr)["train"] > counts["train"]


def test_the_workflow_plans_with_only_its_dag_time_dependencies(tmp_path):
    # The run-time libraries and any installed dropout_lab refused on import: the workflow must parse and plan
    # from the checkout's src/ with Snakemake and the DAG-time libraries alone.
    checkout = tmp_path / "checkout"  # a copy, so that the package can only come from its own src/
    guard = tmp_path / "guard"
    guard.mkdir()
    # Refused when the import comes from the checkout's code (Snakemake's own plugins may import what they like).
    (guard / "sitecustomize.py").write_text(
        "import importlib.abc, sys, traceback\n"
        f"BLOCKED, CHECKOUT = {RUN_TIME!r}, {str(checkout)!r}\n"
        "class Refuse(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in BLOCKED and any(f.filename.startswith(CHECKOUT)\n"
        "                                                 for f in traceback.extract_stack()):\n"
        "            raise ImportError(f'{name} is a run-time dependency, imported while planning')\n"
        "        if name == 'dropout_lab':\n"
        "            print('dropout_lab from', [p for p in sys.path if p.startswith(CHECKOUT)][:1], file=sys.stderr)\n"
        "sys.meta_path.insert(0, Refuse())\n")
    copy_checkout(checkout)
    work = tmp_path / "work"
    env = {**os.environ, "PYTHONPATH": str(guard), "PYTHONNOUSERSITE": "1"}
    proc = subprocess.run([str(BIN / "python"), "-c",
                           "import sys; from snakemake.cli import main; sys.argv[0] = 'snakemake'; main()",
                           "-s", str(checkout / "workflow" / "Snakefile"), "--directory", str(work), "-n",
                           "--cores", "2", "--config", "scale=smoke", "experiments=[mnist_mlp]"],
                          capture_output=True, text=True, timeout=300, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "plan: scale=smoke" in out and job_counts(out)["train"] > 0
    assert f"dropout_lab from ['{checkout / 'src'}']" in out


def test_scale_auto_is_paper_where_a_gpu_is_found_and_quick_elsewhere(monkeypatch):
    monkeypatch.setattr(scales, "gpu_visible", lambda device: True)
    config = {"scale": "auto", "device": "auto"}
    assert scales.resolve_scale(config).startswith("scale=auto chose paper") and config["scale"] == "paper"
    monkeypatch.setattr(scales, "gpu_visible", lambda device: False)
    config = {"scale": "auto", "device": "auto"}
    assert scales.resolve_scale(config).startswith("scale=auto chose quick: no GPU was found")
    assert config["scale"] == "quick"
    for asked in ("paper", "quick", "smoke"):  # a scale asked for by name is obeyed, GPU or not
        config = {"scale": asked, "device": "auto"}
        assert scales.resolve_scale(config) == "" and config["scale"] == asked


def test_scale_auto_follows_the_device_the_jobs_are_given():
    # device=cuda: the jobs will find a GPU (dropout_lab.planning.packs.gpu_visible), so the paper scale.
    assert packs.gpu_visible("cuda") and not packs.gpu_visible("cpu")
    config = {"scale": "auto", "device": "cuda"}
    scales.resolve_scale(config)
    assert config["scale"] == "paper"


def test_the_reference_archive_is_small_and_matches_its_grid():
    archive = ROOT / "reference" / "mnist_mlp-paper-h200.tgz"
    assert archive.stat().st_size < 1_000_000
    with tarfile.open(archive) as tar:
        names = [m.name for m in tar.getmembers() if m.isfile()]
    assert len(names) == 145 and all(re.fullmatch(r"\./results/runs/mnist_mlp/[^/]+/[^/]+/seed[0-4]/metrics\.json", n)
                                      for n in names)
    grid = yaml.safe_load((ROOT / "reference" / "grid.yaml").read_text())
    assert grid["scale"] == "paper" and grid["experiments"] == ["mnist_mlp"]


def digest_tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()} if folder.exists() else {}


@pytest.mark.slow
def test_make_reference_builds_the_paper_scale_pdf_without_training_or_touching_results(tmp_path):
    """... and a paper job that fails keeps the PDF it would have replaced."""
    if shutil.which("latexmk") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must have latexmk (.ci/run installs it)")
        pytest.skip("latexmk is not installed (tools/setup-tex)")
    # In a copy of the checkout, with a finished result of the user's own in results/.
    checkout = tmp_path / "checkout"
    copy_checkout(checkout)
    own = checkout / "results" / "runs" / "mine" / "metrics.json"
    own.parent.mkdir(parents=True)
    own.write_text('{"mine": true}\n')
    before = digest_tree(checkout / "results")
    venv = ROOT / ".venv"
    proc = subprocess.run(["make", "reference", "CORES=2", f"VENV={venv}"], cwd=checkout, capture_output=True,
                          text=True, timeout=900, env={**os.environ, "PATH": f"{venv / 'bin'}:{os.environ['PATH']}"})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    built = checkout / "build" / "reference" / "results"
    assert (built / "paper" / "paper.pdf").stat().st_size > 0
    assert "rule train:" not in out and "rule fetch_data:" not in out and not (built / "packs").exists()
    assert not (checkout / "build" / "reference" / "data").exists()  # no training data was needed
    assert "plan: scale=paper, 145 runs in " in out and "145 finished, 0 to train now" in out
    verdicts = (built / "claims" / "verdicts.csv").read_text()
    assert verdicts.startswith("claim,estimate,verdict")
    assert digest_tree(checkout / "results") == before

    # A paper build that fails (here a LaTeX error) leaves the previous PDF in place, byte for byte.
    pdf = (built / "paper" / "paper.pdf").read_bytes()
    tex = checkout / "paper" / "paper.tex"
    tex.write_text(tex.read_text().replace("\\begin{document}", "\\begin{document}\\undefinedcommand", 1))
    failed = subprocess.run([str(venv / "bin" / "snakemake"), "-s", str(checkout / "Snakefile"), "--directory",
                             str(checkout / "build" / "reference"), "--cores", "2", "--configfile",
                             str(checkout / "reference" / "grid.yaml"), "--allowed-rules", "paper", "everything"],
                            capture_output=True, text=True, timeout=600)
    assert failed.returncode != 0 and "error: latexmk failed: Undefined control sequence" in failed.stderr
    assert (built / "paper" / "paper.pdf").read_bytes() == pdf


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_a_missing_or_damaged_reference_archive_is_one_line_before_any_work(tmp_path, damage):
    checkout = copy_checkout(tmp_path / "checkout")
    archive = checkout / "reference" / "mnist_mlp-paper-h200.tgz"
    if damage == "missing":
        archive.unlink()
    else:
        archive.write_bytes(archive.read_bytes()[:1000])
    venv = ROOT / ".venv"
    proc = subprocess.run(["make", "reference", f"VENV={venv}"], cwd=checkout, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PATH": f"{venv / 'bin'}:{os.environ['PATH']}"})
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode != 0 and len(errors) == 1, proc.stderr
    assert errors[0].startswith("error: reference/mnist_mlp-paper-h200.tgz ")
    assert errors[0].endswith("restore it with: git checkout -- reference/mnist_mlp-paper-h200.tgz")
    assert not (checkout / "build").exists()
