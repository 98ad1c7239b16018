"""Fitted solver coefficients: ``fitted:BASE``, a one-NFE-per-step solver with two scalars per step.

Which parameterisation.  Step ``i`` of a one-NFE-per-step solver evaluates the field once, at
``s_i``.  ``fitted:BASE`` runs BASE unchanged except that this evaluation is replaced by

    ε̃_i(x) = c_i ε(x, s_i e^{τ_i}),       ε(x, s) = (x - D(x, s))/s = v(x, s),

i.e. a *rescaled noise prediction* (Ning et al., "Elucidating the exposure bias in diffusion
models", arXiv 2308.15321: ε-scaling, there one λ_t for all steps) evaluated at a *shifted
level* (Li et al., "Alleviating exposure bias via sampling with shifted time steps", arXiv
2305.15583; AMED-Solver, Zhou et al., arXiv 2312.00094, learns a per-step scaling factor
``c_n`` on the step's direction in the same spirit, and DC-Solver, arXiv 2409.03755, fits
per-step compensation ratios against a teacher).  Written for the two ways a solver reads
the field:

    flow       ṽ_i = c_i v(x, s_i e^{τ_i})
    denoiser   D̃_i = x - s_i ε̃_i = x + c_i e^{-τ_i} (D(x, s_i e^{τ_i}) - x).

For Euler (DDIM) ``c_i`` is exactly a rescaling of the step's direction (AMED's ``c_n``); for
a multistep method the rescaled evaluation also enters the later steps' history, so the
``2K`` numbers act on the whole solve.  Neither paper fits both per step for every solver:
we do, against a float64 teacher on pilot draws (:mod:`physgen.fitted_solver`, L-BFGS-B on
the mean squared global error).  The neutral values ``c_i = 1, τ_i = 0`` call the field
unchanged and return its value as is, so ``fitted:BASE`` with neutral coefficients is BASE
bit for bit.  The shifted level never goes above the grid's first scale
(``τ_i <= log(s_0/s_i)``: the field is not asked outside the range it was trained on).

Which rows: :func:`fittable`, the deterministic fixed-step rows with one field call per step
on the grid's own points (every call is one step's, so call ``i`` is step ``i``).
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch
from torch import Tensor

from .base import as_schedule
from .spec import Spec

__all__ = ["FITTED_PREFIX", "fittable", "fitted_spec", "is_fitted", "base_name", "neutral", "check_coefficients", "coefficient_bounds",
           "rescaled", "C_BOUNDS", "TAU_BOUNDS"]

FITTED_PREFIX = "fitted:"
C_BOUNDS = (0.25, 4.0)  # the scaling of a step's evaluation: within a factor 4 of the solver's own
TAU_BOUNDS = (-1.0, 1.0)  # the level shift in log s: within a factor e of the step's own level


def fittable(spec: Spec) -> bool:
    """Whether ``spec`` can be fitted: deterministic, fixed-step on the grid's points, one call per step, reading a flow or a denoiser."""
    return (not spec.stochastic and not spec.adaptive and spec.grid == "steps" and spec.nfe == 1 and spec.target in ("flow", "denoiser")
            and ":" not in spec.name)


def is_fitted(method: Any) -> bool:
    return str(method).startswith(FITTED_PREFIX)


def base_name(method: str) -> str:
    """``BASE`` of ``fitted:BASE``."""
    return str(method)[len(FITTED_PREFIX):]


def neutral(K: int) -> list[list[float]]:
    """The ``K`` neutral pairs ``(c, τ) = (1, 0)``: BASE itself."""
    return [[1.0, 0.0] for _ in range(K)]


def coefficient_bounds(s: Sequence[float]) -> list[tuple[float, float]]:
    """The box of ``(c_0, τ_0, c_1, τ_1, ...)`` on the grid ``s``: :data:`C_BOUNDS`, and :data:`TAU_BOUNDS`
    capped at ``log(s_0/s_i)`` (no level above the grid's first)."""
    out: list[tuple[float, float]] = []
    for v in s[:-1]:
        cap = math.log(s[0] / v) if s[0] > 0 and v > 0 else 0.0
        out += [C_BOUNDS, (TAU_BOUNDS[0], min(TAU_BOUNDS[1], cap))]
    return out


def check_coefficients(coefficients: Any, K: int, name: str) -> Any:
    """``coefficients`` as ``K`` pairs ``(c_i, τ_i)`` (neutral if None); ``ValueError`` for another length or a
    non-finite value.  A ``[K, 2]`` tensor (the fit's, with gradients) is passed through."""
    if coefficients is None:
        return neutral(K)
    if isinstance(coefficients, Tensor):
        if tuple(coefficients.shape) != (K, 2):
            raise ValueError(f"{name}: coefficients must be [{K}, 2] for {K} steps, got {tuple(coefficients.shape)}")
        return coefficients
    pairs = [list(p) for p in coefficients]
    if len(pairs) != K or any(len(p) != 2 for p in pairs):
        raise ValueError(f"{name}: coefficients must be {K} pairs (c, tau) for {K} steps, got {len(pairs)} entries")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for p in pairs for v in p):
        raise ValueError(f"{name}: coefficients must be finite numbers, got {pairs}")
    return [[float(c), float(t)] for c, t in pairs]


def _exp(t):
    return torch.exp(t) if isinstance(t, Tensor) else math.exp(t)


class _RescaledFlow:
    """A target whose ``i``-th evaluation is rescaled and shifted by the ``i``-th pair (module docstring)."""

    def __init__(self, target, coefficients):
        self.target, self.coefficients, self.calls = target, coefficients, 0

    def _next(self):
        i = self.calls
        self.calls += 1
        if i >= len(self.coefficients):
            raise ValueError(f"a fitted solver has {len(self.coefficients)} coefficient pairs, one per step, and its base called the field more often")
        c, tau = self.coefficients[i]
        return c, tau, isinstance(c, float) and c == 1.0 and tau == 0.0

    def __call__(self, x: Tensor, s: Tensor) -> Tensor:
        c, tau, same = self._next()
        return self.target(x, s) if same else c * self.target(x, s * _exp(tau))

    def __getattr__(self, name: str):
        if name == "target":  # not set yet (copying): no recursion
            raise AttributeError(name)
        return getattr(self.target, name)


class _RescaledDenoiser(_RescaledFlow):
    def denoise(self, x: Tensor, s: Tensor) -> Tensor:
        c, tau, same = self._next()
        if same:
            return self.target.denoise(x, s)
        return torch.lerp(x, self.target.denoise(x, s * _exp(tau)), c * _exp(-tau))


def rescaled(target, coefficients):
    """``target`` with its evaluations rescaled by ``coefficients`` (a denoiser stays one)."""
    return (_RescaledDenoiser if callable(getattr(target, "denoise", None)) else _RescaledFlow)(target, coefficients)


def fitted_spec(base: Spec) -> Spec:
    """The table row ``fitted:BASE``: BASE's function, needs, NFE and options, its target rescaled by
    ``coefficients`` (``K`` pairs; none: neutral, BASE itself)."""
    name = FITTED_PREFIX + base.name

    def fn(target, x: Tensor, schedule, *, coefficients: Optional[Any] = None, **options):
        pairs = check_coefficients(coefficients, len(as_schedule(schedule)) - 1, name)
        return base.fn(rescaled(target, pairs), x, schedule, **options)

    fn.__doc__ = __doc__
    return Spec(name, fn, base.needs, base.order, base.nfe,
                f"{base.name} with 2 scalars per step fitted to a float64 teacher (ε-scaling arXiv 2308.15321 at shifted levels arXiv 2305.15583)",
                options=base.options, order_note=f"neutral coefficients: {base.name}'s, bit for bit", nfe_note=base.nfe_note)
