"""Compute the verdicts from the aggregated table; write claims.json and the paper's LaTeX."""
import json
import sys
from pathlib import Path

import pandas as pd

from dropout_lab.atomic import write_json
from dropout_lab.claims import diverged_runs, evaluate_claims
from dropout_lab.report import write_report

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821

config = snakemake.config  # noqa: F821
runs = pd.read_parquet(snakemake.input.runs)  # noqa: F821
mc = pd.read_parquet(snakemake.input.mc)  # noqa: F821
theory = json.loads(Path(snakemake.input.theory).read_text())  # noqa: F821
prov = json.loads(Path(snakemake.input.provenance).read_text())  # noqa: F821
verdicts = evaluate_claims(runs, config, mc)
diverged = diverged_runs(runs)
write_json(snakemake.output.json,  # noqa: F821
           {"scale": config["scale"], "runs": len(runs), "diverged": diverged, "claims": verdicts,
            "theory": theory})
write_report(verdicts, theory, runs, prov, config, Path(snakemake.input.anchors),  # noqa: F821
             Path(snakemake.output.macros).parent, diverged)  # noqa: F821
for name, result in verdicts.items():
    print(f"{name}: {result['verdict']} ({result['reason']})", file=sys.stderr)
