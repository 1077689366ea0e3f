"""Gather every run's metrics.json into results/aggregate/ (runs and learning curves)."""
import sys

from dropout_lab.aggregate import collect, provenance
from dropout_lab.atomic import atomic_path, write_json

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821

records = snakemake.params.records  # noqa: F821
out = snakemake.output  # noqa: F821
runs, curves, mc = collect(records)
with atomic_path(out.runs) as tmp:
    runs.to_parquet(tmp, index=False)
with atomic_path(out.csv) as tmp:
    runs.to_csv(tmp, index=False)
with atomic_path(out.curves) as tmp:
    curves.to_parquet(tmp, index=False)
with atomic_path(out.mc) as tmp:
    mc.to_parquet(tmp, index=False)
write_json(out.provenance, provenance(records))
print(f"{len(runs)} runs, {len(curves)} run-epochs", file=sys.stderr)
