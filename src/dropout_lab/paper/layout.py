"""The form of the built paper, measured: boxes that run into the margin (from the LaTeX log) and how full each
page is (from the PDF, rendered by poppler's pdftoppm).

A page's fill is the share of its text block's height that holds ink: the block is divided into bands of
about a line's height, and a band counts when any pixel in it is dark. A text line, a table row and a figure
all count; the white space between paragraphs of a full page is shorter than a band and does not.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

# "Overfull \hbox (35.2pt too wide) in paragraph at lines 4--12" or "... in alignment at lines 9--17".
_OVERFULL = re.compile(r"Overfull \\hbox \(([\d.]+)pt too wide\) (?:in|detected at) ([^\n]*?)"
                       r"(?:lines? (\d+)(?:--(\d+))?)?$", re.MULTILINE)

# The text block of an A4 page with 2.5 cm margins, as fractions of the page's height: what lies outside (the
# page number in the foot) is not content.
TEXT_TOP, TEXT_BOTTOM = 2.5 / 29.7, 1 - 2.5 / 29.7
BAND = 1 / 60  # a band: about one line of 11 pt text on A4
DARK = 160  # grey levels (0 black, 255 white) below this are ink


@dataclass(frozen=True)
class Overfull:
    points: float  # how far the box runs past its width
    where: str  # "paragraph", "alignment", ... as the log says
    line: int | None  # the first source line the log names, None where it names none

    def __str__(self) -> str:
        at = f" at line {self.line}" if self.line is not None else ""
        return f"overfull \\hbox {self.points:g} pt in {self.where}{at}"


def overfull_boxes(log: str, threshold: float = 1.0) -> list[Overfull]:
    """The overfull \\hbox warnings of a LaTeX log that run more than `threshold` points too wide."""
    boxes = []
    for match in _OVERFULL.finditer(log):
        points = float(match.group(1))
        if points > threshold:
            where = match.group(2).strip().removesuffix(" at").strip() or "box"
            boxes.append(Overfull(points, where, int(match.group(3)) if match.group(3) else None))
    return boxes


def page_fill(pdf: Path, resolution: int = 40) -> list[float]:
    """Per page of `pdf`, the share (0-1) of its text block's height that holds ink."""
    if shutil.which("pdftoppm") is None:
        raise RuntimeError("pdftoppm (poppler-utils) is not installed: it renders the pages to measure them")
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run(["pdftoppm", "-gray", "-r", str(resolution), str(pdf), f"{folder}/page"], check=True,
                       capture_output=True)
        pages = sorted(Path(folder).glob("page-*.pgm"), key=lambda path: int(path.stem.rsplit("-", 1)[1]))
        return [_fill(*_read_pgm(path.read_bytes())) for path in pages]


def sparse_pages(fills: list[float], least: float = 1 / 3) -> list[int]:
    """The numbers (from 1) of the pages, the last excepted, that are less than `least` full."""
    return [number for number, fill in enumerate(fills[:-1], start=1) if fill < least]


def _read_pgm(data: bytes) -> tuple[int, int, bytes]:
    """(width, height, pixels) of a binary 8-bit PGM, as pdftoppm -gray writes it."""
    fields = re.match(rb"P5\s+(?:#[^\n]*\n\s*)*(\d+)\s+(\d+)\s+(\d+)\s", data)
    if fields is None or int(fields.group(3)) > 255:
        raise ValueError("not an 8-bit binary PGM image")
    width, height = int(fields.group(1)), int(fields.group(2))
    return width, height, data[fields.end():fields.end() + width * height]


def _fill(width: int, height: int, pixels: bytes) -> float:
    top, bottom = round(TEXT_TOP * height), round(TEXT_BOTTOM * height)
    band = max(1, round(BAND * height))
    starts = range(top, bottom, band)
    inked = sum(any(pixel < DARK for pixel in pixels[row * width:min(row + band, bottom) * width]) for row in starts)
    return inked / len(starts)
