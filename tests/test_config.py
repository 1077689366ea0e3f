"""Bad settings end with one line naming the key, before any data is touched."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dropout_lab.settings.config import COMPOSITION_ERRORS, ConfigError, compose_config, describe_composition_error, validate

# (overrides, text the one-line error must contain)
BAD = [
    (["dropout.input=1.2"], "dropout.input=1.2 is outside [0, 1)"),
    (["dropout.input=-0.1"], "dropout.input=-0.1"),
    (["dropout.hidden=1.0"], "dropout.hidden=1.0"),
    (["dropout.hidden=[0.5]"], "dropout.hidden lists 1 rates"),
    (["dropout.hidden=[0.5,1.5]"], "dropout.hidden[1]=1.5"),
    (["dropout.hidden=abc"], "dropout.hidden='abc' is not a number"),
    (["dropout.input=abc"], "dropout.input=abc"),
    (["gate=triangular"], "gate=triangular is unknown; choose one of bernoulli, dropconnect, gaussian, none, uniform"),
    (["dataset=imagenet"], "dataset=imagenet is unknown; choose one of cifar10, mnist"),
    (["model=resnet"], "model=resnet is unknown; choose one of cnn, mlp"),
    (["gate.name=triangular"], "gate='triangular' is unknown"),
    (["model.width=-3"], "model.width=-3"),
    (["model.width=0"], "model.width=0"),
    (["model.depth=-1"], "model.depth=-1"),
    (["model.channels=[8,16]"], "model.channels does not apply to model=mlp"),
    (["model=cnn", "dataset=cifar10", "model.channels=[]"], "model.channels is empty"),
    (["model=cnn", "model.channels=3"], "model.channels=3 must be a list"),
    (["scale=huge"], "scale=huge is unknown; choose one of paper, quick, smoke"),
    (["model=cnn", "dataset=cifar10", "model.kernel_size=4"], "model.kernel_size=4 must be odd"),
    (["model=cnn", "dataset=cifar10", "dropout=both"], "dropout.hidden=0.5 applies to model=mlp"),
    (["dropout=fc-only"], "dropout.fc=0.5 applies to model=cnn"),
    (["gate=none", "dropout=both"], "gate=none cannot drop"),
    (["model.max_norm=0"], "model.max_norm=0.0 must be positive"),
    (["train.epochs=0"], "train.epochs=0"),
    (["train.batch_size=0"], "train.batch_size=0"),
    (["train.lr=0"], "train.lr=0.0 must be a finite positive number"),
    (["train.lr=inf"], "train.lr=inf must be a finite positive number"),
    (["train.weight_decay=nan"], "train.weight_decay=nan must be a finite number >= 0"),
    (["model.depth=0", "dropout.hidden=0.5"], "dropout.hidden=0.5 has no hidden layer to act on (model.depth=0)"),
    (["model=cnn", "dataset=cifar10", "model.fc_depth=0", "dropout=fc-only"],
     "dropout.fc=0.5 has no fully connected hidden layer"),
    (["dataset.test_fraction=1e-9"], "dataset.test_fraction=1e-09 keeps 0 of the 10000 test images; at least 100"),
    (["model.width=100000000"], "model.width=100000000 makes the model too large: about"),
    (["train.momentum=1.0"], "train.momentum=1.0"),
    (["train.schedule=step"], "train.schedule='step' is unknown"),
    (["train.lrr=0.1"], "train.lrr is not a setting; train has: epochs, batch_size, lr"),
    (["+colour=red"], "colour is not a setting"),
    (["seed=-1"], "seed=-1"),
    (["seed=abc"], "seed=abc"),
    (["eval.mc_samples=-5"], "eval.mc_samples=-5"),
    (["dataset.train_fraction=0"], "dataset.train_fraction=0.0 must be in (0, 1]"),
    (["dataset.test_fraction=1.5"], "dataset.test_fraction=1.5"),
    (["device=tpu"], "device='tpu' is not one of auto, cpu, cuda, cuda:N"),
    (["out="], "out is empty"),
    (["dataset.checksums={train-images: abc}"], "dataset.checksums names 'train-images'"),
    (["dataset.checksums={train-labels-idx1-ubyte: abc}"], "is not a SHA-256"),
    (["dataset.checksums=3"], "dataset.checksums=3 must be a mapping"),
    (["dataset.validation=50"], "dataset.validation=50 must be 0 (no validation split) or at least 100 images"),
    (["dataset.validation=-1"], "dataset.validation=-1 must be 0 (no validation split) or at least 100 images"),
    (["dataset.validation=59950"], "dataset.validation=59950 leaves fewer than 100 of the 60000 training images"),
    (["dataset.validation=10000", "dataset.train_fraction=0.001"],
     "dataset.train_fraction=0.001 keeps 50 of the 50000 train images"),
    # the Srivastava et al. recipe's settings (config/recipe/srivastava.yaml)
    (["train.momentum_start=1.0", "train.momentum_ramp=0.2"], "train.momentum_start=1.0 must be in [0, 1)"),
    (["train.momentum_start=-0.1", "train.momentum_ramp=0.2"], "train.momentum_start=-0.1 must be in [0, 1)"),
    (["train.momentum_ramp=1.5"], "train.momentum_ramp=1.5 must be in [0, 1]"),
    (["train.momentum_ramp=-0.5"], "train.momentum_ramp=-0.5 must be in [0, 1]"),
    (["train.momentum_start=0.5"], "train.momentum_start=0.5 ramps over no time (train.momentum_ramp=0)"),
    (["train.lr_final=0"], "train.lr_final=0.0 must be in (0, 1]"),
    (["train.lr_final=1.5"], "train.lr_final=1.5 must be in (0, 1]"),
    (["train.lr_final=nan"], "train.lr_final=nan must be in (0, 1]"),
    (["train.schedule=linear"], "train.schedule='linear' is unknown; choose one of ['constant', 'cosine', 'exponential']"),
    (["recipe=srivastava", "model=cnn", "dataset=cifar10"], "model.depth does not apply to model=cnn"),
]


def error_for(overrides: list[str], out: str = "out=somewhere") -> str:
    try:
        validate(compose_config([out, *overrides]))
    except ConfigError as err:
        return str(err)
    except COMPOSITION_ERRORS as err:
        return describe_composition_error(err)
    raise AssertionError(f"{overrides} was accepted")


@pytest.mark.parametrize("overrides, expected", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_setting_is_named_in_one_line(overrides, expected):
    message = error_for(overrides)
    assert expected in message
    assert "\n" not in message


def test_missing_out_is_named():
    assert "out is not set" in error_for([], out="seed=0")


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["dropout=both", "gate=gaussian"],
        ["model=cnn", "dataset=cifar10", "dropout=all-layers"],
        ["model.depth=0"],
        ["dropout.hidden=[0.1,0.9]"],
        ["gate=none"],
        ["scale=paper", "model=cnn", "dataset=cifar10"],
        ["scale=smoke"],
    ],
)
def test_good_settings_pass(overrides):
    validate(compose_config(["out=somewhere", *overrides]))


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["dropout.input=1.2"], "error: dropout.input=1.2 is outside [0, 1)"),
        (["gate=triangular"], "error: gate=triangular is unknown"),
        (["train.lrr=1"], "error: train.lrr is not a setting"),
    ],
)
def test_cli_fails_with_one_line_before_touching_data(tmp_path, overrides, expected):
    data_dir = tmp_path / "data"
    proc = subprocess.run(
        [sys.executable, "-m", "dropout_lab.training.train", f"out={tmp_path / 'run'}", f"data_dir={data_dir}", *overrides],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith(expected)
    assert not data_dir.exists() and not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "arguments, expected",
    [
        ([], "error: out is not set; pass out=PATH"),
        (["out={file}"], "is a file, not a folder"),
        (["out={tmp}/run", "data_dir={file}"], "error: data_dir="),
    ],
    ids=["no out", "out is a file", "data_dir is a file"],
)
def test_bad_folders_fail_with_one_line_before_training(tmp_path, arguments, expected):
    afile = tmp_path / "a-file"
    afile.write_text("finished result")
    args = [a.format(file=afile, tmp=tmp_path) for a in arguments]
    proc = subprocess.run([sys.executable, "-m", "dropout_lab.training.train", "scale=smoke", *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert expected in proc.stderr
    assert afile.read_text() == "finished result"  # nothing lost


def test_multirun_refuses_one_folder_for_all_jobs_and_checks_sweeps(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "dropout_lab.training.train", "-m", "scale=smoke", *args],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path)

    same = run("dropout.hidden=0.1,0.5", f"out={tmp_path / 'one'}")
    assert same.returncode == 2 and same.stderr.startswith("error: with -m every job needs its own folder")
    typo = run("dropout.hiden=0.1,0.5", "out=runs/${hydra:job.num}")
    assert typo.returncode == 2
    assert typo.stderr.strip() == "error: dropout.hiden is not a setting; dropout has: input, hidden, conv, fc"
    assert list(tmp_path.iterdir()) == []  # nothing trained, nothing written


@pytest.mark.slow
def test_multirun_gives_each_job_its_own_folder_and_writes_nothing_else(tmp_path, mnist_data_dir):
    proc = subprocess.run(
        [sys.executable, "-m", "dropout_lab.training.train", "-m", "scale=smoke", "dropout.hidden=0.1,0.5",
         "out=runs/${hydra:job.num}", f"data_dir={mnist_data_dir}", "progress=false", "eval.mc_samples=0"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json

    rates = {json.loads((tmp_path / "runs" / n / "metrics.json").read_text())["rates"]["hidden"][0] for n in "01"}
    assert rates == {0.1, 0.5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]  # no multirun/ or outputs/ in the folder


def test_composing_a_packs_runs_together_gives_hydras_own_config_for_each():
    """compose_configs (each group choice composed once, then the run's values set) is compose_config, run by
    run, for every run of the shipped grids at the smoke scale, and for overrides it cannot take the fast way."""
    from omegaconf import OmegaConf

    from dropout_lab.planning import grid
    from dropout_lab.settings.composing import compose_configs
    from tests.conftest import as_snakemake_sees

    config = as_snakemake_sees({"scale": "smoke"})
    settings = grid.run_settings(config)
    runs = [run.overrides(settings) for run in grid.expand_runs(config)]
    odd = [[*runs[0], "train.lr=0.25", "seed=7", "+eval.extra=1"], [*runs[0], "dropout.hidden=0.25", "dropout=none"]]
    chosen = runs[::7] + odd
    for fast, run in zip(compose_configs(chosen), chosen):
        slow = compose_config(run)
        assert OmegaConf.to_container(fast) == OmegaConf.to_container(slow), run
        assert OmegaConf.is_struct(fast) and OmegaConf.get_type(fast) is OmegaConf.get_type(slow)
    # A value of the wrong type is refused by Hydra, as when composed alone.
    with pytest.raises(COMPOSITION_ERRORS, match="seed"):
        compose_configs([runs[0], [*runs[0], "seed=abc"]])


def test_the_workflows_kept_compositions_are_hydras_own_and_are_used(tmp_path, monkeypatch):
    """expected_settings from the cache equals expected_settings composed anew, and a second workflow start
    composes nothing (compose_config is made to fail there)."""
    from dropout_lab.planning import grid
    from dropout_lab.settings import composing, kept
    from tests.conftest import as_snakemake_sees

    config = as_snakemake_sees({"scale": "smoke"})
    runs = grid.expand_runs(config)
    monkeypatch.setenv("DROPOUT_LAB_CACHE", "off")
    fresh = grid.expected_settings(config, runs)
    assert kept.cache_folder("compositions") is None
    monkeypatch.delenv("DROPOUT_LAB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert grid.expected_settings(config, runs) == fresh  # composed, then kept
    kept = list((tmp_path / "dropout-lab" / "compositions").glob("*.json"))
    assert kept

    def no_composing(*args, **kwargs):
        raise AssertionError("composed again")

    monkeypatch.setattr(composing, "compose_config", no_composing)
    assert grid.expected_settings(config, runs) == fresh
    kept[0].write_text("{not json")  # a damaged entry is composed again, not believed
    with pytest.raises(AssertionError, match="composed again"):
        grid.expected_settings(config, runs)


def test_an_edited_hydra_file_or_an_interpolated_variable_is_another_composition(tmp_path, monkeypatch):
    import shutil

    from dropout_lab.settings.composing import resolved_composition
    from dropout_lab.settings.config import CONFIG_DIR

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    config_dir = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, config_dir)
    before = resolved_composition(["scale=smoke"], str(config_dir))
    assert before == resolved_composition(["scale=smoke"], str(config_dir))
    smoke = config_dir / "scale" / "smoke.yaml"
    smoke.write_text(smoke.read_text().replace("epochs: 1", "epochs: 7", 1))
    edited = resolved_composition(["scale=smoke"], str(config_dir))
    assert (before["train"]["epochs"], edited["train"]["epochs"]) == (1, 7)
    monkeypatch.setenv("DROPOUT_LAB_DATA_DIR", str(tmp_path / "elsewhere"))
    assert resolved_composition(["scale=smoke"], str(config_dir))["data_dir"] == str(tmp_path / "elsewhere")
