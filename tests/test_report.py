"""LaTeX helpers of the report: escaping and macro names."""

import pytest

from dropout_lab.paper.report import Macros, pct, pvalue, tex


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


def test_templates_use_latex_safe_delimiters_and_escape_only_through_the_tex_filter(tmp_path):
    from dropout_lab.paper.render import render

    (tmp_path / "t.tex.j2").write_text(
        "\\#{ a comment }\n\\BLOCK{if n > 1}\n"
        "\\textbf{\\VAR{name|tex}} {\\VAR{name}} \\VAR{rate|rate}\n\\BLOCK{endif}\n"
        "\\BLOCK{filter para}\na caption over\n  two lines\n\\BLOCK{endfilter}\n")
    assert render(tmp_path, "t.tex.j2", n=2, name="a_b", rate=0.50) == (
        "\\textbf{a\\_b} {a_b} 0.5\na caption over two lines\n")
    assert render(tmp_path, "t.tex.j2", n=1, name="a_b", rate=0.5) == "a caption over two lines\n"


def test_a_value_a_template_names_but_is_not_given_stops_the_render_with_its_template_and_line(tmp_path):
    from dropout_lab.paper.render import TemplateError, render

    (tmp_path / "t.tex.j2").write_text("first line\n\\VAR{rate|rate} and \\VAR{rat|rate}\n")
    with pytest.raises(TemplateError, match=r"t\.tex\.j2 line 2: 'rat' is undefined") as err:
        render(tmp_path, "t.tex.j2", rate=0.5)
    assert "\n" not in str(err.value)
    (tmp_path / "bad.tex.j2").write_text("\\BLOCK{if x}\nno end\n")
    with pytest.raises(TemplateError, match=r"bad\.tex\.j2 line \d"):
        render(tmp_path, "bad.tex.j2", x=1)


def test_table_rows_written_over_several_lines_come_out_one_a_line():
    from dropout_lab.paper.render import table_rows

    assert table_rows("a &\n  b \\\\\nc & d \\\\\n") == "a & b \\\\\nc & d \\\\"


def test_the_verdict_table_names_the_masks_actually_averaged_and_a_new_gate_renumbers_no_claim():
    from dropout_lab.settings.claims import registered

    settings = {"optimum": {"claimed_rate": 0.5}, "input_rate": {"threshold": 0.2}, "inference": {"k": 50},
                "gate_parity": {"experiment": "e", "margin": 0.01}}
    config = {"claims": settings, "grids": {"e": {"gate_parity": {"gates": ["bernoulli", "uniform", "gaussian"]}}}}

    def labels(config):
        return {c.key: c.label(config, {"k": 4} if c.key == "inference" else None) for c in registered(config)}

    titles = labels(config)
    assert titles["inference"] == "MC over 4 masks = weight scaling"
    assert titles["parity_gaussian"] == "3: Gaussian as good as Bernoulli"
    assert titles["parity_uniform"] == "3 (uniform): uniform as good as Bernoulli"
    config["grids"]["e"]["gate_parity"]["gates"] = ["bernoulli", "laplace2", "uniform", "gaussian"]
    grown = labels(config)
    assert grown["parity_laplace2"] == "3 (laplace2): laplace2 as good as Bernoulli"
    assert {k: v for k, v in grown.items() if k != "parity_laplace2"} == titles
    assert [c.macro for c in registered(config) if c.key == "parity_laplace2"] == ["ParityLaplaceTwo"]


def test_figures_embed_truetype_fonts_and_print_resolution_pngs(tmp_path):
    import struct

    import matplotlib.pyplot as plt

    from dropout_lab.analysis.plots import save

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    ax.set_title("dropout rate")
    save(fig, tmp_path / "fig")
    pdf = (tmp_path / "fig.pdf").read_bytes()
    assert b"/Type3" not in pdf and (b"/TrueType" in pdf or b"/CIDFontType2" in pdf)
    png = (tmp_path / "fig.png").read_bytes()
    at = png.index(b"pHYs")
    x_per_metre = struct.unpack(">I", png[at + 4:at + 8])[0]
    assert round(x_per_metre * 0.0254) == 300
