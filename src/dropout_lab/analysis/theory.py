"""The article's math, checked numerically: the linear unit and dropout linear regression.

Gates are described by their mean and variance, which covers every convention:
- the article's Bernoulli gate d ~ Bernoulli(p): mean p, variance p(1 - p);
- inverted Bernoulli d / p: mean 1, variance (1 - p) / p;
- Gaussian with matched moments: N(p, p(1 - p)) or N(1, (1 - p) / p).

For one linear unit with error E_D = 1/2 (t - sum_i d_i w_i I_i)^2 and
independent gates, E[d_i d_j] = mu_i mu_j + [i = j] v_i, so

    E[dE_D/dw_i] = -(t - sum_j mu_j w_j I_j) mu_i I_i + v_i w_i I_i^2,

the gradient of E_R = 1/2 (t - sum_j mu_j w_j I_j)^2 + 1/2 sum_i v_i w_i^2 I_i^2.
With the article's gate this is Baldi and Sadowski's eq. 6-7.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dropout_lab.settings import kept
from dropout_lab.settings.atomic import finite_or_none

GATE_KINDS = ("bernoulli", "gaussian")
# The random linear units of the gradient check and the regression's SGD: fixed by the method, recorded with
# each result (its `setup`) so that the report states them.
UNITS, INPUTS, RETAIN, BOUND_Z = 20, 10, (0.2, 0.9), 4.0
INPUT_SCALES, SGD_BATCH, SGD_LR = (0.5, 2.0), 32, 0.02


@dataclass(frozen=True)
class Gate:
    kind: str  # bernoulli | gaussian
    inverted: bool  # mean 1 (PyTorch) or mean p (the article)

    def moments(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.inverted:
            return np.ones_like(p), (1 - p) / p
        return p, p * (1 - p)

    def sample(self, p: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
        """n independent gate vectors, shape (n, len(p))."""
        mean, var = self.moments(p)
        if self.kind == "bernoulli":
            keep = (rng.random((n, len(p))) < p).astype(float)
            return keep / p if self.inverted else keep
        return mean + np.sqrt(var) * rng.standard_normal((n, len(p)))


def expected_gradient(w: np.ndarray, inputs: np.ndarray, t: float, p: np.ndarray, gate: Gate) -> np.ndarray:
    """The analytic gradient of the regularised error E_R (eq. 6-7 for the article's gate)."""
    mean, var = gate.moments(p)
    residual = t - np.sum(mean * w * inputs)
    return -residual * mean * inputs + var * w * inputs**2


def regularised_error(w: np.ndarray, inputs: np.ndarray, t: float, p: np.ndarray, gate: Gate) -> float:
    mean, var = gate.moments(p)
    return 0.5 * (t - np.sum(mean * w * inputs)) ** 2 + 0.5 * np.sum(var * w**2 * inputs**2)


def sampled_gradients(w: np.ndarray, inputs: np.ndarray, t: float, d: np.ndarray) -> np.ndarray:
    """Gradient of E_D for each sampled gate vector (rows of d)."""
    residual = t - d @ (w * inputs)
    return -residual[:, None] * d * inputs


@dataclass
class GradientCheck:
    samples: list[int]
    relative_error: list[float]  # ||mean of n sampled gradients - analytic|| / ||analytic||
    bound: list[float]  # Z standard errors of that mean, relative, from the per-sample spread


def gradient_check(
    gate: Gate, units: int = UNITS, inputs: int = INPUTS, samples=(10, 100, 1000, 10_000, 100_000),
    seed: int = 0, z: float = BOUND_Z,
) -> GradientCheck:
    """Average sampled dropout gradients of random linear units; compare with the analytic gradient.

    The error is pooled over `units` random units (weights, inputs, targets,
    retain probabilities in [0.2, 0.9]). The bound is z times the standard
    error implied by the sample variance of the per-sample gradients, so the
    error must fall like 1 / sqrt(n).
    """
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(units):
        w, x = rng.normal(size=inputs), rng.normal(size=inputs)
        cases.append((w, x, float(rng.normal()), rng.uniform(*RETAIN, size=inputs)))
    biggest = max(samples)
    draws = [sampled_gradients(w, x, t, gate.sample(p, biggest, rng)) for w, x, t, p in cases]
    analytic = np.concatenate([expected_gradient(w, x, t, p, gate) for w, x, t, p in cases])
    scale = np.linalg.norm(analytic)
    errors, bounds = [], []
    for n in samples:
        mean = np.concatenate([g[:n].mean(axis=0) for g in draws])
        errors.append(float(np.linalg.norm(mean - analytic) / scale))
        spread = np.concatenate([g[:n].var(axis=0, ddof=1) for g in draws]).sum()
        bounds.append(float(z * math.sqrt(spread / n) / scale))
    return GradientCheck(list(samples), errors, bounds)


# --------------------------------------------------------------------------- linear regression


def closed_form(x: np.ndarray, y: np.ndarray, rate: float) -> np.ndarray:
    """Minimiser of the expected inverted-dropout loss, in the effective weights w' = p w:

        ||y - X w'||^2 + ((1 - p) / p) ||Gamma w'||^2,  Gamma = diag(X^T X)^(1/2)

    (Srivastava et al. 2014, section 9.1): ridge regression with a data-dependent diagonal.
    """
    p = 1.0 - rate
    gram = x.T @ x
    return np.linalg.solve(gram + (rate / p) * np.diag(np.diag(gram)), x.T @ y)


def raw_penalty(rate: float) -> float:
    """Coefficient of ||Gamma w||^2 on the raw weights (the article's reading): p (1 - p)."""
    p = 1.0 - rate
    return p * (1 - p)


def effective_penalty(rate: float) -> float:
    """Coefficient of ||Gamma w'||^2 on the weights used at inference: (1 - p) / p."""
    p = 1.0 - rate
    return (1 - p) / p


def sgd_dropout_regressions(
    x: np.ndarray, y: np.ndarray, rates, epochs: int = 60, batch: int = SGD_BATCH, lr: float = SGD_LR,
    seed: int = 0,
) -> dict[float, np.ndarray]:
    """Train w' by SGD on the inverted-dropout loss with real masks, for each rate; return the averaged iterates.

    The step size decays as 1/sqrt(step) and the second half of the iterates is
    averaged (Polyak-Ruppert), so the estimate converges to the minimiser of the
    expected loss rather than rattling around it.

    Each rate's run is the one it would have alone, with its own generator seeded `seed`: the rates above 0
    draw the same batches and uniforms, so they step together (one draw, a mask per rate); rate 0 draws no
    masks, so its batches differ and it steps on its own.
    """
    out = {}
    dropped = [rate for rate in rates if rate > 0]
    for group in ([rate for rate in rates if rate <= 0], dropped):
        if not group:
            continue
        rng = np.random.default_rng(seed)
        n, d = x.shape
        p = (1.0 - np.asarray(group, dtype=float))[:, None, None]
        w = np.zeros((len(group), d))
        total = epochs * math.ceil(n / batch)
        average, counted, step = np.zeros_like(w), 0, 0
        for _ in range(epochs):
            order = rng.permutation(n)
            for start in range(0, n, batch):
                idx = order[start : start + batch]
                xb = x[idx] * ((rng.random((len(idx), d)) < p) / p) if group is dropped else x[idx][None]
                residual = y[idx] - np.einsum("rbd,rd->rb", xb, w)
                grad = -np.einsum("rbd,rb->rd", xb, residual) / len(idx)
                step += 1
                w -= lr / math.sqrt(step / 100 + 1) * grad
                if step > total // 2:
                    average += w
                    counted += 1
        out.update(zip(group, average / counted))
    return out


def sgd_dropout_regression(x: np.ndarray, y: np.ndarray, rate: float, **settings) -> np.ndarray:
    """One rate of sgd_dropout_regressions."""
    return sgd_dropout_regressions(x, y, [rate], **settings)[rate]


def regression_problem(n: int = 2000, d: int = 10, noise: float = 0.5, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Inputs with unequal scales (so diag(X^T X) matters), true weights, targets."""
    rng = np.random.default_rng(seed)
    scales = np.linspace(*INPUT_SCALES, d)
    x = rng.normal(size=(n, d)) * scales
    w_true = rng.normal(size=d)
    y = x @ w_true + noise * rng.normal(size=n)
    return x, y, w_true


# --------------------------------------------------------------------------- the workflow's checks


def _loglog_slope(xs: list[float], ys: list[float]) -> float:
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def _gradient_checks(grad: dict) -> dict:
    """The expected dropout gradient against the gradient of E_R, for each gate and convention."""
    gradient = {}
    for kind in GATE_KINDS:
        for inverted in (False, True):
            check = gradient_check(Gate(kind, inverted), samples=tuple(grad["samples"]), seed=grad["seed"])
            name = f"{kind}_{'inverted' if inverted else 'article'}"
            gradient[name] = {
                "samples": check.samples,
                "relative_error": check.relative_error,
                "bound": check.bound,
                "slope": _loglog_slope(check.samples, check.relative_error),
                "within_bound": all(e <= b for e, b in zip(check.relative_error, check.bound)),
            }
    largest_error = max(g["relative_error"][-1] for g in gradient.values())
    slopes_ok = all(-0.65 <= g["slope"] <= -0.35 for g in gradient.values())
    grad_ok = largest_error <= grad["tolerance"] and slopes_ok and all(g["within_bound"] for g in gradient.values())
    return {
        "claim": "The expected dropout gradient is the gradient of the regularised error E_R (eq. 6-7)",
        "statistic": f"relative error of the mean of n sampled gradients, n up to {max(grad['samples'])}; "
        "log-log slope against n; a bound of 4 standard errors",
        "checks": gradient,
        "setup": {"units": UNITS, "inputs": INPUTS, "retain": list(RETAIN), "z": BOUND_Z, "seed": grad["seed"]},
        "largest_error": largest_error,
        "tolerance": grad["tolerance"],
        "verdict": "supported" if grad_ok else "not supported",
        "reason": f"largest relative error {largest_error:.4f} (tolerance {grad['tolerance']:g}); slopes "
        + ", ".join(f"{g['slope']:.2f}" for g in gradient.values()) + " (1/sqrt(n) is -0.5)",
    }


def _regression_rows(reg: dict) -> list[dict]:
    """Per rate: both penalty coefficients, and the shrinkage of the closed form and of SGD with real masks."""
    x, y, _ = regression_problem(reg["samples"], reg["features"], reg["noise"], reg["seed"])
    ols = np.linalg.lstsq(x, y, rcond=None)[0]
    rows = []
    fitted = sgd_dropout_regressions(x, y, reg["rates"], epochs=reg["epochs"], seed=reg["seed"])
    for rate in reg["rates"]:
        exact = closed_form(x, y, rate)
        sgd = fitted[rate]
        rows.append({
            "rate": rate,
            "raw_penalty": raw_penalty(rate),
            "effective_penalty": effective_penalty(rate),
            "shrinkage_closed_form": float(np.linalg.norm(exact) / np.linalg.norm(ols)),
            "shrinkage_sgd": float(np.linalg.norm(sgd) / np.linalg.norm(ols)),
            "sgd_vs_closed_form": float(np.linalg.norm(sgd - exact) / np.linalg.norm(exact)),
        })
    return rows


def run_checks(settings: dict) -> dict:
    """Both numerical checks with their verdicts; `settings` is the `theory:` block of the workflow config."""
    reg = settings["regression"]
    rows = _regression_rows(reg)
    worst = max(r["sgd_vs_closed_form"] for r in rows)
    raw_peak = max(rows, key=lambda r: r["raw_penalty"])["rate"]
    most_shrunk = min(rows, key=lambda r: r["shrinkage_closed_form"])["rate"]
    shrinkage = [r["shrinkage_closed_form"] for r in sorted(rows, key=lambda r: r["rate"])]
    monotone = all(a > b for a, b in zip(shrinkage, shrinkage[1:]))
    return {
        "gradient": _gradient_checks(settings["gradient"]),
        "regression": {
            "claim": "SGD with real dropout masks finds the closed-form ridge solution (Srivastava et al. 9.1)",
            "statistic": "relative distance between the averaged SGD iterate and the closed-form minimiser",
            "rows": rows,
            "setup": {"samples": reg["samples"], "features": reg["features"], "noise": reg["noise"],
                      "input_scales": list(INPUT_SCALES), "epochs": reg["epochs"], "batch": SGD_BATCH, "lr": SGD_LR,
                      "seed": reg["seed"]},
            "largest_error": worst,
            "tolerance": reg["tolerance"],
            "verdict": "supported" if worst <= reg["tolerance"] else "not supported",
            "reason": f"largest relative distance {worst:.4f} (tolerance {reg['tolerance']:g})",
        },
        "raw_reading": {
            "claim": "Rate 0.5 regularises most, read on the raw weights w (penalty p(1-p))",
            "statistic": "argmax over the rate grid of the penalty coefficient on the raw weights",
            "estimate": raw_peak,
            "verdict": "supported" if math.isclose(raw_peak, 0.5) else "not supported",
            "reason": f"p(1-p) peaks at rate {raw_peak:g}",
        },
        "effective_reading": {
            "claim": "Rate 0.5 regularises most, read on the weights used at inference (penalty (1-p)/p)",
            "statistic": "argmin over the rate grid of the closed-form norm of the effective weights "
            "relative to least squares",
            "estimate": most_shrunk,
            "monotone": monotone,
            "verdict": "supported" if math.isclose(most_shrunk, 0.5) else "not supported",
            "reason": f"the effective weights shrink most at rate {most_shrunk:g}"
            + ("; shrinkage grows monotonically with the rate" if monotone else ""),
        },
    }


def kept_checks(settings: dict) -> tuple[dict, bool]:
    """(run_checks(settings) as theory.json holds it, whether it was kept): made once per machine for these
    settings, this module's code and numpy's version (dropout_lab.settings.kept), not again in every folder;
    the checks are seeded, so a kept result is the very one they would make."""
    key = kept.digest([settings, np.__version__], [Path(__file__)])
    return kept.kept("theory", key, lambda: finite_or_none(run_checks(settings)))
