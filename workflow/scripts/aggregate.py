"""Gather every run's metrics.json into results/aggregate/ (runs, learning and Monte-Carlo curves, provenance)."""
import sys
from pathlib import Path

from dropout_lab.aggregate import WriteError, collect, load, provenance, write_tables
from dropout_lab.identity import IdentityError, check_run

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821


def fail(message: str) -> None:
    """One line in the log and in Snakemake's error report."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(f"error: {message}")


records = snakemake.params.records  # noqa: F821
expected = snakemake.params.expected  # noqa: F821
out = snakemake.output  # noqa: F821
loaded = load(records)
# Each run must hold the settings that should have made it (a copied, stale or imported run is refused).
try:
    for record, metrics in loaded:
        check_run(record["path"], metrics, expected[str(Path(record["path"]).parent)])
except IdentityError as err:
    fail(str(err))
runs, curves, mc = collect(loaded, snakemake.config["failure"])  # noqa: F821
try:
    write_tables({out.runs: runs, out.csv: runs, out.curves: curves, out.mc: mc}, provenance(loaded), out.provenance)
except WriteError as err:
    fail(str(err))
print(f"{len(runs)} runs, {len(curves)} run-epochs", file=sys.stderr)
