"""Gather every run's metrics.json into results/aggregate/ (runs, learning and Monte-Carlo curves, provenance).

The runs were checked (settings.metrics_schema, and against the settings expected at their paths) by the check_runs
rule; they are read through the same schema here, so a file changed since is refused in one line too.
"""
import sys

from dropout_lab.analysis.aggregate import WriteError, collect, load, provenance, write_tables
from dropout_lab.settings.metrics_schema import MetricsError

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821

out = snakemake.output  # noqa: F821
try:
    loaded = load(snakemake.params.records)  # noqa: F821
    runs, curves, mc = collect(loaded, snakemake.config["failure"])  # noqa: F821
except MetricsError as err:
    print(f"error: {err}", file=sys.stderr)  # into the log, which Snakemake shows for a failed job
    sys.exit(2)
try:
    write_tables({out.runs: runs, out.csv: runs, out.curves: curves, out.mc: mc}, provenance(loaded), out.provenance)
except WriteError as err:
    sys.exit(f"error: {err}")  # into the log (stderr), which Snakemake shows for a failed job
print(f"{len(runs)} runs, {len(curves)} run-epochs", file=sys.stderr)
