"""An experiment tracker for the runs of a pack, off by default (config/logger/, docs/tracking.md).

    logger=tensorboard   TensorBoard event files, one folder per run under logger.dir
    logger=mlflow        one MLflow run per run, in the store or server at logger.tracking_uri
    logger=csv           metrics.csv and settings.json, one folder per run under logger.dir

Each run of a pack is tracked as its own run: its settings (the resolved config, flattened) when it
starts, each epoch's entry of its history as soon as the epoch is done, its final numbers at the end.
A tracker only reads what training has computed and draws no random numbers, and no logger setting
is part of a run's identity: a run gives the same numbers and the same metrics.json with any logger.

What would make a tracker useless (its library missing, a server that cannot be reached, a folder that
cannot be written) is one line from `check`, before any training. A backend that fails later warns
once and is switched off for the rest of the pack; the runs train on. A backend's library is imported
only when it is chosen.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import json
import math
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, Protocol

from omegaconf import DictConfig, OmegaConf

from dropout_lab.settings import run_folder
from dropout_lab.settings.checks import ConfigError
from dropout_lab.settings.identity import identity
from dropout_lab.settings.vocabulary import OK

if TYPE_CHECKING:
    from typing import Self  # Python 3.11; only read by type checkers here

NONE = "none"
BACKENDS = (NONE, "tensorboard", "mlflow", "csv")
# The packages each backend needs, as pip names them (import name: pip name).
PACKAGES = {"tensorboard": {"tensorboard": "tensorboard"},
            "mlflow": {"mlflow": "mlflow-skinny"}}
SQL_PACKAGES = {"sqlalchemy": "sqlalchemy", "alembic": "alembic"}  # MLflow's SQLite store
LOCAL_STORE = "sqlite:///results/mlflow.db"
REACH_SECONDS = 5.0  # how long the check waits for a tracking server
MLFLOW_PARAM_CHARS = 6000  # MLflow refuses a parameter value longer than this
MLFLOW_BATCH = 100  # parameters per MLflow request (its limit)


class RunTracker(Protocol):
    """One run as a backend records it."""

    def start(self, settings: Mapping[str, Any]) -> None: ...
    def log_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None: ...
    def finish(self, final: Mapping[str, float], failed: bool = False) -> None: ...
    def stop(self) -> None: ...  # its pack stopped before the end (an error, Ctrl-C)


# --------------------------------------------------------------------------- what gets logged


def flat_settings(resolved: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{dotted key: value} of a resolved config; a list stays one value."""
    out: dict[str, Any] = {}
    for key, value in resolved.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flat_settings(value, name))
        else:
            out[name] = value
    return out


def numbers(node: Any, prefix: str) -> dict[str, float]:
    """{"prefix/key/...": number} of every finite number in `node` (metrics.json records NaN as null)."""
    if isinstance(node, Mapping):
        out: dict[str, float] = {}
        for key, value in node.items():
            out.update(numbers(value, f"{prefix}/{key}"))
        return out
    if isinstance(node, (int, float)) and not isinstance(node, bool) and math.isfinite(node):
        return {prefix: float(node)}
    return {}


def epoch_metrics(entry: Mapping[str, Any]) -> dict[str, float]:
    """One epoch of a run's history, as logged: every number but the epoch, under its metrics.json name."""
    return {key: float(value) for key, value in entry.items()
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool)}


def final_metrics(record: Mapping[str, Any]) -> dict[str, float]:
    """A finished run's final numbers, from its metrics.json record: final/*, mc/*, unscaled_inference/*."""
    out: dict[str, float] = {}
    for part in ("final", "mc", "unscaled_inference"):
        out.update(numbers(record.get(part) or {}, part))
    return out


def run_name(out: str) -> str:
    """A run's name in a tracker: its out folder as a relative path (results/runs/mnist_mlp/.../seed0)."""
    parts = [p for p in PurePath(out).parts if p not in ("..", ".")]
    if PurePath(out).is_absolute():
        parts = parts[1:]
    return "/".join(parts) or "run"


# --------------------------------------------------------------------------- backends


class TensorBoardRun:
    """DIR/<run name>/events.out.tfevents.*: a scalar per metric (named as in metrics.json), step = epoch."""

    def __init__(self, folder: Path):
        self.folder, self.writer, self.last_epoch = folder, None, 0

    def start(self, settings: Mapping[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(self.folder))
        table = "\n".join(f"| {key} | {json.dumps(value, default=str)} |" for key, value in settings.items())
        self.writer.add_text("settings", "| setting | value |\n| --- | --- |\n" + table, 0)
        self.writer.flush()

    def log_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, epoch)
        self.writer.flush()  # visible while the run trains, not only at its end
        self.last_epoch = epoch

    def finish(self, final: Mapping[str, float], failed: bool = False) -> None:
        for key, value in final.items():
            self.writer.add_scalar(key, value, self.last_epoch)
        self.writer.close()

    def stop(self) -> None:
        if self.writer is not None:
            self.writer.close()


class MlflowRun:
    """An MLflow run: the settings as parameters, each history entry as metrics at step = epoch, tags naming the
    run's folder and identity; ended FINISHED, FAILED (diverged) or KILLED (its pack stopped)."""

    def __init__(self, client: Any, experiment_id: str, name: str):
        self.client, self.experiment_id, self.name, self.run_id, self.last_epoch = client, experiment_id, name, None, 0

    def start(self, settings: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        tags = {"mlflow.runName": self.name, "dropout_lab.out": str(settings["out"]),
                "dropout_lab.identity": str(settings["dropout_lab.identity"])}
        self.run_id = self.client.create_run(self.experiment_id, run_name=self.name, tags=tags).info.run_id
        params = [Param(key, json.dumps(value, default=str).strip('"')[:MLFLOW_PARAM_CHARS])
                  for key, value in settings.items() if key != "dropout_lab.identity"]
        for at in range(0, len(params), MLFLOW_BATCH):
            self.client.log_batch(self.run_id, params=params[at:at + MLFLOW_BATCH])

    def _log(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(key, value, now, step) for key, value in metrics.items()])

    def log_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        self._log(metrics, epoch)
        self.last_epoch = epoch

    def finish(self, final: Mapping[str, float], failed: bool = False) -> None:
        if final:
            self._log(final, self.last_epoch)
        self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")

    def stop(self) -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, status="KILLED")


class CsvRun:
    """DIR/<run name>/settings.json (the flattened settings) and metrics.csv (a row per epoch, written as it ends;
    final.json at the end)."""

    def __init__(self, folder: Path):
        self.folder, self.columns = folder, None

    def start(self, settings: Mapping[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "settings.json").write_text(json.dumps(dict(settings), indent=1, default=str) + "\n")
        (self.folder / "metrics.csv").unlink(missing_ok=True)  # a resumed run logs its whole history again

    def log_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        row = {"epoch": epoch, **metrics}
        with open(self.folder / "metrics.csv", "a", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=self.columns or list(row), extrasaction="ignore")
            if self.columns is None:
                self.columns = list(row)
                writer.writeheader()
            writer.writerow(row)

    def finish(self, final: Mapping[str, float], failed: bool = False) -> None:
        (self.folder / "final.json").write_text(json.dumps({"failed": failed, **final}, indent=1) + "\n")

    def stop(self) -> None:
        pass  # every row is on disk as soon as its epoch ends


# --------------------------------------------------------------------------- checks, before any training


def _missing_package(backend: str, needed: Mapping[str, str]) -> None:
    for module, pip_name in needed.items():
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"logger={backend} needs the {pip_name} package, which is not installed: pip install "
                              f"{' '.join(needed.values())} (or logger=none)")


def _check_server(uri: str) -> None:
    """Any HTTP answer at all means a server listens; no answer is one line naming the URI and the fix."""
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=REACH_SECONDS):
            return
    except urllib.error.HTTPError:
        return  # it answered
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise ConfigError(f"logger.tracking_uri={uri} cannot be reached ({reason}); start the MLflow server there "
                          f"(mlflow server --host HOST --port PORT), or log to the local store with "
                          f"logger.tracking_uri={LOCAL_STORE}, or turn tracking off with logger=none") from None


def _check_mlflow(uri: str | None) -> None:
    if not uri:
        raise ConfigError(f"logger.tracking_uri is not set; give a server (http://HOST:PORT) or the local store "
                          f"{LOCAL_STORE}")
    scheme = urllib.parse.urlparse(uri).scheme
    if scheme in ("http", "https"):
        _check_server(uri)
    elif scheme == "sqlite":
        _missing_package("mlflow", SQL_PACKAGES)
        path = uri.removeprefix("sqlite:///")
        if path and path != ":memory:":
            run_folder.writable_folder("the folder of logger.tracking_uri", Path(path).parent)
    elif scheme in ("", "file"):
        # MLflow 3 keeps its file store only behind this switch (earlier versions have none); without it every
        # run's start would fail
        from mlflow import environment_variables

        allowed = getattr(environment_variables, "MLFLOW_ALLOW_FILE_STORE", None)
        if allowed is not None and not allowed.get():
            raise ConfigError(f"logger.tracking_uri={uri} is MLflow's file store, which this MLflow refuses; use "
                              f"the local store logger.tracking_uri={LOCAL_STORE} (or set MLFLOW_ALLOW_FILE_STORE=true)")


def logger_settings(cfg: DictConfig) -> DictConfig:
    """The run's logger block; a config composed without one (before config/logger/ existed) tracks nothing."""
    return OmegaConf.select(cfg, "logger", default=None) or OmegaConf.create({"name": NONE})


def check(cfg: DictConfig) -> None:
    """Refuse, in one line and before any training, a tracker that could not record anything."""
    logger = logger_settings(cfg)
    if logger.name not in BACKENDS:
        raise ConfigError(f"logger.name={logger.name!r} is unknown; choose one of {', '.join(BACKENDS)} "
                          "(config/logger/)")
    if logger.name == NONE:
        return
    _missing_package(logger.name, PACKAGES.get(logger.name, {}))
    if logger.name == "mlflow":
        _check_mlflow(logger.tracking_uri)
    else:
        if not logger.dir:
            raise ConfigError(f"logger.dir is not set; logger={logger.name} writes one folder per run under it, "
                              f"e.g. logger.dir=results/{logger.name}")
        run_folder.writable_folder("logger.dir", Path(logger.dir))


# --------------------------------------------------------------------------- a pack's runs


def _mlflow_runs(logger: DictConfig, names: Sequence[str]) -> list[MlflowRun]:
    # A server that stops answering mid-run: a few quick retries, not MLflow's minutes of back-off, so that
    # training waits little before the tracker is switched off (the user's own settings win).
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    from mlflow.tracking import MlflowClient

    uri = logger.tracking_uri
    database = uri.removeprefix("sqlite:///") if uri.startswith("sqlite:///") and uri != "sqlite:///:memory:" else None
    with _one_at_a_time(Path(f"{database}.lock") if database else None):
        if database:
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        client = MlflowClient(tracking_uri=uri)
        found = client.get_experiment_by_name(logger.experiment)
        experiment_id = found.experiment_id if found is not None else client.create_experiment(logger.experiment)
    return [MlflowRun(client, experiment_id, name) for name in names]


@contextlib.contextmanager
def _one_at_a_time(lock: Path | None):
    """Packs that start together on one new SQLite store would each create its tables (and the experiment) and
    all but one fail: the first to hold the lock creates them, the others then find them."""
    if lock is None:
        yield
        return
    import fcntl

    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _runs(logger: DictConfig, names: Sequence[str]) -> list[RunTracker]:
    if logger.name == "mlflow":
        return _mlflow_runs(logger, names)
    backend = TensorBoardRun if logger.name == "tensorboard" else CsvRun
    return [backend(Path(logger.dir) / name) for name in names]


class PackTracker:
    """The trackers of a pack's runs behind one guard: the first failure warns once and ends all tracking of the
    pack, never the training. A context manager: a pack that stops early ends its tracked runs as killed."""

    def __init__(self, cfgs: Sequence[DictConfig]):
        self.logger = logger_settings(cfgs[0])
        self.backend = self.logger.name
        self.cfgs, self.runs, self.logged = cfgs, [], [0] * len(cfgs)
        self.on = self.backend != NONE

    def _guard(self, what: str, action: Callable[[], Any]) -> Any:
        if not self.on:
            return None
        try:
            return action()
        except Exception as err:  # noqa: BLE001 - whatever a tracker raises, training goes on
            self.on = False
            print(f"warning: the {self.backend} tracker failed while it {what} ({type(err).__name__}: "
                  f"{' '.join(str(err).split())[:300]}); training goes on without it, and each run's "
                  "metrics.json is complete", file=sys.stderr, flush=True)
            return None

    def __enter__(self) -> Self:
        def start():
            self.runs = _runs(self.logger, [run_name(c.out) for c in self.cfgs])
            for cfg, run in zip(self.cfgs, self.runs):
                resolved = OmegaConf.to_container(cfg, resolve=True)
                run.start({**flat_settings(resolved), "dropout_lab.identity": identity(resolved)["digest"]})
        self._guard("started the runs", start)
        return self

    def log_new_epochs(self, histories: Sequence[Sequence[Mapping[str, Any]]]) -> None:
        """Log each run's history entries not yet logged (after a resume: the epochs trained before it, too)."""
        def log():
            for k, (run, history) in enumerate(zip(self.runs, histories)):
                for entry in history[self.logged[k]:]:
                    run.log_epoch(int(entry["epoch"]), epoch_metrics(entry))
                self.logged[k] = len(history)
        self._guard("logged an epoch", log)

    def finish(self, records: Sequence[Mapping[str, Any]]) -> None:
        """End each run with its final numbers, from its metrics.json record; a diverged run ends as failed."""
        def finish():
            for run, record in zip(self.runs, records):
                run.finish(final_metrics(record), failed=record.get("status") != OK)
            self.runs = []
        self._guard("ended the runs", finish)

    def __exit__(self, kind, error, traceback) -> None:
        if error is not None and self.runs:  # stopped before the end: close what is open; the error goes on
            def stop():
                for run in self.runs:
                    run.stop()
            self._guard("ended the stopped runs", stop)
