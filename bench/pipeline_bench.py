"""The pipeline's own overhead: the workflow's wall time against its training floor, measured in one run.

    python bench/pipeline_bench.py [--scales smoke quick] [--runs-per-job auto cell] [--reference] [--cores 2]

For each scale, in a fresh folder: the MNIST grid (experiments=[mnist_mlp]) from an empty results/ to the PDF
in one command, and the time at which its aggregate tables were written. The floor is the packs' own training seconds (the wall_seconds of each stack of each pack.json) summed and divided by
the cores: the wall time if training were all the pipeline did. The train jobs' whole seconds (Snakemake's
benchmark files, start-up included) are printed beside it. The ratio wall / floor is the overhead (start-up of each job, data, analysis). --runs-per-job repeats each
grid with each packing named (e.g. `auto cell`: today's default against a pack per cell). --reference also times
the paper-scale build from the shipped H200 runs (what `make reference` runs). MNIST comes from
$DROPOUT_LAB_MNIST_MIRROR when set (a folder or URL), else the official mirrors; TeX is needed for the PDF.
Prints one line per measurement and a table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
NO_TRAINING = ["check_runs", "aggregate", "theory", "figures", "claims", "paper", "all", "everything"]


def snakemake(work: Path, cores: int, *args: str) -> float:
    """Run the checkout's workflow in `work`; its wall seconds (a failure stops the benchmark with its log)."""
    started = time.perf_counter()
    proc = subprocess.run([SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(work), "--cores", str(cores),
                           *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"error: the workflow failed in {work}:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - started


def training_seconds(work: Path) -> tuple[float, int]:
    """The packs' own training seconds (each stack's wall_seconds: from its data to its last evaluation, the
    process's start-up and imports left out; a pack of several stacks has one per stack), summed, and how many
    packs there were."""
    files = list((work / "results" / "packs").rglob("pack.json"))
    total = 0.0
    for path in files:
        stacks = {run["pack_fingerprint"]: run["wall_seconds"] for run in json.loads(path.read_text())["runs"]}
        total += sum(stacks.values())
    return total, len(files)


def job_seconds(work: Path) -> float:
    """The train jobs' whole wall seconds (Snakemake's benchmark files: start-up and imports included), summed."""
    total = 0.0
    for path in (work / "results" / "benchmarks" / "train").rglob("*.tsv"):
        with open(path) as fh:
            total += float(next(csv.DictReader(fh, delimiter="\t"))["s"])
    return total


def grid(scale: str, packing: str, cores: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"dropout-lab-bench-{scale}-{packing}-"))
    mirror = os.environ.get("DROPOUT_LAB_MNIST_MIRROR")
    config = ["--config", f"scale={scale}", "experiments=[mnist_mlp]", f"runs_per_job={packing}"]
    if mirror:
        config.append(f"data={{dir: data, mirrors: {{mnist: {mirror}}}}}")
    started = time.time()
    to_pdf = snakemake(work, cores, *config)  # one command, as a user runs it: the theory beside the training
    to_aggregate = (work / "results" / "aggregate" / "runs.parquet").stat().st_mtime - started
    return measured(work, scale, packing, cores, to_aggregate, to_pdf)


def measured(work: Path, scale: str, packing: str, cores: int, to_aggregate: float, to_pdf: float) -> dict:
    trained, jobs = training_seconds(work)
    runs = len(list((work / "results" / "runs").rglob("metrics.json")))
    floor = trained / cores
    return {"what": f"{scale} MNIST grid, runs_per_job={packing} ({runs} runs in {jobs} training jobs; the jobs "
                    f"took {job_seconds(work):.0f} s, start-up included)",
            "aggregate": to_aggregate,
            "pdf": to_pdf, "floor": floor, "ratio": to_aggregate / floor if floor else float("nan"), "work": work}


def reference(cores: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="dropout-lab-bench-reference-"))
    started = time.perf_counter()
    with tarfile.open(ROOT / "reference" / "mnist_mlp-paper-h200.tgz") as tar:
        tar.extractall(work, filter="data")
    snakemake(work, cores, "--configfile", str(ROOT / "reference" / "grid.yaml"), "--allowed-rules", *NO_TRAINING)
    wall = time.perf_counter() - started  # the archive's extraction and the build
    return {"what": "paper-scale PDF from the 145 shipped H200 runs (no training)", "aggregate": float("nan"),
            "pdf": wall, "floor": 0.0, "ratio": float("nan"), "work": work}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", nargs="*", default=["smoke"], choices=["smoke", "quick", "paper"])
    parser.add_argument("--runs-per-job", nargs="*", default=["auto"], help="packings to time, e.g. auto cell")
    parser.add_argument("--reference", action="store_true", help="also time the build from the shipped runs")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; --cores {args.cores}; "
          f"{time.strftime('%Y-%m-%d %H:%M')}", flush=True)
    rows = []
    for scale in args.scales:
        for packing in args.runs_per_job:
            rows.append(grid(scale, packing, args.cores))
            row = rows[-1]
            print(f"{row['what']}: {row['aggregate']:.0f} s to the aggregate, {row['pdf']:.0f} s to the PDF; training "
                  f"floor {row['floor']:.0f} s; wall/floor {row['ratio']:.2f}x ({row['work']})", flush=True)
    if args.reference:
        rows.append(reference(args.cores))
        print(f"{rows[-1]['what']}: {rows[-1]['pdf']:.0f} s ({rows[-1]['work']})", flush=True)
    print("\n| measurement | to the aggregate | to the PDF | training floor | wall / floor |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        cells = [f"{row[key]:.0f} s" if row[key] == row[key] else "--" for key in ("aggregate", "pdf", "floor")]
        ratio = f"{row['ratio']:.2f}x" if row["ratio"] == row["ratio"] else "--"
        print(f"| {row['what']} | {' | '.join(cells)} | {ratio} |")


if __name__ == "__main__":
    main()
