"""The plan printed before work: known FLOP counts, and a loud warning for a paper grid on a CPU."""

from dropout_lab.planning import grid, plan
from tests.conftest import SMALL_GRIDS, small_config


def test_mlp_training_flops_known_answer():
    # 784-1024-1024-10: 784*1024 + 1024*1024 + 1024*10 = 1,861,632 weights; 6 FLOPs per weight-image.
    settings = {"dataset.name": "mnist", "model.name": "mlp", "model.width": 1024, "model.depth": 2}
    assert plan.training_flops_per_image(settings) == 6.0 * 1_861_632


def test_cnn_training_flops_known_answer():
    # One 3x3 conv 3->8 on 32x32 (2*9*3*8*1024 = 442,368) then 8*16*16 -> 10 (2*2048*10 = 40,960), times 3.
    settings = {"dataset.name": "cifar10", "model.name": "cnn", "model.channels": [8], "model.kernel_size": 3,
                "model.fc_width": 5, "model.fc_depth": 0}
    assert plan.training_flops_per_image(settings) == 3.0 * (442_368 + 40_960)


def _lines(scale: str, gpu: bool) -> tuple[list[str], int]:
    """The plan of SMALL_GRIDS' MNIST grid at a scale, and its number of runs."""
    cfg = small_config(scale=scale, experiments=["mnist_mlp"])
    runs = grid.expand_runs(cfg)
    templates, _ = plan.by_experiment(runs, grid.expected_settings(cfg, runs))
    lines = plan.plan_lines(cfg, templates, {"mnist_mlp": len(runs)}, {"mnist_mlp": len(runs)}, len(runs),
                            len(runs), gpu, 2)
    return lines, len(runs)


def test_a_paper_grid_on_a_cpu_is_announced_loudly_and_a_gpu_is_not_warned():
    cpu, runs = _lines("paper", gpu=False)
    assert cpu[0].startswith(f"plan: scale=paper, {runs} runs")
    # The budget sweep's runs train for other epochs: 5 and 200 for each of its rates and seeds, the rest for
    # the paper scale's own (its third budget).
    budget = SMALL_GRIDS["mnist_mlp"]["budget_sweep"]
    own = grid.scale_settings("paper")["mlp"]["epochs"]
    assert sorted(budget["epochs"]["paper"]) == sorted([5, own, 200])
    each = len(budget["rates"]) * small_config()["seeds"]["paper"]
    mean = (own * (runs - 2 * each) + (5 + 200) * each) / runs
    assert f"5-200 epochs (mean {mean:.1f})" in cpu[1]
    assert any("WARNING: the paper scale is meant for a GPU" in line for line in cpu)
    assert not any("WARNING" in line for line in _lines("paper", gpu=True)[0])
    assert not any("WARNING" in line for line in _lines("quick", gpu=False)[0])


def test_a_single_runs_epoch_line_speaks_of_the_run_and_a_packs_of_its_runs():
    from dropout_lab.training.train import epoch_line

    single = epoch_line(2, 5, 1.5, [0], 1, [0.91], [0.3], eta=4.4)
    assert single == "epoch 2/5 (1.5 s, about 4 s to go)  test acc 0.9100  train loss 0.3000"
    pack = epoch_line(2, 5, 1.5, [0, 2], 3, [0.9, 0.5, 0.95], [0.3, 2.0, 0.2], eta=4.4)
    assert pack.endswith("2/3 runs training  best test acc 0.9500 (train loss 0.2000)")
