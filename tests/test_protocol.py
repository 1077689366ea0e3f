"""The fair protocol: a validation split that every choice reads, the tuned protocol's learning-rate choice per
cell, the claims' view of each protocol, and the budget statistic's known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from dropout_lab.training import data, train
from dropout_lab.planning import checks, grid, packs
from dropout_lab.analysis import protocol
from dropout_lab.analysis.claims import NOT_SUPPORTED, SUPPORTED, INCONCLUSIVE, budget_claim
from dropout_lab.settings.config import compose_config
from dropout_lab.settings.protocols import tuned_lrs
from tests.conftest import small_config

# The grids of tests/conftest.py (SMALL_GRIDS), with its tuned protocol (SMALL_PROTOCOLS).
config = small_config


def tuned_table(scores: dict[tuple[float, float], list[float]], status: dict | None = None) -> pd.DataFrame:
    """Runs of the hidden sweep's tuned cells: {(hidden rate, lr): validation accuracy per seed}."""
    rows = []
    for (rate, lr), values in scores.items():
        for seed, value in enumerate(values):
            cell = f"input0_hidden{rate:g}"
            rows.append({"experiment": "mnist_mlp", "gate": "bernoulli", "convention": "inverted", "dataset": "mnist",
                         "design_cell": cell, "cell": f"{cell}_lr{lr:g}", "seed": seed, "lr": lr,
                         "input_rate": 0.0, "hidden_rate": rate, "conv_rate": np.nan, "fc_rate": np.nan,
                         "val_acc": value, "validation_samples": 1000, "test_acc": 0.5,
                         "status": (status or {}).get((rate, lr, seed), "ok"),
                         "in_hidden_sweep": lr == 0.05, "tuned_hidden_sweep": True,
                         "in_input_sweep": False, "tuned_input_sweep": False})
    return pd.DataFrame(rows)


def chosen_lrs(table: pd.DataFrame) -> dict[str, float]:
    picks = table[table["chosen"]]
    return dict(zip(picks["design_cell"], picks["lr"]))


def test_each_cell_takes_the_learning_rate_with_the_best_mean_validation_accuracy():
    runs = tuned_table({(0.5, 0.015): [0.90, 0.92], (0.5, 0.05): [0.95, 0.93], (0.5, 0.15): [0.96, 0.90],
                        (0.8, 0.015): [0.80, 0.82], (0.8, 0.05): [0.70, 0.90], (0.8, 0.15): [0.85, 0.86]})
    table = protocol.selection(runs, config())
    assert chosen_lrs(table) == {"input0_hidden0.5": 0.05, "input0_hidden0.8": 0.15}
    row = table[(table["design_cell"] == "input0_hidden0.5") & (table["lr"] == 0.05)].iloc[0]
    assert row["val_mean"] == pytest.approx(0.94) and row["runs"] == 2 and row["failed"] == 0


def test_a_failed_run_counts_as_a_chance_level_guess_and_a_tie_goes_to_the_smaller_rate():
    # lr 0.15 has the best surviving seed (0.99) but its other seed collapsed: scored 0.1, mean 0.545.
    runs = tuned_table({(0.9, 0.05): [0.60, 0.60], (0.9, 0.15): [0.99, 0.97], (0.9, 0.5): [0.60, 0.60]},
                       status={(0.9, 0.15, 1): "collapsed"})
    table = protocol.selection(runs, config())
    assert chosen_lrs(table) == {"input0_hidden0.9": 0.05}
    row = table[table["lr"] == 0.15].iloc[0]
    assert row["val_mean"] == pytest.approx((0.99 + 0.1) / 2) and row["failed"] == 1


def test_the_choice_reads_no_test_number():
    runs = tuned_table({(0.5, 0.015): [0.90, 0.92], (0.5, 0.05): [0.95, 0.93], (0.5, 0.15): [0.96, 0.90]})
    poisoned = runs.assign(test_acc=np.where(runs["lr"] == 0.015, 1.0, 0.0), test_loss=-1.0)
    assert chosen_lrs(protocol.selection(poisoned, config())) == chosen_lrs(protocol.selection(runs, config()))


def test_the_tuned_view_marks_each_cells_runs_at_its_chosen_learning_rate():
    runs = tuned_table({(0.5, 0.015): [0.97, 0.97], (0.5, 0.05): [0.95, 0.93],
                        (0.8, 0.05): [0.95, 0.93], (0.8, 0.15): [0.90, 0.90]})
    fixed = protocol.view(runs, "fixed", config())
    tuned = protocol.view(runs, "tuned", config())
    assert set(fixed.loc[fixed["in_hidden_sweep"], "lr"]) == {0.05}
    marked = tuned[tuned["in_hidden_sweep"]]
    assert dict(zip(marked["design_cell"], marked["lr"])) == {"input0_hidden0.5": 0.015, "input0_hidden0.8": 0.05}
    assert len(marked) == 4  # both seeds of each chosen rate
    assert list(tuned.columns) == list(runs.columns)


def test_tuned_runs_without_a_validation_split_are_refused_in_one_line():
    runs = tuned_table({(0.5, 0.05): [np.nan, np.nan], (0.5, 0.15): [np.nan, np.nan]}).assign(validation_samples=0)
    with pytest.raises(ValueError, match="dataset.validation=0"):
        protocol.selection(runs, config())


def _budget_runs(peaks: dict[int, float], noise: float = 1e-4, seeds: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame([
        {"epochs": epochs, "hidden_rate": rate, "seed": seed, "status": "ok",
         "test_acc": 0.95 - 0.1 * abs(rate - peak) + rng.normal(0, noise)}
        for epochs, peak in peaks.items() for rate in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6) for seed in range(seeds)])


def test_the_budget_statistic_finds_an_optimum_that_moves():
    result = budget_claim(_budget_runs({1: 0.1, 3: 0.2, 9: 0.4}), "hidden_rate", {"tolerance": 0.1}, 0.05, 500)
    assert [row["best"] for row in result["budgets"]] == [0.1, 0.2, 0.4]
    assert result["estimate"] == pytest.approx(0.3) and result["interval"] == pytest.approx([0.3, 0.3])
    assert result["verdict"] == NOT_SUPPORTED


def test_the_budget_statistic_finds_an_optimum_that_stays():
    result = budget_claim(_budget_runs({1: 0.3, 9: 0.3}), "hidden_rate", {"tolerance": 0.1}, 0.05, 500)
    assert result["estimate"] == 0 and result["interval"] == [0, 0]
    assert result["verdict"] == SUPPORTED


def test_the_budget_statistic_is_inconclusive_when_the_seeds_cannot_tell():
    # Flat accuracy with seed noise far above the differences between rates: the best rate wanders.
    result = budget_claim(_budget_runs({1: 0.3, 9: 0.3}, noise=0.05, seeds=3), "hidden_rate", {"tolerance": 0.1},
                          0.05, 500)
    lo, hi = result["interval"]
    assert lo < -0.1 or hi > 0.1
    assert result["verdict"] in (INCONCLUSIVE, NOT_SUPPORTED)
    assert result["verdict"] == (NOT_SUPPORTED if lo > 0 or hi < 0 else INCONCLUSIVE)


def test_the_budget_bootstrap_resamples_seeds_within_each_rate_and_breaks_ties_to_the_smaller_rate():
    # At 1 epoch rate 0.5's two seeds (0.8, 1.0) resample to a mean of 0.8, 0.9 or 1.0 (1/4, 1/2, 1/4) against
    # rate 0's 0.9: 0.5 is best only at 1.0 (a tie goes to 0), so the shift 0 - best is -0.5 in a quarter of the
    # samples and 0 otherwise. Its 30 % and 70 % quantiles are both 0 (they would be -0.5 with ties to 0.5).
    rows = [(1, 0.0, 0.9), (1, 0.0, 0.9), (1, 0.5, 0.8), (1, 0.5, 1.0), (2, 0.0, 0.9), (2, 0.0, 0.9), (2, 0.5, 0.5),
            (2, 0.5, 0.5)]
    df = pd.DataFrame([{"epochs": e, "hidden_rate": r, "seed": i % 2, "status": "ok", "test_acc": a}
                       for i, (e, r, a) in enumerate(rows)])
    assert budget_claim(df, "hidden_rate", {"tolerance": 0.1}, 0.6, 4000)["interval"] == [0.0, 0.0]
    wide = budget_claim(df, "hidden_rate", {"tolerance": 0.1}, 0.05, 4000)
    assert wide["estimate"] == 0 and wide["interval"] == [-0.5, 0.0] and wide["verdict"] == INCONCLUSIVE


def test_the_grid_trains_every_tuned_cell_at_every_learning_rate_and_shares_the_scales_own():
    cfg = config(scale="smoke", experiments=["mnist_mlp"])
    runs = grid.expand_runs(cfg)
    scale_lr = grid.scale_settings("smoke")["mlp"]["lr"]
    lrs = tuned_lrs(cfg)
    seeds = cfg["seeds"]["smoke"]
    for sweep in cfg["protocols"]["tuned"]["sweeps"]:
        spec = cfg["grids"]["mnist_mlp"][sweep]
        tuned = [r for r in runs if f"tuned:{sweep}" in r.sweeps]
        assert len(tuned) == len(spec["rates"]) * len(lrs) * seeds
        at_scale_lr = [r for r in tuned if r.lr is None]
        assert all(sweep in r.sweeps for r in at_scale_lr) == (scale_lr in lrs)
    other = next(r for r in runs if r.lr is not None)
    assert f"_lr{other.lr:g}" in other.cell and f"train.lr={other.lr!r}" in other.overrides(grid.run_settings(cfg))
    assert grid.expected_settings(cfg, [other])[other.folder]["train.lr"] == other.lr


def test_runs_of_another_learning_rate_or_budget_never_share_a_pack():
    cfg = config(scale="smoke", experiments=["mnist_mlp"])
    runs = grid.expand_runs(cfg)
    for per_job in ("all", 5):
        for pack in packs.make_packs(runs, per_job):
            assert len({(r.lr, r.epochs, r.width) for r in pack.runs}) == 1, pack.name


def test_budgets_at_the_scales_own_epochs_are_the_hidden_sweeps_runs():
    cfg = config(scale="quick", experiments=["mnist_mlp"])
    runs = grid.expand_runs(cfg)
    budget = [r for r in runs if "budget_sweep" in r.sweeps]
    own = grid.scale_settings("quick")["mlp"]["epochs"]
    budgets = cfg["grids"]["mnist_mlp"]["budget_sweep"]["epochs"]["quick"]
    assert own in budgets  # one budget is the scale's own epochs: those runs are None (the scale's)
    assert {r.epochs for r in budget} == {None if e == own else e for e in budgets}
    assert all("hidden_sweep" in r.sweeps for r in budget if r.epochs is None)


@pytest.mark.parametrize("changes, message", [
    ({"protocols": {"run": ["fixed"], "judge": "tuned"}}, "protocols.judge='tuned' is not among"),
    ({"train_overrides": ["train.lr=0.1"]}, "train.lr, which the tuned protocol sets per run"),
    ({"train_overrides": ["train.epochs=2"]}, "train.epochs, which the budget sweep sets per run"),
])
def test_protocol_settings_that_cannot_work_are_named_before_anything_runs(changes, message):
    cfg = config(scale="smoke", experiments=["mnist_mlp"], **changes)
    with pytest.raises(grid.GridError, match=message):
        runs = grid.expand_runs(cfg)
        grid.check_train_overrides(cfg, runs)


def test_the_tuned_protocol_needs_two_seeds():
    cfg = config(scale="smoke", experiments=["mnist_mlp"], seeds={"paper": 5, "quick": 3, "smoke": 1})
    with pytest.raises(grid.GridError, match="at least two seeds"):
        grid.expand_runs(cfg)


# --------------------------------------------------------------------------- the validation split


def test_the_validation_split_is_fixed_disjoint_from_training_and_recorded(tmp_path, mnist_data_dir, mnist_mirror):
    held, rest = train.validation_split(60000, 10000)
    assert len(held) == 10000 and len(set(held.tolist()) | set(rest.tolist())) == 60000
    assert torch.equal(held, train.validation_split(60000, 10000)[0])  # the same for every run
    cfg = compose_config([f"out={tmp_path}", f"data_dir={mnist_data_dir}", f"dataset.mirror={mnist_mirror or 'null'}",
                          "scale=smoke", "seed=3"])
    tensors, digest = train.load_tensors(cfg, torch.device("cpu"))
    assert len(tensors["validation"][1]) == cfg.dataset.validation == 1000
    assert len(tensors["train"][1]) == round((60000 - 1000) * cfg.dataset.train_fraction)
    assert digest == train.split_digest(train.validation_split(60000, 1000)[0])
    # no training image is also a validation image
    train_rows = {bytes(x.numpy()) for x in tensors["train"][0][:2000].mul(255).round().to(torch.uint8)}
    val_rows = {bytes(x.numpy()) for x in tensors["validation"][0].mul(255).round().to(torch.uint8)}
    duplicates_in_mnist = 5  # MNIST holds a few identical images; far fewer than any overlap would give
    assert len(train_rows & val_rows) <= duplicates_in_mnist


def test_no_validation_split_gives_the_training_images_of_earlier_versions(tmp_path, mnist_data_dir, mnist_mirror):
    cfg = compose_config([f"out={tmp_path}", f"data_dir={mnist_data_dir}", f"dataset.mirror={mnist_mirror or 'null'}",
                          "scale=smoke", "dataset.validation=0"])
    tensors, _ = train.load_tensors(cfg, torch.device("cpu"))
    splits = data.load("mnist", mnist_data_dir, mnist_mirror)
    idx = train.fixed_subset(60000, cfg.dataset.train_fraction)
    assert torch.equal(tensors["train"][1], splits.train_y[idx])
    assert len(tensors["validation"][1]) == 0


@pytest.mark.slow
def test_poisoned_test_labels_do_not_change_the_chosen_learning_rates(tmp_path, mnist_data_dir, mnist_mirror,
                                                                      monkeypatch):
    """Train a small tuned cell twice, the second time with every test label replaced; the validation numbers,
    and so the choices, are the same, while the test numbers are not."""
    def trained(tag: str) -> pd.DataFrame:
        rows = []
        for lr in (0.01, 0.3):
            cfgs = [compose_config([
                f"out={tmp_path / tag / f'lr{lr}' / f'seed{seed}'}", f"data_dir={mnist_data_dir}",
                f"dataset.mirror={mnist_mirror or 'null'}", "scale=smoke", "model.width=32", "train.epochs=1",
                "eval.mc_samples=0", "dropout.hidden=0.5", f"train.lr={lr}", f"seed={seed}", "progress=false",
                "checkpoint=false"]) for seed in (0, 1)]
            for metrics in train.train_runs(cfgs, tmp_path / tag / f"lr{lr}" / "pack.pt"):
                rows.append({"experiment": "mnist_mlp", "gate": "bernoulli", "convention": "inverted",
                             "dataset": "mnist", "design_cell": "input0_hidden0.5", "lr": lr, "input_rate": 0.0,
                             "hidden_rate": 0.5, "conv_rate": np.nan, "fc_rate": np.nan, "status": "ok",
                             "val_acc": metrics["final"]["val_acc"], "test_acc": metrics["final"]["test_acc"],
                             "validation_samples": metrics["validation_samples"], "tuned_hidden_sweep": True,
                             "in_hidden_sweep": False})
        return pd.DataFrame(rows)

    honest = trained("honest")
    real_load = data.load

    def poisoned_load(*args, **kwargs):
        splits = real_load(*args, **kwargs)
        splits.test_y = (splits.test_y + 1) % 10  # every test label wrong
        return splits

    monkeypatch.setattr(train.data, "load", poisoned_load)
    poisoned = trained("poisoned")
    assert poisoned["val_acc"].tolist() == honest["val_acc"].tolist()
    assert (poisoned["test_acc"] < honest["test_acc"]).all()

    def best_on_test(rows):
        return rows.groupby("lr")["test_acc"].mean().idxmax()

    # A choice that read the test set would flip here (the poisoned labels favour the net that learnt least) ...
    assert best_on_test(poisoned) != best_on_test(honest)
    # ... and the protocol's does not.
    cfg = config()
    assert chosen_lrs(protocol.selection(poisoned, cfg)) == chosen_lrs(protocol.selection(honest, cfg)) \
        == {"input0_hidden0.5": best_on_test(honest)}


def test_a_budget_whose_runs_all_failed_leaves_the_budget_claim_inconclusive():
    runs = _budget_runs({1: 0.1, 9: 0.4})
    runs.loc[runs["epochs"] == 1, "status"] = "diverged"
    result = budget_claim(runs, "hidden_rate", {"tolerance": 0.1}, 0.05, 100)
    assert result["verdict"] == INCONCLUSIVE and result["estimate"] is None
    assert [row["epochs"] for row in result["budgets"]] == [9]


def test_tuned_runs_without_a_validation_split_are_refused_before_anything_trains():
    cfg = config(scale="smoke", experiments=["mnist_mlp"], train_overrides=["dataset.validation=0"])
    runs = grid.expand_runs(cfg)
    grid.check_train_overrides(cfg, runs)  # a valid override on its own
    with pytest.raises(checks.GridError, match="the tuned protocol chooses its learning rate on the validation split, "
                                               "but dataset.validation=0 holds none"):
        checks.check_validation_split(runs, grid.expected_settings(cfg, runs))
    fixed = config(scale="smoke", experiments=["mnist_mlp"], train_overrides=["dataset.validation=0"],
                   protocols={"run": ["fixed"], "judge": "fixed"})
    runs = grid.expand_runs(fixed)
    checks.check_validation_split(runs, grid.expected_settings(fixed, runs))  # the fixed protocol needs none


def test_the_inference_claim_reads_one_learning_rate_per_cell_under_the_tuned_protocol():
    from dropout_lab.analysis.claims import inference_runs

    runs = tuned_table({(0.5, 0.015): [0.97, 0.97], (0.5, 0.05): [0.95, 0.93]})
    runs["in_gate_parity"] = runs["lr"] == 0.05  # the gate-parity grid trains at the scale's learning rate
    tuned = protocol.view(runs, "tuned", config())
    assert set(tuned.loc[tuned["in_hidden_sweep"], "lr"]) == {0.015}  # the tuned choice
    assert set(inference_runs(tuned, "mnist_mlp")["lr"]) == {0.05}  # not pooled with the tuned choice
    no_parity = tuned.assign(in_gate_parity=False)
    assert set(inference_runs(no_parity, "mnist_mlp")["lr"]) == {0.015}  # without parity: the hidden sweep's
