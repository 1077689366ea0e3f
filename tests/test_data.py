"""Fetching, verification and caching of MNIST (real files) and CIFAR-10 (a genuine-layout archive); the parse is
torchvision's, of verified files only."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import pickle
import shutil
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets

from dropout_lab.training import data, parsers
from tests.conftest import make_cifar_archive

MNIST_NAMES = list(data.MNIST.files)
LOCAL_ONLY = dataclasses.replace(data.MNIST, official_mirrors=())  # error tests must not reach the internet

# Measured with the project's own IDX parser (before torchvision did the parsing) on ../shared/data/mnist: the digest
# of the cached tensors, and the raw files' digests that every existing MNIST run records as its data_sha256.
EXISTING_RUNS_MNIST_CONTENT_SHA256 = "d3f54bc88d521ad86d8820c60639268121b5fc94c3b1bfaf13eebc59766d3c9c"
EXISTING_RUNS_MNIST_DATA_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}


def leftovers(folder: Path) -> list[str]:
    """Every file under `folder`, so a test can assert nothing untrusted was left behind."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def spy_on_torchvision(monkeypatch, class_name: str) -> list[dict]:
    """Replace torchvision.datasets.CLASS by a subclass that records each construction: its arguments, the files
    under its root, and the data it parsed."""
    real = getattr(torchvision.datasets, class_name)
    calls: list[dict] = []

    class Spy(real):
        def __init__(self, root, train=True, download=False, **kwargs):
            calls.append({"train": train, "download": download, "files": leftovers(Path(root))})
            super().__init__(root, train=train, download=download, **kwargs)
            calls[-1]["data"] = self.data

    Spy.__name__ = class_name
    monkeypatch.setattr(torchvision.datasets, class_name, Spy)
    return calls


def refuse_torchvision(monkeypatch, *class_names: str) -> list[str]:
    """Make torchvision.datasets.CLASS record and fail any construction; return the record."""
    calls: list[str] = []

    def refused(name):
        def construct(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"torchvision.datasets.{name} was given files")
        return construct

    for name in class_names:
        monkeypatch.setattr(torchvision.datasets, name, refused(name))
    return calls


@pytest.fixture(scope="module")
def mnist_idx(tmp_path_factory, mnist_mirror) -> Path:
    """The four verified, decompressed IDX files."""
    root = tmp_path_factory.mktemp("idx")
    return data.fetch(data.MNIST, root, mnist_mirror)["train-images-idx3-ubyte"].parent


def test_mnist_verifies_and_caches(mnist_data_dir):
    splits = data.load("mnist", mnist_data_dir)
    assert splits.train_x.shape == (60000, 28, 28) and splits.train_x.dtype == torch.uint8
    assert splits.test_x.shape == (10000, 28, 28)
    assert splits.train_y.dtype == torch.int64
    # Known class counts of the real data set.
    assert torch.bincount(splits.train_y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert torch.bincount(splits.test_y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    for name, digest in data.MNIST.files.items():
        assert data.sha256_file(mnist_data_dir / "mnist" / "raw" / name) == digest


def test_cache_is_used_without_raw_files(mnist_data_dir, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(mnist_data_dir, copy)
    shutil.rmtree(copy / "mnist" / "raw")
    splits = data.load("mnist", copy, mirror=str(tmp_path / "nowhere"))  # no source could serve it
    assert len(splits.train_y) == 60000


def test_corrupted_cache_is_rebuilt_from_verified_files(mnist_data_dir, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(mnist_data_dir, copy)
    cache, _ = data.cache_paths(copy, "mnist")
    good = data.load("mnist", copy)
    blob = bytearray(cache.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    cache.write_bytes(bytes(blob))
    rebuilt = data.load("mnist", copy)
    assert torch.equal(rebuilt.train_x, good.train_x)
    assert data.sha256_file(cache) != hashlib.sha256(bytes(blob)).hexdigest()


@pytest.mark.parametrize("layout", ["plain", "recompressed"])
def test_uncompressed_and_recompressed_sources_both_verify(mnist_idx, tmp_path, layout):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in MNIST_NAMES:
        raw = (mnist_idx / name).read_bytes()
        if layout == "plain":
            (mirror / name).write_bytes(raw)
        else:  # other gzip bytes, same contents: the digest of the contents decides
            (mirror / f"{name}.gz").write_bytes(gzip.compress(raw, compresslevel=1, mtime=0))
    paths = data.fetch(LOCAL_ONLY, tmp_path / "data", str(mirror))
    assert {p.name for p in paths.values()} == set(MNIST_NAMES)


def _broken_mirror(mnist_idx: Path, folder: Path, fault: str) -> Path:
    folder.mkdir()
    for name in MNIST_NAMES:
        if name != "train-labels-idx1-ubyte":
            shutil.copy(mnist_idx / name, folder / name)  # good files, stored uncompressed
            continue
        raw = (mnist_idx / name).read_bytes()
        blob = gzip.compress(raw, mtime=0)
        if fault == "corrupt":
            changed = bytearray(raw)
            changed[100] ^= 0x01
            blob = gzip.compress(bytes(changed), mtime=0)
        elif fault == "truncated":
            blob = blob[: len(blob) // 2]
        elif fault == "wrong-file":
            blob = gzip.compress((mnist_idx / "t10k-labels-idx1-ubyte").read_bytes(), mtime=0)
        elif fault == "missing":
            continue
        (folder / f"{name}.gz").write_bytes(blob)
    return folder


@pytest.mark.parametrize(
    "fault, reason",
    [
        ("corrupt", "is not the pinned"),
        ("truncated", "Compressed file ended"),
        ("wrong-file", "is not the pinned"),
        ("missing", "not found"),
    ],
)
def test_bad_source_fails_clearly_and_leaves_nothing(mnist_idx, tmp_path, fault, reason):
    mirror = _broken_mirror(mnist_idx, tmp_path / "mirror", fault)
    dest = tmp_path / "data"
    with pytest.raises(data.DataError) as info:
        data.fetch(LOCAL_ONLY, dest, str(mirror))
    message = str(info.value)
    assert "\n" not in message
    assert "train-labels-idx1-ubyte" in message and str(mirror) in message
    assert reason in message and "dataset.mirror" in message
    assert "train-labels-idx1-ubyte" not in leftovers(dest / "mnist" / "raw")
    assert not [f for f in leftovers(dest) if f.endswith(".part")]


def test_unreachable_mirror_then_official_mirrors_are_all_named(tmp_path):
    spec = dataclasses.replace(data.MNIST, official_mirrors=("http://127.0.0.1:9/mnist/",))
    with pytest.raises(data.DataError) as info:
        data.fetch(spec, tmp_path / "data", "http://127.0.0.1:9/mirror/")
    message = str(info.value)
    assert "http://127.0.0.1:9/mirror/train-images-idx3-ubyte.gz" in message
    assert "http://127.0.0.1:9/mnist/train-images-idx3-ubyte.gz" in message
    assert "unreachable" in message
    assert leftovers(tmp_path / "data") == []


def test_a_bad_file_in_place_is_replaced_not_trusted(mnist_idx, tmp_path):
    raw = tmp_path / "data" / "mnist" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-labels-idx1-ubyte").write_bytes(b"not mnist")
    data.fetch(LOCAL_ONLY, tmp_path / "data", str(mnist_idx))
    assert data.sha256_file(raw / "train-labels-idx1-ubyte") == data.MNIST.files["train-labels-idx1-ubyte"]


def _idx(path: Path, shape: tuple[int, ...], payload: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack(">BBBB", 0, 0, 0x08, len(shape)) + struct.pack(f">{len(shape)}I", *shape) + payload)
    return path


def test_the_mnist_parse_is_torchvisions_on_the_verified_files_offline(mnist_mirror, tmp_path, monkeypatch):
    calls = spy_on_torchvision(monkeypatch, "MNIST")
    splits = data.load("mnist", tmp_path / "data", mnist_mirror)
    assert [(c["train"], c["download"]) for c in calls] == [(True, False), (False, False)]
    # torchvision saw the four verified files, under its own names, and nothing else (no processed/ legacy cache).
    assert all(c["files"] == [f"MNIST/raw/{name}" for name in sorted(parsers.TORCHVISION_MNIST_FILES)] for c in calls)
    assert torch.equal(splits.train_x, calls[0]["data"]) and torch.equal(splits.test_x, calls[1]["data"])
    assert not [f for f in leftovers(tmp_path / "data") if ".torchvision-" in f]  # the staging folder is gone


def test_a_failure_inside_torchvision_is_one_line(mnist_idx, tmp_path, monkeypatch):
    refuse_torchvision(monkeypatch, "MNIST")
    with pytest.raises(data.DataError) as info:
        data.load("mnist", tmp_path / "data", str(mnist_idx), official=False)
    message = str(info.value)
    assert "\n" not in message and "torchvision.datasets.construct" not in message
    assert "was given files" in message and "train-images-idx3-ubyte" in message
    assert not data.cache_paths(tmp_path / "data", "mnist")[0].exists()


def test_an_idx_file_whose_header_disagrees_with_its_size_is_one_line(tmp_path):
    # The digests are the user's (a private copy), so the files verify; torchvision's reader is what refuses them.
    raw = tmp_path / "data" / "toy" / "raw"
    paths = {"train-x": _idx(raw / "train-x", (2, 2, 2), bytes(8)), "train-y": _idx(raw / "train-y", (5,), b"abc"),
             "test-x": _idx(raw / "test-x", (1, 2, 2), bytes(4)), "test-y": _idx(raw / "test-y", (1,), b"\0")}
    pins = {name: data.sha256_file(path) for name, path in paths.items()}
    with pytest.raises(data.DataError, match="torchvision.datasets.MNIST could not read the training split") as info:
        parsers.PARSERS["idx"](paths, pins)
    assert "\n" not in str(info.value) and "train-y" in str(info.value) and "dataset.checksums" in str(info.value)
    assert leftovers(tmp_path / "data" / "toy") == sorted(f"raw/{name}" for name in paths)


def test_more_labels_than_images_is_one_line(tmp_path):
    # torchvision reads each file on its own; the project compares their counts.
    raw = tmp_path / "data" / "toy" / "raw"
    paths = {"train-x": _idx(raw / "train-x", (2, 2, 2), bytes(8)), "train-y": _idx(raw / "train-y", (3,), bytes(3)),
             "test-x": _idx(raw / "test-x", (1, 2, 2), bytes(4)), "test-y": _idx(raw / "test-y", (1,), b"\0")}
    with pytest.raises(data.DataError, match="the training split has 2 images but 3 labels"):
        parsers.PARSERS["idx"](paths, {name: data.sha256_file(path) for name, path in paths.items()})


def test_a_tampered_raw_file_is_refused_before_any_parse(mnist_idx, tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    shutil.copytree(mnist_idx, mirror)
    tampered = bytearray((mirror / "t10k-images-idx3-ubyte").read_bytes())
    tampered[5000] ^= 0x01  # one pixel bit
    (mirror / "t10k-images-idx3-ubyte").write_bytes(bytes(tampered))
    raw = tmp_path / "data" / "mnist" / "raw"
    shutil.copytree(mirror, raw)  # and the same tampered copy already in place
    calls = refuse_torchvision(monkeypatch, "MNIST")
    with pytest.raises(data.DataError) as info:
        data.load("mnist", tmp_path / "data", str(mirror), official=False)
    message = str(info.value)
    assert "\n" not in message and "t10k-images-idx3-ubyte" in message and "is not the pinned" in message
    assert calls == []
    assert "mnist/raw/t10k-images-idx3-ubyte" not in leftovers(tmp_path / "data")
    assert not data.cache_paths(tmp_path / "data", "mnist")[0].exists()


def test_the_mnist_cache_keeps_the_digest_of_the_existing_runs(mnist_data_dir, tmp_path):
    cache, _ = data.cache_paths(mnist_data_dir, "mnist")
    assert data.content_sha256(data.Splits(**torch.load(cache, weights_only=True))) == EXISTING_RUNS_MNIST_CONTENT_SHA256
    assert data.raw_checksums("mnist") == EXISTING_RUNS_MNIST_DATA_SHA256
    # Rebuilt elsewhere from the same files: the same bytes (the cache's archive is not named after a temporary file).
    copy = tmp_path / "data"
    shutil.copytree(mnist_data_dir / "mnist" / "raw", copy / "mnist" / "raw")
    data.load("mnist", copy, str(tmp_path / "nowhere"), official=False)
    assert data.sha256_file(data.cache_paths(copy, "mnist")[0]) == data.sha256_file(cache)


# --------------------------------------------------------------------------- CIFAR-10


def test_a_cache_rewritten_with_its_manifest_is_refused_and_rebuilt(mnist_data_dir, tmp_path):
    # Changed pixels, and a manifest rewritten to match them: the pinned content digest still catches it.
    copy = tmp_path / "data"
    shutil.copytree(mnist_data_dir, copy)
    cache, manifest = data.cache_paths(copy, "mnist")
    good = data.load("mnist", copy)
    tampered = {k: v.clone() for k, v in good.as_dict().items()}
    tampered["train_x"][0, 14, 14] ^= 0xFF
    torch.save(tampered, cache)
    meta = json.loads(manifest.read_text())
    meta["cache_sha256"] = data.sha256_file(cache)
    manifest.write_text(json.dumps(meta))
    loaded = data.load("mnist", copy)
    assert torch.equal(loaded.train_x, good.train_x) and data.content_sha256(loaded) == data.MNIST.content_sha256


def test_a_cache_that_does_not_load_is_rebuilt_without_unsafe_advice(mnist_data_dir, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(mnist_data_dir, copy)
    cache, manifest = data.cache_paths(copy, "mnist")
    torch.save({"train_x": torch.nn.Linear(1, 1)}, cache)  # a module, which weights_only refuses to load
    meta = json.loads(manifest.read_text())
    meta["cache_sha256"] = data.sha256_file(cache)
    manifest.write_text(json.dumps(meta))
    loaded = data.load("mnist", copy)
    assert data.content_sha256(loaded) == data.MNIST.content_sha256


def test_cifar_download_verify_extract_over_http(cifar_mirror, tmp_path):
    url, contents = cifar_mirror
    checksums = {"cifar-10-python.tar.gz": contents["sha256"]}
    splits = data.load("cifar10", tmp_path / "data", url, checksums)
    assert splits.train_x.shape == (300, 3, 32, 32) and splits.train_x.dtype == torch.uint8
    assert np.array_equal(splits.train_x.numpy(), contents["train_x"])
    assert np.array_equal(splits.train_y.numpy(), contents["train_y"])
    assert np.array_equal(splits.test_x.numpy(), contents["test_x"])
    assert splits.test_y.dtype == torch.int64
    cache, manifest_path = data.cache_paths(tmp_path / "data", "cifar10")
    manifest = json.loads(manifest_path.read_text())
    assert manifest["raw_sha256"] == checksums
    # Loaded again: the cache file is left alone (a rewrite would retrain every run of the workflow).
    before = cache.stat().st_mtime_ns
    again = data.load("cifar10", tmp_path / "data", url, checksums)
    assert cache.stat().st_mtime_ns == before and np.array_equal(again.train_x.numpy(), contents["train_x"])


def test_cifar_archive_with_the_wrong_digest_is_never_unpickled(cifar_mirror, tmp_path):
    url, _ = cifar_mirror
    spec = dataclasses.replace(data.CIFAR10, official_mirrors=())
    with pytest.raises(data.DataError, match="is not the pinned") as info:
        data.fetch(spec, tmp_path / "data", url)  # the pinned digest of the real archive
    assert url + "cifar-10-python.tar.gz" in str(info.value)
    assert leftovers(tmp_path / "data") == []


def test_cifar_pickle_that_runs_code_is_refused(http_folder, tmp_path):
    folder, url = http_folder
    contents = make_cifar_archive(folder / "cifar-10-python.tar.gz", poison=True)
    marker = Path("/tmp/dropout_lab_pwned")
    marker.unlink(missing_ok=True)
    with pytest.raises(data.DataError, match="not allowed"):
        data.load("cifar10", tmp_path / "data", url, {"cifar-10-python.tar.gz": contents["sha256"]})
    assert not marker.exists()
    assert not data.cache_paths(tmp_path / "data", "cifar10")[0].exists()


def test_the_cifar_parse_is_torchvisions_on_the_extracted_verified_batches(cifar_mirror, tmp_path, monkeypatch):
    url, contents = cifar_mirror
    calls = spy_on_torchvision(monkeypatch, "CIFAR10")
    splits = data.load("cifar10", tmp_path / "data", url, {"cifar-10-python.tar.gz": contents["sha256"]}, official=False)
    assert [(c["train"], c["download"]) for c in calls] == [(True, False), (False, False)]
    assert all(c["files"] == sorted(f"cifar-10-batches-py/{m}" for m in parsers.CIFAR_MEMBERS) for c in calls)
    # torchvision's (N, H, W, C) images, in the project's (N, C, H, W) layout.
    assert np.array_equal(calls[0]["data"].transpose(0, 3, 1, 2), splits.train_x.numpy())
    assert not [f for f in leftovers(tmp_path / "data") if ".torchvision-" in f]


def test_torchvisions_own_md5_check_applies_to_the_official_archive(tmp_path):
    # Verified against the official digest, an archive is held to torchvision's MD5s of the official batches, which
    # this small copy's batches do not have (the case of an official archive whose digest pin were wrong).
    archive = tmp_path / "cifar-10-python.tar.gz"
    make_cifar_archive(archive)
    with pytest.raises(data.DataError, match="torchvision.datasets.CIFAR10 could not read .*corrupted") as info:
        parsers.PARSERS["cifar-pickle"]({archive.name: archive}, dict(data.CIFAR10.files))
    assert "\n" not in str(info.value)


def test_a_cifar_archive_with_a_wrong_digest_is_never_extracted_or_unpickled(cifar_mirror, tmp_path, monkeypatch):
    url, _ = cifar_mirror
    opened, unpickled = [], []
    monkeypatch.setattr(tarfile, "open", lambda *a, **k: opened.append(a) or pytest.fail("tarfile.open called"))
    monkeypatch.setattr(parsers._CifarUnpickler, "load", lambda self: unpickled.append(self) or pytest.fail("unpickled"))
    built = refuse_torchvision(monkeypatch, "CIFAR10")
    with pytest.raises(data.DataError, match="is not the pinned") as info:
        data.load("cifar10", tmp_path / "data", url, official=False)  # the pinned digest of the real archive
    assert "\n" not in str(info.value) and url + "cifar-10-python.tar.gz" in str(info.value)
    assert opened == unpickled == built == []
    assert leftovers(tmp_path / "data") == []


def test_a_cifar_archive_that_is_not_gzip_is_one_line(tmp_path):
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(b"not a tar.gz")
    with pytest.raises(data.DataError, match="is not a readable tar.gz archive") as info:
        parsers.PARSERS["cifar-pickle"]({archive.name: archive}, {archive.name: data.sha256_file(archive)})
    assert "\n" not in str(info.value)


def test_a_cifar_archive_missing_a_batch_is_named(tmp_path):
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        blob = pickle.dumps({"data": np.zeros((1, 3072), np.uint8), "labels": [0]}, protocol=2)
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))
    with pytest.raises(data.DataError, match="has no file cifar-10-batches-py/data_batch_2"):
        parsers.PARSERS["cifar-pickle"]({archive.name: archive}, {archive.name: data.sha256_file(archive)})


def test_cifar_missing_on_server_is_named(http_folder, tmp_path):
    _, url = http_folder
    spec = dataclasses.replace(data.CIFAR10, official_mirrors=())
    with pytest.raises(data.DataError, match="not found"):
        data.fetch(spec, tmp_path / "data", url)


def test_unknown_checksum_override_is_rejected(tmp_path):
    with pytest.raises(data.DataError, match="unknown file"):
        data.fetch(data.CIFAR10, tmp_path, None, {"cifar-10.tgz": "00"})


def test_cli_reports_one_line_error(tmp_path, capsys):
    code = data.main(["cifar10", "--data-dir", str(tmp_path), "--mirror", str(tmp_path / "none"), "--mirror-only",
                      "--sha256", "cifar-10-python.tar.gz=" + "0" * 64])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: could not get a verified cifar-10-python.tar.gz")
    assert err.count("\n") == 1
