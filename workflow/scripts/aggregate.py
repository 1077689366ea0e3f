"""Gather every run's metrics.json into results/aggregate/ (runs, learning and Monte-Carlo curves, provenance).

The runs were checked against the settings expected at their paths by the check_runs rule.
"""
import sys

from dropout_lab.analysis.aggregate import WriteError, collect, load, provenance, write_tables

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821

out = snakemake.output  # noqa: F821
loaded = load(snakemake.params.records)  # noqa: F821
runs, curves, mc = collect(loaded, snakemake.config["failure"])  # noqa: F821
try:
    write_tables({out.runs: runs, out.csv: runs, out.curves: curves, out.mc: mc}, provenance(loaded), out.provenance)
except WriteError as err:
    sys.exit(f"error: {err}")  # into the log (stderr), which Snakemake shows for a failed job
print(f"{len(runs)} runs, {len(curves)} run-epochs", file=sys.stderr)
