"""The claims code on synthetic tables whose verdict is known in advance."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dropout_lab.analysis import claims, facts, statistics
from dropout_lab.settings import vocabulary

ALPHA, SAMPLES = 0.05, 2000
OPTIMUM = {"claimed_rate": 0.5, "sharp_window": 0.1, "margin": 0.001, "published_band": [0.2, 0.6], "gap": "loss"}
RATES = [round(0.1 * i, 1) for i in range(10)]


def sweep_table(accuracy, seeds: int = 5, noise: float = 0.001, seed: int = 0, col: str = "hidden_rate"):
    rng = np.random.default_rng(seed)
    rows = []
    for rate in RATES if col == "hidden_rate" else [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]:
        for s in range(seeds):
            acc = accuracy(rate) + rng.normal(0, noise)
            rows.append({col: rate, "seed": s, "test_acc": acc, "gap_acc": 0.05 - 0.04 * rate + rng.normal(0, noise),
                         "gap_loss": 0.08 - 0.05 * rate + rng.normal(0, noise), "train_acc": 1.0})
    return pd.DataFrame(rows)


def test_sharp_optimum_at_half_is_supported():
    df = sweep_table(lambda r: 0.98 - 0.2 * (r - 0.5) ** 2 - (0.01 if r != 0.5 else 0.0))
    result = claims.optimum_claim(df, "hidden_rate", OPTIMUM, ALPHA, SAMPLES)
    assert result["best"] == 0.5 and result["set"] == [0.5]
    assert result["verdict"] == claims.SUPPORTED
    assert result["argmax_frequency"]["0.5"] > 0.95


def test_optimum_elsewhere_is_not_supported():
    df = sweep_table(lambda r: 0.98 - 0.5 * (r - 0.8) ** 2)
    result = claims.optimum_claim(df, "hidden_rate", OPTIMUM, ALPHA, SAMPLES)
    assert result["best"] == 0.8
    assert result["verdict"] == claims.NOT_SUPPORTED


def test_flat_band_is_its_own_verdict_and_matches_the_published_band():
    # Flat from 0.2 to 0.6, clearly worse outside (the shape of Srivastava et al., Fig. 9): rates outside 0.5 +/- 0.1
    # are shown equivalent to the best, so the optimum is a band, not one rate.
    df = sweep_table(lambda r: 0.98 if 0.2 <= r <= 0.6 else 0.95, noise=0.0002)
    result = claims.optimum_claim(df, "hidden_rate", OPTIMUM, ALPHA, SAMPLES)
    assert result["verdict"] == claims.NOT_SUPPORTED and result["shape"] == "flat"
    assert result["equivalent"] == [0.2, 0.3, 0.4, 0.5, 0.6]
    assert result["equivalent_within_published_band"]


def test_half_not_rejected_but_not_shown_equivalent_is_inconclusive_not_supported():
    # Two noisy seeds per rate: nothing is significantly worse than the best, so the old rule (0.5 in the set of rates
    # not significantly worse) said "supported"; equivalence within 0.1 points cannot be shown, so it is inconclusive.
    df = sweep_table(lambda r: 0.98 + 0.004 * (r == 0.6) if abs(r - 0.5) < 0.15 else 0.90, seeds=2, noise=0.002,
                     seed=0)
    result = claims.optimum_claim(df, "hidden_rate", OPTIMUM, ALPHA, SAMPLES)
    assert 0.5 in result["set"] and all(abs(r - 0.5) <= 0.1 + 1e-9 for r in result["set"])  # the old rule's "supported"
    assert result["best"] == 0.6 and not result["comparisons"]["0.5"]["equivalent"]
    assert result["verdict"] == claims.INCONCLUSIVE
    assert result["power"]["undecided"]["0.5"] == "equivalence"


def test_half_worse_than_the_best_by_more_than_the_margin_is_not_supported():
    df = sweep_table(lambda r: 0.98 - (0.003 if r == 0.5 else 0.0) - 0.05 * abs(r - 0.4), noise=0.0002)
    result = claims.optimum_claim(df, "hidden_rate", OPTIMUM, ALPHA, SAMPLES)
    assert result["best"] == 0.4 and result["comparisons"]["0.5"]["beyond_margin"]
    assert result["verdict"] == claims.NOT_SUPPORTED


def test_loss_gap_is_claim_1b_statistic_and_saturation_is_named():
    df = sweep_table(lambda r: 0.98)  # loss gap 0.08 - 0.05 * rate: smallest at the largest rate
    df.loc[df["hidden_rate"] == 0.9, "train_acc"] = 0.97
    result = claims.regularisation_claim(df, "hidden_rate", OPTIMUM, ALPHA, SAMPLES)
    assert result["gap"] == "loss" and result["best"] == 0.9
    gaps = {row["rate"]: row for row in result["gaps"]}
    expected = df[df["hidden_rate"] == 0.3]["gap_loss"].mean()
    assert gaps[0.3]["gap_loss"] == pytest.approx(expected) and gaps[0.3]["gap_loss"] == pytest.approx(0.065, abs=0.001)
    assert result["saturated"] == [r for r in RATES if r != 0.9]
    by_accuracy = claims.regularisation_claim(df, "hidden_rate", {**OPTIMUM, "gap": "accuracy"}, ALPHA, SAMPLES)
    assert by_accuracy["gap"] == "accuracy" and "accuracy gap" in by_accuracy["claim"]


def test_regularisation_reading_finds_the_largest_rate():
    df = sweep_table(lambda r: 0.98)  # gap falls steadily with the rate
    result = claims.regularisation_claim(df, "hidden_rate", OPTIMUM, ALPHA, SAMPLES)
    assert result["best"] == 0.9
    assert result["verdict"] == claims.NOT_SUPPORTED


def test_bootstrap_set_is_reproducible():
    df = sweep_table(lambda r: 0.98 - 0.1 * abs(r - 0.4), noise=0.01)
    a = statistics.best_set(df, "hidden_rate", "test_acc", True, ALPHA, 500, seed=3)
    b = statistics.best_set(df, "hidden_rate", "test_acc", True, ALPHA, 500, seed=3)
    assert a == b


def input_table(accuracy, noise=0.001):
    return sweep_table(accuracy, noise=noise, col="input_rate")


def test_input_rate_supported_when_higher_rates_are_worse():
    result = claims.input_rate_claim(input_table(lambda r: 0.98 - 0.1 * abs(r - 0.1)), {"threshold": 0.2}, ALPHA)
    assert result["estimate"] == 0.1
    assert result["verdict"] == claims.SUPPORTED


def test_input_rate_not_supported_when_a_higher_rate_wins():
    result = claims.input_rate_claim(input_table(lambda r: 0.95 + 0.05 * r), {"threshold": 0.2}, ALPHA)
    assert result["estimate"] == 0.5
    assert result["verdict"] == claims.NOT_SUPPORTED


def test_input_rate_inconclusive_when_flat_and_noisy():
    result = claims.input_rate_claim(input_table(lambda r: 0.97, noise=0.01), {"threshold": 0.2}, ALPHA)
    assert result["verdict"] == claims.INCONCLUSIVE


def parity_table(shift: float, noise: float, seeds: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    rows = []
    for rate in [0.2, 0.5, 0.8]:
        for s in range(seeds):
            base = 0.97 + rng.normal(0, 0.005)  # shared by the pair: what pairing by seed removes
            rows.append({"hidden_rate": rate, "seed": s, "gate": "bernoulli", "test_acc": base})
            rows.append({"hidden_rate": rate, "seed": s, "gate": "gaussian",
                         "test_acc": base + shift + rng.normal(0, noise)})
    return pd.DataFrame(rows)


def test_parity_supported_when_pairs_agree():
    result = claims.parity_claim(parity_table(0.0, 0.0005), "hidden_rate", ["bernoulli", "gaussian"],
                                 {"margin": 0.0025}, ALPHA)
    assert result["verdict"] == claims.SUPPORTED
    assert all(row["equivalent"] for row in result["table"])


def test_parity_not_supported_when_gaussian_is_worse():
    result = claims.parity_claim(parity_table(-0.02, 0.001), "hidden_rate", ["bernoulli", "gaussian"],
                                 {"margin": 0.0025}, ALPHA)
    assert result["verdict"] == claims.NOT_SUPPORTED
    assert all(row["mean_diff"] == pytest.approx(-0.02, abs=0.002) for row in result["table"])
    assert {row["verdict"] for row in result["table"]} == {"gaussian worse"}
    assert "estimate" not in result  # no mean pooled across rates


def test_parity_inconclusive_when_noise_hides_it():
    result = claims.parity_claim(parity_table(0.0, 0.02, seeds=3), "hidden_rate", ["bernoulli", "gaussian"],
                                 {"margin": 0.0025}, ALPHA)
    assert result["verdict"] == claims.INCONCLUSIVE


def test_tost_known_answer():
    # Differences 0.001 +/- 0.0005 with n = 4: t = (mean + margin) / se for the lower test.
    diffs = np.array([0.0005, 0.0015, 0.0005, 0.0015])
    se = diffs.std(ddof=1) / 2
    from scipy import stats

    lower = stats.t.sf((diffs.mean() + 0.0025) / se, 3)
    upper = stats.t.cdf((diffs.mean() - 0.0025) / se, 3)
    assert statistics.tost(diffs, 0.0025) == pytest.approx(max(lower, upper), rel=1e-9)


def test_holm_known_answer_and_statsmodels_agree():
    # m = 4, sorted 0.005, 0.01, 0.03, 0.04: steps 4 x 0.005, 3 x 0.01, 2 x 0.03, 1 x 0.04 = 0.02, 0.03, 0.06, 0.04,
    # then the running maximum: 0.02, 0.03, 0.06, 0.06, put back in the order given.
    assert statistics.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02], abs=1e-15)
    assert statistics.holm([0.5, float("nan"), 0.2]) == pytest.approx([1.0, 1.0, 0.6])  # clipped at 1
    assert statistics.holm([]) == []
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(3)
    for size in (1, 2, 7, 30):
        pvalues = list(rng.uniform(0, 0.2, size) ** 2)
        assert statistics.holm(pvalues) == pytest.approx(list(multipletests(pvalues, method="holm")[1]), rel=1e-12)


def mc_table(shift: float, noise: float, runs: int = 10, shifted_rates=(0.2, 0.5, 0.8)):
    rng = np.random.default_rng(0)
    rows = []
    for gate in ("bernoulli", "gaussian"):
        for rate in (0.2, 0.5, 0.8):
            for r in range(runs):
                det = 0.97 + rng.normal(0, 0.005)
                for k in (1, 10, 50):
                    at_k = shift if rate in shifted_rates else 0.0
                    rows.append({"gate": gate, "hidden_rate": rate, "k": k, "test_acc": det,
                                 "mc_test_acc": det + (at_k if k == 50 else -0.05) + rng.normal(0, noise)})
    return pd.DataFrame(rows)


def test_inference_matches_when_mc_agrees_with_the_deterministic_net():
    result = claims.inference_claim(mc_table(0.0, 0.0005), "hidden_rate", {"k": 50, "margin": 0.005}, ALPHA)
    assert result["k"] == 50 and result["verdict"] == claims.SUPPORTED
    assert result["headline"] == "both gates: matches at 0.2-0.8"


def test_inference_not_supported_when_mc_is_far_off():
    result = claims.inference_claim(mc_table(-0.03, 0.001), "hidden_rate", {"k": 50, "margin": 0.005}, ALPHA)
    assert result["verdict"] == claims.NOT_SUPPORTED


def test_inference_is_judged_per_rate_and_names_where_it_fails():
    # MC better by 2 points at rate 0.8 only: one verdict per (gate, rate), nothing pooled.
    result = claims.inference_claim(mc_table(0.02, 0.001, shifted_rates=(0.8,)), "hidden_rate",
                                    {"k": 50, "margin": 0.005}, ALPHA)
    verdicts = {(r["gate"], r["rate"]): r["verdict"] for r in result["table"]}
    assert verdicts == {(g, r): ("MC better" if r == 0.8 else "equivalent")
                        for g in ("bernoulli", "gaussian") for r in (0.2, 0.5, 0.8)}
    assert result["verdict"] == claims.NOT_SUPPORTED
    for gate in ("bernoulli", "gaussian"):
        assert f"{gate}: matches at 0.2-0.5; MC better at 0.8 (+2.0" in result["headline"]
    assert "estimate" not in result


def test_conventions_need_scaling_when_unscaled_loss_is_worse():
    rng = np.random.default_rng(1)
    rows = []
    for gate in ("bernoulli", "gaussian"):
        for seed in range(5):
            rows.append({"gate": gate, "convention": "inverted", "seed": seed, "test_acc": 0.97,
                         "test_loss": 0.1, "unscaled_test_acc": 0.97, "unscaled_test_loss": 0.1})
            rows.append({"gate": gate, "convention": "scaled", "seed": seed, "test_acc": 0.97,
                         "test_loss": 0.1 + rng.normal(0, 0.002), "unscaled_test_acc": 0.969,
                         "unscaled_test_loss": 0.3 + rng.normal(0, 0.01)})
    result = claims.convention_claim(pd.DataFrame(rows), ALPHA)
    assert result["verdict"] == claims.SUPPORTED
    assert {r["gate"] for r in result["table"]} == {"bernoulli", "gaussian"}


def test_weight_norm_reading_finds_where_weights_are_smallest():
    df = sweep_table(lambda r: 0.98).assign(weight_norm=lambda d: 30 - 20 * d["hidden_rate"])
    result = claims.weight_norm_claim(df, "hidden_rate", OPTIMUM, ALPHA, SAMPLES)
    assert result["best"] == 0.9 and result["verdict"] == claims.NOT_SUPPORTED


def _full_table(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(status="ok", failed_epoch=np.nan, failed_reason="", weight_norm=10.0 - df["hidden_rate"],
                     experiment="e", gate="bernoulli", convention="inverted", cell="c",
                     run=[f"r{i}" for i in range(len(df))], in_hidden_sweep=True, in_input_sweep=False,
                     in_gate_parity=False, in_conventions=False)


CONFIG = {"claims": {"alpha": ALPHA, "power": 0.8, "bootstrap_samples": 500, "optimum": {**OPTIMUM, "experiment": "e"},
                     "input_rate": {"experiment": "e", "threshold": 0.2},
                     "gate_parity": {"experiment": "e", "margin": 0.0025},
                     "inference": {"experiment": "e", "k": 50, "margin": 0.005}},
          "grids": {"e": {"hidden_sweep": {"vary": "hidden", "rates": RATES}}}}


def test_diverged_runs_are_counted_and_never_averaged_in():
    df = _full_table(sweep_table(lambda r: 0.98 - 0.2 * (r - 0.5) ** 2 - (0.01 if r != 0.5 else 0.0)))
    bad = df.iloc[:3].assign(status="diverged", failed_epoch=2, failed_reason="the loss became non-finite",
                             test_acc=np.nan, hidden_rate=0.5, run=["x1", "x2", "x3"])
    table = pd.concat([df, bad], ignore_index=True)
    result = claims.evaluate_claims(table, CONFIG)
    assert result["optimum"]["verdict"] == claims.SUPPORTED
    half = next(r for r in result["optimum"]["table"] if r["rate"] == 0.5)
    assert half["n"] == 5 and half["failed"] == 3  # the 3 diverged left out, and counted
    assert "with_failed" not in result["optimum"]  # diverged runs have no numbers to put back
    summary = facts.failed_runs(table)
    assert summary["count"] == 3 and summary["diverged"] == 3 and summary["of"] == len(table)
    assert summary["cells"][0]["epochs"] == [2] and summary["cells"][0]["failed"] == 3


def test_a_collapsed_cell_is_left_out_and_the_claim_says_what_it_would_change():
    # Rate 0.9 collapsed: accuracy 0.6 and a large negative gap, which would make it "regularise most".
    df = _full_table(sweep_table(lambda r: 0.98 - 0.1 * (r - 0.5) ** 2))
    collapsed = df["hidden_rate"] == 0.9
    df.loc[collapsed, "status"] = "collapsed"
    df.loc[collapsed, "test_acc"] = 0.6
    df.loc[collapsed, "gap_acc"] = -0.05
    result = claims.evaluate_claims(df, CONFIG)
    reg = result["regularisation"]
    assert reg["best"] == 0.8  # the smallest gap among the runs that trained
    row = next(r for r in reg["table"] if r["rate"] == 0.9)
    assert row["n"] == 0 and row["failed"] == 5
    assert reg["with_failed"] == {"collapsed_runs": 5, "verdict": claims.NOT_SUPPORTED, "summary": 0.9,
                                  "changes_verdict": False, "changes_summary": True}
    assert result["optimum"]["with_failed"]["changes_summary"] is False  # 0.9 was never the best accuracy


def test_parity_verdict_per_rate_with_a_failed_cell_and_a_worse_rate():
    table = parity_table(0.0, 0.0005)
    table.loc[(table["hidden_rate"] == 0.5) & (table["gate"] == "gaussian"), "test_acc"] -= 0.01
    table["status"] = np.where(table["hidden_rate"] == 0.8, "collapsed", "ok")
    result = claims.parity_claim(table, "hidden_rate", ["bernoulli", "gaussian"], {"margin": 0.0025}, ALPHA,
                                 [0.2, 0.5, 0.8])
    verdicts = {row["rate"]: (row["verdict"], row["n"], row["failed"]) for row in result["table"]}
    assert verdicts == {0.2: ("equivalent", 8, 0), 0.5: ("gaussian worse", 8, 0), 0.8: ("no runs", 0, 16)}
    assert result["verdict"] == claims.NOT_SUPPORTED
    half = table[table["hidden_rate"] == 0.5].pivot_table(index="seed", columns="gate", values="test_acc")
    diff = 100 * (half["gaussian"] - half["bernoulli"]).mean()
    assert diff == pytest.approx(-1.0, abs=0.05)
    assert result["headline"] == f"equivalent at 0.2; gaussian worse at 0.5 ({diff:+.2f} points); every run failed at 0.8"


def test_rate_ranges_join_neighbours_on_the_grid():
    grid = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    assert vocabulary.rate_ranges([0.1, 0.2, 0.3, 0.8], grid) == "0.1-0.3, 0.8"
    assert vocabulary.rate_ranges([0.9, 0.7], grid) == "0.7, 0.9"
    assert vocabulary.rate_ranges([0.2, 0.5], [0.2, 0.5, 0.8]) == "0.2-0.5"


def test_each_gate_is_judged_against_the_reference_and_a_third_gates_failures_are_not_counted():
    table = parity_table(0.0, 0.0005)
    third = table[table["gate"] == "gaussian"].assign(gate="dropconnect")
    third["test_acc"] -= 0.02  # far worse everywhere
    table = pd.concat([table, third], ignore_index=True)
    table = table.assign(status=np.where((table["gate"] == "dropconnect") & (table["hidden_rate"] == 0.8),
                                         "collapsed", "ok"), failed_epoch=np.nan, failed_reason="",
                         experiment="e", convention="inverted", cell="c", run=[f"r{i}" for i in range(len(table))],
                         in_hidden_sweep=False, in_input_sweep=False, in_gate_parity=True, in_conventions=False,
                         in_width_sweep=False, weight_norm=1.0)
    config = {**CONFIG, "grids": {"e": {"gate_parity": {"vary": "hidden", "rates": [0.2, 0.5, 0.8],
                                                        "gates": ["bernoulli", "gaussian", "dropconnect"]}}}}
    result = claims.evaluate_claims(table, config)
    gaussian, dropconnect = result["parity_gaussian"], result["parity_dropconnect"]
    assert gaussian["gates"] == ["bernoulli", "gaussian"] and dropconnect["gates"] == ["bernoulli", "dropconnect"]
    assert gaussian["verdict"] == claims.SUPPORTED
    assert all(row["failed"] == 0 for row in gaussian["table"])  # dropconnect's collapsed runs are not its
    assert dropconnect["verdict"] == claims.NOT_SUPPORTED
    assert {r["rate"]: r["failed"] for r in dropconnect["table"]} == {0.2: 0, 0.5: 0, 0.8: 8}


def test_gaussian_better_by_the_published_effect_is_not_called_equivalent():
    # Srivastava et al. Table 10: Gaussian 0.13 points better on MNIST. With a small spread and the 0.1-point margin,
    # the interval lies outside the margin: "Gaussian better", never "equivalent", and it does not exclude +0.13.
    result = claims.parity_claim(parity_table(0.0013, 0.0002), "hidden_rate", ["bernoulli", "gaussian"],
                                 {"margin": 0.001, "published_effect": 0.0013}, ALPHA)
    assert not any(row["equivalent"] for row in result["table"])
    assert {row["verdict"] for row in result["table"]} == {"gaussian better"}
    assert result["excludes_published_at"] == []
    same = claims.parity_claim(parity_table(0.0, 0.0002), "hidden_rate", ["bernoulli", "gaussian"],
                               {"margin": 0.001, "published_effect": 0.0013}, ALPHA)
    assert result["verdict"] == claims.SUPPORTED  # equivalent or better at every rate: "as good as" holds
    assert same["excludes_published_at"] == [0.2, 0.5, 0.8] and same["verdict"] == claims.SUPPORTED


def test_placement_claim_reads_hidden_dropout_on_top_of_input_dropout():
    rng = np.random.default_rng(0)

    def table(gain: float, noise: float) -> pd.DataFrame:
        return pd.DataFrame([{"placement": preset, "seed": s, "status": "ok",
                              "test_acc": 0.985 + (gain if preset == "both" else 0.0) + rng.normal(0, noise)}
                             for preset in ("input", "both") for s in range(5)])

    settings = {"margin": 0.001}
    assert claims.placement_claim(table(0.003, 0.0003), settings, ALPHA, 0.8)["verdict"] == claims.SUPPORTED
    worse = claims.placement_claim(table(-0.003, 0.0003), settings, ALPHA, 0.8)
    assert worse["verdict"] == claims.NOT_SUPPORTED and "worse" in worse["reason"]
    same = claims.placement_claim(table(0.0, 0.0001), settings, ALPHA, 0.8)
    assert same["verdict"] == claims.NOT_SUPPORTED and "equivalent" in same["reason"]
    noisy = claims.placement_claim(table(0.0005, 0.003), settings, ALPHA, 0.8)
    assert noisy["verdict"] == claims.INCONCLUSIVE and noisy["power"]["seeds_for_difference"] > 5
