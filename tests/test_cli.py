"""The `dropout-lab` command has the usual manners: --help and --version, a --help for every subcommand under its
own name, one line for a wrong command, shell completion, and a plan of what is left in this folder."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml

import dropout_lab
from dropout_lab import cli
from dropout_lab.planning import plan as planning

BIN = Path(sys.executable).parent
NAMES = [name for name, _, _ in cli.SUBCOMMANDS]


def run_main(monkeypatch, capsys, *argv: str) -> tuple[int, str, str]:
    """dropout-lab ARGV in this process: (exit status, stdout, stderr); sys.argv as it was afterwards."""
    monkeypatch.setattr(sys, "argv", ["dropout-lab", *argv])
    try:
        status = cli.main(list(argv))
    except SystemExit as stop:
        status = stop.code
    out, err = capsys.readouterr()
    return status, out, err


def command(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The installed dropout-lab command, as a user runs it."""
    return subprocess.run([str(BIN / "dropout-lab"), *argv], capture_output=True, text=True, timeout=300, cwd=cwd)


def test_help_lists_every_subcommand_with_what_it_does(monkeypatch, capsys):
    status, out, _ = run_main(monkeypatch, capsys, "--help")
    assert status == 0 and out.startswith("usage: dropout-lab ")
    for name, summary, _ in cli.SUBCOMMANDS:
        assert f"    {name}" in out
        assert " ".join(summary.split()[:3]) in " ".join(out.split()), name


def test_no_command_prints_the_help_and_fails(monkeypatch, capsys):
    status, out, err = run_main(monkeypatch, capsys)
    assert status == 2 and not out and err.startswith("usage: dropout-lab ") and "plan" in err


def test_version_is_the_installed_packages():
    proc = command("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"dropout-lab {metadata.version('dropout-lab')}\n"


def test_version_without_an_install_is_the_packages_own(monkeypatch):
    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(cli.metadata, "version", not_installed)
    assert cli.version() == dropout_lab.__version__ == "0.2.0"


def test_the_release_is_one_number_in_pyproject_the_package_and_the_citation():
    root = Path(__file__).resolve().parents[1]
    project = __import__("tomllib").loads((root / "pyproject.toml").read_text())["project"]
    citation = yaml.safe_load((root / "CITATION.cff").read_text())
    assert project["version"] == dropout_lab.__version__ == citation["version"]


@pytest.mark.parametrize("name", ["plan", "paper", "completion"])
def test_each_own_subcommand_has_a_help_under_its_name(monkeypatch, capsys, name):
    status, out, _ = run_main(monkeypatch, capsys, name, "--help")
    assert status == 0 and out.startswith(f"usage: dropout-lab {name} ")
    description = {n: d for n, _, d in cli.SUBCOMMANDS}[name]
    assert " ".join(description.split()[:4]) in " ".join(out.split())


# (wrapped tool, a text of its own help): each answers --help itself, under the dropout-lab name where it has a usage
WRAPPED_HELP = {"pack": "usage: dropout-lab pack ", "data": "usage: dropout-lab data ",
                "train": "== Configuration groups =="}


@pytest.mark.parametrize("name", WRAPPED_HELP)
def test_each_wrapped_tool_answers_its_own_help(name):
    proc = command(name, "--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert WRAPPED_HELP[name] in proc.stdout, proc.stdout[:500]
    assert "python -m" not in proc.stdout.split("\n\n")[0]  # the usage names the command the user typed


def test_a_command_that_does_not_exist_is_one_line(monkeypatch, capsys):
    status, out, err = run_main(monkeypatch, capsys, "plot")
    assert status == 2 and not out
    assert err.count("\n") == 1 and "invalid choice: 'plot'" in err and "see dropout-lab --help" in err
    assert all(f"'{name}'" in err for name in NAMES)


def test_a_plan_option_without_its_value_is_one_line(monkeypatch, capsys):
    status, _, err = run_main(monkeypatch, capsys, "plan", "scale=smoke", "--configfile")
    assert status == 2 and err == ("error: dropout-lab plan: argument --configfile: expected one argument; see "
                                   "dropout-lab plan --help\n")


def test_plan_merges_configfiles_before_settings_wherever_they_stand(tmp_path):
    overlay = tmp_path / "quick.yaml"
    overlay.write_text("scale: quick\nruns_per_job: all\n")
    config = cli.plan_config([str(overlay)], ["scale=smoke"])
    assert config["scale"] == "smoke" and config["runs_per_job"] == "all"  # as snakemake --configfile --config


def test_plan_counts_what_is_finished_and_times_it_by_this_machines_jobs(monkeypatch, capsys, tmp_path):
    settings = ["scale=smoke", "experiments=[mnist_mlp]", "runs_per_job=cell"]
    config = cli.plan_config([], settings)
    runs, _, made, expected = planning.checked_grid(config, None)
    first = made[0]
    for run in first.runs:  # a finished pack, timed by Snakemake
        (tmp_path / run.folder).mkdir(parents=True)
        (tmp_path / run.folder / "metrics.json").write_text('{"status": "ok"}\n')
    benchmark = tmp_path / planning.BENCHMARKS / f"{first.name}.tsv"
    benchmark.parent.mkdir(parents=True)
    benchmark.write_text("s\th:m:s\tmax_rss\n12.0\t0:00:12\t300.0\n")
    monkeypatch.chdir(tmp_path)
    # KEY=VALUE before and after --configfile, as the workflow's own command lines have them.
    (tmp_path / "more.yaml").write_text("claims: {alpha: 0.01}\n")
    status, out, err = run_main(monkeypatch, capsys, "plan", *settings[:2], "--configfile", "more.yaml", settings[2])
    assert status == 0, err
    finished, left = len(first.runs), len(runs) - len(first.runs)
    assert out.startswith(f"plan: scale=smoke, {len(runs)} runs in {len(made)} packs (runs_per_job=cell): "
                          f"{finished} finished, {left} to train now in {len(made) - 1} packs, on ")
    line = next(line for line in out.splitlines() if line.startswith("plan: mnist_mlp: "))
    assert f"; {finished} finished, {left} to train now, about " in line
    run_epochs = sum(expected[run.folder]["train.epochs"] for run in first.runs)
    assert f"(from 1 job measured on this machine: {12.0 / run_epochs:.3g} s per run-epoch, " in line
    assert "x the FLOP model's estimate for them)" in line


# ----------------------------------------------------------------------------------------------- shell completion


def completions(script: str, *words: str, shell: str = "bash") -> list[str]:
    """What the completion `script` offers for `dropout-lab WORDS` (the last word being completed), its function
    called as bash calls it: COMP_WORDS and COMP_CWORD set, then the command, the word and the one before. In zsh
    (bashcompinit) COMP_WORDS counts from 1 and zsh itself filters the offers by the word."""
    line = ["dropout-lab", *words]
    quoted = " ".join(shlex.quote(word) for word in line)
    probe = (f"{script}\nCOMP_WORDS=({quoted}); COMP_CWORD={len(words)}\n"
             f"_dropout_lab dropout-lab {shlex.quote(line[-1])} {shlex.quote(line[-2])}\n"
             'printf "%s\\n" "${COMPREPLY[@]}"\n')
    if shell == "zsh":
        probe = f"autoload -U compinit && compinit -u\n{probe}"
    proc = subprocess.run([shell, "-c", probe], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and not proc.stderr, proc.stderr
    return proc.stdout.split()


@pytest.fixture(scope="module")
def bash_script() -> str:
    proc = command("completion", "bash")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_completion_completes_subcommands_and_their_words(bash_script):
    assert completions(bash_script, "pl") == ["plan"]
    assert sorted(completions(bash_script, "")) == sorted([*NAMES, "--help", "--version"])
    assert completions(bash_script, "completion", "") == ["-h", "--help", "bash", "zsh"]
    assert completions(bash_script, "plan", "sc") == ["scale="]
    assert completions(bash_script, "plan", "--conf") == ["--configfile"]
    assert completions(bash_script, "data", "mn") == ["mnist"]


def test_the_completion_scripts_name_every_subcommand(bash_script, monkeypatch, capsys):
    status, zsh, _ = run_main(monkeypatch, capsys, "completion", "zsh")
    assert status == 0 and zsh.startswith("autoload -U +X bashcompinit && bashcompinit\n")
    for script in (bash_script, zsh):
        assert "complete -F _dropout_lab dropout-lab" in script
        for name in NAMES:
            assert f"        {name}) words=" in script, name


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_completes_each_subcommands_words(monkeypatch, capsys):
    _, zsh, _ = run_main(monkeypatch, capsys, "completion", "zsh")
    probe = f"autoload -U compinit && compinit -u\n{zsh}\nprint -r -- $_comps[dropout-lab]"
    registered = subprocess.run(["zsh", "-c", probe], capture_output=True, text=True, timeout=60)
    assert registered.stdout == "_bash_complete -F _dropout_lab\n", registered.stderr
    assert "plan" in completions(zsh, "pl", shell="zsh")
    assert completions(zsh, "completion", "", shell="zsh") == ["-h", "--help", "bash", "zsh"]
    assert "scale=" in completions(zsh, "plan", "sc", shell="zsh")
    assert "plan" not in completions(zsh, "plan", "sc", shell="zsh")


def test_plan_of_scale_auto_says_which_scale_it_chose(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    status, out, err = run_main(monkeypatch, capsys, "plan", "scale=auto", "device=cpu", "experiments=[mnist_mlp]")
    assert status == 0, err
    chose, first = out.splitlines()[:2]
    assert chose.startswith("plan: scale=auto chose quick: no GPU was found") and first.startswith("plan: scale=quick, ")


def test_paper_hands_every_argument_to_snakemake(tmp_path):
    # A dry run in an empty folder: the checkout's workflow, planned with the settings given after `paper`.
    proc = command("paper", "-n", "--config", "scale=smoke", "experiments=[mnist_mlp]", cwd=tmp_path)
    planned = proc.stdout + proc.stderr
    assert proc.returncode == 0, planned[-3000:]
    assert "rule train:" in planned and "wildcards: pack=cifar10_cnn" not in planned
    assert not (tmp_path / "results").exists()  # -n reached snakemake: nothing ran
