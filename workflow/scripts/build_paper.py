"""Build the paper with latexmk in results/paper/build and move the PDF into place atomically."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

log = open(snakemake.log[0], "w")  # noqa: F821
inp, out = snakemake.input, Path(snakemake.output[0])  # noqa: F821


def fail(message: str) -> None:
    """One line in the log and in Snakemake's error report."""
    print(f"error: {message}", file=log, flush=True)
    sys.exit(f"error: {message}")


def tex_error(tex_log: Path) -> str:
    """The first error of a LaTeX log ('! ...' and the line it names), or its last line."""
    try:
        lines = tex_log.read_text(errors="replace").splitlines()
    except OSError:
        return "no LaTeX log was written"
    for i, line in enumerate(lines):
        if line.startswith("!"):
            where = next((m.group(0) for m in (re.match(r"l\.\d+", l) for l in lines[i + 1:i + 12]) if m), "")
            return f"{line[1:].strip()}{f' at {where}' if where else ''}"
    return lines[-1].strip() if lines else "empty LaTeX log"


if shutil.which("latexmk") is None:
    fail("latexmk is not installed; install TeX (see the README: latexmk texlive-latex-base "
         "texlive-latex-recommended texlive-science lmodern) and run again")
build = out.parent / "build"
try:
    shutil.rmtree(build, ignore_errors=True)
    (build / "generated" / "claims").mkdir(parents=True)
    (build / "figures" / "theory").mkdir(parents=True)
    shutil.copy(inp.tex, build / "paper.tex")
    shutil.copy(inp.bib, build / "refs.bib")
    for generated in inp.generated:
        shutil.copy(generated, build / "generated" / Path(generated).name)
    for section in inp.sections:
        shutil.copy(section, build / "generated" / "claims" / Path(section).name)
    for figure in inp.figures:
        shutil.copy(figure, build / "figures" / Path(figure).name)
    for figure in inp.theory_figures:
        shutil.copy(figure, build / "figures" / "theory" / Path(figure).name)
except OSError as err:
    fail(f"could not prepare {build}: {err}; free space or make the folder writable, then run again")
result = subprocess.run(
    ["latexmk", "-pdf", "-interaction=nonstopmode", "-halt-on-error", "paper.tex"],
    cwd=build, stdout=log, stderr=subprocess.STDOUT,
)
if result.returncode != 0:
    fail(f"latexmk failed: {tex_error(build / 'paper.log')} ({build / 'paper.log'})")
try:
    os.replace(build / "paper.pdf", out)
except OSError as err:
    fail(f"could not move the PDF to {out}: {err}")
