"""Linear multistep (Adams-Bashforth) on a non-uniform schedule, k-diffusion's ``lms``.

With the derivatives ``d_{i-j} = v(x_{i-j}, s_{i-j})`` of the last ``p`` points, the
Adams-Bashforth step integrates the Lagrange polynomial through them::

    x_{i+1} = x_i + sum_{j=0}^{p-1} c_{ij} d_{i-j},
    c_{ij}  = int_{s_i}^{s_{i+1}} prod_{m != j} (tau - s_{i-m}) / (s_{i-j} - s_{i-m}) dtau

(Adams-Bashforth for variable steps: Hairer, Norsett & Wanner, Solving ODEs I, Sec. III.5;
used for diffusion sampling by Karras et al., arXiv 2206.00364, and in k-diffusion).  The
coefficients only depend on the schedule, so they are all computed on the host before the
loop, exactly, with Gauss-Legendre quadrature (exact for these polynomials of degree < p).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Callable, Sequence, Union

import numpy as np
from torch import Tensor

from ._common import check_batch, combine, fixed_stats, scale_table
from .base import CountedFlow, Solution, as_schedule
from .runge_kutta import RK4

__all__ = ["adams_bashforth_coefficients", "lms"]

_WARMUPS = ("lower-order", "rk4")


@lru_cache(maxsize=8)
def _gauss_legendre(n: int):
    return np.polynomial.legendre.leggauss(n)


def adams_bashforth_coefficients(nodes: Sequence[float], a: float, b: float) -> list[float]:
    """``c_j = int_a^b L_j(tau) dtau`` for the Lagrange basis ``L_j`` on ``nodes`` (newest first).

    ``b < a`` gives the signed integral, as a decreasing schedule needs.
    """
    p = len(nodes)
    gx, gw = _gauss_legendre(max(p, 1))
    tau = 0.5 * (b - a) * gx + 0.5 * (a + b)
    w = 0.5 * (b - a) * gw
    out = []
    for j in range(p):
        basis = np.ones_like(tau)
        for m in range(p):
            if m != j:
                basis *= (tau - nodes[m]) / (nodes[j] - nodes[m])
        out.append(float(np.dot(w, basis)))
    return out


def lms(
    flow: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    schedule: Union[Tensor, Sequence[float]],
    *,
    order: int = 4,
    warmup: str = "lower-order",
    return_trajectory: bool = False,
) -> Solution:
    """Linear multistep (Adams-Bashforth, order up to 4) on a non-uniform schedule.

    One NFE per step.  Startup: ``warmup="lower-order"`` (k-diffusion) ramps the order
    1, 2, ..., ``order`` over the first steps; its Euler first step has a local error
    ``O(h^2)`` that is not damped later, so the global order is at most 2 whatever
    ``order`` is.  ``warmup="rk4"`` takes the first ``order - 1`` steps with classic RK4
    (3 extra NFE each), which keeps the global order equal to ``order``.  A final step to
    ``s = 0`` is Euler.
    """
    check_batch(x, "lms")
    if isinstance(order, bool) or not isinstance(order, int) or not 1 <= order <= 4:
        raise ValueError(f"lms: order must be an integer in 1..4, got order={order!r}")
    if warmup not in _WARMUPS:
        raise ValueError(f"lms: unknown warmup {warmup!r}; valid: {', '.join(_WARMUPS)}")
    s = as_schedule(schedule)
    f = CountedFlow(flow)
    K = len(s) - 1
    last_euler = s[-1] == 0.0
    n_rk4 = min(order - 1, K - 1 if last_euler else K) if warmup == "rk4" else 0

    # Host-side plan: per step, either ("rk4", scales) or ("ab", coefficients).
    values, plan = [], []
    for i in range(K):
        values.append(s[i])
        h = s[i + 1] - s[i]
        if i < n_rk4:
            values += [s[i] + 0.5 * h, s[i] + 0.5 * h, s[i + 1]]
            plan.append(("rk4", h))
        elif last_euler and i == K - 1:
            plan.append(("ab", [h]))
        else:
            p = min(order, i + 1)
            plan.append(("ab", adams_bashforth_coefficients(s[i::-1][:p], s[i], s[i + 1])))
    table = scale_table(values, x)

    traj = [x] if return_trajectory else None
    hist: list[Tensor] = []  # newest first
    row = 0
    for kind, data in plan:
        d = f(x, table[row])
        row += 1
        hist = [d] + hist[: order - 1]
        if kind == "rk4":
            ks = [d]
            for j in range(1, 4):
                ks.append(f(combine(x, ks, RK4.a[j], data), table[row]))
                row += 1
            x = combine(x, ks, RK4.b, data)
        else:
            x = combine(x, hist, data, 1.0)
        if traj is not None:
            traj.append(x)
    return Solution(x, fixed_stats(f.nfe, K, x.shape[0], traj))
