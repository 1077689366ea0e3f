"""The error of an invalid setting, and the one-line checks of single values that raise it.

Shared by the checks of a whole run (dropout_lab.settings.config.validate) and those of
each model kind's own settings (dropout_lab.settings.architectures).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class ConfigError(ValueError):
    """An invalid setting; the message is one line naming the key, the value and the fix."""


def fail(msg: str) -> None:
    raise ConfigError(msg)


def is_list(value: Any) -> bool:
    """A list of values (a Python list or tuple, or OmegaConf's ListConfig), not a string."""
    return isinstance(value, Sequence) and not isinstance(value, str)


def check_rate(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        fail(f"{key}={value!r} is not a number; give a drop rate in [0, 1) such as 0.5")
    if not 0.0 <= value < 1.0:
        fail(f"{key}={value} is outside [0, 1); a drop rate is 1 - retain probability, e.g. 0.2 or 0.5")
    return float(value)


def layer_rates(key: str, value: Any, layers: int) -> tuple[float, ...]:
    """One rate for every layer, or a list with exactly one rate per layer."""
    if is_list(value):
        if len(value) != layers:
            fail(f"{key} lists {len(value)} rates but the model has {layers} such layers; give {layers} rates or one")
        return tuple(check_rate(f"{key}[{i}]", v) for i, v in enumerate(value))
    return (check_rate(key, value),) * layers


def is_zero(value: Any) -> bool:
    if is_list(value):
        return all(v == 0 for v in value)
    return value == 0


def positive_int(key: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        fail(f"{key}={value!r} must be an integer >= {minimum}")
    return value
