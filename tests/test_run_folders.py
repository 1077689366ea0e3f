"""A run folder's guarantees (issue 23): a finished result is never overwritten by another run, one process
writes in a folder at a time, a damaged checkpoint costs a restart and never a wrong result, and every refusal
is one line before any training. Each test checks that the finished files are byte-identical afterwards."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

from dropout_lab.settings import run_folder
from dropout_lab.settings.config import compose_config
from dropout_lab.training import checkpoint, engine, evaluation, train

TINY = ["scale=smoke", "model.width=32", "dataset.train_fraction=0.05", "dataset.validation=0", "eval.mc_samples=2",
        "progress=false"]
TIMING = {"wall_seconds", "train_seconds", "evaluation_seconds", "checkpoints_saved", "resumed_after_epoch", "out"}


def data_args(mnist_data_dir, mnist_mirror) -> list[str]:
    return [f"data_dir={mnist_data_dir}", f"dataset.mirror={mnist_mirror or 'null'}"]


def digests(*folders: Path) -> dict[str, str]:
    """sha256 of every file under the folders but a lock (held while another process writes there)."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for folder in folders for p in sorted(Path(folder).rglob("*")) if p.is_file() and p.name != run_folder.LOCK}


def one_error_line(proc: subprocess.CompletedProcess, code: int = 2) -> str:
    assert proc.returncode == code, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def without_timing(value):
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


def command(*args: str, multirun: bool = False) -> list[str]:
    return [sys.executable, "-m", "dropout_lab.train", *(["-m"] if multirun else []), *TINY, *args]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, mnist_data_dir, mnist_mirror) -> Path:
    """A finished tiny run (seed 0, one epoch) in a folder of its own."""
    out = tmp_path_factory.mktemp("finished") / "run"
    train.main(compose_config([f"out={out}", *data_args(mnist_data_dir, mnist_mirror), *TINY]))
    return out


@pytest.mark.slow
def test_a_finished_result_is_never_overwritten_by_another_run(finished, mnist_data_dir, mnist_mirror, tmp_path):
    before = digests(finished)
    args = [f"out={finished}", *data_args(mnist_data_dir, mnist_mirror)]
    other = subprocess.run(command(*args, "seed=4"), capture_output=True, text=True, cwd=tmp_path, timeout=300)
    line = one_error_line(other)
    assert line == (f"error: out={finished} holds the finished result of a run with seed=0, and this run has seed=4; "
                    f"pass another out= or delete {finished} to train this run there")
    assert "epoch" not in other.stdout and digests(finished) == before

    # The same run again is a no-op: nothing trained, the file untouched.
    same = subprocess.run(command(*args), capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert same.returncode == 0 and same.stderr == "", same.stderr
    assert same.stdout.strip() == (f"{finished / 'metrics.json'} is this run's finished result; nothing to do "
                                   "(delete it to train again)")
    assert digests(finished) == before


def test_an_unreadable_result_in_the_folder_is_refused_not_overwritten(mnist_data_dir, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").write_text('{"config": {"seed": 0')  # truncated
    before = digests(out)
    proc = subprocess.run(command(f"out={out}", f"data_dir={mnist_data_dir}"), capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    line = one_error_line(proc)
    assert line.startswith(f"error: out={out} holds {out / 'metrics.json'}, which cannot be read as a finished run")
    assert line.endswith(f"pass another out= or delete {out} to train this run there")
    assert digests(out) == before


@pytest.mark.slow
def test_one_writer_per_run_folder_and_a_killed_writer_leaves_no_lock(finished, mnist_data_dir, mnist_mirror,
                                                                       tmp_path):
    before = digests(finished)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from dropout_lab.settings import run_folder\n"
        f"with run_folder.writing([{str(finished)!r}]):\n    print('held', flush=True); time.sleep(600)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        args = [f"out={finished}", *data_args(mnist_data_dir, mnist_mirror)]
        second = subprocess.run(command(*args), capture_output=True, text=True, cwd=tmp_path, timeout=300)
        line = one_error_line(second)
        assert line.startswith(f"error: {finished.resolve()} is being written by another process (pid {holder.pid}")
        assert line.endswith("wait for it to end or stop it, or pass another out= folder")
        # A pack locks each run's folder too.
        pack = subprocess.run([sys.executable, "-m", "dropout_lab.training.pack", "--dir", str(tmp_path / "pack"),
                               *TINY, *data_args(mnist_data_dir, mnist_mirror), "--run", f"seed=0 out={finished}"],
                              capture_output=True, text=True, cwd=tmp_path, timeout=300)
        assert f"pid {holder.pid}" in one_error_line(pack) and not (tmp_path / "pack" / "pack.json").exists()
        assert digests(finished) == before
    finally:
        holder.kill()  # SIGKILL: no chance to clean up
        holder.wait()
    with run_folder.writing([finished]):  # the kernel released the dead process's lock
        pass
    assert digests(finished) == before and not (finished / run_folder.LOCK).exists()


@pytest.mark.slow
def test_a_pack_with_two_runs_on_one_folder_is_refused_before_training(finished, mnist_data_dir, mnist_mirror,
                                                                        tmp_path):
    before = digests(finished)
    proc = subprocess.run([sys.executable, "-m", "dropout_lab.training.pack", "--dir", str(tmp_path / "pack"), *TINY,
                           *data_args(mnist_data_dir, mnist_mirror), "--run", f"seed=0 out={finished}",
                           "--run", f"seed=1 out={finished}", "--write-runs"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert one_error_line(proc) == (f"error: runs 0 and 1 of the pack both have out={finished}; give each run its "
                                    "own out= folder")
    assert "epoch" not in proc.stdout and not (tmp_path / "pack" / "pack.json").exists()
    assert digests(finished) == before


@pytest.mark.slow
def test_a_pack_writing_runs_never_overwrites_another_runs_result(finished, mnist_data_dir, mnist_mirror, tmp_path):
    before = digests(finished)
    proc = subprocess.run([sys.executable, "-m", "dropout_lab.training.pack", "--dir", str(tmp_path / "pack"), *TINY,
                           *data_args(mnist_data_dir, mnist_mirror), "--run", f"seed=3 out={finished}",
                           "--write-runs"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert one_error_line(proc).startswith(f"error: out={finished} holds the finished result of a run with seed=0")
    assert "epoch" not in proc.stdout and digests(finished) == before


@pytest.mark.slow
def test_a_damaged_checkpoint_is_ignored_and_the_run_retrains_bit_identical(finished, mnist_data_dir, mnist_mirror,
                                                                            tmp_path, monkeypatch, capfd):
    before = digests(finished)
    args = [*data_args(mnist_data_dir, mnist_mirror), *TINY, "train.epochs=2", "seed=2"]
    reference = train.main(compose_config([f"out={tmp_path / 'reference'}", *args]))
    original = engine.PackTrainer.train_epoch
    calls = {"n": 0}

    def stop_in_epoch_2(self, progress=False):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, progress)

    for damage in ("bytes", "tensor", "truncated"):
        out = tmp_path / damage
        cfg = compose_config([f"out={out}", *args])
        calls["n"] = 0
        monkeypatch.setattr(engine.PackTrainer, "train_epoch", stop_in_epoch_2)
        with pytest.raises(checkpoint.Interrupted):
            train.main(cfg)
        monkeypatch.setattr(engine.PackTrainer, "train_epoch", original)
        state_path = out / checkpoint.CHECKPOINT
        if damage == "bytes":  # one byte of the largest tensor flipped in place: torch loads it without complaint
            with zipfile.ZipFile(state_path) as archive:
                entry = max(archive.infolist(), key=lambda info: info.file_size)
            raw = bytearray(state_path.read_bytes())
            at = entry.header_offset
            start = at + 30 + int.from_bytes(raw[at + 26:at + 28], "little") + int.from_bytes(raw[at + 28:at + 30],
                                                                                                 "little")
            raw[start + entry.file_size // 2] ^= 0x40
            state_path.write_bytes(bytes(raw))
        elif damage == "tensor":  # one weight changed and saved again with the old digest
            state = torch.load(state_path, weights_only=True)
            _first_tensor(state["trainer"]).view(-1)[0] += 1.0
            torch.save(state, state_path)
        else:
            state_path.write_bytes(state_path.read_bytes()[:-100])
        capfd.readouterr()
        metrics = train.main(cfg)
        warnings = [line for line in capfd.readouterr().err.splitlines() if line]
        assert len(warnings) == 1 and str(state_path) in warnings[0] and warnings[0].startswith("ignoring"), warnings
        assert warnings[0].endswith("training starts from the first epoch")
        if damage != "truncated":  # the file loads; only its digest tells
            assert warnings[0] == (f"ignoring damaged checkpoint {state_path}: its content does not match its "
                                   "digest; training starts from the first epoch")
        assert metrics["resumed_after_epoch"] is None
        assert without_timing(metrics) == without_timing(json.loads(json.dumps(reference)))
    assert digests(finished) == before


def _first_tensor(node):
    if isinstance(node, torch.Tensor) and node.is_floating_point() and node.numel():
        return node
    values = node.values() if isinstance(node, dict) else node if isinstance(node, (list, tuple)) else ()
    for value in values:
        found = _first_tensor(value)
        if found is not None:
            return found
    return None


@pytest.mark.slow
def test_ctrl_c_is_one_line_exit_130_keeping_the_checkpoint(finished, mnist_data_dir, mnist_mirror, tmp_path):
    before = digests(finished)
    out = tmp_path / "run"
    argv = command(f"out={out}", *data_args(mnist_data_dir, mnist_mirror), "train.epochs=200")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    deadline = time.time() + 240
    while not (out / checkpoint.CHECKPOINT).exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith("interrupted in epoch ") and lines[0].endswith(
        f"{out / checkpoint.CHECKPOINT} holds the state after epoch 1: the same command resumes from it")
    assert sorted(p.name for p in out.iterdir()) == [checkpoint.CHECKPOINT]  # no lock, no result left behind
    assert digests(finished) == before


def test_a_model_too_large_for_memory_is_one_line_naming_the_setting(tmp_path):
    for size, blamed in (("model.depth=1000000000", "model.depth=1000000000"),
                         ("model.depth=10000000", "model.depth=10000000"),
                         ("model.width=100000000", "model.width=100000000")):
        out = tmp_path / "run"
        proc = subprocess.run(command(f"out={out}", "data_dir=/nonexistent", size), capture_output=True, text=True,
                              cwd=tmp_path, timeout=120)
        line = one_error_line(proc)
        assert line.startswith(f"error: {blamed} makes the model too large: about "), line
        assert "GiB for the weights, gradients and momenta of one run, and this machine has" in line
        assert line.endswith(f"choose a smaller {blamed.split('=')[0]} (the scale's is "
                             f"{2 if 'depth' in blamed else 64})")
        assert not out.exists()


@pytest.mark.slow
def test_a_run_with_non_finite_final_numbers_is_recorded_as_diverged(tmp_path, mnist_data_dir, mnist_mirror):
    metrics = train.main(compose_config([f"out={tmp_path / 'run'}", *data_args(mnist_data_dir, mnist_mirror), *TINY,
                                         "train.lr=1000.0"]))
    assert metrics["status"] == "diverged" and metrics["diverged_epoch"] == 1, metrics["diverged_reason"]
    assert "not finite" in metrics["diverged_reason"]
    assert metrics["final"] is None and metrics["weight_norms"] is None and metrics["mc"] is None
    on_disk = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert on_disk["status"] == "diverged" and on_disk["diverged_reason"] == metrics["diverged_reason"]


def test_the_first_non_finite_number_is_named_by_its_place():
    numbers = {"final": {"test_acc": 0.9}, "mc": None, "weight_norms": {"hidden.0": 1.0, "output": float("inf")}}
    assert evaluation.first_non_finite(numbers) == "weight_norms.output"
    assert evaluation.first_non_finite({"final": {"curve": [0.5, float("nan")]}}) == "final.curve.1"
    assert evaluation.first_non_finite({"final": {"test_acc": 0.9}, "samples": 4}) is None


@pytest.mark.slow
def test_every_job_of_a_multirun_is_checked_before_the_first_trains(finished, tmp_path):
    before = digests(finished)
    for sweep, job in ((["dropout.hidden=0.5,1.5"], "job 1 of the sweep (dropout.hidden=1.5)"),
                       (["seed=0,1", "dropout.hidden=0.5,1.5"], "job 1 of the sweep (seed=0 dropout.hidden=1.5)")):
        proc = subprocess.run(command(*sweep, "data_dir=/nonexistent", f"out={tmp_path}/runs/${{hydra:job.num}}",
                                      multirun=True), capture_output=True, text=True, cwd=tmp_path, timeout=120)
        line = one_error_line(proc)
        assert line.startswith(f"error: {job}: dropout.hidden=1.5 is outside [0, 1)"), line
        assert line.endswith("; no job was started") and not (tmp_path / "runs").exists()
    assert digests(finished) == before


def test_the_lock_is_the_holders_and_gone_when_it_is_done(tmp_path):
    with run_folder.writing([tmp_path, tmp_path / "."]):  # one folder, however spelt, is locked once
        assert (tmp_path / run_folder.LOCK).read_text().strip() == str(os.getpid())
        with pytest.raises(run_folder.FolderInUse, match=rf"pid {os.getpid()}"):
            with run_folder.writing([tmp_path]):
                pass
    assert list(tmp_path.iterdir()) == []
