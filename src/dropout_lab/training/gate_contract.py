"""The gate contract: what the pack engine relies on of every gate (dropout_lab.training.gates).

`gates.register` checks it on tiny tensors, refusing a class in one line that names the gate
and the rule; tests/test_gates.py checks every registered gate in a pack beside Bernoulli.

1. The class declares its own `name`, matching settings.vocabulary.GATE_NAME (a folder of
   results/runs/, a Snakemake wildcard, a Hydra choice) and the stem of config/gate/NAME.yaml;
   `target` is one of gates.TARGETS; the constructor takes (rate, convention), every CONVENTIONS.
2. `storage(numel)` is a positive int, the values of `storage_dtype` that hold numel draws;
   `raw(stored, numel)` gives exactly numel draws per row (along the last dimension).
3. `fill(stored, generator)` overwrites `stored` in place (it may be one row of the engine's
   buffer) from `generator` only, never torch's global one: a model's stream is its own.
4. `factor(raw, c)` is float32 and elementwise: a value depends on its draw and its model's
   constants only (floats alone, float32 tensors of shape (K, 1, ...) in the engine). `c` has
   the keys of IDENTITY, which are those of `constants()`; drawn noise gives finite factors.
5. Identity rows: a zero row of the store with the IDENTITY constants gives exactly 1, never
   NaN or inf. The engine keeps all the models of a pack in one buffer per slot and gate
   class, and the rows of the models that do not draw it there (another gate, or rate 0) stay
   zero; a zero row that is not 1 corrupts the packmates (inverse-CDF Laplace: 0 * inf = NaN).
6. Moments: mean `mean` (1 inverted, p scaled) and variance `variance` (rate / (1 - rate),
   the Bernoulli gate's, unless the class says otherwise), times p^2 under the scaled convention.
7. Eval mode and rate 0 are the identity, times `inference_scale` in eval mode under the
   scaled convention; `inference_scale` is 1 under the inverted one (the engine reads it).
8. A class with no noise law (neither `fill` nor `factor`, like NoGate) refuses every rate > 0.
"""

from __future__ import annotations

import math

import torch

from dropout_lab.settings.vocabulary import CONVENTIONS, GATE_NAME, INVERTED, valid_gate_name


class GateContractError(ValueError):
    """A gate class that breaks the gate contract (this module's docstring); one line naming the gate and rule."""


def _base():
    """The base class Gate (imported here: dropout_lab.training.gates imports this module)."""
    from dropout_lab.training.gates import Gate

    return Gate


_PROBE_NUMELS = (1, 5, 12)  # raw draws per row of the probe stores: under, at and over one storage word


def has_noise_law(cls: type) -> bool:
    """Whether the class draws noise (defines `fill` or `factor`); NoGate does not."""
    return cls.fill is not _base().fill or cls.factor is not _base().factor


def check_contract(cls: type, targets: tuple[str, ...]) -> None:
    """Raise GateContractError, one line naming the gate and the rule, if `cls` breaks the gate contract."""
    try:
        problem = _declaration_problem(cls, targets)
        if problem is None:
            problem = _noise_law_problem(cls) if has_noise_law(cls) else _refuses_rates_problem(cls)
        if problem is None:
            problem = _modes_problem(cls)
    except Exception as err:  # a probe that does not even run: name it in the same one line
        problem = f"probing it raised {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    if problem is not None:
        name = cls.__dict__.get("name", cls.__qualname__)
        raise GateContractError(f"gate {name!r} breaks the gate contract: {problem}; see 'The gate contract' in "
                                "dropout_lab.training.gate_contract")


def _declaration_problem(cls: type, targets: tuple[str, ...]) -> str | None:
    if "name" not in cls.__dict__:
        return "it declares no name of its own; set name = 'NAME', the stem of config/gate/NAME.yaml"
    if not isinstance(cls.name, str) or not valid_gate_name(cls.name):
        return f"its name does not match {GATE_NAME} (a results folder, a Snakemake wildcard and a Hydra choice)"
    if cls.target not in targets:
        return f"target={cls.target!r}; choose one of {list(targets)}"
    if not isinstance(cls.storage_dtype, torch.dtype):
        return f"storage_dtype={cls.storage_dtype!r} is not a torch dtype"
    for key, value in cls.IDENTITY.items():
        if not isinstance(key, str) or not key.isidentifier():
            return f"IDENTITY key {key!r} is not an identifier (it names a buffer of the engine)"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return f"IDENTITY[{key!r}]={value!r} is not a finite number"
    if (cls.fill is _base().fill) != (cls.factor is _base().factor):
        return "it defines only one of fill and factor; a noise law needs both"
    return None


def _refuses_rates_problem(cls: type) -> str | None:
    try:
        cls(0.5)
    except ValueError:
        return None
    return "it has no noise law (fill and factor) but accepts rate 0.5; refuse every rate above 0, as NoGate does"


def _noise_law_problem(cls: type) -> str | None:
    """Storage, raw and the identity rows, then each convention's draws beside an identity row."""
    identity = dict(cls.IDENTITY)
    for numel in _PROBE_NUMELS:
        words = cls.storage(numel)
        if isinstance(words, bool) or not isinstance(words, int) or words < 1:
            return f"storage({numel})={words!r} is not a positive int"
        raw = cls.raw(torch.zeros(2, words, dtype=cls.storage_dtype), numel)
        if tuple(raw.shape) != (2, numel):
            return f"raw(stored, {numel}) of a (2, storage) store has shape {tuple(raw.shape)}, not (2, {numel})"
        per_model = {key: torch.full((2, 1), float(value)) for key, value in identity.items()}
        for constants in (identity, per_model):  # the single-model path's floats, the engine's tensors
            factor = cls.factor(raw, constants)
            if factor.dtype != torch.float32 or tuple(factor.shape) != (2, numel):
                return f"factor gives {factor.dtype} of shape {tuple(factor.shape)}, not float32 of shape (2, {numel})"
            if not bool((factor == 1.0).all()):
                return (f"a zero row of the noise store with the IDENTITY constants (a packmate that does not draw "
                        f"this gate) gives the factor {float(factor[factor != 1.0][0])}, not exactly 1")
    for convention in CONVENTIONS:
        problem = _draws_problem(cls, cls(0.5, convention), identity)
        if problem is not None:
            return f"at rate 0.5 under the {convention} convention, {problem}"
    return None


def _draws_problem(cls: type, gate, identity: dict[str, float]) -> str | None:
    """One model's draws in row 0 of a store whose row 1 is a packmate's identity row, as in the engine."""
    own = gate.constants()
    if set(own) != set(identity):
        return f"constants() has the keys {sorted(own)}, IDENTITY {sorted(identity)}; they must be the same"
    numel = _PROBE_NUMELS[-1]
    store = torch.zeros(2, cls.storage(numel), dtype=cls.storage_dtype)
    global_state = torch.random.get_rng_state()
    cls.fill(store[0], torch.Generator().manual_seed(0))
    if not torch.equal(torch.random.get_rng_state(), global_state):
        return "fill drew from torch's global generator; draw from `generator` only (each model's own stream)"
    if not bool(store[0].any()) or bool(store[1].any()):
        return "fill did not overwrite the row it was given, in place, and only it"
    again = torch.zeros_like(store[0])
    cls.fill(again, torch.Generator().manual_seed(0))
    if not torch.equal(again, store[0]):
        return "fill gave other draws from the same seed; draw from `generator` only"
    per_row = {key: torch.tensor([[float(own[key])], [float(value)]]) for key, value in identity.items()}
    factor = cls.factor(cls.raw(store, numel), per_row)
    if not bool((factor[1] == 1.0).all()):
        return (f"beside a model that draws, a zero row with the IDENTITY constants gives the factor "
                f"{float(factor[1][factor[1] != 1.0][0])}, not exactly 1")
    if not bool(factor[0].isfinite().all()):
        return f"drawn noise gives the factor {float(factor[0][~factor[0].isfinite()][0])}; it must be finite"
    return None


def _modes_problem(cls: type) -> str | None:
    """Eval mode and rate 0 are the identity; the inverted convention scales nothing at inference."""
    x = torch.linspace(-1.0, 1.0, 12).view(3, 4)
    rate = 0.5 if has_noise_law(cls) else 0.0
    for convention in CONVENTIONS:
        gate = cls(rate, convention).eval()
        expected = x if convention == INVERTED else x * gate.inference_scale
        if convention == INVERTED and gate.inference_scale != 1.0:
            return f"inference_scale={gate.inference_scale} under the inverted convention; it must be 1"
        if not torch.equal(gate(x), expected):
            return f"eval mode under the {convention} convention is not the identity (times inference_scale if scaled)"
        if not torch.equal(cls(0.0, convention).train()(x), x):
            return f"rate 0 in training under the {convention} convention is not the identity"
    return None
