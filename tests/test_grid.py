"""Grid expansion, the overrides it hands to Hydra, and config errors caught before anything runs.

The counts are those of the small grids of tests/conftest.py (SMALL_GRIDS), not of config/config.yaml.
"""

from __future__ import annotations

import copy
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from dropout_lab.planning import checks, grid, packs, scales
from dropout_lab.settings.config import compose_config, validate
from tests.conftest import ROOT, SHIPPED, SMALL_GRIDS, small_config

config = small_config

# The cells of SMALL_GRIDS' MNIST grid at the smoke scale: the hidden sweep's 3; the input sweep's 1 (its 0.0
# with hidden 0.5 is the hidden sweep's); Gaussian's 2 of the gate parity (Bernoulli's are the hidden sweep's);
# the width sweep's 2; the budget sweep's 2 at its second budget (its first is the scale's, 1 epoch); 1 of the
# placement presets (input 0.2 alone; the others are sweep cells); 2 scaled-convention cells (Bernoulli and
# Gaussian at hidden 0.5); the tuned protocol's 3 + 2 - 1 hidden and input cells (0.0 with hidden 0.5 is in both)
# at its learning rate other than the scale's (0.03; 0.1 is the scale's).
SMALL_CELLS = {"default": 3 + 1 + 2 + 1 + 2, "width": 2, "budget": 2, "tuned": 4}


def test_every_run_once_with_its_sweeps():
    cfg = config(scale="smoke")
    runs = grid.expand_runs(cfg)
    assert len(runs) == len(set(runs))
    mnist = [r for r in runs if r.experiment == "mnist_mlp"]
    assert len({(r.gate, r.convention, r.cell) for r in mnist}) == sum(SMALL_CELLS.values()) == 17
    assert len(mnist) == 17 * cfg["seeds"]["smoke"]
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
    cfg = config(scale="paper", seeds={"paper": 4, "quick": 3, "smoke": 2})
    assert {r.seed for r in grid.expand_runs(cfg)} == set(range(4))


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
    # The grid reads the scale as the runs do: the budget sweep's 2 epochs are now the scale's own, its 1 is not.
    budget = SMALL_GRIDS["mnist_mlp"]["budget_sweep"]["epochs"]["smoke"]
    assert budget == [1, 2]
    edited = grid.expand_runs(cfg, str(configs))
    assert {r.epochs for r in edited if "budget_sweep" in r.sweeps} == {1, None}


def test_expected_settings_are_what_hydra_composes_for_each_run():
    """Hydra composes once per group of runs; each run's own settings set on that must give its own composition,
    also where the group's first run sets its own width, learning rate or epochs."""
    from omegaconf import OmegaConf

    from dropout_lab.settings.identity import defining_settings

    cfg = config(scale="smoke")
    runs = sorted(grid.expand_runs(cfg), key=lambda r: (r.width is None, r.lr is None, r.epochs is None))
    expected = grid.expected_settings(cfg, runs)
    picks = {"width": next(r for r in runs if r.width), "lr": next(r for r in runs if r.lr),
             "epochs": next(r for r in runs if r.epochs), "scaled": next(r for r in runs if r.convention == "scaled"),
             "scale's own": next(r for r in runs if not (r.width or r.lr or r.epochs) and r.model == "mlp"),
             "cnn": next(r for r in runs if r.model == "cnn")}
    settings = {**grid.run_settings(cfg), "device": "cpu"}
    for kind, run in picks.items():
        composed = OmegaConf.to_container(compose_config(run.overrides(settings)), resolve=True)
        assert expected[run.folder] == defining_settings(composed), kind


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


def test_a_claims_block_no_claim_reads_is_named_in_one_line():
    cfg = config(scale="smoke")
    cfg["claims"]["optimun"] = cfg["claims"].pop("optimum")
    with pytest.raises(grid.GridError) as info:
        checks.check_claims(cfg)
    assert str(info.value).startswith("claims.optimun is the settings of no registered claim; the claims are ")
    assert "'optimum'" in str(info.value) and "\n" not in str(info.value)


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
    (["scale"], "huge", "scale='huge' is not allowed; choose one of ['auto', 'paper', 'quick', 'smoke']"),
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
    (["grids", "mnist_mlp", "gate_parity", "gates"], ["bernoulli", "laplace2"],
     "grids.mnist_mlp.gate_parity.gates[1]='laplace2' is unknown; choose one of ['bernoulli', 'dropconnect'"),
    (["grids", "mnist_mlp", "gate_parity", "gates"], ["bernoulli", "Gauss-ian"], "gate_parity.gates[1]='Gauss-ian'"),
    (["grids", "mnist_mlp", "input_sweep", "fixed"], {"conv": 0.5}, "input_sweep.fixed.conv='conv' is unknown"),
    (["data", "mirrors", "cifar100"], "/srv/cifar100", "data.mirrors.cifar100='cifar100' is unknown; choose one of"),
    (["grids", "mnist_mlp", "model"], "resnet", "grids.mnist_mlp.model='resnet' is unknown; choose one of ['cnn', 'mlp']"),
    (["grids", "mnist_mlp", "dataset"], "imagenet", "grids.mnist_mlp.dataset='imagenet' is unknown; choose one of ['cifar10', 'mnist']"),
    (["claims", "alpha"], 0.7, "claims.alpha=0.7"),
    (["claims", "gate_parity", "margin"], -0.01, "claims.gate_parity.margin=-0.01"),
    (["failure", "rebound_fraction"], 1.5, "failure.rebound_fraction=1.5"),
    (["theory", "gradient", "samples"], [10], "theory.gradient.samples=[10]"),
]


@pytest.mark.parametrize("path, value, message", BAD_CONFIG, ids=[".".join(map(str, p)) for p, _, _ in BAD_CONFIG])
def test_bad_workflow_config_is_named_in_one_line(path, value, message):
    with pytest.raises(checks.GridError) as info:
        checks.check_schema(_bad(path, value), SCHEMA)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_the_shipped_config_is_valid_and_plans():
    checks.check_schema(SHIPPED, SCHEMA)
    shipped = copy.deepcopy(SHIPPED)
    assert shipped["scale"] == "auto"
    scales.resolve_scale(shipped)  # paper or quick, as the workflow and `dropout-lab plan` resolve it
    grid.drop_switched_off(shipped)
    checks.check_claims(shipped)
    runs = grid.expand_runs(shipped)
    assert runs and {r.experiment for r in runs} == set(shipped["experiments"])
    checks.check_schema(small_config(), SCHEMA)  # the tests' own grids are valid configs too


def test_a_backwards_published_band_is_named():
    with pytest.raises(checks.GridError, match=r"claims.optimum.published_band=\[0.6, 0.2\] runs backwards"):
        checks.check_claims(_bad(["claims", "optimum", "published_band"], [0.6, 0.2]))


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
    cfg = config(scale="smoke")
    runs = grid.expand_runs(cfg)
    for runs_per_job in (1, 7, "cell", "all", packs.MIXED):
        made = packs.make_packs(runs, runs_per_job)
        members = [run for p in made for run in p.runs]
        assert sorted(r.folder for r in members) == sorted(r.folder for r in runs)
        assert len({p.name for p in made}) == len(made)
        for p in made:
            assert len({r.experiment for r in p.runs}) == 1
            if runs_per_job == "cell":
                assert len({(r.gate, r.convention, r.cell) for r in p.runs}) == 1
            if isinstance(runs_per_job, int):
                assert len(p.runs) <= runs_per_job
            if runs_per_job != packs.MIXED:  # one architecture and schedule: one stack
                assert len({(r.width, r.lr, r.epochs) for r in p.runs}) == 1
    assert len(packs.make_packs(runs, 1)) == len(runs)
    mnist = [r for r in runs if r.experiment == "mnist_mlp"]
    packed = [len(p.runs) for p in packs.make_packs(mnist, "all")]
    # A pack of every gate and both conventions at the scale's width, rate and epochs; one of the tuned protocol's
    # cells at its other rate; one of the budget sweep's at its other budget; one per width of the width sweep.
    cells = [SMALL_CELLS["default"], SMALL_CELLS["tuned"], SMALL_CELLS["budget"], 1, 1]
    assert sorted(packed, reverse=True) == [n * cfg["seeds"]["smoke"] for n in cells]


def test_pack_arguments_share_settings_and_list_each_runs_own():
    runs = [r for r in grid.expand_runs(config(scale="smoke")) if "conventions" in r.sweeps]
    settings = {"scale": "smoke", "device": "cpu", "threads_per_run": 1, "data": SHIPPED["data"]}
    (p,) = packs.make_packs(runs, "all")
    args = shlex.split(p.arguments(settings, ["engine.precision=bf16"]))
    # two gates, both conventions, two seeds
    assert args.count("--run") == len(runs) == 2 * 2 * 2 and "model=mlp" in args and "engine.precision=bf16" in args
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


def test_runs_per_job_auto_packs_a_whole_experiment_on_a_gpu_and_a_few_jobs_per_grid_on_a_cpu(monkeypatch):
    assert packs.runs_per_job(config(runs_per_job="auto", device="cpu")) == packs.MIXED
    assert packs.runs_per_job(config(runs_per_job="auto", device="cuda:0")) == "all"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # a GPU hidden from this process is no GPU
    assert packs.runs_per_job(config(runs_per_job="auto", device="auto")) == packs.MIXED
    with pytest.raises(checks.GridError, match="runs_per_job='mixed' is not allowed"):  # a word for the planner only
        packs.runs_per_job(config(runs_per_job=packs.MIXED, device="cpu"))
    # The shipped smoke grid: a few jobs (start-up paid a few times, not once per cell or width), still more
    # jobs than two cores; the runs that share an architecture and schedule side by side, so that a job holds few
    # stacks (one per width of the width sweep, one per learning rate and budget).
    smoke = copy.deepcopy(SHIPPED)
    smoke.update(scale="smoke", experiments=["mnist_mlp"], device="cpu")
    grid.drop_switched_off(smoke)
    runs = grid.expand_runs(smoke)
    made = packs.make_packs(runs, packs.runs_per_job(smoke))
    assert 2 < len(made) == -(-len(runs) // packs.CPU_PACK) <= len(packs.make_packs(runs, packs.CPU_PACK)) / 2
    sizes = [len(p.runs) for p in made]
    assert max(sizes) <= packs.CPU_PACK and max(sizes) - min(sizes) <= 1  # even jobs: none left small at the end
    schedules = [(r.width, r.lr, r.epochs) for p in made for r in p.runs]
    changes = sum(a != b for a, b in zip(schedules, schedules[1:]))
    assert changes == len(set(schedules)) - 1  # each architecture and schedule in one run of neighbours
    assert packs.runs_per_job(config(runs_per_job="cell", device="cuda")) == "cell"
