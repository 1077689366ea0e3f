"""LaTeX helpers of the report: escaping and macro names."""

import pytest

from dropout_lab.report import Macros, pct, pvalue, tex


def test_tex_escapes_specials():
    assert tex("mnist_mlp 50% & #1 {x} $y ~z ^w") == (
        r"mnist\_mlp 50\% \& \#1 \{x\} \$y \textasciitilde{}z \textasciicircum{}w"
    )


def test_macro_names_are_letters_only():
    m = Macros()
    m.add("OptimumVerdict", "not supported")
    with pytest.raises(ValueError):
        m.add("Optimum2", "x")
    assert r"\newcommand{\OptimumVerdict}{not supported}" in m.text()


def test_number_formats():
    assert pct(0.98765) == "98.77"
    assert pvalue(0.0004) == "$<$0.001" and pvalue(0.0312) == "0.031"
