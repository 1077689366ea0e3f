"""config/README.md documents every key of config/config.yaml, and nothing that is not one.

Keys are written as dotted paths in the first column of the README's tables: `<experiment>`
stands for a grid's name and `<sweep>` for any sweep of it. A value given per scale, per
dataset or per slot (seeds, data.mirrors, a sweep's fixed rates...) is documented with its parent.
"""

from __future__ import annotations

import re
from typing import Any, Iterator

from dropout_lab.settings.datasets import SPECS
from dropout_lab.settings.vocabulary import SLOTS
from tests.conftest import ROOT, SHIPPED

README = ROOT / "config" / "README.md"
SCALES = {path.stem for path in (ROOT / "config" / "scale").glob("*.yaml")}
# Mappings keyed by one of these are per-scale, per-dataset or per-slot values, not settings of their own.
PER = (SCALES, set(SPECS), set(SLOTS))


def _per_scale_dataset_or_slot(node: Any) -> bool:
    return isinstance(node, dict) and bool(node) and any(set(node) <= keys for keys in PER)


def _documented_as(parts: tuple[str, ...]) -> str:
    """A key's path as the README writes it: grids.mnist_mlp.hidden_sweep.rates is grids.<experiment>.<sweep>.rates."""
    names = list(parts)
    if names[0] == "grids" and len(names) > 1:
        names[1] = "<experiment>"
    if names[0] == "grids" and len(names) > 3:
        names[2] = "<sweep>"
    return ".".join(names)


def config_keys(node: dict, parts: tuple[str, ...] = ()) -> Iterator[str]:
    """Every key of a config mapping that the README documents, as the README writes it."""
    for key, value in node.items():
        here = (*parts, str(key))
        yield _documented_as(here)
        if isinstance(value, dict) and not _per_scale_dataset_or_slot(value):
            yield from config_keys(value, here)


def documented_keys() -> set[str]:
    """The dotted keys in the first column of the README's tables."""
    rows = re.findall(r"^\| `([^`]+)` \|", README.read_text(), flags=re.MULTILINE)
    return set(rows)


def test_every_key_of_the_config_is_documented():
    documented = documented_keys()
    missing = [key for key in dict.fromkeys(config_keys(SHIPPED)) if key not in documented]
    assert not missing, f"config/README.md does not document {missing[0]} (a table row starting | `{missing[0]}` |)"


def test_the_readme_documents_no_key_the_config_lacks():
    stale = sorted(documented_keys() - set(config_keys(SHIPPED)))
    assert not stale, f"config/README.md documents {stale[0]}, which config/config.yaml does not have"


def test_an_undocumented_key_is_named():
    config = {**SHIPPED, "claims": {**SHIPPED["claims"], "optimum": {**SHIPPED["claims"]["optimum"], "spread": 2}}}
    assert "claims.optimum.spread" in set(config_keys(config)) - documented_keys()
    grids = {"mnist_mlp": {**SHIPPED["grids"]["mnist_mlp"], "depth_sweep": {"vary": "hidden", "rates": [0.1]}}}
    assert "grids.<experiment>.depth_sweep" in set(config_keys({**SHIPPED, "grids": grids})) - documented_keys()
