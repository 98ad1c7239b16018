"""Batched ODE/SDE solvers for generative flows (physics-agnostic).

ONE table, :data:`SOLVERS`: name -> :class:`~solvers.spec.Spec` (the function, what it
needs, its order, its NFE per step, whether it is adaptive or stochastic, and its typed
options).  ``solve(target, x, schedule, method=NAME, **options)`` works for every name in
the table, given the object that name needs (a flow, a denoiser-form flow, an SDE, a
Gaussian transition, a score, a births flow: :mod:`solvers.offers`).  Every fixed-step method
is a step function ``step(run, i, x, state) -> (x, state)`` run by the one step loop,
:func:`solvers._loop.run_steps`; a new fixed-step solver is its step function and one row
(``Spec(name, fixed_step(name, step, ...), ...)``, :func:`solvers._loop.fixed_step`;
:func:`register_solver` for solvers defined elsewhere).
"""
from __future__ import annotations

from typing import Optional

from .adaptive import dopri5
from .ancestral import dpm2_ancestral, dpmpp_2m_sde, dpmpp_3m_sde, dpmpp_sde, euler_ancestral
from .base import (
    SDE,
    Counted,
    DenoiserFlow,
    DenoiserFormError,
    Flow,
    GaussianTransition,
    NoiseFn,
    Solution,
    SolverError,
    SolverStats,
    as_schedule,
    default_noise,
    scale_batch,
)
from .births import births, effective_sample_size, systematic_resample
from .dpm import dpm2, dpmpp_2m, dpmpp_2s, dpmpp_3m
from .dpm_adaptive import dpm_adaptive, dpm_fast
from .langevin import annealed_langevin, choose_eps, langevin, variance_ratio
from .multistep import adams_bashforth_coefficients, deis, ipndm, lms
from .runge_kutta import TABLEAUX, ButcherTableau, euler, explicit_rk, heun, midpoint, rk3, rk4, rk4_38
from .schedules import (
    SCHEDULES,
    edm_schedule,
    log_uniform_schedule,
    make_schedule,
    parse_schedule,
    polyexponential_schedule,
    uniform_schedule,
    ve_time_schedule,
    vp_time_schedule,
)
from .sde import euler_maruyama
from .offers import NEED_TABLE, BirthsOffer, CoordinateChange, Delegating, Need, Score
from .spec import NEEDS, Option, OptionError, Spec
from .stochastic import ddpm_ancestral, edm_sde, pc
from .restart import restart
from .fitted import FITTED_PREFIX, fittable, fitted_spec, is_fitted
from .unipc import unipc_bh1, unipc_bh2
from .torchdiffeq_adapter import (TORCHDIFFEQ_FIXED_GRID, TORCHDIFFEQ_PREFIX, TORCHDIFFEQ_WITHHELD, make_torchdiffeq, torchdiffeq_methods,
                                  torchdiffeq_solver)
from ._loop import require

__all__ = [
    # contract
    "Flow", "DenoiserFlow", "SDE", "GaussianTransition", "SolverStats", "Solution", "Counted", "NoiseFn",
    "DenoiserFormError", "SolverError", "as_schedule", "scale_batch", "default_noise", "Spec", "Option", "OptionError", "NEEDS",
    "Need", "NEED_TABLE", "Score", "CoordinateChange", "Delegating", "BirthsOffer",
    # solvers
    "euler", "midpoint", "heun", "rk3", "rk4", "rk4_38", "explicit_rk", "ButcherTableau", "TABLEAUX",
    "lms", "adams_bashforth_coefficients", "dpm2", "dpmpp_2m", "dpmpp_3m", "dpmpp_2s", "unipc_bh1", "unipc_bh2", "deis", "ipndm",
    "dpm_fast", "dpm_adaptive", "dopri5", "torchdiffeq_solver",
    "torchdiffeq_methods", "euler_maruyama", "births", "systematic_resample", "effective_sample_size",
    "annealed_langevin", "langevin", "choose_eps", "variance_ratio", "pc", "edm_sde", "ddpm_ancestral", "restart",
    # schedules
    "edm_schedule", "uniform_schedule", "log_uniform_schedule", "polyexponential_schedule", "vp_time_schedule",
    "ve_time_schedule", "make_schedule", "parse_schedule", "SCHEDULES",
    # the table
    "SOLVERS", "FITTED_PREFIX", "is_fitted", "TORCHDIFFEQ_PREFIX", "TORCHDIFFEQ_WITHHELD", "solve", "get_solver", "solver_names", "register_solver", "withheld",
]

_LAST = "1 for a last step to 0"
_WARMUP = "O(h²) from its order-1/2 warm-up: 2 below error ~1e-6"  # measured: tests/measured_orders.py, benchmarks/RESULTS.md
_ETA0 = "eta=0"
SOLVERS: dict[str, Spec] = {spec.name: spec for spec in (
    Spec("euler", euler, ("flow",), 1, 1, "Euler; on the denoiser form it is DDIM (arXiv 2010.02502)"),
    Spec("midpoint", midpoint, ("flow",), 2, 2, "explicit midpoint rule", nfe_note=_LAST),
    Spec("heun", heun, ("flow",), 2, 2, "Heun as in EDM, Karras et al., arXiv 2206.00364, Alg. 1", nfe_note=_LAST),
    Spec("rk3", rk3, ("flow",), 3, 3, "Kutta's third-order method (1901)", nfe_note=_LAST),
    Spec("rk4", rk4, ("flow",), 4, 4, "classic Runge-Kutta", nfe_note=_LAST),
    Spec("rk4-38", rk4_38, ("flow",), 4, 4, "Kutta's 3/8 rule (torchdiffeq's rk4)", nfe_note=_LAST),
    Spec("lms", lms, ("flow",), 3, 1, "Adams-Bashforth on a non-uniform grid, k-diffusion's sample_lms",
         order_note="order=4: 3.0-3.7 to 128 steps, 2 below error ~1e-8; warmup=rk4: 4",
         nfe_note="+3 per RK4 warm-up step"),
    Spec("dpm2", dpm2, ("denoiser",), 2, 2, "DPM-Solver-2, Lu et al., arXiv 2206.00927", nfe_note=_LAST),
    Spec("dpmpp-2m", dpmpp_2m, ("denoiser",), 2, 1, "DPM-Solver++(2M), Lu et al., arXiv 2211.01095"),
    Spec("dpmpp-3m", dpmpp_3m, ("denoiser",), 3, 1, "DPM-Solver++(3M), arXiv 2211.01095 (its quadratic integrated exactly)",
         order_note=_WARMUP),
    Spec("dpmpp-2s", dpmpp_2s, ("denoiser",), 2, 2, "DPM-Solver++(2S), arXiv 2211.01095, Alg. 1", nfe_note=_LAST),
    Spec("unipc-bh1", unipc_bh1, ("denoiser",), 3, 1, "UniPC, Zhao et al., arXiv 2302.04867, B(h) = h", order_note="order=N: N + 1"),
    Spec("unipc-bh2", unipc_bh2, ("denoiser",), 3, 1, "UniPC, arXiv 2302.04867, B(h) = e^h - 1", order_note="order=N: N + 1"),
    Spec("deis", deis, ("denoiser",), 3, 1, "DEIS, Zhang & Chen, arXiv 2204.13902 (AB in log sigma)", order_note="order=N: N; " + _WARMUP),
    Spec("ipndm", ipndm, ("denoiser",), 2, 1, "iPNDM, arXiv 2204.13902 (constant AB weights)",
         order_note="its constant weights are exact only on uniform grids"),
    Spec("dpm-fast", dpm_fast, ("denoiser",), 2, 1, "DPM-Solver-fast, Lu et al., arXiv 2206.00927, Alg. 4", grid="ends",
         order_note="3 when the budget is 2 mod 3; the others end with an order-1 step",
         nfe_note="K in all for --steps K, on its own steps uniform in lambda"),
    Spec("dpm-adaptive", dpm_adaptive, ("denoiser",), 3, 3, "DPM-Solver-adaptive, arXiv 2206.00927, Alg. 5", adaptive=True,
         order_note="embedded 2; order=2: 2, embedded 1", nfe_note="per attempted step, order=2: 2; per-sample control"),
    Spec("dopri5", dopri5, ("flow",), 5, 6, "Dormand & Prince (1980)", adaptive=True, order_note="embedded 4",
         nfe_note="per attempted step, per-sample control"),
    Spec("euler-maruyama", euler_maruyama, ("sde",), None, 1, "reverse SDE, Song et al., arXiv 2011.13456", stochastic=True,
         order_note="weak 1, strong 0.5, Kloeden & Platen; not measured here"),
    Spec("pc", pc, ("transition",), None, 2, "predictor-corrector, arXiv 2011.13456, Alg. 4/5", stochastic=True,
         order_note="weak 1, not measured here", nfe_note="1 + corrector_steps"),
    Spec("edm-sde", edm_sde, ("denoiser", "gaussian"), 2, 2, "EDM's stochastic sampler, arXiv 2206.00364, Alg. 2", stochastic=True,
         order_note="s_churn=0, where it is heun; between churns otherwise", nfe_note=_LAST),
    Spec("restart", restart, ("denoiser", "gaussian"), 2, None, "Restart sampling, Xu et al., arXiv 2306.14878: Heun, k forward jumps t_min -> t_max",
         stochastic=True, order_note="between restarts; k=0: heun",
         nfe_note="2 per step (1 for a last step to 0) + 2 k restart_intervals in all: 2K - 1 + 12 by default"),
    Spec("euler-ancestral", euler_ancestral, ("denoiser", "gaussian"), 1, 1,
         "ancestral Euler = DDIM(eta), arXiv 2010.02502; k-diffusion's sample_euler_ancestral", stochastic=True,
         order_note=_ETA0, weak_order=1),
    Spec("dpm2-ancestral", dpm2_ancestral, ("denoiser", "gaussian"), 2, 2,
         "DPM-Solver-2 (arXiv 2206.00927) with ancestral noise; k-diffusion's sample_dpm_2_ancestral", stochastic=True,
         order_note=_ETA0, weak_order=2, nfe_note=_LAST),
    Spec("dpmpp-sde", dpmpp_sde, ("denoiser", "gaussian"), 2, 2, "DPM-Solver++ SDE (arXiv 2211.01095); k-diffusion's sample_dpmpp_sde",
         stochastic=True, order_note=_ETA0, weak_order=2, nfe_note=_LAST),
    Spec("dpmpp-2m-sde", dpmpp_2m_sde, ("denoiser", "gaussian"), 2, 1,
         "DPM-Solver++(2M) SDE (arXiv 2211.01095); k-diffusion's sample_dpmpp_2m_sde", stochastic=True, order_note=_ETA0, weak_order=2),
    Spec("dpmpp-3m-sde", dpmpp_3m_sde, ("denoiser", "gaussian"), 3, 1,
         "DPM-Solver++(3M) SDE (arXiv 2211.01095); k-diffusion's sample_dpmpp_3m_sde with the exact -2 phi_3 weight", stochastic=True,
         order_note="eta=0: = dpmpp-3m", weak_order=2),
    Spec("ddpm", ddpm_ancestral, ("transition",), None, 1, "ancestral sampling, DDPM, arXiv 2006.11239, Alg. 2", stochastic=True,
         order_note="weak 1, not measured here"),
    Spec("ald", annealed_langevin, ("score",), None, None, "annealed Langevin, NCSN arXiv 1907.05600 / NCSNv2 arXiv 2006.09011",
         stochastic=True, grid="levels", nfe_note="steps_per_level per level, +1 final denoising"),
    Spec("langevin", langevin, ("score",), None, None, "plain Langevin, NCSN arXiv 1907.05600, eq. 2", stochastic=True,
         nfe_note="n_steps in all"),
    Spec("births", births, ("births",), 2, 2, "births and deaths, GenPhys arXiv 2304.02637", stochastic=True,
         order_note="of x, method=heun; euler: 1", nfe_note="method=heun; euler: 1"),
)}
"""The solver table (``torchdiffeq:METHOD`` rows follow, one per installed method)."""

for _spec in [s for s in SOLVERS.values() if fittable(s)]:  # fitted:BASE rows (solvers.fitted; their fit: physgen.fitted_solver)
    SOLVERS[FITTED_PREFIX + _spec.name] = fitted_spec(_spec)

_TORCHDIFFEQ_CLAIMS = {  # method: (order, order note, NFE per step, NFE note), measured as every row's (tests/measured_orders.py)
    "dopri8": (8, "embedded 7", 13, None), "dopri5": (5, "embedded 4", 6, None), "bosh3": (3, "embedded 2", 3, None),
    "fehlberg2": (2, "embedded 1", 2, None), "adaptive_heun": (2, "embedded 1", 1, None),
    "euler": (1, "", 1, ""), "midpoint": (2, "", 2, _LAST), "heun2": (2, "", 2, _LAST), "heun3": (3, "", 3, _LAST),
    "rk4": (4, "", 4, _LAST),
    # variable-order Adams-Bashforth-Moulton with the constant coefficients of a uniform grid
    "implicit_adams": (2, "constant Adams weights: 2 on graded grids", None, "1 + 1 to 4 corrector iterations; RK4 on the first 3 steps"),
    "fixed_adams": (2, "constant Adams weights: 2 on graded grids", None, "1 + 1 to 4 corrector iterations; RK4 on the first 3 steps"),
}
for _m in torchdiffeq_methods():
    _fixed = _m in TORCHDIFFEQ_FIXED_GRID
    _order, _order_note, _nfe, _nfe_note = _TORCHDIFFEQ_CLAIMS.get(_m, (None, "not measured", None, "not measured"))
    SOLVERS[TORCHDIFFEQ_PREFIX + _m] = Spec(
        TORCHDIFFEQ_PREFIX + _m, make_torchdiffeq(_m), ("flow",), _order, _nfe, "torchdiffeq, Chen et al., arXiv 1806.07366",
        adaptive=not _fixed, order_note=_order_note,
        nfe_note=_nfe_note if _fixed else "per attempted step, one step size for the batch")


def register_solver(spec: Spec, *, overwrite: bool = False) -> Spec:
    """Add a row to :data:`SOLVERS` (returns ``spec``)."""
    if not isinstance(spec, Spec):
        raise TypeError(f"register_solver takes a solvers.Spec, got {type(spec).__name__}")
    if spec.name in SOLVERS and not overwrite:
        raise ValueError(f"solver {spec.name!r} is already registered (pass overwrite=True to replace it)")
    SOLVERS[spec.name] = spec
    return spec


def solver_names() -> list[str]:
    """Every valid ``method`` name, in table order."""
    return list(SOLVERS)


def get_solver(name: str) -> Spec:
    """The table row called ``name``; ``ValueError`` listing the valid names if there is none
    (or saying why, for a torchdiffeq method that is withheld)."""
    try:
        return SOLVERS[name]
    except (KeyError, TypeError):
        why = withheld(name)
        if why:
            raise ValueError(why) from None
        raise ValueError(f"unknown solver {name!r}; valid: {', '.join(solver_names())}") from None


def withheld(name: str) -> Optional[str]:
    """``"solver NAME is not offered: REASON"`` for a torchdiffeq method left out of the table
    (:data:`TORCHDIFFEQ_WITHHELD`), else ``None``."""
    name = str(name)
    reason = TORCHDIFFEQ_WITHHELD.get(name[len(TORCHDIFFEQ_PREFIX):]) if name.startswith(TORCHDIFFEQ_PREFIX) else None
    return f"solver {name!r} is not offered: {reason}" if reason else None


def solve(target, x, schedule, method: str = "heun", **options) -> Solution:
    """Integrate with the solver called ``method``, handing it ``target`` (the object its
    first need names: :mod:`solvers.offers`); options are checked against its own list."""
    spec = get_solver(method)
    require(target, spec.target, method)
    return spec.fn(target, x, schedule, **options)
