"""DPM-Solver family for flows of the denoiser form ``dx/ds = (x - D(x, s)) / s``.

Why they apply beyond Gaussian diffusion.  DPM-Solver (Lu et al., arXiv 2206.00927) and
DPM-Solver++ (arXiv 2211.01095) start from the diffusion ODE written with
``alpha_s, sigma_s`` and ``lambda = log(alpha/sigma)``.  For the form shared by EDM/VE
(``s = sigma``), PFGM++ (``s = sigma = r / sqrt(D)``) and Yukawa (``s = z``) take
``alpha = 1, sigma = s``, so ``lambda = -log s``; then

    dx/dlambda = -s dx/ds = D(x, s) - x,

which is *exactly* linear in ``x`` with the data prediction ``D`` as its only nonlinear
term.  Variation of constants gives ``x_t = (s_t/s_u) x_u + s_t int_{lambda_u}^{lambda_t}
e^{lambda} D dlambda`` and the solvers are Taylor / multistep expansions of ``D`` in
``lambda``.  Nothing in that derivation uses the Gaussian kernel (only this ODE), so the
solvers are valid for any process whose ODE has this form.  The target must expose
``denoise(x, s)``; a step ending at ``s = 0`` is the denoising step ``x <- D(x, s_{K-1})``.
Each method is a step function run by :func:`solvers._loop.run_steps`.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor

from ._loop import Run, positive_scales, run_steps
from .base import Solution
from .expint import exp_ab_weights, multistep_order
from .spec import Option, takes

__all__ = ["dpm2", "dpmpp_2m", "dpmpp_3m", "dpmpp_2s", "dpm2_update", "dpm2_step", "dpmpp_2m_step", "dpmpp_multistep_step", "dpmpp_2s_step",
           "denoiser_scales"]


def dpm2_update(run: Run, x: Tensor, s: float, s_next: float) -> Tensor:
    """One DPM-Solver-2 step ``s -> s_next`` (:func:`dpm2`): the midpoint in ``λ`` is ``s_m = sqrt(s s_next)``,
    ``u = x + (s_m - s) ε(x, s)``, ``x_next = x + (s_next - s) ε(u, s_m)``, written with ``ε = (x - D)/s``
    as ``u = lerp(x, D(x, s), 1 - s_m/s)``, ``x_next = x + ((s_next - s)/s_m)(u - D(u, s_m))``."""
    sm = math.sqrt(s * s_next)
    u = torch.lerp(x, run.f.denoise(x, run.at(s)), 1.0 - sm / s)
    return torch.add(x, u - run.f.denoise(u, run.at(sm)), alpha=(s_next - s) / sm)


def dpm2_step(run: Run, i: int, x: Tensor, state):
    """DPM-Solver-2 from ``s_i`` to ``s_{i+1}``; no state."""
    return dpm2_update(run, x, run.s[i], run.s[i + 1]), state


def denoiser_scales(name: str) -> Callable[[list], None]:
    """The schedule check of a method in ``λ = -log s``: positive scales (a final 0 allowed)."""
    return functools.partial(positive_scales, name=name)


@takes("dpm2")
def dpm2(flow: Callable[[Tensor, Tensor], Tensor], x: Tensor, schedule: Union[Tensor, Sequence[float]], **loop) -> Solution:
    """DPM-Solver-2 (Lu et al., arXiv 2206.00927, Alg. 1 with ``r1 = 1/2``), 2 NFE per step.

    With ``alpha = 1, sigma = s``, ``h = lambda_t - lambda_u = log(s_u/s_t)`` and the noise
    prediction ``eps(x, s) = (x - D(x, s))/s``, the midpoint in ``lambda`` is
    ``s_m = sqrt(s_u s_t)`` and the step reads::

        u   = x_u - s_m (e^{h/2} - 1) eps(x_u, s_u)  = x_u + (s_m - s_u) eps(x_u, s_u)
        x_t = x_u - s_t (e^{h}   - 1) eps(u,   s_m)  = x_u + (s_t - s_u) eps(u, s_m)

    (second order in ``h``).  The step to ``s = 0`` is the denoising step ``x <- D(x, s_{K-1})``.
    """
    return run_steps(dpm2_step, flow, x, schedule, name="dpm2", need="denoiser", check=denoiser_scales("dpm2"), **loop)


def dpmpp_2m_step(run: Run, i: int, x: Tensor, old: Optional[Tensor]):
    """DPM-Solver++(2M) from ``s_i`` to ``s_{i+1}`` (:func:`dpmpp_2m`); ``old``: the previous data prediction."""
    s, s_next = run.s[i], run.s[i + 1]
    d = run.f.denoise(x, run.at(s))
    d_prime = d
    if multistep_order(run.s, i, 2) > 1:  # not the first step, nor one reaching too far (solvers.expint.multistep_order)
        r = math.log(run.s[i - 1] / s) / math.log(s / s_next)
        d_prime = torch.lerp(old, d, 1.0 + 0.5 / r)  # (1 + 1/(2r)) D_i - 1/(2r) D_{i-1}
    return torch.lerp(x, d_prime, 1.0 - s_next / s), d


@takes("dpmpp-2m")
def dpmpp_2m(flow: Callable[[Tensor, Tensor], Tensor], x: Tensor, schedule: Union[Tensor, Sequence[float]], **loop) -> Solution:
    """DPM-Solver++(2M) (Lu et al., arXiv 2211.01095, Alg. 2), 1 NFE per step.

    Data prediction ``D_i = D(x_i, s_i)``, ``h_i = log(s_{i-1}/s_i)``, ``r_i = h_{i-1}/h_i``::

        D'_i    = (1 + 1/(2 r_i)) D_{i-1} - 1/(2 r_i) D_{i-2}
        x_i     = (s_i/s_{i-1}) x_{i-1} - (e^{-h_i} - 1) D'_i
                = (s_i/s_{i-1}) x_{i-1} + (1 - s_i/s_{i-1}) D'_i

    The first step uses ``D'_1 = D_0`` (first order, i.e. DDIM = Euler), and so does a step
    more than twice as long in ``λ`` as the one before (:func:`solvers.expint.multistep_order`;
    k-diffusion's ``sample_dpmpp_2m`` extrapolates there too); the step to
    ``s = 0`` is the denoising step ``x <- D(x, s_{K-1})``.  Each update is two ``lerp`` kernels.
    """
    return run_steps(dpmpp_2m_step, flow, x, schedule, name="dpmpp-2m", need="denoiser", check=denoiser_scales("dpmpp-2m"),
                     **loop)


def dpmpp_multistep_step(run: Run, i: int, x: Tensor, history: tuple, *, order: int):
    """DPM-Solver++ multistep of order ``order`` from ``s_i`` to ``s_{i+1}`` (:func:`dpmpp_3m`): the
    Lagrange interpolant of the last ``p = multistep_order(s, i, order)`` data predictions in ``λ``,
    integrated exactly against ``e^{-(h-τ)}``; ``history``: the previous data predictions, newest first.

        x_{i+1} = (s_{i+1}/s_i) x_i + Σ_j w_j D_{i-j},    w = exp_ab_weights(λ_{i-j} - λ_i, h)
    """
    s, s_next = run.s[i], run.s[i + 1]
    p = multistep_order(run.s, i, order)
    lam = [-math.log(run.s[i - j]) for j in range(p)]
    w = exp_ab_weights([v - lam[0] for v in lam], math.log(s / s_next))
    history = (run.f.denoise(x, run.at(s)),) + history[: order - 1]
    out = x.mul(s_next / s)
    for d, wj in zip(history, w):
        out.add_(d, alpha=wj)
    return out, history


@takes("dpmpp-3m")
def dpmpp_3m(flow: Callable[[Tensor, Tensor], Tensor], x: Tensor, schedule: Union[Tensor, Sequence[float]], **loop) -> Solution:
    """DPM-Solver++(3M) (Lu et al., arXiv 2211.01095, Sec. 4 and App. A), 1 NFE per step.

    With ``D_j = D(x_j, s_j)``, ``λ = -log s``, ``h = λ_{i+1} - λ_i``, the step integrates the
    quadratic ``P`` through ``(λ_i, D_i), (λ_{i-1}, D_{i-1}), (λ_{i-2}, D_{i-2})`` exactly::

        x_{i+1} = e^{-h} x_i + ∫_0^h e^{-(h-τ)} P(λ_i + τ) dτ
                = e^{-h} x_i + h φ_1(-h) D_i + h φ_2(-h) D1 + h φ_3(-h) 2 D2,

    ``D1 = h P'(λ_i)``, ``D2 = h² P''/2``, i.e. in the reference implementations' notation
    ``r0 = h_{i-1}/h``, ``r1 = h_{i-2}/h``, ``D1_0 = (D_i - D_{i-1})/r0``, ``D1_1 = (D_{i-1} -
    D_{i-2})/r1``, ``D1 = D1_0 + r0/(r0 + r1) (D1_0 - D1_1)``, ``D2 = (D1_0 - D1_1)/(r0 + r1)``.

    Where we differ: diffusers' ``multistep_dpm_solver_third_order_update`` and k-diffusion's
    ``sample_dpmpp_3m_sde`` (at ``eta = 0``) weight ``D2`` by ``h φ_3(-h)``, not ``2 h φ_3(-h)``:
    their second-derivative term is half the Taylor term (``P''`` enters as ``h³ φ_3 P''``,
    and ``D2 = h² P''/2``), so their local error keeps an ``h³ φ_3 P''/2`` term.  We integrate
    the interpolant exactly, which makes the method third order once started
    (tests/test_solver_orders.py measures it on a closed-form flow).

    Warm-up: orders 1, 2, 3 over the first steps.  The first step is DDIM; the second
    integrates the linear interpolant exactly, ``h φ_1(-h) D_i + h φ_2(-h) D1`` with
    ``D1 = (D_i - D_{i-1})/r0``, as k-diffusion's ``sample_dpmpp_3m_sde`` (at ``eta = 0``) and
    diffusers' ``DPMSolverMultistepScheduler`` (``solver_order=3``) with ``solver_type="heun"``
    do; diffusers' default ``solver_type="midpoint"`` weights ``D1`` by ``(1 - e^{-h})/2``
    instead (the same to ``O(h³)`` per step), so "as in the libraries" holds for those two and
    not for diffusers' default.  The warm-up's local errors
    (``O(h²)`` on the first step) leave an ``O(h²)`` term in the global error, which both
    libraries share: the flow's contraction damps it by about ``σ_data/σ_max``, so the third
    order shows at the step counts samplers use and the ``O(h²)`` term once the error is near
    1e-7.  Measured on the Gaussian PF-ODE from σ = 80 to 0.05 on a log-uniform grid
    (``python tests/measured_orders.py``, benchmarks/RESULTS.md): with σ_data = 1, slope 3.9
    to 4.1 per doubling down to 1.6e-6 at 128 steps (5.5 to 256, where the terms cancel), then
    0.8, 1.4, 1.8 from 3.4e-8 at 256 steps (2.1e-9 at 2048); with σ_data up to 2 in the batch
    it shows near 1e-6 (slope 1.6 from 2.4e-6 at 128 steps, 2.0 by 2048).  With the first two
    steps exact the slope stays above 3 (3.1 at 2e-10), so the term is the warm-up's
    (tests/test_solver_orders.py).

    The order is also lowered on a step that reaches more than twice the λ-span of the points
    it extrapolates (:func:`solvers.expint.multistep_order`: VP's ``vp-time`` grid ends with
    such a step; EDM's and log-uniform grids have none).  No lower-order final steps
    otherwise, other than the last step to ``s = 0``, which is
    the denoising step ``x <- D(x, s_{K-1})`` of every solver here (the libraries' denoise-
    to-zero final step; diffusers' ``lower_order_final`` further lowers the second-to-last
    step below 15 steps, for stability at tiny ``σ``, which we do not).
    """
    return run_steps(functools.partial(dpmpp_multistep_step, order=3), flow, x, schedule, name="dpmpp-3m", state=(),
                     need="denoiser", check=denoiser_scales("dpmpp-3m"), **loop)


def dpmpp_2s_step(run: Run, i: int, x: Tensor, state, *, r: float):
    """DPM-Solver++(2S) from ``s_i`` to ``s_{i+1}`` with the intermediate point at ``λ_i + r h`` (:func:`dpmpp_2s`); no state."""
    s, s_next = run.s[i], run.s[i + 1]
    sm = s ** (1.0 - r) * s_next**r  # λ_m = λ_i + r h
    d = run.f.denoise(x, run.at(s))
    dm = run.f.denoise(torch.lerp(x, d, 1.0 - sm / s), run.at(sm))
    wd = 1.0 - 0.5 / r  # D' = (1 - 1/(2r)) D + 1/(2r) D_m
    return torch.lerp(x, torch.lerp(dm, d, wd) if wd else dm, 1.0 - s_next / s), state


R_MIN = 0.05
R_WHY = "the second-order correction weights the intermediate evaluation by 1/(2r): below 0.05 it amplifies that evaluation's error over 10x (the papers use 0.5)"


@takes("dpmpp-2s", Option("r", float, 0.5, "intermediate point at λ_i + r h", lo=R_MIN, hi=1.0, why=R_WHY))
def dpmpp_2s(flow: Callable[[Tensor, Tensor], Tensor], x: Tensor, schedule: Union[Tensor, Sequence[float]], *, r: float,
             **loop) -> Solution:
    """DPM-Solver++(2S) (Lu et al., arXiv 2211.01095, Alg. 1), 2 NFE per step.

    ``h = λ_{i+1} - λ_i``, ``λ_m = λ_i + r h`` (``s_m = s_i^{1-r} s_{i+1}^r``)::

        u       = (s_m/s_i) x_i + (1 - e^{-r h}) D(x_i, s_i)
        D'      = (1 - 1/(2r)) D(x_i, s_i) + 1/(2r) D(u, s_m)
        x_{i+1} = (s_{i+1}/s_i) x_i + (1 - e^{-h}) D'

    (second order; ``r = 1/2``, the paper's and k-diffusion's ``sample_dpmpp_2s_ancestral``
    at ``eta = 0``, gives ``D' = D(u, s_m)``).  The step to ``s = 0`` is the denoising step.
    """
    return run_steps(functools.partial(dpmpp_2s_step, r=r), flow, x, schedule, name="dpmpp-2s", need="denoiser",
                     check=denoiser_scales("dpmpp-2s"), **loop)
