"""The documentation: a short README, a docs site that builds strictly, and every section the code cites."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

DOCS = ROOT / "docs"
README = ROOT / "README.md"
# A doc that names a path outside the checkout sends a newcomer to a folder they do not have.
OUTSIDE_PATHS = ("../shared", "/work/")
# Where code and tests cite a section: README, "Adding a gate" or docs/extending.md, "Adding a gate".
CITATION = re.compile(r"""(README|docs/[\w-]+\.md),\s*["“]([^"”]+)["”]""")


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def headings(path: Path) -> set[str]:
    """A page's headings without their trailing note, e.g. "Adding a gate (2 files)" -> "Adding a gate"."""
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.MULTILINE | re.DOTALL)
    titles = re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, flags=re.MULTILINE)
    return {re.sub(r"\s*\([^)]*\)$", "", title) for title in titles} | set(titles)


def cited_sections() -> list[tuple[str, str, str]]:
    """(citing file, page, section) for every section that a test or a module of the package cites."""
    sources = [*sorted((ROOT / "tests").glob("*.py")), *sorted((ROOT / "src" / "dropout_lab").rglob("*.py"))]
    # A title may wrap onto the next line of a docstring or a comment.
    return [(str(source.relative_to(ROOT)), page, re.sub(r"\s*\n\s*(?:#\s*)?", " ", section))
            for source in sources if source.name != "test_docs.py"
            for page, section in CITATION.findall(source.read_text())]


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None,
                    reason="mkdocs is not installed (pip install -e '.[dev]')")
def test_the_docs_site_builds_strictly_with_the_repository_pages(tmp_path):
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                           str(ROOT / "mkdocs.yml"), "--site-dir", str(site)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The hook serves config/README.md from where it lives: its first key is on the page.
    first_key = re.search(r"^\| `([^`]+)` \|", (ROOT / "config" / "README.md").read_text(), re.MULTILINE)
    assert first_key and first_key.group(1) in (site / "config-reference" / "index.html").read_text()
    assert (site / "benchmark-results" / "index.html").is_file()
    assert (site / "guarantees" / "index.html").is_file()


def test_the_readme_reads_in_five_minutes():
    lines = README.read_text().splitlines()
    assert len(lines) <= 150, f"README.md is {len(lines)} lines; move detail into a page of docs/"


def test_the_readme_keeps_the_two_commands_and_the_tex_line():
    text = README.read_text()
    for line in ("make paper    #", "make test     #", 'make paper SCALE=quick CONFIG="experiments=[mnist_mlp]"',
                 "apt-get install latexmk texlive-latex-base", "make reference"):
        assert line in text, f"README.md lost {line!r}"


def test_the_readmes_links_lead_to_files_of_the_checkout():
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README.read_text())
    assert targets, "README.md links to no page of docs/"
    missing = [t for t in targets if "://" not in t and not (ROOT / t).exists()]
    assert not missing, f"README.md links to {missing[0]}, which the checkout does not have"


def test_no_doc_names_a_path_outside_the_repository():
    for path in markdown_files():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            found = [p for p in OUTSIDE_PATHS if p in line]
            assert not found, (f"{path.relative_to(ROOT)}:{number} names {found[0]}, outside the repository; "
                               f"point to a file of the checkout (e.g. reference/mnist_mlp-paper-h200.tgz)")


def test_every_section_the_code_cites_is_in_the_docs():
    cited = cited_sections()
    assert ("Adding a gate" in {section for _, _, section in cited}), "no test or module cites a section any more"
    every_page = set().union(*(headings(page) for page in DOCS.rglob("*.md")))
    for source, page, section in cited:
        found = every_page if page == "README" else headings(ROOT / page) if (ROOT / page).is_file() else set()
        assert section in found, f'{source} cites {page}, "{section}", which no heading of docs/ holds'
