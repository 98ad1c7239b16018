"""One adapter from the solver interface to every ``torchdiffeq.odeint`` method.

torchdiffeq (Chen et al., arXiv 1806.07366) integrates ``dy/dt = func(t, y)`` with one
scalar ``t`` for the whole batch, so its adaptive methods choose one step size for all
samples (the error norm is taken over the whole batch); compare :func:`solvers.dopri5`.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor

from ._common import check_batch, scale_table
from .base import CountedFlow, Solution, SolverStats, as_schedule

__all__ = ["torchdiffeq_solver", "torchdiffeq_methods", "TORCHDIFFEQ_FIXED_GRID"]

TORCHDIFFEQ_FIXED_GRID = frozenset({"euler", "midpoint", "rk4", "heun2", "heun3", "explicit_adams", "implicit_adams", "fixed_adams"})
_FALLBACK_METHODS = ("dopri8", "dopri5", "bosh3", "fehlberg2", "adaptive_heun", "euler", "midpoint", "heun2",
                     "heun3", "rk4", "explicit_adams", "implicit_adams", "fixed_adams", "scipy_solver")


def torchdiffeq_methods() -> tuple[str, ...]:
    """The method names the installed torchdiffeq accepts (empty if it is not installed)."""
    try:
        from torchdiffeq._impl.odeint import SOLVERS  # private, but the only list there is
    except ImportError:
        try:
            import torchdiffeq  # noqa: F401
        except ImportError:
            return ()
        return _FALLBACK_METHODS
    return tuple(SOLVERS)


class _Func(torch.nn.Module):
    """``func(t, y)`` for torchdiffeq: the scalar ``t`` (a 0-d device tensor) becomes the
    ``[B]`` scale tensor by a broadcast view (no sync); every call is one counted NFE."""

    def __init__(self, flow: CountedFlow, batch: int, dtype: torch.dtype):
        super().__init__()
        self.flow, self.batch, self.dtype = flow, batch, dtype

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        return self.flow(y, t.to(self.dtype).expand(self.batch))


def torchdiffeq_solver(
    flow: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    schedule: Union[Tensor, Sequence[float]],
    method: str = "dopri5",
    *,
    return_trajectory: bool = False,
    rtol: Optional[float] = None,
    atol: Optional[float] = None,
    **options,
) -> Solution:
    """Solve with ``torchdiffeq.odeint(func, x, t, method=method, rtol=, atol=, options=options)``.

    ``t`` is the schedule (its positive part when it ends at 0; the step to ``s = 0`` is
    then one Euler step, as in every solver here).  ``options`` are torchdiffeq's
    method options (``step_size``, ``first_step``, ``max_num_steps``, ...).  Fixed-grid
    methods step on the schedule itself unless ``step_size`` is given.  NFE is counted at
    the field.  torchdiffeq reports no step counts for adaptive methods:
    ``stats.steps = 0`` there and ``stats.extra["steps_reported"]`` is ``False``.
    """
    check_batch(x, f"torchdiffeq:{method}")
    methods = torchdiffeq_methods()
    if not methods:
        raise ImportError("torchdiffeq is not installed; pip install torchdiffeq")
    if method not in methods:
        raise ValueError(f"unknown torchdiffeq method {method!r}; valid: {', '.join(methods)}")
    from torchdiffeq import odeint

    s = as_schedule(schedule)
    f = CountedFlow(flow)
    B = x.shape[0]
    last_euler = s[-1] == 0.0
    pts = s[:-1] if last_euler else s
    kw = {}
    if rtol is not None:
        kw["rtol"] = rtol
    if atol is not None:
        kw["atol"] = atol

    traj = None
    if len(pts) >= 2:
        t = torch.tensor(pts, dtype=torch.float64).to(x.device)
        ys = odeint(_Func(f, B, x.dtype), x, t, method=method, options=dict(options) or None, **kw)
        x = ys[-1]
        traj = ys if return_trajectory else None
    elif return_trajectory:
        traj = x[None]
    if last_euler:
        x = x + (-pts[-1]) * f(x, scale_table([pts[-1]], x)[0])
        if traj is not None:
            traj = torch.cat([traj, x[None]])
    fixed = method in TORCHDIFFEQ_FIXED_GRID and "step_size" not in options and "grid_constructor" not in options
    K = len(s) - 1
    steps = K if fixed else (1 if last_euler else 0)
    stats = SolverStats(
        nfe=f.nfe,
        steps=steps,
        accepted=steps * B,
        rejected=0,
        trajectory=traj,
        extra={"steps_reported": fixed, "method": method},
    )
    return Solution(x, stats)
