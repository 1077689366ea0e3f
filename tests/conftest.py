"""Shared fixtures: real MNIST from a mirror, a CIFAR-10-format archive served on loopback, and workflow configs
whose grids the tests write themselves."""

from __future__ import annotations

import copy
import functools
import hashlib
import http.server
import io
import os
import pickle
import shutil
import socket
import subprocess
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import yaml

from dropout_lab.training import data

ROOT = Path(__file__).resolve().parents[1]
SHARED_MNIST = ROOT.parent / "shared" / "data" / "mnist"
SHIPPED = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


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
        entry = {  # str keys: how the genuine (Python 2) batches read under encoding="latin1", as torchvision reads
            "batch_label": label,
            "labels": labels.tolist(),
            "data": pixels,
            "filenames": [f"img_{i}.png" for i in range(n)],
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
    members["batches.meta"] = pickle.dumps({"label_names": [f"class{i}" for i in range(10)]}, protocol=2)
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


# --------------------------------------------------------------------------- workflow configs with the tests' grids

# A small grid with every kind of sweep, so that the planning tests count the runs of a grid written here (their
# comments derive each count from it) and not those of config/config.yaml, which grows with the project.
SMALL_GRIDS = {
    "mnist_mlp": {
        "dataset": "mnist",
        "model": "mlp",
        "hidden_sweep": {"vary": "hidden", "rates": [0.0, 0.5, 0.8], "fixed": {"input": 0.0}},
        "input_sweep": {"vary": "input", "rates": [0.0, 0.2], "fixed": {"hidden": 0.5}},
        "gate_parity": {"vary": "hidden", "rates": [0.5, 0.8], "fixed": {"input": 0.0},
                        "gates": ["bernoulli", "gaussian"]},
        "width_sweep": {"vary": "hidden", "rates": [0.0, 0.5], "fixed": {"input": 0.0}, "retained_share": 0.25},
        "budget_sweep": {"vary": "hidden", "rates": [0.0, 0.5], "fixed": {"input": 0.0},
                         "epochs": {"paper": [5, 50, 200], "quick": [1, 3, 6], "smoke": [1, 2]}},
        "placement": ["none", "input", "hidden", "both"],
        "conventions": {"vary": "hidden", "rates": [0.5], "fixed": {"input": 0.0}, "gates": ["bernoulli", "gaussian"]},
    },
    "cifar10_cnn": {
        "dataset": "cifar10",
        "model": "cnn",
        "hidden_sweep": {"vary": "fc", "rates": [0.0, 0.75], "fixed": {"input": 0.0, "conv": 0.0}},
        "placement": ["none", "all-layers"],
    },
}
SMALL_SEEDS = {"paper": 3, "quick": 2, "smoke": 2}
# The smoke scale's MLP learning rate (0.1, config/scale/smoke.yaml) is among the smoke rates: its runs are shared.
SMALL_PROTOCOLS = {"run": ["fixed", "tuned"], "judge": "tuned",
                   "tuned": {"sweeps": ["hidden_sweep", "input_sweep"],
                             "lrs": {"paper": [0.015, 0.05, 0.15], "quick": [0.015, 0.05, 0.15], "smoke": [0.03, 0.1]}}}


def small_config(**changes) -> dict:
    """config/config.yaml with SMALL_GRIDS, SMALL_SEEDS and SMALL_PROTOCOLS in place of its own, then `changes`."""
    config = copy.deepcopy(SHIPPED)
    config.update(grids=copy.deepcopy(SMALL_GRIDS), experiments=list(SMALL_GRIDS), seeds=dict(SMALL_SEEDS),
                  protocols=copy.deepcopy(SMALL_PROTOCOLS))
    config.update(copy.deepcopy(changes))
    return config


def merged(base: dict, overlay: dict) -> dict:
    """`overlay` merged into a copy of `base` as Snakemake merges a --configfile: mappings key by key, any other
    value replaced."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        out[key] = merged(out.get(key) or {}, value) if isinstance(value, dict) else copy.deepcopy(value)
    return out


def grids_overlay(grids: dict) -> dict:
    """`grids` as a --configfile gives them: since Snakemake merges the file into config/config.yaml, each sweep of
    a shipped grid that `grids` does not have is set to null (dropout_lab.planning.grid.drop_switched_off leaves it
    out)."""
    overlay = copy.deepcopy(grids)
    for name, grid in overlay.items():
        for key in SHIPPED["grids"].get(name, {}):
            grid.setdefault(key, None)
    return overlay


def as_snakemake_sees(overlay: dict) -> dict:
    """The workflow config Snakemake builds from config/config.yaml and a --configfile holding `overlay`, with the
    sweeps set to null left out."""
    from dropout_lab.planning import grid

    config = merged(SHIPPED, overlay)
    grid.drop_switched_off(config)
    return config


def copy_checkout(dest: Path) -> Path:
    """The project's tracked files, as the work tree has them (links kept as links), copied into `dest`."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        source, target = ROOT / name, dest / name
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the work tree
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, target)
    return dest
