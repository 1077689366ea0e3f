"""The form of the paper: overfull boxes read from a LaTeX log, how full each page of a PDF is, plain-text
mathematics typeset as mathematics, tables fitted to the text width, and the collapsed-runs sentence."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from dropout_lab.paper.layout import Overfull, overfull_boxes, page_fill, sparse_pages
from dropout_lab.paper.render import fitted_columns, math_tex, render

LOG = r"""(./generated/failed.tex
Overfull \hbox (35.2pt too wide) in paragraph at lines 4--12
 [][]
 []
) (./generated/anchors.tex
Overfull \hbox (0.5pt too wide) in paragraph at lines 4--17
 [][]
Overfull \hbox (3.25pt too wide) in alignment at lines 9--20
Underfull \hbox (badness 10000) in paragraph at lines 8--9
"""


def test_overfull_boxes_over_the_threshold_with_their_points_and_line():
    assert overfull_boxes(LOG) == [Overfull(35.2, "paragraph", 4), Overfull(3.25, "alignment", 9)]
    assert [box.points for box in overfull_boxes(LOG, threshold=5)] == [35.2]
    assert overfull_boxes(LOG, threshold=0.1)[1] == Overfull(0.5, "paragraph", 4)
    assert str(overfull_boxes(LOG)[0]) == r"overfull \hbox 35.2 pt in paragraph at line 4"
    assert overfull_boxes("Underfull \\hbox (badness 10000) in paragraph at lines 8--9\n") == []


def test_sparse_pages_are_those_under_a_third_full_except_the_last():
    assert sparse_pages([0.9, 0.2, 0.5, 0.1]) == [2]
    assert sparse_pages([0.1]) == []


@pytest.mark.skipif(shutil.which("latexmk") is None or shutil.which("pdftoppm") is None,
                    reason="needs latexmk and poppler's pdftoppm")
def test_page_fill_tells_a_full_page_from_a_nearly_empty_one(tmp_path):
    lines = "\n\n".join(f"Line of text number {i}, long enough to be a line." for i in range(44))
    (tmp_path / "two.tex").write_text("\\documentclass[11pt,a4paper]{article}\n\\usepackage[margin=2.5cm]{geometry}\n"
                                      "\\pagestyle{empty}\n\\begin{document}\n" + lines +
                                      "\n\\newpage\nFour lines.\n\nTwo.\n\nThree.\n\nFour.\n\\newpage\nLast.\n"
                                      "\\end{document}\n")
    subprocess.run(["latexmk", "-pdf", "-interaction=nonstopmode", "two.tex"], cwd=tmp_path, check=True,
                   capture_output=True)
    full, sparse, last = page_fill(tmp_path / "two.pdf")
    assert full > 0.8 and sparse < 0.15 and last < 0.05
    assert sparse_pages([full, sparse, last]) == [2]


def test_plain_text_mathematics_is_typeset_and_the_rest_escaped():
    assert math_tex("MNIST, dropout NN, 3x1024 ReLU") == r"MNIST, dropout NN, $3\times1024$ ReLU"
    assert math_tex("Gaussian dropout, sigma^2 = (1-p)/p") == r"Gaussian dropout, $\sigma^2 = (1-p)/p$"
    assert math_tex("p(1-p) peaks; slopes (1/sqrt(n) is -0.5)") == r"$p(1-p)$ peaks; slopes ($1/\sqrt{n}$ is -0.5)"
    assert math_tex("grad E_R; 0.85 ln 10 = 1.96") == r"grad $E_R$; 0.85 $\ln 10$ = 1.96"
    assert math_tex("without scaling by p the loss") == "without scaling by $p$ the loss"
    assert math_tex("mnist_mlp 50% & input0.2_hidden0.5, top-p") == r"mnist\_mlp 50\% \& input0.2\_hidden0.5, top-p"


def test_paragraph_columns_share_the_text_width_in_proportion():
    assert fitted_columns("rrcrrrl") is None
    assert fitted_columns("P{3.0cm}P{3.4cm}rrP{4.2cm}") == "Y{0.85}Y{0.96}rrY{1.19}"
    assert fitted_columns("lllrllX") == "lllrllY{1.00}"
    assert fitted_columns("lp{10cm}") == "lY{1.00}"
    shares = fitted_columns("P{4.4cm}P{7.4cm}P{1.7cm}")
    assert sum(float(s) for s in shares.strip("Y{}").split("}Y{")) == pytest.approx(3)  # tabularx's rule
    with pytest.raises(ValueError, match="column spec"):
        fitted_columns("l@{}r")


TEMPLATES = Path(__file__).resolve().parents[1] / "paper" / "templates"


@pytest.mark.parametrize("verdict, summary, sentence", [
    (True, True, "would change the verdict to \\emph{supported} and the estimate to ``rate 0.9''."),
    (True, False, "would change the verdict to \\emph{supported} and leave the estimate unchanged."),
    (False, True, "would leave the verdict unchanged and change the estimate to ``rate 0.9''."),
    (False, False, "would change neither the verdict nor the estimate."),
])
def test_the_collapsed_runs_sentence_reads_for_every_combination(tmp_path, verdict, summary, sentence):
    (tmp_path / "t.tex.j2").write_text('\\BLOCK{from "latex.tex.j2" import with_failed}\\VAR{with_failed(result)}')
    shutil.copy(TEMPLATES / "latex.tex.j2", tmp_path)
    alt = {"collapsed_runs": 5, "verdict": "supported", "summary": 0.9, "changes_verdict": verdict,
           "changes_summary": summary}
    assert render(tmp_path, "t.tex.j2", result={"with_failed": alt}) == "Including the 5 collapsed runs " + sentence


def test_a_table_with_paragraph_columns_is_set_as_wide_as_the_text(tmp_path):
    (tmp_path / "t.tex.j2").write_text('\\BLOCK{from "latex.tex.j2" import tabular}'
                                       '\\BLOCK{call(row) tabular(align, "a & b", [["x", "y"]], "C.")}'
                                       '\\VAR{row|join(" & ")}\\BLOCK{endcall}')
    shutil.copy(TEMPLATES / "latex.tex.j2", tmp_path)
    fitted = render(tmp_path, "t.tex.j2", align="lP{3cm}")
    assert "\\begin{tabularx}{\\linewidth}{lY{1.00}}" in fitted and "\\end{tabularx}" in fitted
    natural = render(tmp_path, "t.tex.j2", align="lr")
    assert "\\begin{tabular}{lr}" in natural and "\\end{tabular}\n" in natural
