"""The experiment tracker (dropout_lab.training.tracking, config/logger/): each run of a pack is its own tracked
run, with its settings and its per-epoch metrics, and no tracker changes a run's numbers or its identity."""

from __future__ import annotations

import csv
import json
import re
import socket
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from dropout_lab.settings import identity
from dropout_lab.settings.config import ConfigError, compose_config
from dropout_lab.training import checkpoint, engine, tracking, train

TINY = ["dataset=mnist", "model=mlp", "scale=smoke", "model.width=48", "train.epochs=2", "eval.mc_samples=3",
        "dataset.train_fraction=0.03", "dataset.test_fraction=0.05", "progress=false"]
RUNS = [["seed=0", "dropout.hidden=0.5"], ["seed=1", "dropout.input=0.2"]]
# What may differ between two trainings of the same runs: timings, and where and how they were recorded.
TIMING = {"wall_seconds", "train_seconds", "evaluation_seconds", "checkpoints_saved"}
HISTORY_KEYS = ("train_loss", "train_acc", "test_loss", "test_acc", "val_loss", "val_acc")


def pack_configs(folder, data_dir, mirror, *logger: str) -> list:
    return [compose_config([f"data_dir={data_dir}", f"dataset.mirror={mirror or 'null'}", *TINY, *own, *logger,
                            f"out={folder / f'run{i}'}"]) for i, own in enumerate(RUNS)]


def numbers_only(value):
    """A record without its timings and without the settings that say where it was written and logged."""
    if isinstance(value, dict):
        return {k: numbers_only(v) for k, v in value.items() if k not in TIMING | {"out", "logger"}}
    if isinstance(value, list):
        return [numbers_only(v) for v in value]
    return value


@pytest.fixture(scope="module")
def untracked(tmp_path_factory, mnist_data_dir, mnist_mirror) -> list[dict]:
    """The pack trained with logger=none: the numbers every tracked training must give."""
    folder = tmp_path_factory.mktemp("untracked")
    return train.train_runs(pack_configs(folder, mnist_data_dir, mnist_mirror), folder / "pack.pt")


def assert_same_runs(tracked: list[dict], untracked: list[dict]) -> None:
    assert [r["identity"] for r in tracked] == [r["identity"] for r in untracked]
    assert [r["pack_fingerprint"] for r in tracked] == [r["pack_fingerprint"] for r in untracked]
    assert numbers_only(tracked) == numbers_only(untracked)


# --------------------------------------------------------------------------- the backends


@pytest.mark.slow
def test_tensorboard_has_a_folder_per_run_with_its_history(tmp_path, mnist_data_dir, mnist_mirror, untracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfgs = pack_configs(tmp_path, mnist_data_dir, mnist_mirror, "logger=tensorboard", f"logger.dir={tmp_path / 'tb'}")
    records = train.train_runs(cfgs, tmp_path / "pack.pt")
    assert_same_runs(records, untracked)
    folders = sorted(p.parent for p in (tmp_path / "tb").rglob("events.out.tfevents.*"))
    assert folders == [tmp_path / "tb" / tracking.run_name(c.out) for c in cfgs]
    for folder, record in zip(folders, records):
        events = EventAccumulator(str(folder))
        events.Reload()
        for key in HISTORY_KEYS:
            logged = [(e.step, e.value) for e in events.Scalars(key)]
            # TensorBoard keeps float32
            assert logged == [(h["epoch"], pytest.approx(h[key], rel=1e-6)) for h in record["history"]], key
        assert events.Scalars("final/test_acc")[-1].value == pytest.approx(record["final"]["test_acc"], rel=1e-6)
        settings = events.Tensors("settings/text_summary")[0].tensor_proto.string_val[0].decode()
        assert f"| seed | {record['seed']} |" in settings and "| train.epochs | 2 |" in settings


@pytest.mark.slow
def test_mlflow_has_a_run_per_run_with_its_settings_and_history(tmp_path, mnist_data_dir, mnist_mirror, untracked):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"  # a folder that does not exist yet
    cfgs = pack_configs(tmp_path, mnist_data_dir, mnist_mirror, "logger=mlflow", f"logger.tracking_uri={uri}",
                        "logger.experiment=tracking-test")
    records = train.train_runs(cfgs, tmp_path / "pack.pt")
    assert_same_runs(records, untracked)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("tracking-test")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == sorted(tracking.run_name(c.out) for c in cfgs)
    for cfg, record in zip(cfgs, records):
        run = runs[tracking.run_name(cfg.out)]
        assert run.info.status == "FINISHED"
        assert run.data.tags["dropout_lab.identity"] == record["identity"]
        params = run.data.params
        assert params["seed"] == str(record["seed"]) and params["train.epochs"] == "2"
        assert params["dropout.hidden"] == json.dumps(record["config"]["dropout"]["hidden"])
        assert params["logger.name"] == "mlflow" and params["out"] == cfg.out
        for key in HISTORY_KEYS:
            logged = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
            assert logged == [(h["epoch"], h[key]) for h in record["history"]], key
        assert run.data.metrics["final/test_acc"] == record["final"]["test_acc"]
        assert run.data.metrics["mc/test_acc"] == record["mc"]["test_acc"]


@pytest.mark.slow
def test_csv_has_a_row_per_epoch(tmp_path, mnist_data_dir, mnist_mirror, untracked):
    cfgs = pack_configs(tmp_path, mnist_data_dir, mnist_mirror, "logger=csv", f"logger.dir={tmp_path / 'csv'}")
    records = train.train_runs(cfgs, tmp_path / "pack.pt")
    assert_same_runs(records, untracked)
    for cfg, record in zip(cfgs, records):
        folder = tmp_path / "csv" / tracking.run_name(cfg.out)
        with open(folder / "metrics.csv", newline="") as file:
            rows = list(csv.DictReader(file))
        assert [int(row["epoch"]) for row in rows] == [h["epoch"] for h in record["history"]]
        for row, entry in zip(rows, record["history"]):
            assert {key: float(row[key]) for key in HISTORY_KEYS} == {key: entry[key] for key in HISTORY_KEYS}
        settings = json.loads((folder / "settings.json").read_text())
        assert settings["seed"] == record["seed"] and settings["dropout_lab.identity"] == record["identity"]
        assert json.loads((folder / "final.json").read_text())["final/test_acc"] == record["final"]["test_acc"]


@pytest.mark.slow
def test_a_resumed_pack_logs_each_run_whole_and_ends_the_stopped_one(tmp_path, mnist_data_dir, mnist_mirror,
                                                                     monkeypatch):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfgs = pack_configs(tmp_path, mnist_data_dir, mnist_mirror, "logger=mlflow", f"logger.tracking_uri={uri}")
    original = engine.PackTrainer.train_epoch
    calls = {"n": 0}

    def stop_in_epoch_2(self, progress=False):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, progress)

    monkeypatch.setattr(engine.PackTrainer, "train_epoch", stop_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train.train_runs(cfgs, tmp_path / "pack.pt")
    monkeypatch.setattr(engine.PackTrainer, "train_epoch", original)
    records = train.train_runs(cfgs, tmp_path / "pack.pt")
    assert [r["resumed_after_epoch"] for r in records] == [1, 1]

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("dropout-lab")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED", "KILLED", "KILLED"]
    for run in runs:
        record = records[[tracking.run_name(c.out) for c in cfgs].index(run.info.run_name)]
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "test_acc"))
        # the stopped run holds what it trained; the resumed one all of its history, the epoch before too
        assert steps == ([1] if run.info.status == "KILLED" else [h["epoch"] for h in record["history"]])


# --------------------------------------------------------------------------- failures


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens on it once the probe is closed


def test_an_unreachable_server_is_one_line_before_training(tmp_path, monkeypatch):
    uri = f"http://127.0.0.1:{closed_port()}"
    cfg = compose_config([f"out={tmp_path / 'run'}", f"data_dir={tmp_path / 'data'}", "scale=smoke",
                          "logger=mlflow", f"logger.tracking_uri={uri}"])

    def no_data(*args, **kwargs):
        raise AssertionError("the data was loaded before the tracker was checked")

    monkeypatch.setattr(train, "load_tensors", no_data)
    with pytest.raises(ConfigError) as refused:
        train.main(cfg)
    said = str(refused.value)
    assert "\n" not in said and said.startswith(f"logger.tracking_uri={uri} cannot be reached")
    assert f"logger.tracking_uri={tracking.LOCAL_STORE}" in said and "logger=none" in said
    assert not (tmp_path / "run" / "metrics.json").exists()

    proc = subprocess.run([sys.executable, "-m", "dropout_lab.train", f"out={tmp_path / 'cli'}", "scale=smoke",
                           f"data_dir={tmp_path / 'data'}", "logger=mlflow", f"logger.tracking_uri={uri}"],
                          check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"error: {said}"] and "epoch" not in proc.stdout


@pytest.mark.parametrize("overrides, expected", [
    (["logger.name=wandb"], "logger.name='wandb' is unknown; choose one of none, tensorboard, mlflow, csv"),
    (["logger=tensorboard", "logger.dir=null"], "logger.dir is not set; logger=tensorboard writes one folder"),
    (["logger=mlflow", "logger.tracking_uri=null"], "logger.tracking_uri is not set; give a server"),
    (["logger=mlflow", "logger.tracking_uri=./mlruns"], ("logger.tracking_uri=./mlruns is MLflow's file store, which "
                                                         "this MLflow refuses; use the local store "
                                                         "logger.tracking_uri=sqlite:///results/mlflow.db")),
])
def test_a_tracker_that_cannot_work_is_one_line(tmp_path, overrides, expected, monkeypatch):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.raises(ConfigError, match="^" + re.escape(expected)):
        tracking.check(compose_config([f"out={tmp_path}", *overrides]))


def test_a_missing_library_names_the_package(tmp_path, monkeypatch):
    cfg = compose_config([f"out={tmp_path}", "logger=tensorboard", f"logger.dir={tmp_path / 'tb'}"])
    real = tracking.importlib.util.find_spec
    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda name: None if name == "tensorboard" else real(name))
    with pytest.raises(ConfigError, match="^logger=tensorboard needs the tensorboard package, which is not "
                                          "installed: pip install tensorboard"):
        tracking.check(cfg)


@pytest.mark.slow
def test_a_tracker_that_fails_mid_run_warns_once_and_training_finishes(tmp_path, mnist_data_dir, mnist_mirror,
                                                                       untracked, monkeypatch, capsys):
    logged = []

    def disk_full_in_epoch_2(self, epoch, metrics):
        if epoch == 2:
            raise OSError(28, "No space left on device")
        logged.append(epoch)

    monkeypatch.setattr(tracking.CsvRun, "log_epoch", disk_full_in_epoch_2)
    cfgs = pack_configs(tmp_path, mnist_data_dir, mnist_mirror, "logger=csv", f"logger.dir={tmp_path / 'csv'}")
    records = train.train_runs(cfgs, tmp_path / "pack.pt")
    assert_same_runs(records, untracked)
    assert [len(r["history"]) for r in records] == [2, 2] and all(r["final"] for r in records)
    warnings = [line for line in capsys.readouterr().err.splitlines() if "tracker" in line]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("warning: the csv tracker failed while it logged an epoch (OSError: [Errno 28] No "
                                  "space left on device); training goes on without it")
    assert logged == [1, 1]  # the first epoch of each run; nothing after the failure
    assert not list((tmp_path / "csv").rglob("final.json"))


# --------------------------------------------------------------------------- identity


def test_no_logger_setting_changes_a_runs_identity_or_its_checkpoint():
    def composed(*logger: str):
        return compose_config(["out=runs/a", "scale=smoke", *logger])

    plain = composed()
    for logger in (["logger=tensorboard"], ["logger=mlflow", "logger.tracking_uri=http://tracker:5000"],
                   ["logger=csv", "logger.dir=elsewhere"]):
        tracked = composed(*logger)
        assert tracked.logger.name != plain.logger.name
        assert identity.identity(OmegaConf.to_container(tracked, resolve=True)) == \
            identity.identity(OmegaConf.to_container(plain, resolve=True))
        assert checkpoint.fingerprint([tracked]) == checkpoint.fingerprint([plain])


def test_a_backend_is_imported_only_when_chosen(tmp_path):
    code = ("import sys; from dropout_lab.training import train, tracking; "
            "from dropout_lab.settings.config import compose_config; "
            f"cfg = compose_config(['out={tmp_path}', 'logger=csv', 'logger.dir={tmp_path / 'csv'}']); "
            "train.check_runs([cfg], __import__('pathlib').Path(cfg.out) / 'pack.pt'); "
            "tracking.PackTracker([cfg]).__enter__(); "
            "print(sorted(m for m in ('tensorboard', 'mlflow', 'torch.utils.tensorboard') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
