"""Explicit Runge-Kutta methods on a fixed schedule, all driven by one stepper.

For a step from ``s_i`` to ``s_{i+1}`` (``h = s_{i+1} - s_i``, negative when the schedule
decreases) and a Butcher tableau ``(c, A, b)``::

    k_j     = v(x_i + h * sum_{l<j} A[j][l] k_l,  s_i + c_j h)
    x_{i+1} = x_i + h * sum_j b_j k_j

A step whose end is ``s = 0`` is the denoising Euler step of :func:`solvers._loop.to_zero`
(EDM, arXiv 2206.00364, Alg. 1), so no method ever evaluates the flow at ``s = 0``.  Each
method is its tableau; the step loop is :func:`solvers._loop.run_steps`.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

from torch import Tensor

from ._loop import Run, combine, run_steps
from .base import Solution
from .spec import takes

__all__ = [
    "ButcherTableau",
    "EULER",
    "MIDPOINT",
    "HEUN",
    "RK3",
    "RK4",
    "RK4_38",
    "TABLEAUX",
    "rk_step",
    "rk_update",
    "explicit_rk",
    "euler",
    "midpoint",
    "heun",
    "rk3",
    "rk4",
    "rk4_38",
]


@dataclass(frozen=True)
class ButcherTableau:
    """An explicit Runge-Kutta method: nodes ``c``, strictly lower-triangular ``a`` (row
    ``j`` holds its ``j`` coefficients) and weights ``b``; ``order`` is its classical order."""

    name: str
    order: int
    c: tuple
    a: tuple
    b: tuple

    def __post_init__(self):
        n = len(self.c)
        if len(self.a) != n or len(self.b) != n:
            raise ValueError(f"tableau {self.name}: c, a, b must have the same number of stages")
        for j, row in enumerate(self.a):
            if len(row) != j:
                raise ValueError(f"tableau {self.name}: row {j} of a must have {j} entries (explicit method)")
            if not math.isclose(sum(row), self.c[j], abs_tol=1e-12):
                raise ValueError(f"tableau {self.name}: row {j} of a does not sum to c[{j}]")
        if not math.isclose(sum(self.b), 1.0, abs_tol=1e-12):
            raise ValueError(f"tableau {self.name}: weights b must sum to 1")

    @property
    def stages(self) -> int:
        return len(self.c)


EULER = ButcherTableau("euler", 1, (0.0,), ((),), (1.0,))
MIDPOINT = ButcherTableau("midpoint", 2, (0.0, 0.5), ((), (0.5,)), (0.0, 1.0))
HEUN = ButcherTableau("heun", 2, (0.0, 1.0), ((), (1.0,)), (0.5, 0.5))
RK3 = ButcherTableau(  # Kutta (1901), third order
    "rk3", 3, (0.0, 0.5, 1.0), ((), (0.5,), (-1.0, 2.0)), (1 / 6, 2 / 3, 1 / 6)
)
RK4 = ButcherTableau(  # the classic fourth-order method
    "rk4", 4, (0.0, 0.5, 0.5, 1.0), ((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)), (1 / 6, 1 / 3, 1 / 3, 1 / 6)
)
RK4_38 = ButcherTableau(  # Kutta's 3/8 rule (torchdiffeq's fixed-grid "rk4")
    "rk4_38", 4, (0.0, 1 / 3, 2 / 3, 1.0), ((), (1 / 3,), (-1 / 3, 1.0), (1.0, -1.0, 1.0)), (1 / 8, 3 / 8, 3 / 8, 1 / 8)
)
TABLEAUX = {t.name: t for t in (EULER, MIDPOINT, HEUN, RK3, RK4, RK4_38)}


def stage_scale(s: float, s_next: float, c: float) -> float:
    """``s + c h`` of a stage with node ``c`` (exactly ``s`` and ``s_next`` at ``c = 0`` and ``c = 1``)."""
    return s if c == 0.0 else s_next if c == 1.0 else s + c * (s_next - s)


def rk_update(run: Run, x: Tensor, s: float, s_next: float, tableau: ButcherTableau, k1: Optional[Tensor] = None) -> Tensor:
    """``x + h Σ_j b_j k_j``, ``k_j = v(x + h Σ_{l<j} A[j][l] k_l, s + c_j h)``, ``h = s_next - s``
    (``k1``: the first stage when the caller has already evaluated it)."""
    h = s_next - s
    ks = [] if k1 is None else [k1]
    for a_j, c_j in zip(tableau.a[len(ks):], tableau.c[len(ks):]):
        ks.append(run.f(combine(x, ks, a_j, h), run.at(stage_scale(s, s_next, c_j))))
    return combine(x, ks, tableau.b, h)


def rk_step(run: Run, i: int, x: Tensor, state, *, tableau: ButcherTableau):
    """One explicit Runge-Kutta step ``s_i -> s_{i+1}`` with ``tableau`` (module docstring); no state."""
    return rk_update(run, x, run.s[i], run.s[i + 1], tableau), state


def explicit_rk(
    flow: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    schedule: Union[Tensor, Sequence[float]],
    tableau: ButcherTableau,
    **loop,
) -> Solution:
    """Integrate ``dx/ds = flow(x, s)`` over ``schedule`` with the explicit RK ``tableau``.

    NFE: ``stages`` per step, except a final step to ``s = 0``, which is the denoising
    Euler step (1 NFE).  ``loop``: the options of :func:`solvers._loop.run_steps`.
    """
    return run_steps(functools.partial(rk_step, tableau=tableau), flow, x, schedule, name=tableau.name, **loop)


def _make(tableau: ButcherTableau, reference: str) -> Callable[..., Solution]:
    def solver(flow, x, schedule, **loop) -> Solution:
        return explicit_rk(flow, x, schedule, tableau, **loop)

    solver.__name__ = solver.__qualname__ = tableau.name
    solver.__doc__ = reference
    return takes(tableau.name.replace("_", "-"))(solver)


euler = _make(EULER, """Euler's method (order 1, 1 NFE per step).

    ``x_{i+1} = x_i + h v(x_i, s_i)``, ``h = s_{i+1} - s_i``.  For the denoiser form this is
    DDIM (Song et al., arXiv 2010.02502; see EDM arXiv 2206.00364, Sec. 3).
    """)
midpoint = _make(MIDPOINT, """Explicit midpoint method (order 2, 2 NFE per step).

    ``k1 = v(x_i, s_i)``, ``x_{i+1} = x_i + h v(x_i + h/2 k1, s_i + h/2)``.  A final step to
    ``s = 0`` is Euler.
    """)
heun = _make(HEUN, """Heun's second-order method as in EDM (arXiv 2206.00364, Alg. 1).

    ``d = v(x_i, s_i)``, ``x' = x_i + h d``, ``x_{i+1} = x_i + h/2 (d + v(x', s_{i+1}))``;
    the final step to ``s = 0`` is Euler, so K steps ending at 0 cost ``2K - 1`` NFE.
    """)
rk3 = _make(RK3, """Kutta's third-order method (order 3, 3 NFE per step).

    ``k1 = v(x, s)``, ``k2 = v(x + h/2 k1, s + h/2)``, ``k3 = v(x - h k1 + 2h k2, s + h)``,
    ``x_{i+1} = x + h (k1 + 4 k2 + k3)/6`` (Kutta 1901; Hairer, Norsett & Wanner, Solving ODEs I,
    Sec. II.1).  A final step to ``s = 0`` is Euler.
    """)
rk4 = _make(RK4, """The classic fourth-order Runge-Kutta method (4 NFE per step).

    ``k1 = v(x, s)``, ``k2 = v(x + h/2 k1, s + h/2)``, ``k3 = v(x + h/2 k2, s + h/2)``,
    ``k4 = v(x + h k3, s + h)``, ``x_{i+1} = x + h (k1 + 2k2 + 2k3 + k4)/6``.  A final step to
    ``s = 0`` is Euler.
    """)
rk4_38 = _make(RK4_38, """Kutta's 3/8-rule fourth-order method (4 NFE per step).

    ``k1 = v(x, s)``, ``k2 = v(x + h/3 k1, s + h/3)``, ``k3 = v(x - h/3 k1 + h k2, s + 2h/3)``,
    ``k4 = v(x + h (k1 - k2 + k3), s + h)``, ``x_{i+1} = x + h (k1 + 3k2 + 3k3 + k4)/8``.
    It is torchdiffeq's fixed-grid ``rk4``, and is kept to cross-check it.  A final step to
    ``s = 0`` is Euler.
    """)
