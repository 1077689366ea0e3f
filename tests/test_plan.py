"""The plan printed before work: known FLOP counts, and a loud warning for a paper grid on a CPU."""

import os
from types import SimpleNamespace

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


# --------------------------------------------------------------------------- what is left, and this machine's times

BENCHMARK_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _quick_grid():
    """SMALL_GRIDS' MNIST grid at the quick scale: (config, runs, expected settings, packs of a cell each)."""
    from dropout_lab.planning import packs

    cfg = small_config(scale="quick", experiments=["mnist_mlp"], runs_per_job="cell")
    runs = grid.expand_runs(cfg)
    return cfg, runs, grid.expected_settings(cfg, runs), packs.make_packs(runs, "cell")


def _benchmark(root, pack_name: str, seconds: str) -> None:
    """A Snakemake benchmark file of the train rule for one pack, with `seconds` in its s column."""
    path = root / plan.BENCHMARKS / f"{pack_name}.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(BENCHMARK_HEADER + f"{seconds}\t0:01:00\t512.1\t900.0\t-\t-\t1.0\t2.0\t95.0\t60.0\n")


def test_runs_with_a_metrics_file_are_finished_and_not_counted_as_left(tmp_path):
    _, runs, _, _ = _quick_grid()
    done = tmp_path / runs[3].folder / "metrics.json"
    done.parent.mkdir(parents=True)
    done.write_text('{"status": "ok"}\n')
    (tmp_path / runs[4].folder).mkdir(parents=True)  # a folder without its metrics.json: not finished
    left = plan.unfinished(runs, tmp_path)
    assert [run.folder for run in left] == [run.folder for run in runs if run.folder != runs[3].folder]


def test_benchmark_files_are_read_per_experiment_and_damaged_ones_left_out(tmp_path):
    _, _, expected, made = _quick_grid()
    _benchmark(tmp_path, made[0].name, "120.50")
    _benchmark(tmp_path, made[1].name, "79.50")
    (tmp_path / plan.BENCHMARKS / f"{made[2].name}.tsv").write_text(BENCHMARK_HEADER)  # killed before its row
    _benchmark(tmp_path, made[3].name, "NA")
    _benchmark(tmp_path, "mnist_mlp/a_pack_of_another_grid", "999")  # no pack of this grid
    measured = plan.measured_jobs(made, expected, gpu=False, root=tmp_path)
    assert list(measured) == ["mnist_mlp"]
    jobs = measured["mnist_mlp"]
    assert jobs.jobs == 2 and jobs.seconds == 200.0
    epochs = grid.scale_settings("quick")["mlp"]["epochs"]
    assert made[0].runs[0].epochs is None  # the first packs are not the budget sweep's: the scale's own epochs
    assert jobs.run_epochs == epochs * (len(made[0].runs) + len(made[1].runs))
    assert jobs.model_seconds > 0 and jobs.ratio == 200.0 / jobs.model_seconds
    assert plan.measured_jobs(made, expected, gpu=False, root=tmp_path / "elsewhere") == {}


def _experiment_line(cfg, runs, expected, to_train, measured):
    templates, counts = plan.by_experiment(runs, expected)
    _, left = plan.by_experiment(to_train, expected)
    lines = plan.plan_lines(cfg, templates, counts, left, 10, 4, False, 2, measured=measured)
    return lines, templates


def test_the_estimate_is_scaled_by_this_machines_measured_jobs_and_says_how_far_off_the_model_was():
    cfg, runs, expected, _ = _quick_grid()
    left = runs[:-5]
    # Measured: twice the model's estimate for those jobs, 5 s per run-epoch.
    lines, templates = _experiment_line(cfg, runs, expected, left, {"mnist_mlp": plan.Measured(3, 300.0, 150.0, 60.0)})
    parallel = 2 // cfg["threads_per_run"]
    assert lines[0].endswith(f"): 5 finished, {len(left)} to train now in 4 packs, on the CPU (2 cores, {parallel} "
                             "training jobs at once)")
    model = plan.estimate_seconds(templates["mnist_mlp"], len(left), False, parallel, 4)
    assert lines[1].endswith(f"; 5 finished, {len(left)} to train now, about {plan._duration(2 * model)} (from 3 "
                             "jobs measured on this machine: 5 s per run-epoch, 2x the FLOP model's estimate for "
                             "them)")
    unmeasured, _ = _experiment_line(cfg, runs, expected, left, {})
    assert unmeasured[1].endswith(f"about {plan._duration(model)} (estimate)")
    assert plan._duration(model) != plan._duration(2 * model)


def test_an_experiment_without_measured_jobs_is_scaled_by_the_other_experiments_ones():
    cfg, runs, expected, _ = _quick_grid()
    measured = {"cifar10_cnn": plan.Measured(1, 40.0, 100.0, 8.0), "other": plan.Measured(1, 20.0, 50.0, 4.0)}
    lines, templates = _experiment_line(cfg, runs, expected, runs, measured)
    model = plan.estimate_seconds(templates["mnist_mlp"], len(runs), False, 2 // cfg["threads_per_run"], 4)
    assert lines[1].endswith(f"about {plan._duration(0.4 * model)} (FLOP estimate scaled by 2 jobs of other "
                             "experiments measured on this machine, 0.4x)")


def test_a_benchmark_file_reads_the_mean_of_its_rows_and_nothing_from_a_broken_one(tmp_path):
    path = tmp_path / "pack.tsv"
    path.write_text(BENCHMARK_HEADER + "10.0\t0:00:10\n30.0\t0:00:30\n")  # snakemake --benchmark-repeats 2
    assert plan.benchmark_seconds(path) == 20.0
    for text in ("", "seconds\n10\n", BENCHMARK_HEADER + "ten\t-\n", BENCHMARK_HEADER + "0.00\t0:00:00\n"):
        path.write_text(text)
        assert plan.benchmark_seconds(path) is None, text
    path.write_bytes(b"\xff\xfe\x00")
    assert plan.benchmark_seconds(path) is None
    assert plan.benchmark_seconds(tmp_path / "absent.tsv") is None


def test_the_next_plan_says_how_far_off_the_last_runs_estimate_was(tmp_path):
    packs_made = [SimpleNamespace(name=f"mnist_mlp/part{i}of3") for i in (1, 2, 3)]
    assert plan.last_estimate_line(tmp_path) is None  # no run yet
    plan.remember_estimate(packs_made, 60.0, 2, tmp_path)
    bench = tmp_path / plan.BENCHMARKS / "mnist_mlp"
    bench.mkdir(parents=True)
    for i, seconds in ((1, 40.0), (2, 50.0)):
        (bench / f"part{i}of3.tsv").write_text(f"s\th:m:s\n{seconds}\t0:00:{seconds:.0f}\n")
    assert plan.last_estimate_line(tmp_path).endswith("for its 3 jobs; 2 of them finished (the run stopped early), "
                                                      "so it cannot be compared")
    (bench / "part3of3.tsv").write_text("s\th:m:s\n80.0\t0:01:20\n")
    # 40 + 50 + 80 s over 2 jobs at once: 85 s of wall against the 60 s expected.
    assert plan.last_estimate_line(tmp_path) == ("plan: the last run expected about 60 s of training for its 3 jobs; "
                                                 "they took about 85 s (1.4x the estimate, their seconds over 2 at "
                                                 "once)")
    # A measurement older than the run is not the run's.
    os.utime(bench / "part3of3.tsv", (0, 0))
    assert "2 of them finished" in plan.last_estimate_line(tmp_path)
