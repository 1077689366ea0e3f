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

# The workflow runs from a checkout: the templates sit beside paper/paper.tex, not inside the package.
TEMPLATES = Path(__file__).resolve().parents[3] / "paper" / "templates"

_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                   "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex(value: Any) -> str:
    """A value as LaTeX text, special characters escaped."""
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in str(value))


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


def signed(value: float) -> str:
    return f"{value:+g}"


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
           "capfirst": capfirst}


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
