"""The paper's templates and the filters that format values for them.

The sentences, captions and alternatives of the generated LaTeX live in paper/templates/*.tex.j2; Python
passes the values (numbers, table rows, which alternative applies). The delimiters are LaTeX-safe: a block
is \\BLOCK{...}, a value \\VAR{...}, a comment \\#{...}; nothing is escaped unless the template says so
(the `tex` filter), and a value a template names but is not given stops the render with one line that names
the template, its line and the value.
"""

from __future__ import annotations

import functools
import math
import re
import traceback
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import jinja2

from dropout_lab.settings.atomic import atomic_open
from dropout_lab.settings.datasets import SPECS

# The workflow runs from a checkout: the templates sit beside paper/paper.tex, not inside the package.
TEMPLATES = Path(__file__).resolve().parents[3] / "paper" / "templates"

_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                   "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex(value: Any) -> str:
    """A value as LaTeX text, special characters escaped."""
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in str(value))


# Plain-text mathematics in results and settings ("3x1024", "sigma^2 = (1-p)/p", "1/sqrt(n)", "E_R", a lone p)
# and how the paper sets it; the first pattern that matches at a position wins, so "(1-p)/p" is one formula.
_MATH = [(re.compile(pattern), replacement) for pattern, replacement in (
    (r"(?<![\w.])(\d+)x(\d+)(?![\w.])", r"\1\\times\2"), (r"sigma\^2\b", r"\\sigma^2"), (r"\(1-p\)/p\b", "(1-p)/p"),
    (r"\bp\(1-p\)", "p(1-p)"), (r"\b1/sqrt\((\w)\)", r"1/\\sqrt{\1}"), (r"\bln (\d+)\b", r"\\ln \1"),
    (r"\bE_([RND])\b", r"E_\1"), (r"(?<![\w$-])p(?![\w(-])", "p"))]


def math_tex(value: Any) -> str:
    """Plain text as LaTeX: its mathematics (`_MATH`) in math mode, the rest escaped as `tex` does."""
    text, out, plain, at = str(value), [], "", 0
    while at < len(text):
        found = next(((m, r) for pattern, r in _MATH if (m := pattern.match(text, at))), None)
        if found is None:
            plain, at = plain + text[at], at + 1
            continue
        out += [tex(plain), "$" + found[0].expand(found[1]) + "$"]
        plain, at = "", found[0].end()
    return re.sub(r"\$(\s*=\s*)\$", r"\1", "".join(out) + tex(plain))  # "$a$ = $b$" as one formula


def num(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "--"
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.00"


def pct(acc: float | None, digits: int = 2) -> str:
    return "--" if acc is None or math.isnan(acc) else num(100.0 * acc, digits)


def pvalue(p: float | None) -> str:
    if p is None or math.isnan(p):
        return "--"
    return "$<$0.001" if p < 0.001 else f"{p:.3f}"


def rate(value: float) -> str:
    """A rate or setting as the prose prints it: 0.5, 2, 1e-05."""
    return f"{value:g}"


def count(value: int) -> str:
    """A count with thin spaces between its thousands: 100\\,000."""
    return f"{value:,}".replace(",", "\\,")


def signed(value: float) -> str:
    return f"{value:+g}"


# Units of the lengths a column spec may give (a table's paragraph columns), in cm.
_CM = {"cm": 1.0, "mm": 0.1, "in": 2.54, "pt": 2.54 / 72.27}
_COLUMN = re.compile(r"[Pp]\{([\d.]+)(cm|mm|in|pt)\}|X|[a-zA-Z|]")


def fitted_columns(align: str) -> str | None:
    """A column spec with paragraph columns (P{3cm}, p{3cm}, X) as a tabularx spec whose paragraph columns share
    the line's width in proportion to the widths asked for (an X column asks for their mean), so that the table
    is exactly as wide as the text; None for a spec without any, which keeps its natural width."""
    tokens = [(m.group(0), float(m.group(1)) * _CM[m.group(2)] if m.group(1) else None)
              for m in _COLUMN.finditer(align)]
    if "".join(t for t, _ in tokens) != align:
        raise ValueError(f"column spec {align!r}: only letters, P{{width}}, p{{width}} and X are understood here")
    asked = [width for token, width in tokens if width is not None]
    mean = sum(asked) / len(asked) if asked else 1.0
    weights = [width if width is not None else mean for token, width in tokens if width is not None or token == "X"]
    if not weights:
        return None
    shares = iter(_shares(weights))
    return "".join(f"Y{{{next(shares)}}}" if width is not None or token == "X" else token for token, width in tokens)


def _shares(weights: list[float]) -> list[str]:
    """Each weight's share of tabularx's X width, two decimals, summing to the number of columns (tabularx's rule)."""
    shares = [round(len(weights) * w / sum(weights), 2) for w in weights]
    shares[-1] = round(len(weights) - sum(shares[:-1]), 2)
    return [f"{share:.2f}" for share in shares]


def minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def cell_text(cell: str) -> str:
    """A cell folder name as rates: 'input0.2_hidden0.5' -> 'input 0.2, hidden 0.5'."""
    return ", ".join(re.sub(r"^([a-z]+)", r"\1 ", part) for part in cell.split("_"))


def squash(text: Any) -> str:
    """Text written over several template lines as one line: a caption, a table row, an item."""
    return re.sub(r"\s*\n\s*", " ", str(text).strip())


def table_rows(text: Any) -> str:
    """Table rows written over several template lines, each ending in \\\\, as one line each."""
    rows = [squash(row) for row in re.split(r"\\\\[ \t]*\n", str(text))]
    return "\n".join(f"{row} \\\\" for row in rows if row)


def capfirst(text: str) -> str:
    return text[:1].upper() + text[1:]


def paragraph(text: Any) -> str:
    """A paragraph or list item written over several template lines as one line of the output."""
    return squash(text) + "\n"


def _strict(fn: Callable[..., str]) -> Callable[..., str]:
    """A filter that stops at a value the template names but is not given, as a bare \\VAR would, rather than
    formatting the placeholder."""
    @functools.wraps(fn)
    def checked(value: Any, *args: Any, **kwargs: Any) -> str:
        if isinstance(value, jinja2.Undefined):
            str(value)  # a StrictUndefined raises its UndefinedError here
        return fn(value, *args, **kwargs)
    return checked


FILTERS = {"tex": tex, "num": num, "pct": pct, "pvalue": pvalue, "rate": rate, "signed": signed,
           "minutes": minutes, "cells": cell_text, "squash": squash, "rows": table_rows, "para": paragraph,
           "capfirst": capfirst, "count": count, "math": math_tex, "fitted": fitted_columns}


class TemplateError(ValueError):
    """A paper template that does not render: its file, line and what is wrong, in one line."""


@lru_cache(maxsize=None)
def environment(templates: Path) -> jinja2.Environment:
    """The templates of one folder, with LaTeX-safe delimiters and the filters above (one per folder: edits to a
    template are picked up, the loader checks its time stamp)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates)), undefined=jinja2.StrictUndefined, autoescape=False,
        block_start_string=r"\BLOCK{", block_end_string="}", variable_start_string=r"\VAR{",
        variable_end_string="}", comment_start_string=r"\#{", comment_end_string="}",
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update({name: _strict(fn) for name, fn in FILTERS.items()})
    env.globals["datasets"] = SPECS  # what a dataset's preprocessing is (settings.datasets)
    return env


def _template_line(error: BaseException, name: str, default: str) -> str:
    """The innermost template frame of an error's traceback, as 'FILE line N', with the template rendered when
    the frame is a macro of another."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename.endswith(".j2")]
    if not frames:
        return default
    within = "" if Path(frames[-1].filename).name == name else f" (rendering {name})"
    return f"{frames[-1].filename} line {frames[-1].lineno}{within}"


def render(templates: Path, name: str, /, **values: Any) -> str:
    """The text of template `name` (in folder `templates`) with `values`."""
    try:
        return environment(Path(templates)).get_template(name).render(**values)
    except jinja2.TemplateSyntaxError as err:
        raise TemplateError(f"{err.filename or Path(templates, name)} line {err.lineno}: {err.message}") from None
    except jinja2.TemplateNotFound as err:
        raise TemplateError(f"no paper template {err.name} in {templates}") from None
    except jinja2.UndefinedError as err:
        raise TemplateError(f"{_template_line(err, name, str(Path(templates, name)))}: {err.message} (the template "
                            "names a value the report does not give it)") from None
    except (TypeError, ValueError, ArithmeticError) as err:  # a value a filter cannot format: say where
        where = _template_line(err, name, "")
        if not where:
            raise
        raise TemplateError(f"{where}: {type(err).__name__}: {err}") from None


def write(path: Path, text: str) -> None:
    with atomic_open(path, "w") as fh:
        fh.write(text)
