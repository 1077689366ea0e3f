"""Shared fixtures: real MNIST from a mirror, and a CIFAR-10-format archive served on loopback."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import os
import pickle
import socket
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from dropout_lab.training import data

ROOT = Path(__file__).resolve().parents[1]
SHARED_MNIST = ROOT.parent / "shared" / "data" / "mnist"


def _official_mirror_reachable() -> bool:
    try:
        with socket.create_connection(("ossci-datasets.s3.amazonaws.com", 443), timeout=5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def mnist_mirror() -> str | None:
    """Where the tests get real MNIST: $DROPOUT_LAB_MNIST_MIRROR, ../shared/data/mnist, or the official mirrors.

    With none of them reachable the tests that need MNIST are skipped, with the
    reason; in CI (CI=true), where ../shared always exists, they fail instead.
    """
    env = os.environ.get("DROPOUT_LAB_MNIST_MIRROR")
    if env:
        return env
    if SHARED_MNIST.is_dir():
        return str(SHARED_MNIST)
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must have the MNIST mirror at {SHARED_MNIST}")
    if _official_mirror_reachable():
        return None  # the official mirrors
    pytest.skip(f"no MNIST: {SHARED_MNIST} does not exist and the official mirrors are unreachable")


@pytest.fixture(scope="session")
def mnist_data_dir(tmp_path_factory, mnist_mirror) -> Path:
    """A data folder with MNIST fetched, verified and cached once per test session."""
    root = tmp_path_factory.mktemp("data")
    data.load("mnist", root, mnist_mirror)
    return root


# --------------------------------------------------------------------------- CIFAR-10 layout


def make_cifar_archive(path: Path, per_batch: int = 60, test: int = 100, seed: int = 0, poison: bool = False) -> dict:
    """Write a small archive in the genuine cifar-10-python.tar.gz layout; return what is in it.

    Each class gets a distinct mean colour, so a CNN can learn it in a few steps.
    With poison=True, test_batch is a pickle that would run code when loaded.
    """
    rng = np.random.default_rng(seed)

    def batch(n: int, label: str) -> tuple[bytes, np.ndarray, np.ndarray]:
        labels = rng.integers(0, 10, n)
        base = (labels[:, None] * 25).astype(np.int64)
        pixels = np.clip(base + rng.integers(-20, 21, (n, 3072)), 0, 255).astype(np.uint8)
        entry = {
            b"batch_label": label.encode(),
            b"labels": labels.tolist(),
            b"data": pixels,
            b"filenames": [f"img_{i}.png".encode() for i in range(n)],
        }
        return pickle.dumps(entry, protocol=2), pixels, labels

    members, train_x, train_y = {}, [], []
    for i in range(1, 6):
        blob, x, y = batch(per_batch, f"training batch {i} of 5")
        members[f"data_batch_{i}"] = blob
        train_x.append(x)
        train_y.append(y)
    blob, test_x, test_y = batch(test, "testing batch 1 of 1")
    if poison:
        blob = pickle.dumps(_Exploit(), protocol=2)
    members["test_batch"] = blob
    members["batches.meta"] = pickle.dumps({b"label_names": [f"class{i}".encode() for i in range(10)]}, protocol=2)
    members["readme.html"] = b"<html></html>"
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return {
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "train_x": np.concatenate(train_x).reshape(-1, 3, 32, 32),
        "train_y": np.concatenate(train_y),
        "test_x": test_x.reshape(-1, 3, 32, 32),
        "test_y": test_y,
    }


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/dropout_lab_pwned",))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def http_folder(tmp_path):
    """Serve a fresh folder over HTTP on 127.0.0.1; yield (folder, base URL)."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def cifar_mirror(http_folder):
    """A CIFAR-10-format archive served over loopback: (base URL, its contents and digest)."""
    folder, url = http_folder
    contents = make_cifar_archive(folder / "cifar-10-python.tar.gz")
    return url, contents
