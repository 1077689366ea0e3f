"""Train the MNIST MLP grid of config/config.yaml without Snakemake, as one pack.

    python bench/paper_grid.py --scale paper --work bench/out/grid --summary bench/out/grid.json \
        -- engine.precision=bf16 engine.tf32=true

Arguments after -- are Hydra overrides for every run. Each pack is trained by
dropout_lab.training.pack (as the workflow's `train` rule does with runs_per_job: all)
and writes each run's metrics.json under --work. The summary gives the
training seconds (the sum of the packs' epoch times), the wall time, and the
mean test accuracy per hidden rate of the hidden sweep.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from dropout_lab.planning import grid  # noqa: E402
from dropout_lab.planning.packs import make_packs  # noqa: E402
from dropout_lab.training import pack  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", default="paper", choices=("paper", "quick", "smoke"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--experiment", default="mnist_mlp")
    parser.add_argument("--work", required=True, help="folder for the packs and the runs")
    parser.add_argument("--summary", required=True, help="JSON file for the figures")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run (after --)")
    args = parser.parse_args()

    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    config.update(scale=args.scale, experiments=[args.experiment], device=args.device)
    work = Path(args.work)
    config["data"]["dir"] = os.environ.get("DROPOUT_LAB_DATA_DIR", str(work / "data"))
    config["data"]["mirrors"]["mnist"] = os.environ.get("DROPOUT_LAB_MNIST_MIRROR")
    runs = grid.expand_runs(config)
    packs = make_packs(runs, "all")
    settings = grid.run_settings(config)
    print(f"{len(runs)} runs in {len(packs)} packs at scale={args.scale} on {args.device}", flush=True)

    started = time.perf_counter()
    training_seconds, packs_done = 0.0, []
    by_rate: dict[float, list[float]] = {}
    for p in packs:
        argv = ["--dir", str(work / "packs" / p.name), *shlex.split(p.arguments(settings, args.overrides)),
                "--write-runs"]
        # Runs write under their workflow paths, relative to --work.
        argv = [a.replace("out=results/", f"out={work}/results/") for a in argv]
        pack_start = time.perf_counter()
        metrics = pack.main(argv)
        seconds = sum(h["train_seconds"] for h in metrics[0]["history"])
        training_seconds += seconds
        packs_done.append({"pack": p.name, "runs": len(metrics), "training_seconds": seconds,
                           "wall_seconds": time.perf_counter() - pack_start, "engine": metrics[0]["engine"]})
        print(f"{p.name}: {len(metrics)} runs, {seconds:.1f} s training, "
              f"{time.perf_counter() - pack_start:.1f} s in all", flush=True)
        for run, m in zip(p.runs, metrics):
            if "hidden_sweep" in run.sweeps and m["status"] == "ok":
                by_rate.setdefault(dict(run.rates)["hidden"], []).append(m["final"]["test_acc"])
        # Written after every pack: a check cut off by its time limit still reports what it did.
        summary = {
            "scale": args.scale, "runs": len(runs), "runs_done": sum(d["runs"] for d in packs_done),
            "packs": packs_done, "overrides": args.overrides, "training_seconds": training_seconds,
            "wall_seconds": time.perf_counter() - started, "device": metrics[0]["device"],
            "hidden_sweep_test_acc": {str(rate): statistics.mean(accs) for rate, accs in sorted(by_rate.items())},
        }
        Path(args.summary).write_text(json.dumps(summary, indent=2))

    print(f"\n{len(runs)} runs: {training_seconds:.1f} s of training ({training_seconds / 60:.2f} min), "
          f"{summary['wall_seconds']:.1f} s in all (with data loading and the final evaluations)")
    print("hidden sweep, mean test accuracy by rate: "
          + ", ".join(f"{rate}: {acc:.4f}" for rate, acc in summary["hidden_sweep_test_acc"].items()))


if __name__ == "__main__":
    main()
