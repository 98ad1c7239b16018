"""Linear multistep (Adams-Bashforth) on a non-uniform schedule, k-diffusion's ``lms``.

With the derivatives ``d_{i-j} = v(x_{i-j}, s_{i-j})`` of the last ``p`` points, the
Adams-Bashforth step integrates the Lagrange polynomial through them::

    x_{i+1} = x_i + sum_{j=0}^{p-1} c_{ij} d_{i-j},
    c_{ij}  = int_{s_i}^{s_{i+1}} prod_{m != j} (tau - s_{i-m}) / (s_{i-j} - s_{i-m}) dtau

(Adams-Bashforth for variable steps: Hairer, Norsett & Wanner, Solving ODEs I, Sec. III.5;
used for diffusion sampling by Karras et al., arXiv 2206.00364, and in k-diffusion).  The
coefficients only depend on the schedule, so they are computed on the host (float64), exactly, with Gauss-Legendre quadrature (exact for these polynomials of degree < p).
"""
from __future__ import annotations

import functools
import math
from functools import lru_cache
from typing import Callable, Sequence, Union

import numpy as np
from torch import Tensor

from ._loop import Run, combine, run_steps
from .base import Solution
from .dpm import denoiser_scales
from .expint import exp_moments, lagrange_power_basis, multistep_order
from .runge_kutta import RK4, rk_update
from .spec import Option, takes

__all__ = ["adams_bashforth_coefficients", "lms", "lms_step", "eps_multistep_step", "WARMUPS", "deis", "ipndm", "deis_coefficients",
           "IPNDM_COEFFICIENTS"]

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


def lms_step(run: Run, i: int, x: Tensor, history: tuple, *, order: int, warmup: str):
    """Adams-Bashforth from ``s_i`` to ``s_{i+1}`` on the derivatives of the last ``p = min(order, i + 1)``
    points (k-diffusion's ``lms``; module docstring), ``history``: the previous derivatives, newest first.

    Every step, the last one to ``s = 0`` included, is the Adams-Bashforth step of the current
    order: like k-diffusion's ``sample_lms``, the final step integrates the Lagrange polynomial
    through the newest derivatives from ``s_{K-1}`` to 0 (it evaluates the flow at ``s_{K-1}``,
    never at 0), rather than taking the denoising Euler step of the other solvers.  With
    ``warmup="rk4"`` the first ``order - 1`` steps are classic RK4 steps instead.
    """
    s, s_next = run.s[i], run.s[i + 1]
    d = run.f(x, run.at(s))
    history = (d,) + history[: order - 1]
    K = len(run.s) - 1
    if warmup == "rk4" and i < min(order - 1, K - 1 if run.s[-1] == 0.0 else K):
        return rk_update(run, x, s, s_next, RK4, k1=d), history
    p = min(order, i + 1)
    return combine(x, history, adams_bashforth_coefficients(run.s[i::-1][:p], s, s_next), 1.0), history


@takes("lms", Option("order", int, 4, "Adams-Bashforth order", lo=1, hi=4),
       Option("warmup", str, "lower-order", "start-up: ramp the order (k-diffusion) or RK4 steps", choices=WARMUPS))
def lms(flow: Callable[[Tensor, Tensor], Tensor], x: Tensor, schedule: Union[Tensor, Sequence[float]], *,
        order: int, warmup: str, **loop) -> Solution:
    """Linear multistep (Adams-Bashforth, order up to 4) on a non-uniform schedule.

    One NFE per step.  Startup: ``warmup="lower-order"`` (k-diffusion) ramps the order
    1, 2, ..., ``order`` over the first steps; its Euler first step has a local error
    ``O(h^2)`` that stays in the global error, so the order is 2 as ``h -> 0`` whatever
    ``order`` is.  On a probability-flow ODE the flow's contraction damps that term by about
    ``σ_data/σ_max``: on the Gaussian one from σ = 80, ``order=4`` measures 3.0-3.7 per
    doubling up to 128 steps and 2 only below an error of ~1e-8 (its row's order, 3;
    benchmarks/RESULTS.md, "Solver orders"); on a flow that does not contract (the cosine
    flow of tests/test_solvers.py) it is below 3 already at 32-256 steps.  ``warmup="rk4"`` takes the first ``order - 1`` steps with classic RK4
    (3 extra NFE each), which keeps the global order equal to ``order``.  The last step,
    to ``s = 0`` included, is an Adams-Bashforth step (k-diffusion's rule; see
    :func:`lms_step`).
    """
    return run_steps(functools.partial(lms_step, order=order, warmup=warmup), flow, x, schedule, name="lms", state=(),
                     own_final=True, **loop)


def deis_coefficients(s: Sequence[float], i: int, p: int) -> list[float]:
    """``c_j = ∫_{s_i}^{s_{i+1}} L_j(log σ) dσ`` for the Lagrange basis ``L_j`` in ``log σ`` on the
    ``p`` points ``s_i, s_{i-1}, ...`` (newest first), in closed form: with ``τ = log σ - log s_i``,
    ``c_j = s_i Σ_k A_jk ∫_0^H τ^k e^τ dτ``, ``H = log(s_{i+1}/s_i)`` (:mod:`solvers.expint`)."""
    nodes = [math.log(s[i - j] / s[i]) for j in range(p)]
    A = lagrange_power_basis(nodes)
    moments = exp_moments(math.log(s[i + 1] / s[i]), p)
    return [float(s[i] * np.dot(A[j], moments)) for j in range(p)]


def eps_multistep_step(run: Run, i: int, x: Tensor, history: tuple, *, order: int,
                       weights: Callable[[Sequence[float], int, int], list[float]]):
    """Adams-Bashforth on ``ε = (x - D)/σ`` (the velocity of the denoiser form) from ``s_i`` to ``s_{i+1}``:
    ``x_{i+1} = x_i + Σ_j c_ij ε_{i-j}`` with ``c = weights(s, i, p)``, the order ``p`` ramping 1, 2, ...
    and lowered on a step that reaches too far (:func:`solvers.expint.multistep_order`); ``history``:
    the previous ``ε``, newest first."""
    history = (run.f(x, run.at(run.s[i])),) + history[: order - 1]
    return combine(x, history, weights(run.s, i, multistep_order(run.s, i, order)), 1.0), history


def eps_multistep(name: str, order: int, weights: Callable[[Sequence[float], int, int], list[float]], flow, x: Tensor, schedule,
                  **loop) -> Solution:
    """Run :func:`eps_multistep_step` as the solver ``name``."""
    return run_steps(functools.partial(eps_multistep_step, order=order, weights=weights), flow, x, schedule, name=name, state=(),
                     need="denoiser", check=denoiser_scales(name), **loop)


@takes("deis", Option("order", int, 3, "Adams-Bashforth order (polynomial degree + 1)", lo=1, hi=3))
def deis(flow: Callable[[Tensor, Tensor], Tensor], x: Tensor, schedule: Union[Tensor, Sequence[float]], *, order: int,
         **loop) -> Solution:
    """DEIS (Zhang & Chen, arXiv 2204.13902), Adams-Bashforth of order 1-3, 1 NFE per step.

    DEIS writes the probability-flow ODE in its ``ρ`` form (the paper's eq. 14,
    ``dx̂/dρ = ε(x̂, ρ)``), which for the denoiser form is ``dx/dσ = ε = (x - D)/σ`` with
    ``ρ = σ``, fits ``ε`` by the Lagrange polynomial through the last ``p`` evaluations in a
    time variable and integrates that polynomial exactly::

        x_{i+1} = x_i + Σ_{j<p} c_ij ε_{i-j},    c_ij = ∫_{σ_i}^{σ_{i+1}} L_j(log σ) dσ.

    Which time variable.  The paper's tAB fits ``ε`` in the diffusion time ``t`` of its VP
    SDE; in the denoiser form every process hands the solver ``σ`` alone (EDM's
    parameterisation, ``σ(t) = t``), where tAB fits in ``σ`` itself, and that method is
    ``lms`` (Adams-Bashforth in ``σ``, k-diffusion's).  ``deis`` fits in ``log σ`` (``log ρ``:
    diffusers' ``DEISMultistepScheduler``, ``solver_type="logrho"``), the variable in which
    EDM-style grids are nearly uniform; its weights are closed-form here (diffusers
    hard-codes them per order; the paper computes them by quadrature).  Warm-up: orders
    1, 2, ... over the first steps (``order=1`` is DDIM); the step to ``s = 0`` is the
    denoising step.
    """
    return eps_multistep("deis", order, deis_coefficients, flow, x, schedule, **loop)


IPNDM_COEFFICIENTS = ((1.0,), (3 / 2, -1 / 2), (23 / 12, -16 / 12, 5 / 12), (55 / 24, -59 / 24, 37 / 24, -9 / 24))
"""Adams-Bashforth weights of orders 1-4 on a uniform grid (newest first)."""


def _ipndm_weights(s: Sequence[float], i: int, p: int) -> list[float]:
    return [c * (s[i + 1] - s[i]) for c in IPNDM_COEFFICIENTS[p - 1]]


@takes("ipndm", Option("order", int, 4, "highest Adams-Bashforth order", lo=1, hi=4))
def ipndm(flow: Callable[[Tensor, Tensor], Tensor], x: Tensor, schedule: Union[Tensor, Sequence[float]], *, order: int,
          **loop) -> Solution:
    """Improved PNDM (iPNDM; Zhang & Chen, arXiv 2204.13902, App. C; the EDM-style fast
    samplers of Zhou et al., arXiv 2312.00094, and ComfyUI's ``sample_ipndm``), 1 NFE per step.

    PNDM (Liu et al., arXiv 2202.09778) steps ``ε = (x - D)/σ`` with the fourth-order
    Adams-Bashforth weights of a *uniform* grid after three Runge-Kutta warm-up steps (12
    NFE); iPNDM replaces the warm-up by lower-order Adams-Bashforth steps::

        x_{i+1} = x_i + (σ_{i+1} - σ_i) Σ_j a^{(p)}_j ε_{i-j},   p = min(order, i + 1),
        a^{(1)} = 1,  a^{(2)} = (3, -1)/2,  a^{(3)} = (23, -16, 5)/12,  a^{(4)} = (55, -59, 37, -9)/24.

    Which coefficients and why: these constant weights, as DEIS's iPNDM and the fast-sampler
    code bases use them, not the variable-step Adams-Bashforth weights (those are ``lms``).
    They are exact only on a uniform grid, where they equal ``lms``'s; on a smoothly graded
    one (EDM's ρ-schedule, a geometric grid) the step-size ratio ``h_i/h_{i-1} = 1 + O(h)``
    leaves a local error ``O(h³)``, so the method is second order there
    (tests/test_solvers_denoiser.py measures it), and of order ``order`` on uniform steps
    once its warm-up steps' error is damped.  The step to ``s = 0`` is the denoising step.
    """
    return eps_multistep("ipndm", order, _ipndm_weights, flow, x, schedule, **loop)
