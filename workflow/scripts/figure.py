"""Draw every figure of the paper (PDF and PNG) in one job: the imports paid once, the drawing shared out over
the job's cores (processes forked after the imports), what the claims rule computed read from claims.json."""
import json
import multiprocessing
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

from dropout_lab.analysis import theory_plots
from dropout_lab.analysis.figures import chosen_rates, draw
from dropout_lab.analysis.plots import use_style

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821

use_style()
inp, config = snakemake.input, snakemake.config  # noqa: F821
runs = pd.read_parquet(inp.runs)
curves = pd.read_parquet(inp.curves)
mc = pd.read_parquet(inp.mc)
anchors = yaml.safe_load(Path(inp.anchors).read_text())["anchors"]
computed = json.loads(Path(inp.claims).read_text())
theory = json.loads(Path(inp.theory).read_text())
chosen = chosen_rates(runs, config, computed)
out_dir = Path(snakemake.output.pdf[0]).parent  # noqa: F821
THEORY = {"theory/gradient": lambda stem: theory_plots.theory_gradient(theory["gradient"], stem),
          "theory/regression": lambda stem: theory_plots.theory_regression(theory["regression"], stem)}


def draw_one(stem: str) -> str:
    started = time.perf_counter()
    if stem in THEORY:
        THEORY[stem](out_dir / stem)
    else:
        draw(stem, runs, curves, config, out_dir, mc, anchors, computed, chosen)
    return f"{stem} ({time.perf_counter() - started:.1f} s)"


stems = [*snakemake.params.stems, *THEORY]  # noqa: F821
workers = min(snakemake.threads, len(stems))  # noqa: F821
if workers > 1:
    # Forked: each worker has the tables and the imports already; each figure is drawn by one worker alone.
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        drawn = pool.imap_unordered(draw_one, stems)
        for stem in drawn:
            print(f"drew {stem}", file=sys.stderr, flush=True)
else:
    for stem in stems:
        print(f"drew {draw_one(stem)}", file=sys.stderr, flush=True)
