"""One vocabulary (dropout_lab.settings.vocabulary): the workflow's schema, its wildcards, the gate registry and
the config files name the same gates, conventions, models, slots, datasets and protocols.

Each check reads the other side from where it lives (the schema file, common.smk, config/gate/, the registry),
so a name added in one place and not in another fails here with both lists in the message.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from dropout_lab.planning import grid, packs
from dropout_lab.planning.scales import AUTO
from dropout_lab.settings import datasets, vocabulary
from dropout_lab.settings.config import CONFIG_DIR
from dropout_lab.training import gate_contract, gates
from tests.conftest import ROOT

SCHEMA = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
COMMON_SMK = ROOT / "workflow" / "rules" / "common.smk"
SCALES = tuple(sorted(path.stem for path in Path(CONFIG_DIR, "scale").glob("*.yaml")))

# Where the schema lists a vocabulary, and which one. Every enum of the schema must be here or in SCHEMA_OWN.
# Registered names (slots, gates, datasets, models) are not enums: the schema checks their spelling
# ($defs.name, test below) and dropout_lab.planning.checks.check_names what exists, so a new gate, dataset or
# model needs no schema edit.
SCHEMA_ENUMS = {
    "properties.scale": (AUTO, *SCALES),  # the scale files, and auto (dropout_lab.planning.scales)
    "properties.protocols.properties.run.items": vocabulary.PROTOCOLS,
    "properties.protocols.properties.judge": vocabulary.PROTOCOLS,
    "properties.claims.properties.optimum.properties.gap": vocabulary.GAPS,
}
SCHEMA_OWN = {"properties.runs_per_job.anyOf[1]"}  # words of the workflow config alone (planning.packs.runs_per_job)


def enums(node, where: str = ""):
    """(path, values) of every enum in a schema, the path in dots with [i] for list items."""
    if isinstance(node, dict):
        if "enum" in node:
            yield where, tuple(node["enum"])
        for key, value in node.items():
            yield from enums(value, f"{where}.{key}" if where else key)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from enums(value, f"{where}[{i}]")


def test_every_enum_of_the_schema_is_a_vocabulary_and_equals_it():
    found = dict(enums(SCHEMA))
    unknown = set(found) - set(SCHEMA_ENUMS) - SCHEMA_OWN
    assert not unknown, f"enums of config.schema.yaml that no vocabulary checks: {sorted(unknown)}"
    for where, expected in SCHEMA_ENUMS.items():
        assert where in found, f"config.schema.yaml has no enum at {where} any more; update SCHEMA_ENUMS"
        assert sorted(found[where]) == sorted(expected), f"config.schema.yaml {where}: {found[where]} != {expected}"


def test_the_schemas_names_are_spelt_as_the_vocabulary_spells_a_gate():
    assert SCHEMA["$defs"]["name"]["pattern"] == f"^{vocabulary.GATE_NAME}$"
    assert all(re.fullmatch(vocabulary.GATE_NAME, name) for name in
               (*vocabulary.SLOTS, *vocabulary.gate_names(), *datasets.SPECS, *vocabulary.MODELS))
    names = {"$ref": "#/$defs/name"}
    sweep = SCHEMA["$defs"]["sweep"]["properties"]
    grid = SCHEMA["properties"]["grids"]["additionalProperties"]["properties"]
    assert SCHEMA["$defs"]["slot"] == names and sweep["gates"]["items"] == names
    assert grid["dataset"] == names and grid["model"] == names
    assert SCHEMA["$defs"]["per_dataset"]["propertyNames"] == names


def test_the_schemas_per_scale_keys_are_the_scales():
    assert sorted(SCHEMA["properties"]["seeds"]["required"]) == list(SCALES)
    assert sorted(SCHEMA["$defs"]["sweep"]["properties"]["epochs"]["required"]) == list(SCALES)


def test_the_registry_holds_exactly_the_gates_of_config_gate():
    assert sorted(gates.REGISTRY) == sorted(vocabulary.gate_names()), "a gate needs its class and its YAML"
    assert vocabulary.REFERENCE_GATE in gates.REGISTRY and vocabulary.NO_GATE in gates.REGISTRY


@pytest.mark.parametrize("gate", vocabulary.gate_names())
def test_each_gate_yaml_names_its_own_file_and_a_known_convention(gate):
    spec = yaml.safe_load(Path(CONFIG_DIR, "gate", f"{gate}.yaml").read_text())
    assert spec["name"] == gate, f"config/gate/{gate}.yaml says name: {spec['name']}"
    assert spec["convention"] in vocabulary.CONVENTIONS
    assert vocabulary.valid_gate_name(gate), f"{gate!r} does not match {vocabulary.GATE_NAME}"


@pytest.mark.parametrize("gate", sorted(gates.REGISTRY))
def test_gates_accept_exactly_the_vocabularys_conventions(gate):
    cls = gates.REGISTRY[gate]
    rate = 0.5 if gate_contract.has_noise_law(cls) else 0.0
    for convention in vocabulary.CONVENTIONS:
        assert cls(rate, convention).scaled == (convention == vocabulary.SCALED)
    with pytest.raises(ValueError, match=r"unknown convention 'sideways'; choose one of \['inverted', 'scaled'\]"):
        cls(rate, "sideways")


def test_every_slot_has_a_title_and_every_title_a_slot():
    assert set(vocabulary.SLOT_TITLES) == set(vocabulary.SLOTS)
    assert all(slot in vocabulary.SLOTS for slots in vocabulary.MODEL_SLOTS.values() for slot in slots)


def test_gate_names_may_hold_digits_and_underscores_but_nothing_else():
    for name in ("bernoulli", "laplace2", "laplace_matched", "g0"):
        assert vocabulary.valid_gate_name(name)
    for name in ("Laplace", "2laplace", "laplace-2", "", "lap lace", "laplace/2"):
        assert not vocabulary.valid_gate_name(name)


# --------------------------------------------------------------------------- the workflow's wildcards


def wildcard_constraints() -> dict[str, str]:
    """The wildcard_constraints block of common.smk, evaluated with the names it may use."""
    text = COMMON_SMK.read_text()
    match = re.search(r"^wildcard_constraints:\n((?:    .+\n)+)", text, re.MULTILINE)
    assert match, "common.smk has no wildcard_constraints block"
    call = ast.parse(f"dict({match.group(1)})", mode="eval")
    return eval(compile(call, str(COMMON_SMK), "eval"), {"GATE_FOLDER": vocabulary.GATE_FOLDER, "datasets": datasets})


def test_the_gate_wildcard_is_the_vocabularys_gate_folder():
    gate = wildcard_constraints()["gate"]
    assert gate == vocabulary.GATE_FOLDER
    folders = [f"{name}{suffix}" for name in (*vocabulary.gate_names(), "laplace2")
               for suffix in ["", *(f"-{c}" for c in vocabulary.CONVENTIONS if c != vocabulary.INVERTED)]]
    for folder in folders:
        assert re.fullmatch(gate, folder), f"the gate wildcard {gate!r} refuses the gate folder {folder!r}"
    for folder in ("bernoulli-inverted", "Bernoulli", "2gate", "bernoulli/x"):
        assert not re.fullmatch(gate, folder), f"the gate wildcard {gate!r} accepts {folder!r}"


def test_the_dataset_wildcard_is_the_datasets():
    dataset = wildcard_constraints()["dataset"]
    assert sorted(name for name in (*datasets.SPECS, "imagenet", "mnist2") if re.fullmatch(dataset, name)) == \
        sorted(datasets.SPECS)


@pytest.mark.parametrize("runs_per_job", [1, "cell", 2, "all"])
def test_the_run_and_pack_wildcards_take_a_gate_with_digits_in_either_convention(runs_per_job):
    constraints = wildcard_constraints()
    runs = [grid.Run("mnist_mlp", "mnist", "mlp", gate, (("input", 0.0), ("hidden", 0.5)), seed, convention,
                     width=width)
            for gate in ("laplace2", vocabulary.REFERENCE_GATE) for seed in (0, 1)
            for convention in vocabulary.CONVENTIONS for width in (None, 64)]
    for run in runs:
        experiment, gate, _cell, seed = run.folder.split("/")[2:]
        assert re.fullmatch(constraints["gate"], gate) and re.fullmatch(constraints["experiment"], experiment)
        assert re.fullmatch(constraints["seed"], seed.removeprefix("seed")), run.folder
    for pack in packs.make_packs(runs, runs_per_job):
        assert re.fullmatch(constraints["pack"], pack.name), f"the pack wildcard refuses {pack.name!r}"
