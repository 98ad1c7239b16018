"""One adapter from the solver interface to every ``torchdiffeq.odeint`` method.

torchdiffeq (Chen et al., arXiv 1806.07366) integrates ``dy/dt = func(t, y)`` with one
scalar ``t`` for the whole batch, so its adaptive methods choose one step size for all
samples (the error norm is taken over the whole batch); compare :func:`solvers.dopri5`.
Every method appears in the solver table as ``torchdiffeq:METHOD``, except the ones in
:data:`TORCHDIFFEQ_WITHHELD` (each with the measured reason).
"""
from __future__ import annotations

import importlib
from typing import Callable, Optional, Sequence, Union

import torch
import torchdiffeq
from torch import Tensor

from ._loop import check_batch, check_tolerances, scale_table, to_zero
from .base import Counted, Solution, SolverError, SolverStats, as_schedule
from .spec import Option, takes, tolerance

__all__ = ["torchdiffeq_solver", "torchdiffeq_methods", "TORCHDIFFEQ_FIXED_GRID", "TORCHDIFFEQ_PREFIX", "TORCHDIFFEQ_WITHHELD",
           "make_torchdiffeq"]

TORCHDIFFEQ_PREFIX = "torchdiffeq:"
TORCHDIFFEQ_FIXED_GRID = frozenset({"euler", "midpoint", "rk4", "heun2", "heun3", "explicit_adams", "implicit_adams", "fixed_adams"})
TORCHDIFFEQ_WITHHELD = {
    "scipy_solver": "it leaves the device (SciPy on the CPU)",
    "explicit_adams": "its error grows with the step count on the Gaussian probability-flow ODE (7.5e20 at 256 "
                      "log-uniform steps, 9.7e14 at 256 uniform ones, calling torchdiffeq directly): it raises the "
                      "Adams-Bashforth order up to 11, whose stability region is tiny, and uses a uniform grid's weights "
                      "on any grid; use torchdiffeq:implicit_adams (its Adams-Moulton corrector) or lms instead",
}
"""torchdiffeq methods not offered, with the reason (benchmarks/RESULTS.md, "Solver orders")."""
TORCHDIFFEQ_RTOL, TORCHDIFFEQ_ATOL = 1e-7, 1e-9  # torchdiffeq's own defaults (rtol/atol not given)
MAX_GRID_STEPS = 100_000  # step_size: every step costs the method's stages; a finer grid is a job for an adaptive method
_FALLBACK_METHODS = ("dopri8", "dopri5", "bosh3", "fehlberg2", "adaptive_heun", "euler", "midpoint", "heun2",
                     "heun3", "rk4", "explicit_adams", "implicit_adams", "fixed_adams")


def torchdiffeq_methods() -> tuple[str, ...]:
    """The method names the installed torchdiffeq accepts, less :data:`TORCHDIFFEQ_WITHHELD`."""
    try:  # private, the only list; the module by name: the attribute torchdiffeq._impl.odeint is the function
        methods = tuple(importlib.import_module("torchdiffeq._impl.odeint").SOLVERS)
    except (ImportError, AttributeError):
        methods = _FALLBACK_METHODS
    return tuple(m for m in methods if m not in TORCHDIFFEQ_WITHHELD)


class _Func(torch.nn.Module):
    """``func(t, y)`` for torchdiffeq: the scalar ``t`` (a 0-d device tensor) becomes the
    ``[B]`` scale tensor by a broadcast view (no sync); every call is one counted NFE."""

    def __init__(self, flow: Counted, batch: int, dtype: torch.dtype):
        super().__init__()
        self.flow, self.batch, self.dtype = flow, batch, dtype

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        return self.flow(y, t.to(self.dtype).expand(self.batch))


TORCHDIFFEQ_OPTIONS = (
    tolerance("rtol", None, "relative tolerance (adaptive methods; torchdiffeq's default 1e-7)", none_ok=True),
    tolerance("atol", None, "absolute tolerance (adaptive methods; torchdiffeq's default 1e-9)", none_ok=True),
    Option("step_size", float, None, "fixed-grid methods: step on this grid instead of the schedule", lo=0.0, lo_open=True, none_ok=True),
    Option("first_step", float, None, "adaptive methods: the first step", lo=0.0, lo_open=True, none_ok=True),
    Option("max_num_steps", int, None, "adaptive methods: step limit", lo=1, none_ok=True),
    Option("return_trajectory", bool, False, "states at every schedule point"),
)


def torchdiffeq_solver(flow: Callable[[Tensor, Tensor], Tensor], x: Tensor, schedule: Union[Tensor, Sequence[float]],
                       method: str = "dopri5", *, return_trajectory: bool = False, rtol: Optional[float] = None,
                       atol: Optional[float] = None, **options) -> Solution:
    """Solve with ``torchdiffeq.odeint(func, x, t, method=method, rtol=, atol=, options=options)``.

    ``t`` is the schedule (its positive part when it ends at 0; the step to ``s = 0`` is then
    the denoising step of :func:`solvers._loop.to_zero`, as in every solver here).
    ``options`` are torchdiffeq's method options (``step_size``, ``first_step``,
    ``max_num_steps``; ``None`` values are dropped).  Fixed-grid methods step on the schedule
    itself unless ``step_size`` is given.  NFE is counted at the field.  torchdiffeq reports
    no step counts for adaptive methods: ``stats.steps = 0`` there and
    ``stats.extra["steps_reported"]`` is ``False``.
    """
    check_batch(x, f"torchdiffeq:{method}")
    if method in TORCHDIFFEQ_WITHHELD:
        raise ValueError(f"torchdiffeq method {method!r} is not offered: {TORCHDIFFEQ_WITHHELD[method]}")
    if method not in torchdiffeq_methods():
        raise ValueError(f"unknown torchdiffeq method {method!r}; valid: {', '.join(torchdiffeq_methods())}")
    options = {k: v for k, v in options.items() if v is not None}
    if method not in TORCHDIFFEQ_FIXED_GRID:
        check_tolerances(f"torchdiffeq:{method}", TORCHDIFFEQ_RTOL if rtol is None else rtol, TORCHDIFFEQ_ATOL if atol is None else atol)
    s = as_schedule(schedule)
    f = Counted(flow)
    B = x.shape[0]
    last_euler = s[-1] == 0.0
    pts = s[:-1] if last_euler else s
    if "step_size" in options and len(pts) >= 2 and options["step_size"] > abs(pts[-1] - pts[0]):
        raise ValueError(f"torchdiffeq:{method}: step_size={options['step_size']:g} is longer than the span {pts[0]:g} -> {pts[-1]:g}; "
                         f"a fixed grid needs at least one step inside it")
    if "step_size" in options and len(pts) >= 2 and abs(pts[-1] - pts[0]) / options["step_size"] > MAX_GRID_STEPS:
        raise ValueError(f"torchdiffeq:{method}: step_size={options['step_size']:g} takes more than {MAX_GRID_STEPS} steps over the span "
                         f"{pts[0]:g} -> {pts[-1]:g} (every step costs the method's stages); use a larger step or an adaptive method")
    kw = {k: v for k, v in (("rtol", rtol), ("atol", atol)) if v is not None}
    traj = None
    if len(pts) >= 2:
        t = torch.tensor(pts, dtype=torch.float64).to(x.device)
        try:
            ys = torchdiffeq.odeint(_Func(f, B, x.dtype), x, t, method=method, options=dict(options) or None, **kw)
        except AssertionError as exc:  # torchdiffeq's step limit and underflow checks
            raise SolverError(f"torchdiffeq:{method} could not finish: {exc}; raise max_num_steps or loosen the tolerances") from None
        x = ys[-1]
        traj = ys if return_trajectory else None
    elif return_trajectory:
        traj = x[None]
    if last_euler:
        x = to_zero(f, x, scale_table([pts[-1]], x)[0], pts[-1])
        if traj is not None:
            traj = torch.cat([traj, x[None]])
    fixed = method in TORCHDIFFEQ_FIXED_GRID and "step_size" not in options and "grid_constructor" not in options
    steps = len(s) - 1 if fixed else (1 if last_euler else 0)
    stats = SolverStats(nfe=f.nfe, steps=steps, accepted=steps * B, rejected=0, trajectory=traj,
                        extra={"steps_reported": fixed, "method": method})
    return Solution(x, stats)


def make_torchdiffeq(method: str) -> Callable[..., Solution]:
    """The table's solver for ``torchdiffeq:METHOD`` (options typed like every other solver's)."""

    def solver(flow, x, schedule, **options) -> Solution:
        return torchdiffeq_solver(flow, x, schedule, method, **options)

    solver.__name__ = f"torchdiffeq_{method}"
    solver.__doc__ = f"torchdiffeq's {method!r} through :func:`torchdiffeq_solver`."
    return takes(TORCHDIFFEQ_PREFIX + method, *TORCHDIFFEQ_OPTIONS, base=())(solver)
