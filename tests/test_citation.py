"""The project is citable: CITATION.cff is valid Citation File Format 1.2.0 (cffconvert's own validation) and says
what a citation needs; CHANGELOG.md has an entry for the release it names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CITATION = ROOT / "CITATION.cff"


def validate(path: Path) -> None:
    """cffconvert's validation of a CITATION.cff against the schema of its cff-version; raises where invalid."""
    create_citation = pytest.importorskip("cffconvert.cli.create_citation").create_citation
    create_citation(str(path), None).validate()


def test_the_citation_file_is_valid_cff_1_2_0():
    assert yaml.safe_load(CITATION.read_text())["cff-version"] == "1.2.0"
    validate(CITATION)


@pytest.mark.parametrize("change, value", [("date-released", "1 December 2026"), ("authors", []),
                                           ("license", "the MIT one")])
def test_the_validation_refuses_a_broken_copy(tmp_path, change, value):
    # The check above can fail: the same validation refuses the file with one field broken.
    from jsonschema.exceptions import ValidationError

    citation = yaml.safe_load(CITATION.read_text())
    citation[change] = value
    broken = tmp_path / "CITATION.cff"
    broken.write_text(yaml.safe_dump(citation, sort_keys=False))
    with pytest.raises(ValidationError):
        validate(broken)


def test_the_citation_names_the_release_its_authors_and_the_dropout_paper():
    citation = yaml.safe_load(CITATION.read_text())
    assert citation["title"] == "dropout-lab" and citation["version"] == "0.2.0"
    assert str(citation["date-released"]) == "2026-12-01" and citation["license"] == "MIT"
    assert citation["authors"] == [{"name": "The dropout-lab authors"}]
    assert "repository-code" not in citation  # no public address is known yet
    (paper,) = [ref for ref in citation["references"] if ref["type"] == "article"]
    assert paper["authors"][0]["family-names"] == "Srivastava" and paper["year"] == 2014
    assert paper["journal"] == "Journal of Machine Learning Research" and paper["title"].startswith("Dropout:")
    assert (paper["volume"], paper["start"], paper["end"]) == (15, 1929, 1958)


def test_the_changelog_has_an_entry_for_this_release_and_the_first():
    text = (ROOT / "CHANGELOG.md").read_text()
    releases = re.findall(r"^## \[(\d+\.\d+\.\d+)\] - (\d{4}-\d{2}-\d{2})$", text, flags=re.MULTILINE)
    assert releases[:2] == [("0.2.0", "2026-12-01"), ("0.1.0", releases[1][1])]
    assert "keepachangelog.com" in text and "## [Unreleased]" in text
    version = yaml.safe_load(CITATION.read_text())["version"]
    assert releases[0][0] == version
