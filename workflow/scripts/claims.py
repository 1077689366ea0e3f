"""Compute the verdicts and the paper's other numbers from the aggregated tables into claims.json, then write
the paper's LaTeX from that document alone."""
import json
import sys
from pathlib import Path

import pandas as pd
import yaml

from dropout_lab.analysis import protocol
from dropout_lab.settings import provenance
from dropout_lab.settings.atomic import write_json
from dropout_lab.analysis.claims import evaluate_claims
from dropout_lab.analysis.facts import claims_document
from dropout_lab.paper.report import write_report

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821

# The settings, and why this scale (scale: auto; empty for a scale asked for by name), which the first page names.
config = {**snakemake.config, "scale_choice": snakemake.params.scale_choice}  # noqa: F821
runs = pd.read_parquet(snakemake.input.runs)  # noqa: F821
mc = pd.read_parquet(snakemake.input.mc)  # noqa: F821
theory = json.loads(Path(snakemake.input.theory).read_text())  # noqa: F821
prov = json.loads(Path(snakemake.input.provenance).read_text())  # noqa: F821
anchors = yaml.safe_load(Path(snakemake.input.anchors).read_text())["anchors"]  # noqa: F821
# The code that builds this report, and whether the training commits are this project's.
built = {"commit": provenance.git_commit(), "versions": provenance.library_versions(),
         "known_commits": {c: provenance.in_history(c) for c in prov["commits"]}}
# Every claim under each protocol that ran; the judged protocol's verdicts are the paper's headline ones.
chosen = protocol.selection(runs, config)
# A tuned cell whose learning rate sits at the edge of its grid marks every verdict that reads it.
edges = {"fixed": set(), "tuned": protocol.edge_cells(chosen)}
by_protocol = {name: evaluate_claims(protocol.view(runs, name, config, chosen), config, mc, edges[name])
               for name in protocol.protocols(config)}
verdicts = by_protocol[protocol.judged_protocol(config)]
doc = claims_document(verdicts, theory, runs, prov, config, anchors, built)
doc["protocols"] = protocol.document(by_protocol, chosen, config)
write_json(snakemake.output.json, doc)  # noqa: F821
write_report(json.loads(Path(snakemake.output.json).read_text()), config,  # noqa: F821
             Path(snakemake.output.json).parent)  # noqa: F821
for name, result in verdicts.items():
    print(f"{name}: {result['verdict']} ({result['reason']})", file=sys.stderr)
