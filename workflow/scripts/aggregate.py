"""Gather every run's metrics.json into results/aggregate/ (runs, learning and Monte-Carlo curves, provenance)."""
import sys

from dropout_lab.aggregate import collect, load, provenance
from dropout_lab.atomic import atomic_path, write_json

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821

records = snakemake.params.records  # noqa: F821
out = snakemake.output  # noqa: F821
loaded = load(records)
runs, curves, mc = collect(loaded, snakemake.config["failure"])  # noqa: F821
with atomic_path(out.runs) as tmp:
    runs.to_parquet(tmp, index=False)
with atomic_path(out.csv) as tmp:
    runs.to_csv(tmp, index=False)
with atomic_path(out.curves) as tmp:
    curves.to_parquet(tmp, index=False)
with atomic_path(out.mc) as tmp:
    mc.to_parquet(tmp, index=False)
write_json(out.provenance, provenance(loaded))
print(f"{len(runs)} runs, {len(curves)} run-epochs", file=sys.stderr)
