"""Draw one figure (PDF and PNG) from the aggregated tables."""
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
stem = snakemake.wildcards.stem  # noqa: F821
anchors = yaml.safe_load(Path(snakemake.input.anchors).read_text())["anchors"]  # noqa: F821
draw(stem, runs, curves, snakemake.config, Path(snakemake.output.pdf).parent, mc, anchors)  # noqa: F821
