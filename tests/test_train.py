"""One configured run end to end: it learns real MNIST, records what it should, and repeats bit for bit."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from dropout_lab.training import data, train
from dropout_lab.settings.config import compose_config

TIMING_KEYS = {"wall_seconds", "train_seconds", "evaluation_seconds", "checkpoints_saved"}

SMALL_MLP = [
    "dataset=mnist", "model=mlp", "model.width=256", "dropout=both",
    "dataset.train_fraction=0.25", "dataset.test_fraction=0.3",
    "train.epochs=2", "eval.mc_samples=8", "progress=false",
]


def run(tmp_path, mnist_data_dir, mnist_mirror, *overrides: str, name: str = "run") -> dict:
    cfg = compose_config([
        f"out={tmp_path / name}", f"data_dir={mnist_data_dir}", f"dataset.mirror={mnist_mirror or 'null'}",
        *SMALL_MLP, *overrides,
    ])
    return train.main(cfg)


def without_timing(value):
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in TIMING_KEYS and k != "out"}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


@pytest.mark.slow
def test_mlp_learns_real_mnist_and_records_metrics(tmp_path, mnist_data_dir, mnist_mirror):
    metrics = run(tmp_path, mnist_data_dir, mnist_mirror, "seed=1")
    final = metrics["final"]
    assert final["test_acc"] > 0.90, final  # chance is 0.10
    assert metrics["mc"]["samples"] == 8 and metrics["mc"]["test_acc"] > 0.88
    assert abs(metrics["mc"]["test_acc"] - final["test_acc"]) < 0.03
    # quick's 5,000 validation images held out first, then a quarter of the other 55,000 trained on
    assert metrics["train_samples"] == 13750 and metrics["test_samples"] == 3000
    assert metrics["validation_samples"] == 5000 and len(metrics["validation_sha256"]) == 64
    assert 0.9 < final["val_acc"] <= 1 and all("val_acc" in h for h in metrics["history"])
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert metrics["history"][1]["train_loss"] < metrics["history"][0]["train_loss"]
    assert final["gap_acc"] == pytest.approx(final["train_acc"] - final["test_acc"])
    assert set(metrics["weight_norms"]) == {"hidden.0", "hidden.3", "output"}
    assert all(v > 0 and math.isfinite(v) for v in metrics["weight_norms"].values())
    assert metrics["rates"] == {"input": 0.2, "hidden": [0.5, 0.5], "conv": [], "fc": []}
    assert metrics["device"]["type"] == "cpu"
    assert {"python", "torch", "numpy", "hydra-core"} <= set(metrics["versions"])
    assert "commit" in metrics["git"] and metrics["wall_seconds"] > 0
    assert metrics["config"]["gate"]["name"] == "bernoulli"
    on_disk = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(metrics))
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["metrics.json"]


@pytest.mark.slow
def test_same_seed_is_bit_identical_and_other_seeds_differ(tmp_path, mnist_data_dir, mnist_mirror):
    quick = ["train.epochs=1", "dataset.train_fraction=0.1", "gate=gaussian"]
    a = run(tmp_path, mnist_data_dir, mnist_mirror, "seed=5", *quick, name="a")
    b = run(tmp_path, mnist_data_dir, mnist_mirror, "seed=5", *quick, name="b")
    c = run(tmp_path, mnist_data_dir, mnist_mirror, "seed=6", *quick, name="c")
    assert without_timing(a) == without_timing(b)
    assert a["final"]["test_loss"] != c["final"]["test_loss"]
    # The command line in a fresh process gives the same numbers.
    proc = subprocess.run(
        [sys.executable, "-m", "dropout_lab.train", f"out={tmp_path / 'cli'}", f"data_dir={mnist_data_dir}",
         f"dataset.mirror={mnist_mirror or 'null'}", *SMALL_MLP, "seed=5", *quick],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    cli = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert without_timing(cli) == without_timing(json.loads(json.dumps(a)))


@pytest.mark.slow
def test_failed_run_writes_no_metrics(tmp_path, mnist_data_dir, mnist_mirror, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(train, "final_metrics", broken)
    with pytest.raises(RuntimeError, match="interrupted"):
        run(tmp_path, mnist_data_dir, mnist_mirror, "train.epochs=1", "dataset.train_fraction=0.05")
    assert not (tmp_path / "run").exists() or list((tmp_path / "run").iterdir()) == []


@pytest.mark.slow
def test_cnn_trains_on_cifar_format_data_over_http(tmp_path, cifar_mirror):
    url, contents = cifar_mirror
    cfg = compose_config([
        f"out={tmp_path / 'cnn'}", f"data_dir={tmp_path / 'data'}", "dataset=cifar10", f"dataset.mirror={url}",
        f"dataset.checksums={{cifar-10-python.tar.gz: {contents['sha256']}}}",
        "dataset.train_fraction=1.0", "dataset.test_fraction=1.0", "dataset.validation=0",
        "model=cnn", "model.channels=[8,16,16]", "model.kernel_size=3", "model.fc_width=32",
        "dropout=all-layers", "model.max_norm=3.0", "train.epochs=40", "train.batch_size=16", "train.lr=0.005",
        "eval.mc_samples=4", "progress=false",
    ])
    metrics = train.main(cfg)
    assert metrics["train_samples"] == 300 and metrics["test_samples"] == 100
    assert metrics["rates"]["conv"] == [0.25, 0.25, 0.25] and metrics["rates"]["fc"] == [0.5, 0.5]
    # Each class has its own brightness: a working CNN beats chance (0.1) by far (0.62 when written).
    assert metrics["final"]["test_acc"] > 0.35, metrics["history"]
    assert metrics["data_sha256"] == {"cifar-10-python.tar.gz": contents["sha256"]}


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_epoch(tmp_path, mnist_data_dir, mnist_mirror):
    """SIGKILL after an epoch's checkpoint; the rerun continues from it and ends bit-identical
    to an uninterrupted run, with every epoch once."""
    import signal
    import time

    args = [f"data_dir={mnist_data_dir}", f"dataset.mirror={mnist_mirror or 'null'}", *SMALL_MLP,
            "train.epochs=4", "dataset.train_fraction=0.2", "seed=2", "eval.mc_samples=2"]
    reference = train.main(compose_config([f"out={tmp_path / 'reference'}", *args]))

    out = tmp_path / "killed"
    command = [sys.executable, "-m", "dropout_lab.train", f"out={out}", *args]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not (out / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "metrics.json").exists() and (out / "checkpoint.pt").exists()

    resumed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after epoch" in resumed.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_after_epoch"] >= 1
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3, 4]
    assert not (out / "checkpoint.pt").exists()
    strip = lambda m: without_timing({k: v for k, v in m.items() if k != "resumed_after_epoch"})  # noqa: E731
    assert strip(metrics) == strip(json.loads(json.dumps(reference)))


@pytest.mark.slow
def test_checkpoint_of_other_settings_is_ignored(tmp_path, mnist_data_dir, mnist_mirror):
    args = [f"data_dir={mnist_data_dir}", f"dataset.mirror={mnist_mirror or 'null'}", *SMALL_MLP,
            "train.epochs=2", "dataset.train_fraction=0.05", "eval.mc_samples=0"]
    out = tmp_path / "run"
    out.mkdir()
    import torch

    torch.save({"fingerprint": "something else", "epoch": 1}, out / "checkpoint.pt")
    metrics = train.main(compose_config([f"out={out}", *args]))
    assert metrics["resumed_after_epoch"] is None and len(metrics["history"]) == 2


@pytest.mark.slow
def test_divergence_stops_the_run_and_is_recorded(tmp_path, mnist_data_dir, mnist_mirror):
    metrics = run(tmp_path, mnist_data_dir, mnist_mirror, "train.lr=1e6", "train.schedule=constant",
                  "train.epochs=3", "dataset.train_fraction=0.05")
    assert metrics["status"] == "diverged" and metrics["diverged_epoch"] == 1
    assert len(metrics["history"]) == 1 and metrics["final"] is None and metrics["mc"] is None
    text = (tmp_path / "run" / "metrics.json").read_text()
    assert "NaN" not in text and "Infinity" not in text  # strict JSON
    json.loads(text)


def test_a_validation_split_larger_than_the_copy_of_the_data_is_one_line(tmp_path, cifar_mirror):
    url, contents = cifar_mirror
    cfg = compose_config([
        f"out={tmp_path / 'cnn'}", f"data_dir={tmp_path / 'data'}", "dataset=cifar10", f"dataset.mirror={url}",
        f"dataset.checksums={{cifar-10-python.tar.gz: {contents['sha256']}}}", "scale=smoke", "model=cnn",
        "progress=false"])  # smoke holds out 500 CIFAR-10 images; this copy has 300
    with pytest.raises(data.DataError, match=r"dataset.validation=500 leaves 0 of this copy's 300 cifar10 training "
                                             r"images to train on; hold out fewer, e.g. dataset.validation=0"):
        train.main(cfg)
    assert not (tmp_path / "cnn" / "metrics.json").exists()


def test_a_weight_gate_before_a_convolution_is_one_line_before_any_data():
    """DropConnect masks the weights of the fully connected layer that reads its slot; on the CNN a convolution
    reads the input's and all but the last conv block's slots (the model kind's architecture says so)."""
    from dropout_lab.settings.config import ConfigError, validate

    cnn = ["out=x", "scale=smoke", "dataset=cifar10", "model=cnn", "gate=dropconnect"]
    for overrides in (["dropout.input=0.1"], ["dropout.conv=[0.2,0.0,0.0]"]):
        cfg = compose_config([*cnn, *overrides])
        with pytest.raises(ConfigError) as err:
            train.check_trainable(cfg, validate(cfg))
        assert str(err.value).startswith("gate=dropconnect masks fully connected weights, but dropout.input/"
                                         "dropout.conv put it before a convolution") and "\n" not in str(err.value)
    for overrides in (["dropout.conv=[0.0,0.0,0.3]", "dropout.fc=0.5"], ["model=mlp", "dataset=mnist",
                                                                          "dropout.input=0.2"]):
        cfg = compose_config([*cnn, *overrides])
        train.check_trainable(cfg, validate(cfg))
