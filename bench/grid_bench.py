"""Grid throughput: K models trained together (dropout_lab.training.engine) against one model at a time.

For the MNIST MLP grid and the CIFAR-10 CNN grid, in one process on one device:

- engine:   PackTrainer, K models as a batch dimension, data resident on the device;
- baseline: a pytorch/examples-style loop: DataLoader(shuffle=True) over CPU
            tensors, each batch copied to the device, nn.Sequential with
            nn.Dropout, torch.optim.SGD, one model after another.

The pack mixes gates as the grids do (one model in three Gaussian; the
baseline has only nn.Dropout) and rates from 0 to 0.9.

It prints model-epochs per second, achieved model FLOP/s (matrix products and
convolutions, forward and backward, counted by torch.utils.flop_counter), the
ratio engine / baseline, and model-FLOP utilisation (MFU) against the device's
datasheet peak and against a matrix product measured in the same run. CIFAR-10
is benchmarked on random data of its real shape (a GPU node has no internet);
MNIST is real when its files are found (--data-dir / --mirror), else random.

Needs only torch and this package (no Snakemake, no Hydra):

    python bench/grid_bench.py                       # sizes for the device found
    python bench/grid_bench.py --precision bf16 --tf32 --json out.json

Each figure is the median of --repeats timed epochs after one untimed epoch;
an "epoch" here is --steps steps, and model-epochs are scaled to the real epoch
(469 steps for MNIST, 391 for CIFAR-10, batch 128).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # runs from a checkout without installing

from dropout_lab.training.engine import EngineSettings, Hyper, Member, PackTrainer, flops_per_step  # noqa: E402
from dropout_lab.training.models import CNN, MLP  # noqa: E402

BATCH = 128
REAL_STEPS = {"mlp": 469, "cnn": 391}  # one epoch of MNIST (60,000) and CIFAR-10 (50,000) at batch 128

# Dense peaks from NVIDIA's datasheets, TFLOP/s: (bf16, tf32, fp32).
PEAKS = {
    "H100 PCIe": (756.0, 378.0, 51.2),
    "H100 NVL": (835.0, 418.0, 60.0),
    "H100": (989.4, 494.7, 66.9),  # SXM
    "H200": (989.4, 494.7, 66.9),
    "A100": (312.0, 156.0, 19.5),
}


@dataclass
class Grid:
    name: str
    model: str
    models: int  # K
    image_shape: tuple[int, ...]
    sizes: dict
    lr: float


def grids_for(device: torch.device, args) -> list[Grid]:
    gpu = device.type == "cuda"
    mlp = Grid("MNIST MLP", "mlp", args.mlp_models or (145 if gpu else 8), (1, 28, 28),
               {"width": 1024, "depth": 2} if gpu else {"width": 256, "depth": 2}, 0.05)
    cnn = Grid("CIFAR-10 CNN", "cnn", args.cnn_models or (25 if gpu else 3), (3, 32, 32),
               {"channels": [96, 128, 256], "kernel": 5, "fc_width": 2048} if gpu
               else {"channels": [16, 32, 32], "kernel": 3, "fc_width": 128}, 0.01)
    return [g for g in (mlp, cnn) if args.grid in ("both", g.model)]


def rates(grid: Grid, k: int) -> dict:
    """A spread like the grids': hidden/fc rate 0 to 0.9 in turn, input 0.2 on every other model."""
    rate = (k % 10) / 10
    return {"input": 0.2 if k % 2 else 0.0, "hidden": rate}


def build(grid: Grid, k: int) -> nn.Module:
    """Model k of the pack; one in three has a Gaussian gate, as in the grids' gate-parity runs."""
    torch.manual_seed(k)
    r, s = rates(grid, k), grid.sizes
    gate = "gaussian" if k % 3 == 2 else "bernoulli"
    if grid.model == "mlp":
        return MLP(784, 10, s["width"], gate, r["input"], [r["hidden"]] * s["depth"])
    return CNN(3, 32, 10, s["channels"], s["kernel"], s["fc_width"], gate, r["input"],
               [0.0] * len(s["channels"]), [r["hidden"], r["hidden"]])


def baseline_model(grid: Grid, k: int) -> nn.Module:
    """The same net in plain nn layers, dropout by nn.Dropout (as in pytorch/examples)."""
    r, s = rates(grid, k), grid.sizes
    if grid.model == "mlp":
        layers: list[nn.Module] = [nn.Flatten(), nn.Dropout(r["input"])]
        fan_in = 784
        for _ in range(s["depth"]):
            layers += [nn.Linear(fan_in, s["width"]), nn.ReLU(), nn.Dropout(r["hidden"])]
            fan_in = s["width"]
        return nn.Sequential(*layers, nn.Linear(fan_in, 10))
    layers, fan_in, size = [nn.Dropout(r["input"])], 3, 32
    for width in s["channels"]:
        layers += [nn.Conv2d(fan_in, width, s["kernel"], padding=s["kernel"] // 2), nn.ReLU(), nn.MaxPool2d(2)]
        fan_in, size = width, size // 2
    layers.append(nn.Flatten())
    fan_in = fan_in * size * size
    for _ in range(2):
        layers += [nn.Linear(fan_in, s["fc_width"]), nn.ReLU(), nn.Dropout(r["hidden"])]
        fan_in = s["fc_width"]
    return nn.Sequential(*layers, nn.Linear(fan_in, 10))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images(grid: Grid, n: int, args) -> tuple[torch.Tensor, torch.Tensor, str]:
    if grid.model == "mlp":
        try:
            from dropout_lab.training import data

            splits = data.load("mnist", args.data_dir, args.mirror)
            x = splits.train_x[:n].unsqueeze(1).float().div_(255.0)
            return x, splits.train_y[:n], "real MNIST"
        except Exception as err:  # noqa: BLE001 - any failure: fall back to random data, and say so
            print(f"(MNIST not found: {err}; using random data of its shape)", file=sys.stderr)
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, *grid.image_shape, generator=g), torch.randint(0, 10, (n,), generator=g), "random data"


def time_engine(grid: Grid, x, y, device, settings: EngineSettings, repeats: int) -> list[float]:
    members = [Member(build(grid, k), order_seed=k, gate_seed=10_000 + k) for k in range(grid.models)]
    hyper = Hyper(epochs=repeats + 1, batch_size=BATCH, lr=grid.lr, momentum=0.9, weight_decay=0.0,
                  schedule="constant")
    trainer = PackTrainer(members, x, y, hyper, settings, device)
    trainer.train_epoch()  # warm-up: allocator, cuBLAS handles, compilation
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        loss, _ = trainer.train_epoch()  # returns host tensors: the epoch is finished
        times.append(time.perf_counter() - start)
    if not torch.isfinite(loss).all():
        raise RuntimeError(f"{grid.name}: the engine's loss is not finite")
    return times


def time_baseline(grid: Grid, x, y, device, models: int, repeats: int) -> list[float]:
    """Seconds per epoch of one model, for `models` models one after another (median over them)."""
    loader = DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True, pin_memory=device.type == "cuda")
    times = []
    for k in range(models):
        torch.manual_seed(k)
        model = baseline_model(grid, k).to(device)
        optimizer = torch.optim.SGD(model.parameters(), lr=grid.lr, momentum=0.9)
        for epoch in range(repeats + 1):
            sync(device)
            start = time.perf_counter()
            model.train()
            for xb, yb in loader:
                xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
                optimizer.zero_grad()
                loss = nn.functional.cross_entropy(model(xb), yb)
                loss.backward()
                optimizer.step()
            sync(device)
            if epoch:  # the first epoch of each model is its warm-up
                times.append(time.perf_counter() - start)
    return times


def measured_matmul_tflops(device: torch.device, dtype: torch.dtype) -> float:
    """A large matrix product on random data: the ceiling this device reaches in practice."""
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    reps = 10 if device.type == "cuda" else 3
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e12


def datasheet_peak(device: torch.device, precision: str, tf32: bool) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, peaks in PEAKS.items():  # the more specific names come first
        if key in name:
            return peaks[0] if precision == "bf16" else peaks[1] if tf32 else peaks[2]
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--grid", choices=("mlp", "cnn", "both"), default="both")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--tf32", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--noise-chunk", type=int, default=8)
    parser.add_argument("--mlp-models", type=int, help="K for the MLP grid (default: 145 on GPU, 8 on CPU)")
    parser.add_argument("--cnn-models", type=int, help="K for the CNN grid (default: 25 on GPU, 3 on CPU)")
    parser.add_argument("--steps", type=int, help="steps per timed epoch (default: 100 on GPU, 20 on CPU)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline-models", type=int, default=2, help="models timed with the baseline loop")
    parser.add_argument("--peak-tflops", type=float, help="the device's peak, if the table does not know it")
    parser.add_argument("--data-dir", default=os.environ.get("DROPOUT_LAB_DATA_DIR", str(ROOT / "data")))
    parser.add_argument("--mirror", default=os.environ.get("DROPOUT_LAB_MNIST_MIRROR"))
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32
    settings = EngineSettings(precision=args.precision, tf32=args.tf32, compile=args.compile,
                              noise_chunk=args.noise_chunk)
    steps = args.steps or (100 if device.type == "cuda" else 20)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU ({platform.machine()}, {os.cpu_count()} cores)"
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    measured = measured_matmul_tflops(device, dtype)
    peak = args.peak_tflops or datasheet_peak(device, args.precision, args.tf32)
    print(f"device: {name} ({device}), torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print(f"engine: {settings}")
    print(f"matrix product ceiling measured now ({args.precision}{', tf32' if args.tf32 else ''}): "
          f"{measured:.1f} TFLOP/s; datasheet peak: {f'{peak:.1f} TFLOP/s' if peak else 'unknown'}\n")

    results = []
    for grid in grids_for(device, args):
        x, y, source = images(grid, steps * BATCH, args)
        flops = flops_per_step(build(grid, 0), grid.image_shape, BATCH)
        engine_times = time_engine(grid, x, y, device, settings, args.repeats)
        base_times = time_baseline(grid, x, y, device, args.baseline_models, args.repeats)
        scale = steps / REAL_STEPS[grid.model]  # timed epoch / real epoch
        engine_rate = grid.models * scale / statistics.median(engine_times)  # model-epochs/s
        base_rate = scale / statistics.median(base_times)
        engine_flops = flops * steps * grid.models / statistics.median(engine_times)
        base_flops = flops * steps / statistics.median(base_times)
        row = {
            "grid": grid.name, "models": grid.models, "data": source, "sizes": grid.sizes,
            "steps_timed": steps, "flops_per_model_step": flops,
            "engine_seconds": engine_times, "baseline_seconds": base_times,
            "engine_model_epochs_per_s": engine_rate, "baseline_model_epochs_per_s": base_rate,
            "speedup": engine_rate / base_rate,
            "engine_tflops": engine_flops / 1e12, "baseline_tflops": base_flops / 1e12,
            "mfu_vs_measured": engine_flops / 1e12 / measured,
            "mfu_vs_datasheet": engine_flops / 1e12 / peak if peak else None,
        }
        results.append(row)
        print(f"{grid.name}: K={grid.models} models, {grid.sizes}, {source}, {flops / 1e9:.2f} GFLOP per model-step")
        print(f"  {'loop':<34} {'model-epochs/s':>14} {'TFLOP/s':>9}")
        print(f"  {'engine (K together)':<34} {engine_rate:>14.2f} {engine_flops / 1e12:>9.2f}")
        print(f"  {'baseline (DataLoader, one model)':<34} {base_rate:>14.2f} {base_flops / 1e12:>9.2f}")
        mfu = f"{row['mfu_vs_datasheet']:.1%} of the datasheet peak, " if peak else ""
        print(f"  speed-up {row['speedup']:.1f}x; MFU {mfu}{row['mfu_vs_measured']:.1%} of the measured product")
        if grid.model == "mlp":
            print(f"  the MNIST paper grid (145 runs x 50 epochs) would train in "
                  f"{145 * 50 / engine_rate / 60:.1f} min at this rate")
        print()
    if args.json:
        Path(args.json).write_text(json.dumps({
            "device": name, "torch": torch.__version__, "settings": settings.__dict__,
            "measured_tflops": measured, "peak_tflops": peak, "grids": results,
        }, indent=2))


if __name__ == "__main__":
    main()
