"""Refuse any run whose recorded settings differ from those the workflow expects at its path; one line."""
import json
import sys
from pathlib import Path

from dropout_lab.settings.atomic import write_json
from dropout_lab.settings.identity import IdentityError, check_run, digest

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821
expected = snakemake.params.expected  # noqa: F821
checked = {}
try:
    for path in snakemake.input:  # noqa: F821
        folder = str(Path(path).parent)
        check_run(path, json.loads(Path(path).read_text()), expected[folder])
        checked[folder] = digest(expected[folder])
except IdentityError as err:
    sys.exit(f"error: {err}")  # into the log (stderr), which Snakemake shows for a failed job
write_json(snakemake.output[0], {"runs": checked})  # noqa: F821
print(f"{len(checked)} runs hold the settings expected at their paths", file=sys.stderr)
