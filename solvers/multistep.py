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

from ._loop import StepRule, combine, run_steps
from .base import Solution
from .runge_kutta import RK4
from .spec import Option, takes

__all__ = ["adams_bashforth_coefficients", "lms", "LinearMultistep", "WARMUPS"]

WARMUPS = ("lower-order", "rk4")


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


class LinearMultistep(StepRule):
    """Adams-Bashforth on the derivatives ``d_{i-j}`` of the last ``order`` points (k-diffusion's ``lms``).

    Every step, the last one to ``s = 0`` included, is the Adams-Bashforth step of the
    current order ``min(order, i + 1)``: like k-diffusion's ``sample_lms``, the final step
    integrates the Lagrange polynomial through the newest derivatives from ``s_{K-1}`` to 0
    (it evaluates the flow at ``s_{K-1}``, never at 0), rather than taking the denoising
    Euler step of the other solvers.
    """

    name = "lms"
    own_final = True

    def __init__(self, order: int, warmup: str):
        self.order, self.warmup = order, warmup
        self.hist: list[Tensor] = []  # newest first

    def plan(self, s, i):
        K = len(s) - 1
        n_rk4 = min(self.order - 1, K - 1 if s[-1] == 0.0 else K) if self.warmup == "rk4" else 0
        h = s[i + 1] - s[i]
        if i < n_rk4:
            return [s[i], s[i] + 0.5 * h, s[i] + 0.5 * h, s[i + 1]], ("rk4", h)
        p = min(self.order, i + 1)
        return [s[i]], ("ab", adams_bashforth_coefficients(s[i::-1][:p], s[i], s[i + 1]))

    def step(self, ctx, x, i, at, coef):
        kind, data = coef
        d = ctx.f(x, at[0])
        self.hist = [d] + self.hist[: self.order - 1]
        if kind == "ab":
            return combine(x, self.hist, data, 1.0)
        ks = [d]
        for j in range(1, 4):
            ks.append(ctx.f(combine(x, ks, RK4.a[j], data), at[j]))
        return combine(x, ks, RK4.b, data)


@takes("lms", Option("order", int, 4, "Adams-Bashforth order", lo=1, hi=4),
       Option("warmup", str, "lower-order", "start-up: ramp the order (k-diffusion) or RK4 steps", choices=WARMUPS))
def lms(flow: Callable[[Tensor, Tensor], Tensor], x: Tensor, schedule: Union[Tensor, Sequence[float]], *,
        order: int, warmup: str, **loop) -> Solution:
    """Linear multistep (Adams-Bashforth, order up to 4) on a non-uniform schedule.

    One NFE per step.  Startup: ``warmup="lower-order"`` (k-diffusion) ramps the order
    1, 2, ..., ``order`` over the first steps; its Euler first step has a local error
    ``O(h^2)`` that is not damped later, so the global order is at most 2 whatever
    ``order`` is.  ``warmup="rk4"`` takes the first ``order - 1`` steps with classic RK4
    (3 extra NFE each), which keeps the global order equal to ``order``.  The last step,
    to ``s = 0`` included, is an Adams-Bashforth step (k-diffusion's rule; see
    :class:`LinearMultistep`).
    """
    return run_steps(LinearMultistep(order, warmup), flow, x, schedule, **loop)
