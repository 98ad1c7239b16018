"""Batched ODE/SDE solvers for generative flows (physics-agnostic).

A solver is ``solver(flow, x, schedule, *, return_trajectory=False, **options) -> Solution``
where ``flow(x [B, ...], s [B]) -> dx/ds`` and ``schedule`` is a strictly monotone
sequence of scales (see :mod:`solvers.base` for the contract).  ``solve`` dispatches by
name through :data:`SOLVERS`; ``"torchdiffeq:METHOD"`` goes to the torchdiffeq adapter.
Stochastic samplers take an :class:`SDE` (or a score model) instead of a flow and are
listed in :data:`STOCHASTIC`; samplers built on ``denoise`` are listed in
:data:`NEEDS_DENOISER`.  New samplers join with :func:`register_solver`.
"""
from __future__ import annotations

from typing import Callable

from .adaptive import dopri5
from .births import births, effective_sample_size, systematic_resample
from .base import (
    SDE,
    CountedFlow,
    CountedSDE,
    DenoiserFlow,
    Flow,
    NoiseFn,
    Solution,
    SolverStats,
    as_schedule,
    default_noise,
    scale_batch,
)
from .dpm import dpm2, dpmpp_2m
from .multistep import adams_bashforth_coefficients, lms
from .runge_kutta import (
    TABLEAUX,
    ButcherTableau,
    euler,
    explicit_rk,
    heun,
    midpoint,
    rk3,
    rk4,
    rk4_38,
)
from .schedules import (
    SCHEDULES,
    edm_schedule,
    log_uniform_schedule,
    make_schedule,
    uniform_schedule,
    ve_time_schedule,
    vp_time_schedule,
)
from .sde import euler_maruyama
from .langevin import annealed_langevin, langevin
from .stochastic import ddpm_ancestral, edm_sde, pc
from .torchdiffeq_adapter import torchdiffeq_methods, torchdiffeq_solver

__all__ = [
    # contract
    "Flow", "DenoiserFlow", "SDE", "SolverStats", "Solution", "CountedFlow", "CountedSDE", "NoiseFn",
    "as_schedule", "scale_batch", "default_noise",
    # solvers
    "euler", "midpoint", "heun", "rk3", "rk4", "rk4_38", "explicit_rk", "ButcherTableau", "TABLEAUX",
    "lms", "adams_bashforth_coefficients", "dpm2", "dpmpp_2m", "dopri5", "torchdiffeq_solver",
    "torchdiffeq_methods", "euler_maruyama", "births", "systematic_resample", "effective_sample_size", "annealed_langevin", "langevin", "pc", "edm_sde", "ddpm_ancestral",
    # schedules
    "edm_schedule", "uniform_schedule", "log_uniform_schedule", "vp_time_schedule", "ve_time_schedule",
    "make_schedule", "SCHEDULES",
    # registry
    "SOLVERS", "STOCHASTIC", "NEEDS_DENOISER", "TORCHDIFFEQ_PREFIX", "solve", "get_solver", "solver_names",
    "is_stochastic", "needs_denoiser", "register_solver",
]

TORCHDIFFEQ_PREFIX = "torchdiffeq:"

SOLVERS: dict[str, Callable[..., Solution]] = {
    "euler": euler,
    "midpoint": midpoint,
    "heun": heun,
    "rk3": rk3,
    "rk4": rk4,
    "rk4-38": rk4_38,
    "lms": lms,
    "dpm2": dpm2,
    "dpmpp-2m": dpmpp_2m,
    "dopri5": dopri5,
    "euler-maruyama": euler_maruyama,
    "ald": annealed_langevin,  # (score, x, levels, *, eps, steps_per_level)
    "edm-sde": edm_sde,  # (denoiser-form flow, x, schedule, *, s_churn, ...)
}
"""Name -> solver.  Stochastic samplers go in here too, with their name in :data:`STOCHASTIC`."""

STOCHASTIC: set[str] = {"euler-maruyama", "ald", "edm-sde"}
"""Names whose first argument is an SDE / score model rather than an ODE flow."""

NEEDS_DENOISER: set[str] = {"dpm2", "dpmpp-2m"}
"""Names that need a flow exposing ``denoise(x, s)`` (the form ``dx/ds = (x - D)/s``)."""


def register_solver(name: str, fn: Callable[..., Solution], *, stochastic: bool = False,
                    needs_denoiser: bool = False, overwrite: bool = False) -> Callable[..., Solution]:
    """Add ``fn`` to the registry under ``name`` (returns ``fn``, so it works as a decorator helper)."""
    if not isinstance(name, str) or not name or name.startswith(TORCHDIFFEQ_PREFIX):
        raise ValueError(f"invalid solver name {name!r}")
    if name in SOLVERS and not overwrite:
        raise ValueError(f"solver {name!r} is already registered (pass overwrite=True to replace it)")
    SOLVERS[name] = fn
    (STOCHASTIC.add if stochastic else STOCHASTIC.discard)(name)
    (NEEDS_DENOISER.add if needs_denoiser else NEEDS_DENOISER.discard)(name)
    return fn


def solver_names(*, include_torchdiffeq: bool = True) -> list[str]:
    """Every valid ``method`` name: the registry, then ``torchdiffeq:METHOD`` for each installed method."""
    names = list(SOLVERS)
    if include_torchdiffeq:
        names += [TORCHDIFFEQ_PREFIX + m for m in torchdiffeq_methods()]
    return names


def _unknown(name) -> ValueError:
    return ValueError(f"unknown solver {name!r}; valid: {', '.join(solver_names())}")


def get_solver(name: str) -> Callable[..., Solution]:
    """The solver called ``name``; ``ValueError`` listing the valid names if there is none."""
    if isinstance(name, str) and name.startswith(TORCHDIFFEQ_PREFIX):
        method = name[len(TORCHDIFFEQ_PREFIX):]
        if method not in torchdiffeq_methods():
            raise _unknown(name)

        def solver(flow, x, schedule, **options):
            return torchdiffeq_solver(flow, x, schedule, method, **options)

        solver.__name__ = f"torchdiffeq_{method}"
        return solver
    try:
        return SOLVERS[name]
    except (KeyError, TypeError):
        raise _unknown(name) from None


def is_stochastic(name: str) -> bool:
    """Whether ``name`` is a stochastic sampler (needs an SDE / score rather than a flow)."""
    get_solver(name)
    return name in STOCHASTIC


def needs_denoiser(name: str) -> bool:
    """Whether ``name`` needs a flow with ``denoise(x, s)``."""
    get_solver(name)
    return name in NEEDS_DENOISER


def solve(flow, x, schedule, method: str = "heun", **options) -> Solution:
    """Integrate with the solver called ``method`` (see :func:`solver_names`)."""
    return get_solver(method)(flow, x, schedule, **options)
