"""Failed training is recognised by the stated rules, with known answers; provenance names only this project's
commit."""

from __future__ import annotations

import math
import shutil
import subprocess

import pytest

from dropout_lab.settings import health, provenance

RULES = {"rebound_fraction": 0.85, "chance_multiple": 2.0}


def run(losses, train_acc=0.99, status="ok", diverged_epoch=None):
    return {"status": status, "diverged_epoch": diverged_epoch,
            "history": [{"epoch": i + 1, "train_loss": loss} for i, loss in enumerate(losses)],
            "final": {"train_acc": train_acc}}


def test_a_healthy_run_is_ok():
    assert health.classify(run([0.7, 0.4, 0.2, 0.1]), 10, RULES) == health.Health("ok", None, "")


def test_loss_climbing_back_to_a_uniform_guess_is_a_collapse_at_the_first_epoch_back():
    # 0.85 ln 10 = 1.957: fell to 1.61, back above at epoch 3 (the paper-scale rate-0.9 runs).
    found = health.classify(run([1.61, 1.83, 2.03, 2.11, 1.80], train_acc=0.40), 10, RULES)
    assert found.status == "collapsed" and found.epoch == 3
    assert "1.61" in found.reason and "2.03" in found.reason and "1.96" in found.reason


def test_a_loss_that_starts_high_and_falls_is_not_a_rebound():
    assert health.classify(run([2.29, 2.1, 1.5, 0.9]), 10, RULES).status == "ok"


def test_final_training_accuracy_near_chance_is_a_collapse_at_the_last_epoch():
    # Never fell below the rebound threshold, and 15 % is below 2 x chance (20 %).
    found = health.classify(run([2.30, 2.30, 2.29], train_acc=0.15), 10, RULES)
    assert found == health.Health("collapsed", 3, found.reason) and "15.0 %" in found.reason
    assert health.classify(run([2.30, 2.30, 2.29], train_acc=0.21), 10, RULES).status == "ok"


def test_a_diverged_run_keeps_its_status_and_epoch():
    found = health.classify(run([0.5, math.nan], status="diverged", diverged_epoch=2), 10, RULES)
    assert found.status == "diverged" and found.epoch == 2


def test_rules_scale_with_the_number_of_classes():
    # ln 100 = 4.6: a loss of 2.1 is far from a uniform guess over 100 classes.
    assert health.classify(run([1.6, 2.1]), 100, RULES).status == "ok"
    assert health.classify(run([1.6, 2.1]), 10, RULES).status == "collapsed"


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_commit_is_unknown_when_the_code_sits_inside_another_repository(tmp_path):
    outer = tmp_path / "other"
    project = outer / "carry"
    (project / "src" / "dropout_lab").mkdir(parents=True)
    git = ["git", "-c", "user.email=a@b", "-c", "user.name=a", "-C", str(outer)]
    subprocess.run([*git, "init", "-q"], check=True)
    (outer / "f").write_text("x")
    subprocess.run([*git, "add", "f"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "x"], check=True)
    assert provenance.git_commit(project) == {"commit": None, "dirty": None}
    assert provenance.git_commit(outer)["commit"]  # its own checkout: the commit is read


@pytest.mark.skipif(not (provenance.PROJECT_ROOT / ".git").exists(), reason="not a git checkout")
def test_a_commit_outside_this_project_history_is_flagged():
    assert provenance.in_history("0" * 40) is False
    assert provenance.in_history(provenance.git_commit()["commit"]) is True
