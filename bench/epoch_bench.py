"""Time one training epoch of the project's loop against a pytorch/examples-style loop.

Same MLP (784-1024-1024-10, ReLU), same batch size, optimiser and dropout
rates (input 0.2, hidden 0.5), same data, in one process, measured in turns so
that drift in the machine's speed hits every variant alike:

- baseline:   TensorDataset + DataLoader(shuffle=True) + nn.Dropout;
- ours:       dropout_lab.training.engine.PackTrainer (a pack of one) with the Bernoulli gate;
- ours-gauss: the same with the Gaussian gate;
- no-dropout: the same loop with every rate 0 (the matmul floor).

    python bench/epoch_bench.py [--repeats 3] [--fraction 1.0] [--json out.json]

Targets (issue: training core): ours >= 1.5x the baseline's throughput, and
ours <= 1.25x the time of no-dropout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dropout_lab.training import data
from dropout_lab.training.engine import EngineSettings, Hyper, Member, PackTrainer
from dropout_lab.training.models import MLP
from dropout_lab.training.train import prepare_images

ROOT = Path(__file__).resolve().parents[1]
WIDTH, BATCH, LR, MOMENTUM = 1024, 128, 0.05, 0.9


def baseline_epoch(model: nn.Module, optimizer, loader: DataLoader) -> None:
    model.train()
    for xb, yb in loader:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(xb), yb)
        loss.backward()
        optimizer.step()


def baseline_model() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Dropout(0.2),
        nn.Linear(784, WIDTH), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(WIDTH, WIDTH), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(WIDTH, 10),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="epochs timed per variant (median reported)")
    parser.add_argument("--fraction", type=float, default=1.0, help="fraction of the 60,000 training images")
    parser.add_argument("--data-dir", default=os.environ.get("DROPOUT_LAB_DATA_DIR", str(ROOT / "data")))
    parser.add_argument("--mirror", default=os.environ.get("DROPOUT_LAB_MNIST_MIRROR"))
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    mirror = args.mirror or (str(ROOT.parent / "shared/data/mnist") if (ROOT.parent / "shared/data/mnist").is_dir() else None)

    data.load("mnist", args.data_dir, mirror)  # fetch and cache outside the timing
    start = time.perf_counter()
    splits = data.load("mnist", args.data_dir, mirror)
    load_seconds = time.perf_counter() - start

    n = int(len(splits.train_y) * args.fraction)
    x = prepare_images(splits.train_x[:n], "mnist")
    y = splits.train_y[:n]
    torch.manual_seed(0)

    def ours(gate: str, input_rate: float, hidden_rate: float):
        model = MLP(784, 10, WIDTH, gate, input_rate, [hidden_rate, hidden_rate])
        hyper = Hyper(epochs=1, batch_size=BATCH, lr=LR, momentum=MOMENTUM, weight_decay=0.0, schedule="constant")
        trainer = PackTrainer([Member(model, 0, 1)], x, y, hyper, EngineSettings(), torch.device("cpu"))
        return trainer.train_epoch

    base = baseline_model()
    base_opt = torch.optim.SGD(base.parameters(), lr=LR, momentum=MOMENTUM)
    loader = DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True)
    variants = {
        "baseline": lambda: baseline_epoch(base, base_opt, loader),
        "ours": ours("bernoulli", 0.2, 0.5),
        "ours-gauss": ours("gaussian", 0.2, 0.5),
        "no-dropout": ours("bernoulli", 0.0, 0.0),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for name, run in variants.items():  # one warm-up epoch each (allocator, MKL)
        run()
    for _ in range(args.repeats):
        for name, run in variants.items():
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)

    median = {k: statistics.median(v) for k, v in times.items()}
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"cache load: {load_seconds:.3f} s; {n} images per epoch, batch {BATCH}, repeats {args.repeats}\n")
    print(f"{'variant':<12} {'s/epoch':>9} {'images/s':>10} {'vs baseline':>12} {'vs no-dropout':>14}")
    for name, seconds in median.items():
        print(
            f"{name:<12} {seconds:>9.2f} {n / seconds:>10.0f} {median['baseline'] / seconds:>11.2f}x"
            f" {seconds / median['no-dropout']:>13.2f}x"
        )
    speedup = median["baseline"] / median["ours"]
    overhead = median["ours"] / median["no-dropout"]
    print(f"\nours vs baseline throughput: {speedup:.2f}x (target >= 1.5x): {'met' if speedup >= 1.5 else 'NOT met'}")
    print(f"ours vs no-dropout time:     {overhead:.2f}x (target <= 1.25x): {'met' if overhead <= 1.25 else 'NOT met'}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "seconds": times, "median": median, "images": n, "load_seconds": load_seconds,
            "speedup_vs_baseline": speedup, "time_vs_no_dropout": overhead,
            "threads": torch.get_num_threads(), "torch": torch.__version__,
        }, indent=2))


if __name__ == "__main__":
    main()
