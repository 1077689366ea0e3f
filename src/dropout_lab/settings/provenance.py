"""Where code and numbers come from: this project's git commit, and library versions.

The commit is read only when the package runs from its own checkout (the git
top-level folder is the project root that holds src/dropout_lab); code copied into
another repository, or installed into site-packages, records no commit rather than
that repository's.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[3]


def _git(args: list[str], root: Path) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10,
                          check=True).stdout.strip()


def git_commit(root: Path = PROJECT_ROOT) -> dict[str, object]:
    """{"commit": sha or None, "dirty": bool or None} of the checkout this package runs from."""
    unknown = {"commit": None, "dirty": None}
    try:
        if Path(_git(["rev-parse", "--show-toplevel"], root)).resolve() != root.resolve():
            return unknown  # a repository around the code, not the project's own checkout
        dirty = _git(["status", "--porcelain", "--untracked-files=no"], root)
        return {"commit": _git(["rev-parse", "HEAD"], root), "dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return unknown


def in_history(commit: str, root: Path = PROJECT_ROOT) -> bool | None:
    """Whether `commit` is a commit of this project's checkout (None when there is no checkout)."""
    if git_commit(root)["commit"] is None:
        return None
    try:
        _git(["cat-file", "-e", f"{commit}^{{commit}}"], root)
        return True
    except subprocess.CalledProcessError:
        return False
    except (OSError, subprocess.SubprocessError):
        return None


ANALYSIS_LIBRARIES = ("pandas", "numpy", "scipy", "statsmodels", "seaborn", "matplotlib", "snakemake")


def library_versions(names: tuple[str, ...] = ANALYSIS_LIBRARIES) -> dict[str, str]:
    """Installed versions of `names` (and Python); a library that is not installed is left out."""
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return platform.processor() or platform.machine()
