"""A run folder's guarantees: it can be written, one process writes in it at a time, and a finished result in it
is never overwritten by a different run.

Light on purpose (no torch): training (dropout_lab.training.train and .pack) and the workflow's unpacking
(dropout_lab.training.unpack) hold a folder's lock while they write in it. The lock is an flock on DIR/.lock,
which the kernel releases when its process ends, however it ends, so a killed process never leaves a folder
locked; the holder removes the file when it is done, so a finished folder holds its results only.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from dropout_lab.settings.checks import ConfigError
from dropout_lab.settings.identity import defining_settings, difference, identity

LOCK = ".lock"
METRICS = "metrics.json"


class FolderInUse(ConfigError):
    """Another process writes in the folder; one line naming the folder and that process."""


def writable_folder(key: str, folder: Path) -> None:
    """The folder exists or can be made, and a file can be written in it: checked before any training."""
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{key}={folder} is a file, not a folder; pass a folder (it is created if missing)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"{key}={folder} cannot be written ({err.strerror or err}); pass a writable folder "
                          "or fix its permissions") from err


def distinct_outs(outs: Sequence[str]) -> None:
    """Each run of a pack has a folder of its own: two runs on one folder would leave one result."""
    seen: dict[Path, int] = {}
    for k, out in enumerate(outs):
        where = Path(out).resolve()
        if where in seen:
            raise ConfigError(f"runs {seen[where]} and {k} of the pack both have out={out}; give each run its "
                              "own out= folder")
        seen[where] = k


def finished(folder: Path, resolved: Mapping[str, Any]) -> bool:
    """Whether `folder` holds this run's finished result (resolved: the run's resolved config); a folder that
    holds another run's result, or a metrics.json that cannot be read, is refused in one line."""
    path = folder / METRICS
    if not path.exists():
        return False
    fix = f"pass another out= or delete {folder} to train this run there"
    try:
        recorded = json.loads(path.read_text())
        found = defining_settings(recorded["config"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        reason = err.strerror if isinstance(err, OSError) else f"{type(err).__name__}: {err}"
        raise ConfigError(f"out={folder} holds {path}, which cannot be read as a finished run "
                          f"({' '.join(str(reason).split())}); {fix}") from err
    if recorded.get("identity") == identity(resolved)["digest"]:
        return True
    diff = difference(found, defining_settings(resolved))
    if diff is None:
        return True
    key, was, now = diff
    raise ConfigError(f"out={folder} holds the finished result of a run with {key}={json.dumps(was, default=str)}, "
                      f"and this run has {key}={json.dumps(now, default=str)}; {fix}")


@contextlib.contextmanager
def writing(folders: Sequence[str | Path]) -> Iterator[None]:
    """Hold the lock of every folder (each once) while the block writes in them; FolderInUse if one is held."""
    with contextlib.ExitStack() as stack:
        for folder in dict.fromkeys(Path(f).resolve() for f in folders):
            stack.enter_context(_locked(folder))
        yield


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    path = folder / LOCK
    fd = _acquire(folder, path)
    try:
        yield
    finally:
        # Removed while still held: a process that opened the file meanwhile finds it gone and takes a new one.
        path.unlink(missing_ok=True)
        os.close(fd)


def _acquire(folder: Path, path: Path) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = _holder(fd)
            os.close(fd)
            if err.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise FolderInUse(f"{folder} is being written by another process ({holder}); wait for it to end "
                              "or stop it, or pass another out= folder") from None
        try:
            current = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            try:  # the pid only names the writer to a second one: a full disk must not stop the run here, but at
                os.ftruncate(fd, 0)  # its first result, whose write says so in one line
                os.write(fd, f"{os.getpid()}\n".encode())
            except OSError:
                pass
            return fd
        os.close(fd)  # its holder removed it as this process opened it: lock the new file


def _holder(fd: int) -> str:
    """The locking process as the lock file names it."""
    try:
        pid = int(os.pread(fd, 32, 0).decode().strip())
    except (OSError, ValueError):
        return "pid unknown"
    try:
        command = " ".join(Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split())
    except OSError:
        command = ""  # not Linux, or the process has just ended
    return f"pid {pid}" + (f": {command[:120]}" if command else "")
