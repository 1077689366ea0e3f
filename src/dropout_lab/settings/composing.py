"""Compositions that are not made again: a pack's runs composed together (each group choice composed by Hydra
once, each run's values set on a copy), and the workflow's resolved compositions kept on disk between
invocations, by everything they are made of."""

from __future__ import annotations

import copy
import os
from importlib.metadata import version
from pathlib import Path
from typing import Any, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import OverrideType
from hydra.errors import OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dropout_lab.settings import kept
from dropout_lab.settings.config import CONFIG_DIR, compose_config


def compose_configs(runs: Sequence[Sequence[str]], config_dir: str = CONFIG_DIR) -> list[DictConfig]:
    """compose_config for each run's overrides, each group choice composed once (a pack's runs share them).

    Hydra composes in two steps: the defaults list with the group choices (`gate=gaussian`, a folder of
    config/), then every value override (`seed=3`, `dropout.hidden=0.5`) set on the result in order. So a run
    is its group choices' composition, copied, with its value overrides set in order, as Hydra sets them
    (OmegaConf.update, merging). A quarter of a second per run, otherwise: seconds per pack. An override that
    this cannot set (a new key, a value of the wrong type) is composed by Hydra itself, for its own error.
    """
    groups = {entry.name for entry in os.scandir(config_dir) if entry.is_dir()}
    parser = OverridesParser.create()
    composed: dict[tuple[str, ...], DictConfig] = {}
    out = []
    for overrides in runs:
        overrides = list(overrides)
        try:
            parsed = parser.parse_overrides(overrides)
        except OverrideParseException:
            parsed = None
        if parsed is None or any(o.type is not OverrideType.CHANGE or o.package is not None for o in parsed):
            out.append(compose_config(overrides, config_dir))  # additions, deletions, bad syntax: Hydra's own
            continue
        choice = [o.key_or_group in groups or "/" in o.key_or_group for o in parsed]
        choices = tuple(text for text, is_choice in zip(overrides, choice) if is_choice)
        values = [o for o, is_choice in zip(parsed, choice) if not is_choice]
        if choices not in composed:
            composed[choices] = compose_config(choices, config_dir)
        cfg = copy.deepcopy(composed[choices])
        try:
            for override in values:
                OmegaConf.update(cfg, override.key_or_group, override.value(), merge=True)
        except (OmegaConfBaseException, ValueError, TypeError):
            cfg = compose_config(overrides, config_dir)
        out.append(cfg)
    return out


SETTINGS_CODE = Path(__file__).parent  # the schema (settings.config) and what it reads: part of every key


def composition_key(overrides: Sequence[str], config_dir: str = CONFIG_DIR) -> str:
    """The digest of everything a resolved composition is made of: the overrides, every file of the Hydra
    config folder, the settings code (the schema), Hydra's and OmegaConf's versions, and the environment
    variables the files interpolate (oc.env: DROPOUT_LAB_*, TMPDIR)."""
    env = sorted((k, v) for k, v in os.environ.items() if k.startswith("DROPOUT_LAB_") or k == "TMPDIR")
    return kept.digest([list(overrides), version("hydra-core"), version("omegaconf"), env],
                       [Path(config_dir), SETTINGS_CODE])


def resolved_composition(overrides: Sequence[str], config_dir: str = CONFIG_DIR) -> dict[str, Any]:
    """OmegaConf.to_container(compose_config(overrides), resolve=True), kept between invocations
    (dropout_lab.settings.kept, by composition_key): the workflow composes a few each time it is started
    (0.2 s each), on every dry run and, on a cluster, in every job."""
    return kept.kept("compositions", composition_key(overrides, config_dir),
                     lambda: OmegaConf.to_container(compose_config(overrides, config_dir), resolve=True))[0]
