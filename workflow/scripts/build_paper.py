"""Build the paper with latexmk in results/paper/build and move the PDF into place atomically."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

log = open(snakemake.log[0], "w")  # noqa: F821
inp, out = snakemake.input, Path(snakemake.output[0])  # noqa: F821
build = out.parent / "build"
shutil.rmtree(build, ignore_errors=True)
(build / "generated" / "claims").mkdir(parents=True)
(build / "figures").mkdir()
shutil.copy(inp.tex, build / "paper.tex")
shutil.copy(inp.bib, build / "refs.bib")
for name in ("macros", "verdicts", "failed", "methods", "discussion", "theory", "placement", "anchors", "provenance"):
    shutil.copy(inp[name], build / "generated" / Path(inp[name]).name)
for section in inp.sections:
    shutil.copy(section, build / "generated" / "claims" / Path(section).name)
for figure in inp.figures:
    shutil.copy(figure, build / "figures" / Path(figure).name)
(build / "figures" / "theory").mkdir()
for figure in inp.theory_figures:
    shutil.copy(figure, build / "figures" / "theory" / Path(figure).name)
result = subprocess.run(
    ["latexmk", "-pdf", "-interaction=nonstopmode", "-halt-on-error", "paper.tex"],
    cwd=build, stdout=log, stderr=subprocess.STDOUT,
)
if result.returncode != 0:
    sys.exit(f"latexmk failed; see {snakemake.log[0]} and {build / 'paper.log'}")  # noqa: F821
os.replace(build / "paper.pdf", out)
