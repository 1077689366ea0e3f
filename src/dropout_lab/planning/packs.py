"""The runs trained together by one job (a pack), and whether the jobs will find a GPU.

A run's numbers do not depend on its pack (dropout_lab.training.pack), so how the runs are
split into packs is a choice of speed only: config `runs_per_job`.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from dropout_lab.planning.checks import GridError
from dropout_lab.settings.config import PER_RUN

if TYPE_CHECKING:
    from dropout_lab.planning.grid import Run


@dataclass(frozen=True)
class Pack:
    """Runs trained together by one job (dropout_lab.training.pack); `name` is its folder under results/packs/."""

    name: str
    runs: tuple[Run, ...]

    def arguments(self, settings: Mapping[str, Any], extra: list[str]) -> str:
        """The pack command's arguments: shared overrides, then one --run per run with its own (PER_RUN, and in
        a pack of several architectures or schedules those that are not every run's: its width, lr, epochs)."""
        per_run = tuple(f"{key}{sep}" for key in PER_RUN for sep in "=.")  # a run's own overrides
        overrides = [run.overrides(settings) for run in self.runs]
        shared = [a for a in overrides[0] if not a.startswith(per_run) and all(a in other for other in overrides)]
        args = [*shared, *extra]
        for own in overrides:
            args += ["--run", " ".join(a for a in own if a not in shared)]
        return " ".join(shlex.quote(arg) for arg in args)


def check_pack_json(path: str) -> None:
    """A pack.json that cannot be read stops the workflow before any job runs, in one line naming it: left
    there, Snakemake would delete its runs' intact metrics.json and then fail to unpack them again."""
    try:
        runs = json.loads(Path(path).read_text())["runs"]
        if not isinstance(runs, list):
            raise TypeError(f"runs is {type(runs).__name__}, not a list")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        reason = err.msg if isinstance(err, json.JSONDecodeError) else f"{type(err).__name__}: {err}"
        raise GridError(f"{path} cannot be read ({reason}): a truncated or damaged file; delete it and run "
                        "again: its runs' finished metrics.json are kept, and the pack is rebuilt from them "
                        "without training") from None


def gpu_visible(device: str) -> bool:
    """Whether the runs will train on a GPU: device=cuda[:N], or auto on a machine that shows an
    NVIDIA GPU (found without importing torch, so that planning stays light)."""
    if device == "cpu":
        return False
    if device.startswith("cuda"):
        return True
    if os.environ.get("CUDA_VISIBLE_DEVICES", "unset").strip() in ("", "-1"):
        return False
    gpus = Path("/proc/driver/nvidia/gpus")
    if (gpus.is_dir() and any(gpus.iterdir())) or any(Path("/dev").glob("nvidia[0-9]*")):
        return True
    if shutil.which("nvidia-smi"):
        try:
            listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return False
        return "GPU" in listed
    return False


# runs_per_job auto on a CPU: up to this many runs of an experiment in one job, whatever their architecture and
# schedule (the job trains its runs that share them together, one such stack after another). A job's start-up
# (about 5 s: Python, torch, Hydra) is then paid a few times per grid, not once per cell or width, while the
# smoke and quick grids still make more jobs than a laptop has cores (6 and 11 on MNIST).
CPU_PACK = 32
MIXED = "mixed"  # runs_per_job auto on a CPU, as make_packs takes it: up to CPU_PACK runs of any architecture


def runs_per_job(config: Mapping[str, Any]) -> int | str:
    """The configured runs_per_job; auto is all on a GPU (many small nets keep it busy) and MIXED on a CPU
    (jobs of up to CPU_PACK runs side by side on the cores)."""
    value = check_runs_per_job(config["runs_per_job"])
    if value == "auto":
        return "all" if gpu_visible(config["device"]) else MIXED
    return value


RUNS_PER_JOB_WORDS = ("auto", "all", "cell")


def check_runs_per_job(value: Any) -> int | str:
    """An integer >= 1 or one of RUNS_PER_JOB_WORDS, else GridError in one line (before any pack is made)."""
    word = isinstance(value, str) and value in RUNS_PER_JOB_WORDS
    count = isinstance(value, int) and not isinstance(value, bool) and value >= 1
    if word or count:
        return value
    raise GridError(f"config: runs_per_job={value!r} is not allowed; give an integer >= 1, cell, all or auto "
                    "(e.g. --config runs_per_job=cell)")


def _gate_folder(run: Run) -> str:
    return run.folder.split("/")[3]


def _group(run: Run, runs_per_job: int | str) -> str:
    """The runs a pack may hold: a run alone (1), a cell's seeds (cell), else an experiment's runs that share
    their architecture and schedule (a pack per width, learning rate and budget)."""
    if runs_per_job == 1:
        return f"{run.experiment}/{_gate_folder(run)}/{run.cell}/seed{run.seed}"
    if runs_per_job == "cell":
        return f"{run.experiment}/{_gate_folder(run)}/{run.cell}"
    key = run.experiment
    if runs_per_job == MIXED:
        return key
    for part, value in (("width", run.width), ("lr", run.lr), ("ep", run.epochs)):
        key += "" if value is None else f"/{part}{value:g}"
    return key


def _schedule(run: Run) -> tuple:
    """A run's width, learning rate and budget, the defaults (None) first: what a mixed pack's stacks differ in."""
    return tuple((value is not None, value or 0) for value in (run.width, run.lr, run.epochs))


def make_packs(runs: list[Run], runs_per_job: int | str) -> list[Pack]:
    """Split the runs into jobs: 1 (a job per run), cell (the seeds of a grid cell, for one
    gate), N (up to N runs of an experiment that share an architecture and schedule), all (every such
    run of an experiment) or MIXED (up to CPU_PACK runs of an experiment, those that share an architecture and
    schedule side by side, so that a job holds few stacks)."""
    if runs_per_job != MIXED:
        check_runs_per_job(runs_per_job)
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(_group(run, runs_per_job), []).append(run)
    packs = []
    for key, members in groups.items():
        members.sort(key=lambda r: (_schedule(r) if runs_per_job == MIXED else (), _gate_folder(r), r.cell, r.seed))
        if runs_per_job in (1, "cell"):
            packs.append(Pack(key, tuple(members)))
        elif runs_per_job == "all":
            packs.append(Pack(f"{key}/all", tuple(members)))
        else:
            size = CPU_PACK if runs_per_job == MIXED else int(runs_per_job)
            parts = -(-len(members) // size)
            if runs_per_job == MIXED:  # jobs of even sizes (a core's worth each), not a small one left at the end
                base, extra = divmod(len(members), parts)
                sizes = [base + 1] * extra + [base] * (parts - extra)
            else:
                sizes = [min(size, len(members) - i * size) for i in range(parts)]
            starts = [sum(sizes[:i]) for i in range(parts)]
            packs += [Pack(f"{key}/part{i + 1}of{parts}", tuple(members[starts[i]:starts[i] + sizes[i]]))
                      for i in range(parts)]
    return packs
