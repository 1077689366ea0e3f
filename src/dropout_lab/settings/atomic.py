"""Atomic file writes: a reader sees the old file or the complete new one, never half."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

# mkstemp creates files readable by the owner only; finished files get the
# usual permissions instead (0666 less the process umask).
_UMASK = os.umask(0)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` on success.

    The temporary file lives in the same folder so the final `os.replace` is a
    rename on one file system. On any error the temporary file is removed and
    `target` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, _FILE_MODE)
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_open(target: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file for writing that replaces `target` when closed without error."""
    with atomic_path(target) as tmp:
        with open(tmp, mode) as fh:
            yield fh


def finite_or_none(value: object) -> object:
    """NaN and infinities become None (JSON null), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def write_json(target: str | os.PathLike, data: object) -> None:
    """Strict JSON (non-finite numbers written as null), atomically."""
    with atomic_open(target, "w") as fh:
        json.dump(finite_or_none(data), fh, indent=2, sort_keys=False, allow_nan=False)
        fh.write("\n")


class WriteError(OSError):
    """A result could not be written; the message is one line naming the file, the cause and the fix."""


def write_result(target: str | os.PathLike, data: object) -> None:
    """write_json, with a failure turned into one WriteError line; the file there is left as it was."""
    try:
        write_json(target, data)
    except OSError as err:
        raise WriteError(f"could not write {target}: {err.strerror or err}; nothing there was changed; "
                         "free space or make the folder writable, then run again") from err
