"""Draw every figure of the paper (PDF and PNG) from the aggregated tables: one process, the imports paid once."""
import sys
from pathlib import Path

import pandas as pd
import yaml

from dropout_lab.analysis.figures import draw
from dropout_lab.analysis.plots import use_style

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821

use_style()
runs = pd.read_parquet(snakemake.input.runs)  # noqa: F821
curves = pd.read_parquet(snakemake.input.curves)  # noqa: F821
mc = pd.read_parquet(snakemake.input.mc)  # noqa: F821
anchors = yaml.safe_load(Path(snakemake.input.anchors).read_text())["anchors"]  # noqa: F821
out_dir = Path(snakemake.output.pdf[0]).parent  # noqa: F821
for stem in snakemake.params.stems:  # noqa: F821
    draw(stem, runs, curves, snakemake.config, out_dir, mc, anchors)  # noqa: F821
    print(f"drew {stem}", file=sys.stderr, flush=True)
