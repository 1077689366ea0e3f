"""A pack's checkpoint is written in the background, whole, at a bounded cost to training."""

from __future__ import annotations

import threading

import pytest
import torch

from dropout_lab.training import checkpoint
from dropout_lab.settings.atomic import WriteError


def content(path):
    """A checkpoint's saved state without its content digest."""
    return {k: v for k, v in torch.load(path, weights_only=True).items() if k != checkpoint.DIGEST}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_file_holds_the_state_at_save_time_even_as_training_goes_on(tmp_path):
    weights = torch.arange(6.0)
    history = [{"epoch": 1}]
    saver = checkpoint.Checkpointer(tmp_path / "c.pt")
    assert saver.save(lambda: {"params": [weights], "histories": history, "epoch": 1})
    weights.add_(100.0)  # training continues in place while the file is written
    history.append({"epoch": 2})
    saver.wait()
    saved = torch.load(tmp_path / "c.pt", weights_only=True)
    assert torch.equal(saved["params"][0], torch.arange(6.0)) and saved["histories"] == [{"epoch": 1}]


def test_saves_keep_to_the_interval_and_the_budget(tmp_path):
    clock = Clock()
    saver = checkpoint.Checkpointer(tmp_path / "c.pt", min_seconds=10.0, budget=0.05, clock=clock)
    assert not saver.due()  # sooner than min_seconds after the start
    clock.now = 10.0
    state = {"w": torch.zeros(3)}

    def slow_copy():  # the copy into host memory holds training up for 2 s
        clock.now += 2.0
        return state

    assert saver.save(slow_copy)
    saver.wait()
    clock.now += 20.0  # 20 s later: interval kept, but 2 s is 10 % of 20 s, over the 5 % budget
    assert not saver.due()
    clock.now += 20.0  # 40 s: 5 %
    assert saver.due()


def test_no_save_starts_while_the_last_file_is_still_being_written(tmp_path, monkeypatch):
    release = threading.Event()
    original = torch.save

    def slow_save(obj, path):
        release.wait(10)
        original(obj, path)

    monkeypatch.setattr(torch, "save", slow_save)
    saver = checkpoint.Checkpointer(tmp_path / "c.pt")
    assert saver.save(lambda: {"epoch": 1})
    assert not saver.save(lambda: {"epoch": 2})
    release.set()
    saver.wait()
    assert saver.save(lambda: {"epoch": 3})
    saver.wait()
    assert content(tmp_path / "c.pt") == {"epoch": 3} and saver.saves == 2


def test_a_failed_write_is_one_line_naming_the_file_and_keeps_the_last_good_one(tmp_path, monkeypatch):
    saver = checkpoint.Checkpointer(tmp_path / "c.pt")
    saver.save(lambda: {"epoch": 1})
    saver.wait()

    def full_disk(obj, path):
        raise RuntimeError("No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    saver.save(lambda: {"epoch": 2})
    with pytest.raises(WriteError) as info:
        saver.wait()
    assert str(tmp_path / "c.pt") in str(info.value) and "\n" not in str(info.value)
    assert content(tmp_path / "c.pt") == {"epoch": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]  # no partial file left beside it


def test_a_checkpoint_of_other_settings_is_ignored(tmp_path):
    saver = checkpoint.Checkpointer(tmp_path / "c.pt")
    saver.save(lambda: {"fingerprint": "other", "epoch": 3})
    saver.wait()
    assert checkpoint.load(tmp_path / "c.pt", "mine") is None
    assert checkpoint.load(tmp_path / "c.pt", "other")["epoch"] == 3


def test_a_checkpoint_whose_content_differs_from_its_digest_is_ignored_in_one_line(tmp_path, capsys):
    saver = checkpoint.Checkpointer(tmp_path / "c.pt")
    saver.save(lambda: {"fingerprint": "mine", "epoch": 1, "weights": [torch.arange(4.0)]})
    saver.wait()
    assert checkpoint.load(tmp_path / "c.pt", "mine")["epoch"] == 1
    for change in ({"weights": [torch.tensor([0.0, 1.0, 2.0, 3.5])]}, {"epoch": 2},
                   {checkpoint.DIGEST: None}):  # a weight, a plain value, a file written without a digest
        state = torch.load(tmp_path / "c.pt", weights_only=True)
        torch.save({**state, **change}, tmp_path / "d.pt")
        capsys.readouterr()
        assert checkpoint.load(tmp_path / "d.pt", "mine") is None
        assert capsys.readouterr().err == (f"ignoring damaged checkpoint {tmp_path / 'd.pt'}: its content does not "
                                           "match its digest; training starts from the first epoch\n")


def test_the_fingerprint_is_the_runs_identity_and_their_device():
    from dropout_lab.settings.config import compose_config

    def fingerprint(*overrides: str) -> str:
        return checkpoint.fingerprint([compose_config(["out=runs/a", "scale=smoke", *overrides])])

    mine = fingerprint()
    # What cannot change the numbers (identity.NOT_DEFINING) keeps the checkpoint ...
    assert fingerprint("threads=3", "progress=false", "data_dir=/elsewhere", "checkpoint_seconds=60",
                       "eval.batch_size=500") == mine
    assert checkpoint.fingerprint([compose_config(["out=runs/b", "scale=smoke"])]) == mine
    # ... a defining setting does not, and neither does the device (its random generators live on it).
    assert fingerprint("seed=1") != mine and fingerprint("dropout.hidden=0.3") != mine
    assert fingerprint("device=cpu") != mine
    # A pack's fingerprint follows its runs in order.
    a, b = (compose_config(["out=runs/a", "scale=smoke", f"seed={s}"]) for s in (0, 1))
    assert checkpoint.fingerprint([a, b]) != checkpoint.fingerprint([b, a])
