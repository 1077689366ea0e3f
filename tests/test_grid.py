"""Grid expansion, the overrides it hands to Hydra, and config errors caught before anything runs."""

from __future__ import annotations

import copy
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dropout_lab.planning import grid
from dropout_lab.settings.config import compose_config, validate
from tests.conftest import ROOT

CONFIG = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def config(**changes):
    cfg = copy.deepcopy(CONFIG)
    cfg.update(changes)
    return cfg


def test_every_run_once_with_its_sweeps():
    runs = grid.expand_runs(config(scale="smoke"))
    assert len(runs) == len(set(runs))
    mnist = [r for r in runs if r.experiment == "mnist_mlp"]
    # 10 hidden + 8 input (0.0 with hidden 0.5 is shared) - 1 + 9 for each of gaussian, uniform and dropconnect
    # + 1 placement-only cell (input 0.2) + 2 scaled-convention cells (Bernoulli and Gaussian at hidden 0.5)
    # + the width sweep's 10 + the budget sweep's 10 at its second budget + the tuned protocol's 17 hidden and
    # input cells at its learning rate other than the scale's
    assert len({(r.gate, r.convention, r.cell) for r in mnist}) == 10 + 7 + 3 * 9 + 1 + 2 + 10 + 10 + 17
    assert len(mnist) == 84 * 2
    scaled = [r for r in mnist if r.convention == "scaled"]
    assert {r.folder.split("/")[3] for r in scaled} == {"bernoulli-scaled", "gaussian-scaled"}
    assert all("gate.convention=scaled" in r.overrides({"scale": "smoke", "device": "cpu", "threads_per_run": 1,
                                                          "data": {"dir": "d"}}) for r in scaled)
    shared = next(r for r in mnist if r.cell == "input0_hidden0.5" and r.gate == "bernoulli")
    assert shared.sweeps == {"hidden_sweep", "input_sweep", "gate_parity", "conventions", "placement:hidden",
                             "budget_sweep", "tuned:hidden_sweep", "tuned:input_sweep"}
    assert shared.placement == "hidden"
    both = next(r for r in mnist if r.placement == "both")
    assert both.cell == "input0.2_hidden0.5" and "input_sweep" in both.sweeps
    cnn = {r.cell for r in runs if r.experiment == "cifar10_cnn"}
    assert "input0.1_conv0.25_fc0.5" in cnn and "input0_conv0_fc0.75" in cnn


def test_seeds_follow_the_scale():
    assert {r.seed for r in grid.expand_runs(config(scale="paper"))} == set(range(5))


@pytest.mark.parametrize("pick", [0, 17, -1])
def test_overrides_compose_into_a_valid_run(pick, tmp_path):
    cfg = config(scale="smoke")
    run = grid.expand_runs(cfg)[pick]
    settings = grid.run_settings(cfg)
    hydra_cfg = compose_config(run.overrides(settings))
    rates = validate(hydra_cfg)
    assert hydra_cfg.out == run.folder
    assert hydra_cfg.scale.name == "smoke" and hydra_cfg.seed == run.seed
    assert rates.input == dict(run.rates)["input"]


def test_checksums_reach_hydra():
    cfg = config(scale="smoke")
    cfg["data"] = {"dir": "d", "mirrors": {"cifar10": "http://127.0.0.1:1/"},
                   "checksums": {"cifar10": {"cifar-10-python.tar.gz": "a" * 64}}}
    run = next(r for r in grid.expand_runs(cfg) if r.dataset == "cifar10")
    hydra_cfg = compose_config(run.overrides({**cfg, "data": cfg["data"]}))
    assert dict(hydra_cfg.dataset.checksums) == {"cifar-10-python.tar.gz": "a" * 64}
    # Where the data lies is not a run setting: the runs read the mirror and data folder from the environment.
    assert not [a for a in run.overrides(cfg) if a.startswith(("dataset.mirror", "data_dir", "threads"))]


def test_where_the_data_lies_and_the_threads_change_no_run_identity():
    cfg = config(scale="smoke")
    runs = grid.expand_runs(cfg)
    before = grid.expected_settings(cfg, runs)
    moved = {**cfg, "threads_per_run": 2,
             "data": {"dir": "elsewhere", "mirrors": {"mnist": "/srv/mnist", "cifar10": None}}}
    assert grid.expected_settings(moved, runs) == before
    assert [r.overrides(grid.run_settings(moved)) for r in runs] == [r.overrides(grid.run_settings(cfg)) for r in runs]


def test_a_scale_edit_changes_exactly_the_runs_it_defines(tmp_path):
    # Copy the Hydra configs and change the MLP's epochs in the smoke scale: MLP runs change, CNN runs do not.
    import shutil

    configs = tmp_path / "config"
    shutil.copytree(ROOT / "config", configs)
    scale = configs / "scale" / "smoke.yaml"
    scale.write_text(scale.read_text().replace("mlp:\n  epochs: 1", "mlp:\n  epochs: 2"))
    cfg = config(scale="smoke")
    runs = grid.expand_runs(cfg)
    before, after = grid.expected_settings(cfg, runs), grid.expected_settings(cfg, runs, str(configs))
    changed = {folder for folder in before if before[folder] != after[folder]}
    # (the budget sweep's runs set their own epochs: of them, only those at the scale's epochs change)
    assert changed == {r.folder for r in runs if r.model == "mlp" and r.epochs is None} and changed
    assert all(after[f]["train.epochs"] == 2 for f in changed)


def _bad(path: list, value):
    cfg = config(scale="smoke")
    node = cfg
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return cfg


@pytest.mark.parametrize(
    "cfg, message",
    [
        (_bad(["experiments"], ["mnist_mlp", "imagenet_vit"]), "experiments lists 'imagenet_vit'"),
        (_bad(["grids", "mnist_mlp", "hidden_sweep", "vary"], "fc"), "model=mlp has slots"),
        (_bad(["grids", "mnist_mlp", "placement"], ["both", "fc-only"]), "sets dropout.fc, which model=mlp"),
        (_bad(["grids", "mnist_mlp", "placement"], ["middle"]), "placement preset 'middle' does not exist"),
        (_bad(["grids", "mnist_mlp", "input_sweep", "rates"], [0.1, 0.1]), "repeats a rate"),
        (_bad(["grids", "mnist_mlp", "gate_parity", "gates"], ["gaussian", "gaussian"]), "each once"),
        # Two rates that map to one run folder would train one run twice and lose a result.
        (_bad(["grids", "mnist_mlp", "input_sweep", "rates"], [0.1, 0.1000001]),
         "both map to the run folder results/runs/mnist_mlp/bernoulli/input0.1_hidden0.5/seed0"),
    ],
)
def test_bad_grids_are_named(cfg, message):
    with pytest.raises(grid.GridError, match=message.replace("(", r"\(")):
        grid.expand_runs(cfg)


@pytest.mark.parametrize("override", ["seed=7", "gate=gaussian", "gate.convention=scaled", "out=runs/x",
                                      "scale=quick", "dropout.hidden=0.3", "+dropout=both", "data_dir=/d",
                                      "dataset=cifar10", "threads=4", "device=cpu"])
def test_train_overrides_may_not_set_what_the_grid_owns(override):
    cfg = config(scale="smoke", train_overrides=[override])
    with pytest.raises(grid.GridError) as info:
        grid.check_train_overrides(cfg, grid.expand_runs(cfg))
    assert f"train_overrides: {override!r} sets" in str(info.value) and "which the workflow owns" in str(info.value)


def test_train_overrides_of_run_settings_pass_and_reach_the_identity():
    cfg = config(scale="smoke", train_overrides=["engine.precision=bf16", "model.max_norm=3.0"])
    runs = grid.expand_runs(cfg)
    grid.check_train_overrides(cfg, runs)
    expected = grid.expected_settings(cfg, runs)
    assert {s["engine.precision"] for s in expected.values()} == {"bf16"}
    assert {s["model.max_norm"] for s in expected.values()} == {3.0}


def test_runs_of_another_scale_are_refused_naming_the_setting():
    from dropout_lab.settings.identity import IdentityError, check_run

    runs = grid.expand_runs(config(scale="smoke"))
    run = runs[0]
    quick = grid.expected_settings(config(scale="quick"), runs)[run.folder]
    smoke = grid.expected_settings(config(scale="smoke"), runs)[run.folder]
    metrics = {"config": {"out": run.folder}}
    for dotted, value in smoke.items():  # a smoke run's recorded config, nested as metrics.json holds it
        node = metrics["config"]
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    check_run(run.folder, metrics, smoke)
    with pytest.raises(IdentityError) as info:
        check_run(run.folder, metrics, quick)
    message = str(info.value)
    assert message.startswith(f"{run.folder} was trained with ") and "but the workflow expects" in message
    key = message.split(" was trained with ")[1].split("=")[0]
    assert smoke[key] != quick[key]
    # A run of an earlier version that still records engine.cuda_graphs (how steps were replayed) is accepted.
    metrics["config"]["engine"]["cuda_graphs"] = False
    check_run(run.folder, metrics, smoke)


SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"

# (path to the key, bad value, text of the one-line error)
BAD_CONFIG = [
    (["scale"], "huge", "scale='huge' is not allowed; choose one of ['paper', 'quick', 'smoke']"),
    (["seeds", "smoke"], 0, "seeds.smoke=0"),
    (["seeds", "smoke"], "two", "seeds.smoke='two'"),
    (["experiments"], [], "experiments is empty"),
    (["device"], "tpu", "device='tpu'"),
    (["threads_per_run"], 0, "threads_per_run=0"),
    (["runs_per_job"], 0, "runs_per_job=0 is not allowed; give an integer >= 1, cell, all or auto"),
    (["runs_per_job"], "many", "runs_per_job='many' is not allowed; give an integer >= 1, cell, all or auto"),
    (["train_overrides"], ["--fast"], "train_overrides[0]='--fast'"),
    (["colour"], "red", "colour is not a setting; the top level has: claims, data"),
    (["data", "mirror"], "x", "data.mirror is not a setting; data has: checksums, dir, mirrors"),
    (["data", "checksums", "cifar10"], {"cifar-10-python.tar.gz": "abc"}, "data.checksums.cifar10"),
    (["grids", "mnist_mlp", "hidden_sweep", "rates"], [], "grids.mnist_mlp.hidden_sweep.rates is empty"),
    (["grids", "mnist_mlp", "hidden_sweep", "rates"], [0.5, 1.0], "grids.mnist_mlp.hidden_sweep.rates[1]=1.0"),
    (["grids", "mnist_mlp", "input_sweep", "vary"], "middle", "grids.mnist_mlp.input_sweep.vary='middle'"),
    (["grids", "mnist_mlp", "gate_parity", "gates"], ["bernoulli", "triangular"], "gate_parity.gates[1]='triangular'"),
    (["grids", "mnist_mlp", "model"], "resnet", "grids.mnist_mlp.model='resnet' is not allowed"),
    (["grids", "mnist_mlp", "dataset"], "imagenet", "grids.mnist_mlp.dataset='imagenet' is not allowed"),
    (["claims", "alpha"], 0.7, "claims.alpha=0.7"),
    (["claims", "gate_parity", "margin"], -0.01, "claims.gate_parity.margin=-0.01"),
    (["failure", "rebound_fraction"], 1.5, "failure.rebound_fraction=1.5"),
    (["theory", "gradient", "samples"], [10], "theory.gradient.samples=[10]"),
]


@pytest.mark.parametrize("path, value, message", BAD_CONFIG, ids=[".".join(map(str, p)) for p, _, _ in BAD_CONFIG])
def test_bad_workflow_config_is_named_in_one_line(path, value, message):
    with pytest.raises(grid.GridError) as info:
        grid.check_schema(_bad(path, value), SCHEMA)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_the_shipped_config_is_valid():
    grid.check_schema(CONFIG, SCHEMA)


def test_a_backwards_published_band_is_named():
    with pytest.raises(grid.GridError, match=r"claims.optimum.published_band=\[0.6, 0.2\] runs backwards"):
        grid.check_claims(_bad(["claims", "optimum", "published_band"], [0.6, 0.2]))


@pytest.mark.parametrize(
    "args, message",
    [
        (["scale=huge"], "config: scale='huge' is not allowed"),
        (["experiments=[]"], "config: experiments is empty"),
        (["experiments=[mnist_mlp,imagenet_vit]"], "experiments lists 'imagenet_vit'"),
        (["train_overrides=[engine.precision=fp8]"], "config: train_overrides: engine.precision='fp8' is unknown"),
        (["train_overrides=[engine.speed=11]"], "config: train_overrides:"),
    ],
)
def test_snakemake_rejects_bad_config_before_running(tmp_path, args, message):
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "snakemake"), "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
         "-n", "--config", *args],
        capture_output=True, text=True, timeout=120,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert message in output
    assert not (tmp_path / "results").exists()


def test_packs_cover_every_run_once_and_share_what_a_pack_must():
    runs = grid.expand_runs(CONFIG)
    for runs_per_job in (1, 7, "cell", "all"):
        packs = grid.make_packs(runs, runs_per_job)
        members = [run for p in packs for run in p.runs]
        assert sorted(r.folder for r in members) == sorted(r.folder for r in runs)
        assert len({p.name for p in packs}) == len(packs)
        for p in packs:
            assert len({r.experiment for r in p.runs}) == 1
            if runs_per_job == "cell":
                assert len({(r.gate, r.convention, r.cell) for r in p.runs}) == 1
            if isinstance(runs_per_job, int):
                assert len(p.runs) <= runs_per_job
    assert len(grid.make_packs(runs, 1)) == len(runs)
    mnist = [r for r in runs if r.experiment == "mnist_mlp"]
    packed = [len(p.runs) for p in grid.make_packs(mnist, "all")]
    # every gate and both conventions; a pack per width of the width sweep, per budget, per tuned learning rate
    assert sorted(packed, reverse=True) == [47 * 5] + [17 * 5] * 3 + [10 * 5] * 3 + [5] * 10


def test_pack_arguments_share_settings_and_list_each_runs_own():
    runs = [r for r in grid.expand_runs(CONFIG) if "conventions" in r.sweeps and r.seed < 2]
    settings = {"scale": "smoke", "device": "cpu", "threads_per_run": 1, "data": CONFIG["data"]}
    (p,) = grid.make_packs(runs, "all")
    args = shlex.split(p.arguments(settings, ["engine.precision=bf16"]))
    assert args.count("--run") == 8 and "model=mlp" in args and "engine.precision=bf16" in args
    own = [args[i + 1] for i, a in enumerate(args) if a == "--run"]
    assert own == [" ".join(a for a in r.overrides(settings) if a.startswith(("gate", "dropout", "seed=", "out=")))
                   for r in p.runs]
    assert any("gate.convention=scaled" in o for o in own) and any("gate=gaussian" in o for o in own)
    assert not any(a.startswith(("gate", "seed=", "out=")) for a in args if a not in own)



def test_unpack_run_writes_the_runs_own_metrics(tmp_path, monkeypatch):
    import json

    from dropout_lab.training import unpack

    monkeypatch.chdir(tmp_path)  # the workflow's paths are relative to its working directory
    runs = [{"config": {"out": f"results/runs/x/seed{i}"}, "seed": i} for i in range(2)]
    Path("pack.json").write_text(json.dumps({"runs": runs}))
    unpack.unpack_run("pack.json", "results/runs/x/seed1/metrics.json")
    assert json.loads(Path("results/runs/x/seed1/metrics.json").read_text()) == runs[1]
    with pytest.raises(unpack.UnpackError, match="holds no run with out=results/runs/x/seed7"):
        unpack.unpack_run("pack.json", "results/runs/x/seed7/metrics.json")
    assert not Path("results/runs/x/seed7").exists()
    # The command the workflow runs imports no torch (it runs once per run).
    proc = subprocess.run([sys.executable, "-c", "import sys, dropout_lab.training.unpack; print('torch' in sys.modules)"],
                          capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False"


def test_a_sweep_set_to_null_is_left_out():
    cfg = config(scale="smoke")
    cfg["grids"]["mnist_mlp"]["width_sweep"] = None
    grid.drop_switched_off(cfg)
    assert "width_sweep" not in cfg["grids"]["mnist_mlp"]
    runs = grid.expand_runs(cfg)
    assert runs and not any("width_sweep" in r.sweeps or r.width for r in runs)


def test_runs_per_job_auto_packs_a_whole_experiment_on_a_gpu_and_a_cell_per_job_on_a_cpu(monkeypatch):
    assert grid.runs_per_job(config(runs_per_job="auto", device="cpu")) == "cell"
    assert grid.runs_per_job(config(runs_per_job="auto", device="cuda:0")) == "all"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # a GPU hidden from this process is no GPU
    assert grid.runs_per_job(config(runs_per_job="auto", device="auto")) == "cell"
    assert grid.runs_per_job(config(runs_per_job="cell", device="cuda")) == "cell"
