"""Many runs trained together (dropout_lab.training.engine, dropout_lab.training.pack) give each run's own results.

On the CPU a run trained in a pack of K is bit-identical to the same run
trained alone: every model has its own generators, rate-0 slots are exact
identities, and the models' arithmetic shares nothing but the kernel calls.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest
import torch

from dropout_lab.training import engine, pack, stacked, train
from dropout_lab.settings.config import ConfigError, compose_config
from tests.conftest import ROOT

IGNORED = {"wall_seconds", "train_seconds", "engine", "resumed_after_epoch", "pack_fingerprint", "evaluation_seconds",
           "checkpoints_saved"}


def comparable(value):
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items() if k not in IGNORED}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return value


def configs(tmp_path, data_dir, mirror, shared, runs):
    return [
        compose_config([
            f"data_dir={data_dir}", f"dataset.mirror={mirror or 'null'}", "progress=false", *shared, *own,
            f"out={tmp_path / f'run{i}'}",
        ])
        for i, own in enumerate(runs)
    ]


def assert_pack_equals_alone(tmp_path, cfgs):
    together = train.train_runs(cfgs, tmp_path / "pack.pt")
    for i, cfg in enumerate(cfgs):
        alone = train.train_runs([cfg], tmp_path / f"alone{i}.pt")[0]
        assert comparable(together[i]) == comparable(alone), f"run {i} differs in the pack"
        assert together[i]["engine"]["pack_size"] == len(cfgs) and alone["engine"]["pack_size"] == 1
    return together


MLP = ["dataset=mnist", "model=mlp", "scale=smoke", "model.width=48", "train.epochs=2", "eval.mc_samples=3"]


@pytest.mark.parametrize("gate", ["bernoulli", "gaussian", "uniform", "dropconnect"])
def test_mlp_pack_is_bit_identical_to_runs_alone(tmp_path, mnist_data_dir, mnist_mirror, gate):
    # Mixed rates, a rate-0 slot next to dropping ones, and a run with no dropout at all.
    runs = [
        ["seed=0", "dropout.input=0.2", "dropout.hidden=0.5"],
        ["seed=1", "dropout.hidden=[0.1,0.8]"],
        ["seed=2"],
        ["seed=0", "dropout.hidden=0.5"],  # same seed as run 0: still its own run
    ]
    cfgs = configs(tmp_path, mnist_data_dir, mnist_mirror, [*MLP, f"gate={gate}", "model.max_norm=2.0",
                                                             "train.weight_decay=0.0005"], runs)
    results = assert_pack_equals_alone(tmp_path, cfgs)
    accs = [r["final"]["test_acc"] for r in results]
    assert len(set(accs)) > 1  # the runs really differ from each other
    assert all(acc > 0.5 for acc in accs)


def test_scaled_convention_pack_is_bit_identical(tmp_path, mnist_data_dir, mnist_mirror):
    runs = [["seed=0", "dropout.hidden=0.5"], ["seed=1", "dropout.hidden=0.3", "dropout.input=0.1"]]
    cfgs = configs(tmp_path, mnist_data_dir, mnist_mirror, [*MLP, "gate=bernoulli", "gate.convention=scaled"], runs)
    results = assert_pack_equals_alone(tmp_path, cfgs)
    assert all(r["unscaled_inference"] is not None for r in results)


@pytest.mark.slow
def test_cnn_pack_is_bit_identical_to_runs_alone(tmp_path, cifar_mirror):
    url, contents = cifar_mirror
    shared = ["dataset=cifar10", "model=cnn", "scale=smoke", "dataset.train_fraction=1.0", "dataset.validation=0",
              "train.epochs=2",
              "eval.mc_samples=2", f"dataset.checksums={{cifar-10-python.tar.gz: {contents['sha256']}}}"]
    runs = [["seed=0", "dropout.fc=0.5", "dropout.input=0.1"], ["seed=1", "dropout.conv=0.25"], ["seed=2"]]
    cfgs = configs(tmp_path, tmp_path / "data", url, shared, runs)
    assert_pack_equals_alone(tmp_path, cfgs)


def test_pack_rejects_runs_that_differ_in_shared_settings(tmp_path, mnist_data_dir, mnist_mirror):
    cfgs = configs(tmp_path, mnist_data_dir, mnist_mirror, MLP, [["seed=0"], ["seed=1", "train.lr=0.5"]])
    with pytest.raises(ConfigError) as err:
        train.train_runs(cfgs, tmp_path / "pack.pt")
    message = str(err.value)
    assert "\n" not in message and "train.lr (0.1 against 0.5)" in message and "separate packs" in message
    assert not (tmp_path / "pack.pt").exists()


def test_a_pack_of_different_gates_and_conventions_is_bit_identical(tmp_path, mnist_data_dir, mnist_mirror):
    """Seeds, rates, gates and conventions may all differ within a pack."""
    runs = [
        ["seed=0", "gate=bernoulli", "dropout.hidden=0.5", "dropout.input=0.2"],
        ["seed=1", "gate=gaussian", "dropout.hidden=0.3"],
        ["seed=2", "gate=gaussian", "gate.convention=scaled", "dropout.hidden=0.5"],
        ["seed=3", "gate=bernoulli", "gate.convention=scaled", "dropout.input=0.1"],
        ["seed=4", "gate=none"],
        ["seed=5", "gate=uniform", "dropout.hidden=0.2"],
        ["seed=6", "gate=dropconnect", "dropout.hidden=0.5", "dropout.input=0.1"],
    ]
    cfgs = configs(tmp_path, mnist_data_dir, mnist_mirror, MLP, runs)
    results = assert_pack_equals_alone(tmp_path, cfgs)
    assert [r["config"]["gate"]["name"] for r in results] == ["bernoulli", "gaussian", "gaussian", "bernoulli", "none",
                                                              "uniform", "dropconnect"]
    assert all(r["final"]["test_acc"] > 0.3 for r in results)  # every run learns (chance: 0.1)


def test_a_gate_registered_the_documented_way_trains_in_a_pack():
    """README, "Adding a gate": a Gate subclass with its noise law, registered; here a toy Rademacher gate
    (1 + s * sigma, s = +-1), which must train in a pack bit-identically to alone, and evaluate as its
    own model would."""
    from dropout_lab.training import gates
    from dropout_lab.training.models import MLP as Net
    from tests.test_evaluation import HYPER, monte_carlo

    class RademacherGate(gates.Gate):
        name = "rademacher_test"
        IDENTITY = {"sigma": 0.0}

        @staticmethod
        def fill(stored, generator):
            stored.uniform_(generator=generator)

        @staticmethod
        def factor(raw, c):
            return 1.0 + torch.where(raw < 0.5, -1.0, 1.0) * c["sigma"]

        def constants(self):
            return {"sigma": self.variance ** 0.5}

    gates.register(RademacherGate)
    try:
        torch.manual_seed(0)
        x, y = torch.rand(80, 1, 4, 4), torch.randint(0, 10, (80,))

        def members():
            out = []
            for k, (gate, rate) in enumerate([("rademacher_test", 0.3), ("bernoulli", 0.5), ("rademacher_test", 0.5)]):
                torch.manual_seed(k)
                out.append(engine.Member(Net(16, 10, 12, gate, 0.0, [rate]), order_seed=k, gate_seed=10 + k))
            return out

        pack = engine.PackTrainer(members(), x, y, HYPER, engine.EngineSettings(), torch.device("cpu"))
        pack.train_epoch()
        models = pack.trained_models()
        together = pack.evaluate_mc(x, y, 32, 5, [1, 2, 3])
        for k, member in enumerate(members()):
            alone = engine.PackTrainer([member], x, y, HYPER, engine.EngineSettings(), torch.device("cpu"))
            alone.train_epoch()
            for mine, theirs in zip(alone.net.parameters(), pack.net.parameters()):
                assert torch.equal(mine[0], theirs[k])
            loss, acc, _ = monte_carlo(models[k], x, y, 5, k + 1, 32)
            assert float(together[0][k]) == pytest.approx(loss, rel=1e-5) and float(together[1][k]) == acc
        noise = gates.make_gate("rademacher_test", 0.5).sample_factor((10000,), torch.device("cpu"))
        assert set(noise.unique().tolist()) == {0.0, 2.0}  # 1 -+ sqrt(0.5 / 0.5)
    finally:
        del gates.REGISTRY["rademacher_test"]


def test_stacked_net_rejects_different_architectures():
    from dropout_lab.training.models import MLP as Net

    with pytest.raises(engine.EngineError, match="different shapes"):
        stacked.StackedNet([Net(784, 10, 16, "bernoulli", 0.2, [0.5]), Net(784, 10, 32, "bernoulli", 0.2, [0.5])],
                          (1, 28, 28))
    with pytest.raises(engine.EngineError, match="another architecture"):
        stacked.StackedNet([Net(784, 10, 16, "bernoulli", 0.2, [0.5]), Net(784, 10, 16, "bernoulli", 0.2, [0.5, 0.5])],
                          (1, 28, 28))


@pytest.mark.parametrize("batched", [False, True], ids=["per-model products (CPU)", "batched products (GPU)"])
def test_stacked_net_computes_each_models_outputs_and_gradients(batched):
    """Both ways of computing the layers give each model's own outputs and weight gradients.

    The batched products (what a GPU runs) agree to float32 rounding, not bit for bit."""
    from dropout_lab.training.models import CNN

    torch.manual_seed(0)
    models = [CNN(3, 16, 10, [4, 6], 3, 12, "gaussian", 0.1 * k, [0.2, 0.0], [0.3], "scaled") for k in range(3)]
    net = stacked.StackedNet(models, (3, 16, 16))
    net.batched_matmul = batched
    x = torch.randn(5, 3, 16, 16)
    net.eval()
    logits = net(x.unsqueeze(0).expand(3, *x.shape))
    logits.square().sum().backward()
    for k, model in enumerate(models):
        model.eval()
        out = model(x)
        out.square().sum().backward()
        torch.testing.assert_close(logits[k], out, rtol=1e-5, atol=1e-6)
        assert net.layer_kinds == ["conv", "conv", "linear", "linear"]
        for j, (kind, layer) in enumerate(zip(net.layer_kinds, model.layers())):
            grad = net.weights[j].grad[k]
            torch.testing.assert_close(grad.T if kind == "linear" else grad, layer.weight.grad, rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(net.biases[j].grad[k], layer.bias.grad, rtol=1e-4, atol=1e-6)


def test_pack_resumes_after_an_interruption_bit_identical(tmp_path, mnist_data_dir, mnist_mirror, monkeypatch):
    shared = [*MLP, "train.epochs=3", "gate=gaussian"]
    runs = [["seed=0", "dropout.hidden=0.5"], ["seed=1", "dropout.hidden=0.2", "dropout.input=0.2"]]
    cfgs = configs(tmp_path, mnist_data_dir, mnist_mirror, shared, runs)
    reference = train.train_runs(cfgs, tmp_path / "reference.pt")

    calls = {"n": 0}
    original = engine.PackTrainer.train_epoch

    def stop_in_epoch_3(self, progress=False):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, progress)

    monkeypatch.setattr(engine.PackTrainer, "train_epoch", stop_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        train.train_runs(cfgs, tmp_path / "pack.pt")
    assert (tmp_path / "pack.pt").exists()
    monkeypatch.setattr(engine.PackTrainer, "train_epoch", original)
    resumed = train.train_runs(cfgs, tmp_path / "pack.pt")
    assert [r["resumed_after_epoch"] for r in resumed] == [2, 2]
    assert comparable(resumed) == comparable(reference)


def test_pack_cli_writes_pack_json_and_each_run(tmp_path, mnist_data_dir, mnist_mirror):
    shared = [f"data_dir={mnist_data_dir}", f"dataset.mirror={mnist_mirror or 'null'}", *MLP, "train.epochs=1",
              "progress=false"]
    runs = [f"seed=0 dropout.hidden=0.5 out={tmp_path / 'a'}", f"seed=1 out={tmp_path / 'b'}"]
    metrics = pack.main(["--dir", str(tmp_path / "pack"), *shared, *[a for r in runs for a in ("--run", r)],
                         "--write-runs"])
    stored = json.loads((tmp_path / "pack" / "pack.json").read_text())["runs"]
    assert [r["seed"] for r in stored] == [0, 1] and stored == json.loads(json.dumps(metrics))
    assert json.loads((tmp_path / "a" / "metrics.json").read_text()) == stored[0]
    assert sorted(p.name for p in (tmp_path / "pack").iterdir()) == ["pack.json"]  # checkpoint removed


def test_a_pack_of_several_architectures_trains_a_stack_each_and_every_run_as_alone(tmp_path, mnist_data_dir,
                                                                                    mnist_mirror, capfd):
    """Runs that differ in width or learning rate share a job (runs_per_job auto on a CPU), a stack each: each
    run's numbers are its numbers alone; a stack's runs are written when it ends, so a rerun keeps them."""
    shared = [f"data_dir={mnist_data_dir}", f"dataset.mirror={mnist_mirror or 'null'}", *MLP, "train.epochs=1",
              "progress=false"]
    own = ["seed=0 model.width=24", "seed=1 model.width=24 dropout.hidden=0.5", "seed=0 train.lr=0.2",
           "seed=2 model.width=24"]
    runs = [f"{r} out={tmp_path / f'run{i}'}" for i, r in enumerate(own)]
    argv = ["--dir", str(tmp_path / "pack"), *shared, *[a for r in runs for a in ("--run", r)], "--write-runs"]
    together = pack.main(argv)
    assert [r["engine"]["pack_size"] for r in together] == [3, 3, 1, 3]  # width 24 (three seeds) and lr 0.2
    for i, run in enumerate(runs):
        alone = pack.main(["--dir", str(tmp_path / f"alone{i}"), *shared, "--run", run.replace("/run", "/alone-run")])
        assert comparable(alone[0]) == comparable(together[i]) | {"config": comparable(alone[0])["config"]}, i
    assert sorted(p.name for p in (tmp_path / "pack").iterdir()) == ["pack.json"]  # every stack's checkpoint gone
    # The width-24 stack's runs kept, the other stack's run trained again: the same numbers.
    (tmp_path / "pack" / "pack.json").unlink()
    (tmp_path / "run2" / "metrics.json").unlink()
    capfd.readouterr()
    again = pack.main(argv)
    assert "kept 3 finished run(s)" in capfd.readouterr().err
    assert comparable(again) == comparable(together)


@pytest.mark.parametrize("argv, expected", [
    (["--run", "seed=0 out=x", "model=nonsense"], "model"),
    (["--run", "seed=-1 out=x"], "seed=-1"),
    (["--run", "seed=0 out=x", "engine.precision=fp8"], "engine.precision='fp8'"),
    (["--run", "seed=0 out=x", "--bogus"], "--bogus is not an option"),
    (["--run", "seed=0 out=x", "--run", "seed=1 out=x"], "both have out=x"),
])
def test_pack_cli_bad_input_is_one_line(tmp_path, argv, expected):
    proc = subprocess.run(
        [sys.executable, "-m", "dropout_lab.training.pack", "--dir", str(tmp_path / "p"), "data_dir=/nonexistent", *argv],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], proc.stderr
    assert not (tmp_path / "p").exists()


def test_provenance_counts_the_wall_time_of_a_pack_once():
    from dropout_lab.analysis.aggregate import provenance

    def metrics(wall, pack, precision, epochs):
        return {"config": {"dataset": {"name": "mnist"}}, "data_sha256": {}, "versions": {},
                "device": {"type": "cuda", "name": "GPU"}, "git": {"commit": "abc", "dirty": False},
                "wall_seconds": wall, "pack_fingerprint": pack, "engine": {"precision": precision, "tf32": True},
                "history": [{"epoch": e + 1, "train_seconds": s} for e, s in enumerate(epochs)]}

    # The runs of a pack share its epochs; the pack's wall time is its latest run's.
    loaded = [({"path": "a"}, metrics(9.0, "p1", "bf16", [2.0, 3.0])),
              ({"path": "b"}, metrics(10.0, "p1", "bf16", [2.0, 3.0])),
              ({"path": "c"}, metrics(4.0, None, "fp32", [1.5]))]
    prov = provenance(loaded)
    assert prov["train_wall_seconds"] == 14.0 and prov["training_stacks"] == 2
    assert prov["train_seconds"] == 6.5
    assert prov["precisions"] == ["bf16 with TF32", "fp32 with TF32"]


def test_a_weight_gate_masks_only_its_own_models_in_both_ways_of_computing_the_layers():
    """DropConnect beside unit gates: the batched products (GPU) and the per-model ones (CPU) give the same
    outputs and gradients, and a model without the weight gate computes exactly as with no weight gate."""
    from dropout_lab.training.models import MLP as Net

    torch.manual_seed(0)
    specs = [("dropconnect", [0.5, 0.3]), ("bernoulli", [0.5, 0.0]), ("dropconnect", [0.0, 0.6]), ("none", [0, 0])]
    models = [Net(12, 5, 8, gate, 0.0, rates) for gate, rates in specs]
    x = torch.randn(6, 12)
    outputs, grads = [], []
    for batched in (False, True):
        net = stacked.StackedNet(models, (12,))
        net.batched_matmul = batched
        noise = stacked.GateNoise(net, [1, 2, 3, 4], batch_size=6, chunk=1, device=torch.device("cpu"))
        noise.draw()
        out = net(x.unsqueeze(0).expand(4, *x.shape), noise.step(0, 6))
        out.square().sum().backward()
        outputs.append(out.detach())
        grads.append([p.grad.clone() for p in net.weights])
        if not batched:  # the model with no gate at all: exactly as in a pack of its own
            alone = stacked.StackedNet([models[3]], (12,))
            assert torch.equal(out[3], alone(x.unsqueeze(0), None)[0])
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-5, atol=1e-6)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def _sgd_pair(weight_decay: float):
    from dropout_lab.training.sgd import SGD

    torch.manual_seed(0)
    start = [torch.randn(3, 5, 4), torch.randn(3, 4), torch.randn(2, 2)]
    ours = [p.clone().requires_grad_() for p in start]
    theirs = [p.clone().requires_grad_() for p in start]
    return (SGD(ours, lr=0.1, momentum=0.5, weight_decay=weight_decay), ours,
            torch.optim.SGD(theirs, lr=0.1, momentum=0.5, weight_decay=weight_decay), theirs)


@pytest.mark.parametrize("weight_decay", [0.0, 1e-3])
def test_the_engines_sgd_is_torch_optim_sgd_bit_for_bit_and_their_checkpoints_load_in_each_other(weight_decay):
    """Per-step lr, momentum and dampening (the recipe's ramps), a weight left without a gradient, and a
    checkpoint written by either optimizer resumed by the other."""
    ours, a, theirs, b = _sgd_pair(weight_decay)
    for step in range(12):
        if step == 6:  # resume each from the other's checkpoint, from here on
            mine, torchs = ours.state_dict(), theirs.state_dict()
            ours.load_state_dict(torchs)
            theirs.load_state_dict(mine)
        for opt in (ours, theirs):
            group = opt.param_groups[0]
            group["lr"], group["momentum"] = 0.1 / (1 + step), min(0.9, 0.5 + 0.05 * step)
            group["dampening"] = group["momentum"] if step >= 3 else 0.0
        torch.manual_seed(step)
        grads = [torch.randn_like(p) for p in a]
        for params in (a, b):
            for i, (p, g) in enumerate(zip(params, grads)):
                p.grad = None if (i == 2 and step % 4 == 1) else g.clone()
        ours.step()
        theirs.step()
        ours.zero_grad(set_to_none=True)
        theirs.zero_grad(set_to_none=True)
        for p, q in zip(a, b):
            assert torch.equal(p, q), step
    saved = ours.state_dict()
    assert set(saved["state"]) == {0, 1, 2} and saved["param_groups"][0]["params"] == [0, 1, 2]
    for i, p in enumerate(b):
        assert torch.equal(saved["state"][i]["momentum_buffer"], theirs.state[p]["momentum_buffer"])


def test_training_imports_no_compiler():
    """A pack on the CPU never imports torch._dynamo (2.5 s of each job's start-up); engine.compile would."""
    code = ("import sys, torch\n"
            "from dropout_lab.training.sgd import SGD\n"
            "w = torch.zeros(4, requires_grad=True)\n"
            "opt = SGD([w], lr=0.1, momentum=0.9, weight_decay=0.0)\n"
            "(w * torch.arange(4.0)).sum().backward(); opt.step(); opt.zero_grad(); opt.state_dict()\n"
            "assert 'torch._dynamo' not in sys.modules, 'torch._dynamo was imported'\n"
            "print(w.tolist())\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == pytest.approx([0.0, -0.1, -0.2, -0.3], abs=1e-6)  # w -= lr * gradient


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_a_training_process_keeps_freed_memory_unless_the_malloc_variables_say_otherwise():
    """glibc takes both settings (mallopt says so); a user's own MALLOC_*_ variables are left to rule."""
    code = "from dropout_lab.training.machine import keep_freed_memory\nprint(keep_freed_memory())\n"
    for env, expected in (({}, "True"), ({"MALLOC_TRIM_THRESHOLD_": "131072"}, "False")):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                              env={**os.environ, **env})
        assert done.returncode == 0 and done.stdout.strip() == expected, (env, done.stdout, done.stderr)
