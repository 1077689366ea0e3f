"""Refuse any run whose metrics.json cannot be believed (settings.metrics_schema) or whose recorded settings differ
from those the workflow expects at its path; one line, before the aggregate job (which then does not run, so the
earlier tables stay as they were)."""
import sys
from pathlib import Path

from dropout_lab.settings.atomic import write_json
from dropout_lab.settings.identity import IdentityError, check_run, digest
from dropout_lab.settings.metrics_schema import MetricsError, read_metrics

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821
expected = snakemake.params.expected  # noqa: F821
checked = {}
try:
    for path in snakemake.input:  # noqa: F821
        folder = str(Path(path).parent)
        check_run(path, read_metrics(path), expected[folder])
        checked[folder] = digest(expected[folder])
except (MetricsError, IdentityError) as err:
    print(f"error: {err}", file=sys.stderr)  # into the log, which Snakemake shows for a failed job
    sys.exit(2)
write_json(snakemake.output[0], {"runs": checked})  # noqa: F821
print(f"{len(checked)} runs hold the settings expected at their paths", file=sys.stderr)
