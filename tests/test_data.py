"""Fetching, verification and caching of MNIST (real files) and CIFAR-10 (a genuine-layout archive)."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dropout_lab.training import data
from tests.conftest import make_cifar_archive

MNIST_NAMES = list(data.MNIST.files)
LOCAL_ONLY = dataclasses.replace(data.MNIST, official_mirrors=())  # error tests must not reach the internet


def leftovers(folder: Path) -> list[str]:
    """Every file under `folder`, so a test can assert nothing untrusted was left behind."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


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


def test_idx_header_is_checked(tmp_path):
    bad = tmp_path / "bad-idx"
    bad.write_bytes(bytes([0, 0, 8, 1]) + (5).to_bytes(4, "big") + b"abc")
    with pytest.raises(data.DataError, match="header says"):
        data.read_idx(bad)


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
