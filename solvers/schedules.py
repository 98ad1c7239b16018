"""Scale schedules: pure functions returning 1-D float64 CPU tensors.

Every schedule here has ``steps`` points running from ``s_max`` down to ``s_min`` (both
endpoints hit exactly), optionally followed by a final ``0``.  ``steps`` therefore counts
scale *points*, as in EDM (arXiv 2206.00364, eq. 5): with ``append_zero=True`` it is also
the number of integration steps (the last one, to ``s = 0``, taken with Euler), so EDM's
"18 steps" Heun sampler is ``edm_schedule(18, ...)`` and costs 2*18 - 1 = 35 NFE.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from .spec import Option

__all__ = [
    "edm_schedule",
    "uniform_schedule",
    "log_uniform_schedule",
    "polyexponential_schedule",
    "vp_time_schedule",
    "ve_time_schedule",
    "make_schedule",
    "parse_schedule",
    "SCHEDULES",
    "SCHEDULE_KEYWORDS",
]

EDM_RHO = Option("rho", float, 7.0, "EDM's ρ: 1 is uniform, larger values crowd the points towards s_min", lo=0.1, hi=1000.0,
                 why="ρ → ∞ is the log-uniform schedule, which EDM's points approach within about 1.5% of each scale at ρ = 1000 "
                     "over EDM's range σ_max/σ_min = 4e4 (use log-uniform); ρ < 1 crowds them towards s_max, and below 0.1 "
                     "s_max^(1/ρ) overflows float64 for large scales")
POLY_RHO = Option("rho", float, 1.0, "the ramp's power: 1 is log-uniform, larger values move the points towards s_min", lo=0.1,
                  hi=10.0, why="the last points sit (1 - i/(steps-1))^ρ of the log-range above s_min: at ρ = 10 the last step of an "
                               "18-point grid is 5e-13 of it, and larger ρ merges the points into s_min in float64; ρ < 0.1 leaves "
                               "every point but the last within 0.1 of the log-range of s_max")
"""The keywords of the schedules that take one (``NAME:rho=R``), typed and bounded with the reason."""


def _check(steps: int, s_min: float, s_max: float, *, append_zero: bool, positive: bool = False,
           lo_name: str = "s_min", hi_name: str = "s_max") -> None:
    if isinstance(steps, bool) or not isinstance(steps, int):
        raise ValueError(f"steps must be an integer, got {steps!r}")
    if steps <= 0:
        raise ValueError(f"steps must be positive, got steps={steps}")
    if steps == 1 and not append_zero:
        raise ValueError("steps=1 without append_zero gives a single point; a schedule needs at least 2")
    for name, v in ((lo_name, s_min), (hi_name, s_max)):
        if not math.isfinite(v):
            raise ValueError(f"{name} must be finite, got {name}={v}")
    if s_min < 0:
        raise ValueError(f"{lo_name} must be >= 0, got {lo_name}={s_min}")
    if positive and s_min <= 0:
        raise ValueError(f"{lo_name} must be > 0 for a geometric schedule, got {lo_name}={s_min}")
    if s_min >= s_max:
        raise ValueError(f"{lo_name} must be < {hi_name}, got {lo_name}={s_min} >= {hi_name}={s_max}")


def _finish(values: list[float], s_min: float, s_max: float, append_zero: bool, what: str = "the schedule") -> Tensor:
    values[0] = float(s_max)  # hit the endpoints exactly, whatever the rounding of the formula
    values[-1] = float(s_min) if len(values) > 1 else float(s_max)
    bad = next((i for i, (a, b) in enumerate(zip(values, values[1:])) if not (math.isfinite(b) and a > b)), None)
    if bad is not None:  # float64 cannot separate the points (a keyword at the edge of its range, or too many steps)
        raise ValueError(f"{what} gives points {values[bad]!r} and {values[bad + 1]!r} at steps {bad} and {bad + 1} that do not "
                         f"strictly decrease in float64")
    if append_zero:
        values.append(0.0)
    return torch.tensor(values, dtype=torch.float64)


def _fractions(steps: int) -> list[float]:
    return [i / (steps - 1) for i in range(steps)] if steps > 1 else [0.0]


def edm_schedule(steps: int, s_min: float, s_max: float, rho: float = 7.0, append_zero: bool = True) -> Tensor:
    """EDM's rho-schedule (arXiv 2206.00364, eq. 5).

    ``s_i = (s_max^{1/rho} + i/(steps-1) (s_min^{1/rho} - s_max^{1/rho}))^rho`` for
    ``i = 0..steps-1``, then ``0`` when ``append_zero``.  ``rho = 1`` is uniform; large
    ``rho`` concentrates points near ``s_min``.
    """
    _check(steps, s_min, s_max, append_zero=append_zero)
    rho = EDM_RHO.parse(rho, "schedule 'edm'")
    try:
        a, b = s_max ** (1.0 / rho), s_min ** (1.0 / rho)
        values = [(a + f * (b - a)) ** rho for f in _fractions(steps)]
    except OverflowError:
        raise ValueError(f"schedule 'edm' with rho={rho:g}: s_max^(1/rho) = {s_max:g}^{1 / rho:g} overflows float64; take a larger rho") from None
    return _finish(values, s_min, s_max, append_zero, f"schedule 'edm' with rho={rho:g}")


def uniform_schedule(steps: int, s_min: float, s_max: float, append_zero: bool = False) -> Tensor:
    """``steps`` points equally spaced from ``s_max`` to ``s_min`` (then ``0`` if asked)."""
    _check(steps, s_min, s_max, append_zero=append_zero)
    return _finish([s_max + f * (s_min - s_max) for f in _fractions(steps)], s_min, s_max, append_zero)


def log_uniform_schedule(steps: int, s_min: float, s_max: float, append_zero: bool = False) -> Tensor:
    """``steps`` points equally spaced in ``log s`` (geometric) from ``s_max`` to ``s_min``."""
    _check(steps, s_min, s_max, append_zero=append_zero, positive=True)
    la, lb = math.log(s_max), math.log(s_min)
    return _finish([math.exp(la + f * (lb - la)) for f in _fractions(steps)], s_min, s_max, append_zero)


def polyexponential_schedule(steps: int, s_min: float, s_max: float, rho: float = 1.0, append_zero: bool = False) -> Tensor:
    """k-diffusion's ``get_sigmas_polyexponential``: a polynomial ramp in ``log s``,

        log s_i = log s_min + (1 - i/(steps-1))^rho (log s_max - log s_min),   i = 0..steps-1.

    ``rho = 1`` (k-diffusion's default) is :func:`log_uniform_schedule`; ``rho > 1`` moves
    points towards ``s_min``, ``rho < 1`` towards ``s_max``.
    """
    _check(steps, s_min, s_max, append_zero=append_zero, positive=True)
    rho = POLY_RHO.parse(rho, "schedule 'polyexponential'")
    la, lb = math.log(s_max), math.log(s_min)
    values = [math.exp(lb + (1.0 - f) ** rho * (la - lb)) for f in _fractions(steps)]
    return _finish(values, s_min, s_max, append_zero, f"schedule 'polyexponential' with rho={rho:g}")


def vp_time_schedule(steps: int, t_eps: float = 1e-3, t_max: float = 1.0, append_zero: bool = False) -> Tensor:
    """VP (DDPM / score-SDE) time grid: ``steps`` points uniform in ``t`` from ``t_max`` to ``t_eps``.

    Song et al. (arXiv 2011.13456) integrate the VP SDE/ODE from ``t = 1`` to ``t = eps``
    (``1e-3`` for sampling, ``1e-5`` for likelihoods) rather than to 0.
    """
    _check(steps, t_eps, t_max, append_zero=append_zero, lo_name="t_eps", hi_name="t_max")
    return uniform_schedule(steps, t_eps, t_max, append_zero=append_zero)


def ve_time_schedule(steps: int, sigma_min: float, sigma_max: float, append_zero: bool = False) -> Tensor:
    """VE (SMLD) grid: uniform in SMLD time ``t`` with ``sigma(t) = sigma_min (sigma_max/sigma_min)^t``.

    Uniform ``t`` from 1 to 0 is a geometric sequence of ``sigma`` (arXiv 2011.13456, 1907.05600).
    """
    _check(steps, sigma_min, sigma_max, append_zero=append_zero, positive=True,
           lo_name="sigma_min", hi_name="sigma_max")
    return log_uniform_schedule(steps, sigma_min, sigma_max, append_zero=append_zero)


SCHEDULES: dict[str, Callable[..., Tensor]] = {
    "edm": edm_schedule,
    "uniform": uniform_schedule,
    "log-uniform": log_uniform_schedule,
    "polyexponential": polyexponential_schedule,
    "vp-time": lambda steps, s_min, s_max, **kw: vp_time_schedule(steps, t_eps=s_min, t_max=s_max, **kw),
    "ve-time": lambda steps, s_min, s_max, **kw: ve_time_schedule(steps, sigma_min=s_min, sigma_max=s_max, **kw),
}
SCHEDULE_KEYWORDS: dict[str, tuple] = {"edm": (EDM_RHO,), "polyexponential": (POLY_RHO,)}
"""The keywords ``NAME:KEY=VALUE`` of each schedule (none for the others)."""


def make_schedule(name: str, steps: int, s_min: float, s_max: float, **kw) -> Tensor:
    """Build the schedule called ``name`` (one of :data:`SCHEDULES`); for ``vp-time``,
    ``s_min``/``s_max`` are ``t_eps``/``t_max``, for ``ve-time`` ``sigma_min``/``sigma_max``."""
    try:
        fn = SCHEDULES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown schedule {name!r}; valid: {', '.join(SCHEDULES)}") from None
    return fn(steps, s_min, s_max, **kw)


def parse_schedule(spec: str) -> tuple[str, dict]:
    """``"NAME"`` or ``"NAME:KEY=VALUE[,KEY=VALUE]"`` (e.g. ``polyexponential:rho=2``) as
    ``(NAME, {KEY: float})``; ``ValueError`` naming a malformed item, an unknown name, a
    keyword the schedule does not take, a keyword given twice or a value out of its range
    (:data:`SCHEDULE_KEYWORDS`, with the reason)."""
    name, _, rest = str(spec).partition(":")
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; valid: {', '.join(SCHEDULES)}")
    takes = {o.name: o for o in SCHEDULE_KEYWORDS.get(name, ())}
    kw = {}
    for item in filter(None, (t.strip() for t in rest.split(","))):
        key, sep, value = (v.strip() for v in item.partition("="))
        if not sep or key not in takes:
            raise ValueError(f"schedule {name!r} takes {', '.join(f'{k}=VALUE' for k in takes) or 'no options'}; got {item!r}")
        if key in kw:
            raise ValueError(f"schedule {name!r}: {key} is given twice ({spec!r}); give it once")
        kw[key] = takes[key].parse(value, f"schedule {name!r}")
    return name, kw
