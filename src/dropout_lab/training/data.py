"""MNIST and CIFAR-10: fetch from an ordered list of sources, verify, parse with torchvision, cache as tensors.

Every file is checked against a pinned SHA-256 before anything reads it. For
MNIST the digest is that of the decompressed IDX file, so the official .gz
files and a re-compressed copy both pass. The parsing is torchvision's
(dropout_lab.training.parsers: torchvision.datasets.MNIST and CIFAR10, always
with download=False, on the verified files only).

Downloads and the cache are written atomically, so an interrupted or failed
fetch leaves nothing that a later run could take for good data.

Command line (used by the workflow's data rule):
    python -m dropout_lab.training.data mnist --data-dir data --mirror ../shared/data/mnist
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import sys
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Iterable, Mapping

import torch

from dropout_lab.settings.atomic import atomic_path, write_json
from dropout_lab.settings.datasets import CIFAR10, MNIST, SPECS, DatasetSpec, cache_paths  # noqa: F401  (re-exported)

CACHE_FORMAT = 1
DOWNLOAD_TIMEOUT_S = 60


from dropout_lab.training.parsers import (  # noqa: F401  (re-exported: the data errors and splits)
    PARSERS, DataError, Splits, sha256_file,
)


# --------------------------------------------------------------------------- fetching


class _NotFound(Exception):
    pass




def _open_source(location: str):
    """Open a URL or a local path for reading bytes; raise _NotFound if it is absent."""
    if location.startswith(("http://", "https://")):
        try:
            return urllib.request.urlopen(location, timeout=DOWNLOAD_TIMEOUT_S)
        except urllib.error.HTTPError as err:
            if err.code == 404:
                raise _NotFound from err
            raise OSError(f"HTTP {err.code}") from err
        except urllib.error.URLError as err:
            raise OSError(f"unreachable: {err.reason}") from err
    path = Path(location.removeprefix("file://")).expanduser()
    if not path.is_file():
        raise _NotFound
    return open(path, "rb")


def _join(source: str, name: str) -> str:
    if source.startswith(("http://", "https://")):
        return source.rstrip("/") + "/" + name
    return str(Path(source.removeprefix("file://")).expanduser() / name)


def _fetch_one(name: str, expected: str, sources: Iterable[str], dest_dir: Path, gzipped: bool) -> Path:
    """Put a copy of `name` whose digest is `expected` at dest_dir/name, or raise DataError."""
    dest = dest_dir / name
    if dest.is_file():
        if sha256_file(dest) == expected:
            return dest
        dest.unlink()  # never leave a file that does not verify where a later run looks
    tried: list[str] = []
    for source in sources:
        candidates = [name + ".gz", name] if gzipped else [name]
        for candidate in candidates:
            location = _join(source, candidate)
            try:
                with _open_source(location) as stream, atomic_path(dest) as tmp:
                    reader = gzip.GzipFile(fileobj=stream) if candidate.endswith(".gz") and gzipped else stream
                    digest = hashlib.sha256()
                    with open(tmp, "wb") as out:
                        while block := reader.read(1 << 20):
                            digest.update(block)
                            out.write(block)
                    if digest.hexdigest() != expected:
                        raise ValueError(f"SHA-256 {digest.hexdigest()[:16]}... is not the pinned {expected[:16]}...")
                return dest
            except _NotFound:
                tried.append(f"{location} (not found)")
            except (OSError, EOFError, zlib.error, ValueError) as err:
                reason = str(err) or type(err).__name__
                tried.append(f"{location} ({reason})")
    if not tried:
        raise DataError(f"no sources for {name}")
    raise DataError(f"could not get a verified {name}: tried " + "; ".join(tried))


def sources_for(spec: DatasetSpec, mirror: str | None, official: bool = True) -> list[str]:
    """The user's mirror first (if any), then the official mirrors (unless official=False)."""
    return ([mirror] if mirror else []) + (list(spec.official_mirrors) if official else [])


def fetch(
    spec: DatasetSpec,
    data_dir: Path,
    mirror: str | None,
    checksums: Mapping[str, str] | None = None,
    official: bool = True,
) -> dict[str, Path]:
    """Fetch and verify every file of `spec` into data_dir/NAME/raw; return their paths."""
    pins = dict(spec.files)
    unknown = set(checksums or {}) - set(pins)
    if unknown:
        raise DataError(f"dataset.checksums names unknown file(s) {sorted(unknown)}; {spec.name} has {sorted(pins)}")
    pins.update(checksums or {})
    raw_dir = Path(data_dir) / spec.name / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    sources = sources_for(spec, mirror, official)
    paths = {}
    for name, expected in pins.items():
        try:
            paths[name] = _fetch_one(name, expected, sources, raw_dir, spec.gzipped)
        except DataError as err:
            hint = (
                f" Point dataset.mirror (or ${spec.mirror_env}) at an http(s) URL or a local folder "
                f"that holds the {spec.name} files."
            )
            raise DataError(str(err) + "." + hint) from None
    return paths


# --------------------------------------------------------------------------- parsing
#
# torchvision's dataset classes parse the files; the project hands them only files it has verified, laid out where
# those classes look, in a staging folder of its own that is removed afterwards, and always with download=False (they
# never reach a network). Their tensors are then put in the project's layout: images (N, H, W) or (N, C, H, W) uint8.




# --------------------------------------------------------------------------- cache


def _cache_is_valid(cache: Path, manifest: Path, pins: Mapping[str, str]) -> bool:
    if not (cache.is_file() and manifest.is_file()):
        return False
    try:
        meta = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return False
    return (
        meta.get("format") == CACHE_FORMAT
        and meta.get("raw_sha256") == dict(pins)
        and meta.get("cache_sha256") == sha256_file(cache)
    )


def load(
    name: str,
    data_dir: str | Path = "data",
    mirror: str | None = None,
    checksums: Mapping[str, str] | None = None,
    official: bool = True,
) -> Splits:
    """Return the verified dataset, fetching and caching it on first use."""
    if name not in SPECS:
        raise DataError(f"unknown dataset {name!r}; choose one of {sorted(SPECS)}")
    spec = SPECS[name]
    pins = {**spec.files, **(checksums or {})}
    cache, manifest = cache_paths(Path(data_dir), name)
    check_data_dir(data_dir)
    # The cache is trusted only against a pinned digest of its content (the official files'); without one,
    # the data is parsed from the verified files every time.
    content_pin = spec.content_sha256 if pins == dict(spec.files) else None

    def rebuild() -> Splits:
        splits = PARSERS[spec.format](fetch(spec, Path(data_dir), mirror, checksums, official), pins)
        with atomic_path(cache) as tmp, open(tmp, "wb") as out:
            # Saved through a file object, the archive inside is named "archive" rather than after the temporary
            # file, so the same tensors give the same cache bytes on every rebuild.
            torch.save(splits.as_dict(), out)
        write_json(manifest, {"format": CACHE_FORMAT, "raw_sha256": pins, "cache_sha256": sha256_file(cache)})
        return splits

    if content_pin is None:
        if not _cache_is_valid(cache, manifest, pins):
            return rebuild()
        # The cache file stays as it is (rewriting it would make every run out of date for Snakemake);
        # its content is not trusted: the data comes from the verified files.
        return PARSERS[spec.format](fetch(spec, Path(data_dir), mirror, checksums, official), pins)
    for attempt in (1, 2):
        if attempt == 2 or not _cache_is_valid(cache, manifest, pins):
            rebuild()
        try:
            # Plain tensors only: anything else in the file is refused, never unpickled.
            splits = Splits(**torch.load(cache, weights_only=True))
        except Exception as err:  # a cache that does not load is rebuilt from the verified files, once
            if attempt == 2:
                raise DataError(f"{cache} does not load after a rebuild from the verified files "
                                f"({type(err).__name__}); delete {cache.parent} and run again") from err
            continue
        if content_sha256(splits) == content_pin:
            return splits
        if attempt == 2:  # rebuilt from files that matched their pins, and still not the pinned content
            raise DataError(f"{cache} rebuilt from the verified files does not match the pinned content digest of "
                            f"{name}; report this with the file digests in {manifest}")
    raise AssertionError("unreachable")


def content_sha256(splits: Splits) -> str:
    """SHA-256 of the parsed tensors (names, dtypes, shapes and bytes): what a cache must hold."""
    digest = hashlib.sha256()
    for key, tensor in splits.as_dict().items():
        tensor = tensor.contiguous()
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def raw_checksums(name: str, checksums: Mapping[str, str] | None = None) -> dict[str, str]:
    """The digests a run's data was verified against (recorded in its metrics)."""
    return {**SPECS[name].files, **(checksums or {})}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fetch, verify and cache a dataset.")
    parser.add_argument("dataset", choices=sorted(SPECS))
    parser.add_argument("--data-dir", default="data", help="folder for raw files and the cache (default: data)")
    parser.add_argument("--mirror", default=None, help="http(s) URL or local folder tried before the official mirrors")
    parser.add_argument("--mirror-only", action="store_true", help="never try the official mirrors")
    parser.add_argument("--stamp", help="after success, write this small JSON file naming the verified digests")
    parser.add_argument("--sha256", action="append", default=[], metavar="FILE=DIGEST",
                        help="verify FILE against DIGEST instead of the pinned digest (a private re-packed copy)")
    args = parser.parse_args(argv)
    spec = SPECS[args.dataset]
    mirror = args.mirror or _env_mirror(spec)
    try:
        checksums = parse_digests(spec, args.sha256)
        check_data_dir(args.data_dir, "--data-dir ")
        splits = load(args.dataset, args.data_dir, mirror, checksums, official=not args.mirror_only)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    cache, _ = cache_paths(Path(args.data_dir), args.dataset)
    if args.stamp:
        # Same verified data, same bytes: a rebuilt cache leaves this file's checksum unchanged.
        write_json(args.stamp, {"dataset": args.dataset, "sha256": raw_checksums(args.dataset, checksums)})
    print(f"{args.dataset}: {len(splits.train_y)} train, {len(splits.test_y)} test images, cached in {cache}")
    return 0


def parse_digests(spec: DatasetSpec, items: Iterable[str]) -> dict[str, str]:
    """The --sha256 FILE=DIGEST arguments as {FILE: digest}; DataError in one line for one that is not a file of
    the dataset and a SHA-256 (checked before any source is tried, so that no mirror is blamed for it)."""
    checksums = {}
    for item in items:
        name, sep, digest = item.partition("=")
        if not sep or name not in spec.files:
            raise DataError(f"--sha256 {item!r} is not FILE=DIGEST with FILE one of {sorted(spec.files)}; "
                            f"e.g. --sha256 {next(iter(spec.files))}=<the 64 hex digits of sha256sum FILE>")
        if not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
            raise DataError(f"--sha256 {name}={digest!r} is not a SHA-256 digest ({len(digest)} characters); give "
                            "its 64 hex digits, as `sha256sum FILE` prints them")
        checksums[name] = digest.lower()
    return checksums


def check_data_dir(data_dir: str | Path, setting: str = "data_dir=") -> None:
    """The data folder is a folder, or a path a folder can be made at: not a file, nor inside one. `setting`: how
    the caller's user gave it (data_dir= of a run, --data-dir of this command)."""
    folder = Path(data_dir).expanduser()
    for path in (folder, *folder.parents):
        if path.exists():
            if not path.is_dir():
                what = "is a file" if path == folder else f"is inside {path}, which is a file"
                raise DataError(f"{setting}{str(folder)!r} {what}, not a folder; pass the folder that holds (or "
                                f"will hold) the data, e.g. {setting}data")
            return


def _env_mirror(spec: DatasetSpec) -> str | None:
    return os.environ.get(spec.mirror_env) or None


if __name__ == "__main__":
    sys.exit(main())
