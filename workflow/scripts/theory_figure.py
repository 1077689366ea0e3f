"""Draw one theory figure (PDF and PNG) from results/theory/theory.json."""
import json
import sys
from pathlib import Path

from dropout_lab.analysis import theory_plots
from dropout_lab.analysis.plots import use_style

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821

use_style()
result = json.loads(Path(snakemake.input[0]).read_text())  # noqa: F821
part = snakemake.wildcards.part  # noqa: F821
stem = Path(snakemake.output.pdf).with_suffix("")  # noqa: F821
if part == "gradient":
    theory_plots.theory_gradient(result["gradient"], stem)
else:
    theory_plots.theory_regression(result["regression"], stem)
