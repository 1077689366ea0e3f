"""Check the linear-unit math numerically (config: theory); write the results and verdicts."""
import sys

from dropout_lab.settings.atomic import write_json
from dropout_lab.analysis.theory import kept_checks

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821

result, was_kept = kept_checks(snakemake.params.settings)  # noqa: F821
if was_kept:
    print("the checks' results kept from an earlier run of these settings and this code", file=sys.stderr)
write_json(snakemake.output[0], result)  # noqa: F821
for name, part in result.items():
    print(f"{name}: {part['verdict']} ({part['reason']})", file=sys.stderr)
