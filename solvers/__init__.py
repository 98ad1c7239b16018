"""Batched ODE/SDE solvers for generative flows (physics-agnostic).

ONE table, :data:`SOLVERS`: name -> :class:`~solvers.spec.Spec` (the function, what it
needs, its order, its NFE per step, whether it is adaptive or stochastic, and its typed
options).  ``solve(target, x, schedule, method=NAME, **options)`` works for every name in
the table, given the object that name needs (a flow, a denoiser-form flow, an SDE, a
Gaussian transition, a score, a births flow: :mod:`solvers.spec`).  Every fixed-step method
is a step rule run by the one step loop, :func:`solvers._loop.run_steps`; a new solver is
one function and one row (:func:`register_solver` for solvers defined elsewhere).
"""
from __future__ import annotations

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
from .spec import NEEDS, Option, OptionError, Spec
from .stochastic import ddpm_ancestral, edm_sde, pc
from .unipc import unipc_bh1, unipc_bh2
from .torchdiffeq_adapter import TORCHDIFFEQ_FIXED_GRID, TORCHDIFFEQ_PREFIX, make_torchdiffeq, torchdiffeq_methods, torchdiffeq_solver
from ._loop import require

__all__ = [
    # contract
    "Flow", "DenoiserFlow", "SDE", "GaussianTransition", "SolverStats", "Solution", "Counted", "NoiseFn",
    "DenoiserFormError", "SolverError", "as_schedule", "scale_batch", "default_noise", "Spec", "Option", "OptionError", "NEEDS",
    # solvers
    "euler", "midpoint", "heun", "rk3", "rk4", "rk4_38", "explicit_rk", "ButcherTableau", "TABLEAUX",
    "lms", "adams_bashforth_coefficients", "dpm2", "dpmpp_2m", "dpmpp_3m", "dpmpp_2s", "unipc_bh1", "unipc_bh2", "deis", "ipndm",
    "dpm_fast", "dpm_adaptive", "dopri5", "torchdiffeq_solver",
    "torchdiffeq_methods", "euler_maruyama", "births", "systematic_resample", "effective_sample_size",
    "annealed_langevin", "langevin", "choose_eps", "variance_ratio", "pc", "edm_sde", "ddpm_ancestral",
    # schedules
    "edm_schedule", "uniform_schedule", "log_uniform_schedule", "polyexponential_schedule", "vp_time_schedule",
    "ve_time_schedule", "make_schedule", "parse_schedule", "SCHEDULES",
    # the table
    "SOLVERS", "TORCHDIFFEQ_PREFIX", "solve", "get_solver", "solver_names", "register_solver",
]

_LAST = "; 1 for a last step to 0"

SOLVERS: dict[str, Spec] = {spec.name: spec for spec in (
    Spec("euler", euler, ("flow",), "1", "1", "Euler; on the denoiser form it is DDIM (arXiv 2010.02502)"),
    Spec("midpoint", midpoint, ("flow",), "2", "2" + _LAST, "explicit midpoint rule"),
    Spec("heun", heun, ("flow",), "2", "2" + _LAST, "Heun as in EDM, Karras et al., arXiv 2206.00364, Alg. 1"),
    Spec("rk3", rk3, ("flow",), "3", "3" + _LAST, "Kutta's third-order method (1901)"),
    Spec("rk4", rk4, ("flow",), "4", "4" + _LAST, "classic Runge-Kutta"),
    Spec("rk4-38", rk4_38, ("flow",), "4", "4" + _LAST, "Kutta's 3/8 rule (torchdiffeq's rk4)"),
    Spec("lms", lms, ("flow",), "order (2 with the default warm-up)", "1 (+3 per RK4 warm-up step)",
         "Adams-Bashforth on a non-uniform grid, k-diffusion's sample_lms"),
    Spec("dpm2", dpm2, ("denoiser",), "2", "2" + _LAST, "DPM-Solver-2, Lu et al., arXiv 2206.00927"),
    Spec("dpmpp-2m", dpmpp_2m, ("denoiser",), "2", "1", "DPM-Solver++(2M), Lu et al., arXiv 2211.01095"),
    Spec("dpmpp-3m", dpmpp_3m, ("denoiser",), "3", "1", "DPM-Solver++(3M), arXiv 2211.01095 (its quadratic integrated exactly)"),
    Spec("dpmpp-2s", dpmpp_2s, ("denoiser",), "2", "2" + _LAST, "DPM-Solver++(2S), arXiv 2211.01095, Alg. 1"),
    Spec("unipc-bh1", unipc_bh1, ("denoiser",), "order + 1 (3 by default)", "1", "UniPC, Zhao et al., arXiv 2302.04867, B(h) = h"),
    Spec("unipc-bh2", unipc_bh2, ("denoiser",), "order + 1 (3 by default)", "1", "UniPC, arXiv 2302.04867, B(h) = e^h - 1"),
    Spec("deis", deis, ("denoiser",), "order (3 by default)", "1", "DEIS, Zhang & Chen, arXiv 2204.13902 (AB in log sigma)"),
    Spec("ipndm", ipndm, ("denoiser",), "2 on graded grids, order on uniform ones", "1", "iPNDM, arXiv 2204.13902 (constant AB weights)"),
    Spec("dpm-fast", dpm_fast, ("denoiser",), "3, lower at its last steps", "K in all for --steps K (own steps uniform in lambda)",
         "DPM-Solver-fast, Lu et al., arXiv 2206.00927, Alg. 4", grid="ends"),
    Spec("dpm-adaptive", dpm_adaptive, ("denoiser",), "3(2); order=2: 2(1)", "order per attempted step, per-sample control",
         "DPM-Solver-adaptive, arXiv 2206.00927, Alg. 5", adaptive=True),
    Spec("dopri5", dopri5, ("flow",), "5(4)", "6 per attempted step, per-sample control", "Dormand & Prince (1980)", adaptive=True),
    Spec("euler-maruyama", euler_maruyama, ("sde",), "0.5 strong, 1 weak", "1", "reverse SDE, Song et al., arXiv 2011.13456",
         stochastic=True),
    Spec("pc", pc, ("transition",), "1 weak", "1 + corrector_steps", "predictor-corrector, arXiv 2011.13456, Alg. 4/5", stochastic=True),
    Spec("edm-sde", edm_sde, ("denoiser", "gaussian"), "2 (between churns)", "2" + _LAST, "EDM's stochastic sampler, arXiv 2206.00364, Alg. 2",
         stochastic=True),
    Spec("euler-ancestral", euler_ancestral, ("denoiser", "gaussian"), "1 (eta=0); weak 1 on Gaussian data", "1",
         "ancestral Euler = DDIM(eta), arXiv 2010.02502; k-diffusion's sample_euler_ancestral", stochastic=True),
    Spec("dpm2-ancestral", dpm2_ancestral, ("denoiser", "gaussian"), "2 (eta=0); weak 2 on Gaussian data", "2" + _LAST,
         "DPM-Solver-2 (arXiv 2206.00927) with ancestral noise; k-diffusion's sample_dpm_2_ancestral", stochastic=True),
    Spec("dpmpp-sde", dpmpp_sde, ("denoiser", "gaussian"), "2 (eta=0); weak 2 on Gaussian data", "2" + _LAST,
         "DPM-Solver++ SDE (arXiv 2211.01095); k-diffusion's sample_dpmpp_sde", stochastic=True),
    Spec("dpmpp-2m-sde", dpmpp_2m_sde, ("denoiser", "gaussian"), "2 (eta=0); weak 2 on Gaussian data", "1",
         "DPM-Solver++(2M) SDE (arXiv 2211.01095); k-diffusion's sample_dpmpp_2m_sde", stochastic=True),
    Spec("dpmpp-3m-sde", dpmpp_3m_sde, ("denoiser", "gaussian"), "3 (eta=0; = dpmpp-3m); weak 2 on Gaussian data", "1",
         "DPM-Solver++(3M) SDE (arXiv 2211.01095); k-diffusion's sample_dpmpp_3m_sde with the exact -2 phi_3 weight", stochastic=True),
    Spec("ddpm", ddpm_ancestral, ("transition",), "1 weak", "1", "ancestral sampling, DDPM, arXiv 2006.11239, Alg. 2", stochastic=True),
    Spec("ald", annealed_langevin, ("score",), "-", "steps_per_level per level (+1 final denoising)",
         "annealed Langevin, NCSN arXiv 1907.05600 / NCSNv2 arXiv 2006.09011", stochastic=True, grid="levels"),
    Spec("langevin", langevin, ("score",), "-", "n_steps in all", "plain Langevin, NCSN arXiv 1907.05600, eq. 2", stochastic=True),
    Spec("births", births, ("births",), "2 (heun), 1 (euler)", "2 (heun), 1 (euler)", "births and deaths, GenPhys arXiv 2304.02637",
         stochastic=True),
)}
"""The solver table (``torchdiffeq:METHOD`` rows follow, one per installed method)."""

_TORCHDIFFEQ_ORDER = {"dopri8": "8(7)", "dopri5": "5(4)", "bosh3": "3(2)", "fehlberg2": "2(1)", "adaptive_heun": "2(1)", "euler": "1",
                      "midpoint": "2", "heun2": "2", "heun3": "3", "rk4": "4", "explicit_adams": "4", "implicit_adams": "4",
                      "fixed_adams": "4"}
for _m in torchdiffeq_methods():
    _fixed = _m in TORCHDIFFEQ_FIXED_GRID
    SOLVERS[TORCHDIFFEQ_PREFIX + _m] = Spec(
        TORCHDIFFEQ_PREFIX + _m, make_torchdiffeq(_m), ("flow",), _TORCHDIFFEQ_ORDER.get(_m, "?"),
        "the method's stages per step" + (_LAST if _fixed else "; adaptive, one step size for the batch"),
        "torchdiffeq, Chen et al., arXiv 1806.07366", adaptive=not _fixed)


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
    """The table row called ``name``; ``ValueError`` listing the valid names if there is none."""
    try:
        return SOLVERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown solver {name!r}; valid: {', '.join(solver_names())}") from None


def solve(target, x, schedule, method: str = "heun", **options) -> Solution:
    """Integrate with the solver called ``method``, handing it ``target`` (the object its
    first need names: :mod:`solvers.spec`); options are checked against its own list."""
    spec = get_solver(method)
    require(target, spec.target, method)
    return spec.fn(target, x, schedule, **options)
