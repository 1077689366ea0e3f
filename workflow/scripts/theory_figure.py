"""Draw one theory figure (PDF and PNG) from results/theory/theory.json."""
import json
import sys
from pathlib import Path

import seaborn as sns

from dropout_lab.analysis import plots

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821

sns.set_theme(context="paper", style="whitegrid")
result = json.loads(Path(snakemake.input[0]).read_text())  # noqa: F821
part = snakemake.wildcards.part  # noqa: F821
stem = Path(snakemake.output.pdf).with_suffix("")  # noqa: F821
if part == "gradient":
    plots.theory_gradient(result["gradient"], stem)
else:
    plots.theory_regression(result["regression"], stem)
