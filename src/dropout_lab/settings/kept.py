"""Results kept between invocations and between folders, each under the digest of everything it is made of.

Something the workflow makes again and again with the same inputs (the Hydra compositions it starts with, the
theory's numerical checks in every fresh folder) is kept in the user's cache,
$XDG_CACHE_HOME/dropout-lab/KIND (~/.cache by default), as JSON named by its digest. It is taken from there only
when the digest matches, so an edit to any of its inputs makes a new one; an entry that cannot be read is made
again, and a cache that cannot be written is passed by. DROPOUT_LAB_CACHE=off makes everything anew.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable

from dropout_lab.settings.atomic import atomic_open


def cache_folder(kind: str) -> Path | None:
    """Where results of `kind` are kept; None when DROPOUT_LAB_CACHE=off."""
    if os.environ.get("DROPOUT_LAB_CACHE", "").lower() == "off":
        return None
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "dropout-lab" / kind


SOURCES = (".py", ".yaml")  # what a digest reads of a folder: code and settings, never caches or notes


def digest(parts: Any, folders: Iterable[Path] = ()) -> str:
    """The SHA-256 of `parts` (JSON) and of every source file (SOURCES) under each of `folders` (or the file
    itself), by name and content."""
    h = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode())
    for folder in folders:
        folder = Path(folder)
        files = [folder] if folder.is_file() else sorted(p for p in folder.rglob("*") if p.is_file())
        for path in files:
            if path.suffix in SOURCES:
                name = path.name if path == folder else str(path.relative_to(folder))
                h.update(f"{name}\0".encode() + path.read_bytes() + b"\0")
    return h.hexdigest()


def kept(kind: str, key: str, make: Callable[[], Any]) -> tuple[Any, bool]:
    """(the result under `key`, whether it came from the cache): make() when it is not kept, then kept."""
    folder = cache_folder(kind)
    path = None if folder is None else folder / f"{key}.json"
    if path is not None and path.is_file():
        try:
            return json.loads(path.read_text()), True
        except (OSError, ValueError):
            pass
    result = make()
    if path is not None:
        try:
            with atomic_open(path) as fh:
                json.dump(result, fh, allow_nan=False)  # a value JSON cannot hold exactly is not kept
        except (OSError, ValueError, TypeError):
            pass
    return result, False
