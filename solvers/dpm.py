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
Each method is a step rule of :func:`solvers._loop.run_steps`.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence, Union

import torch
from torch import Tensor

from ._loop import StepRule, positive_scales, run_steps
from .base import Solution
from .expint import exp_ab_weights, multistep_order
from .spec import Option, takes

__all__ = ["dpm2", "dpmpp_2m", "dpmpp_3m", "dpmpp_2s", "DenoiserRule", "DPMppMultistep"]


class DenoiserRule(StepRule):
    """A step rule in ``λ = -log s`` on the denoiser form (positive scales, a final 0 allowed)."""

    def validate(self, s):
        positive_scales(s, self.name)


class DPM2(DenoiserRule):
    """DPM-Solver-2 with ``r1 = 1/2``: the midpoint in ``λ`` is ``s_m = sqrt(s_u s_t)``."""

    name = "dpm2"

    def plan(self, s, i):
        sm = math.sqrt(s[i] * s[i + 1])
        # u = lerp(x, D, 1 - s_m/s_u);  x_t = x + ((s_t - s_u)/s_m) (u - D(u, s_m))
        return [s[i], sm], (1.0 - sm / s[i], (s[i + 1] - s[i]) / sm)

    def step(self, ctx, x, i, at, coef):
        w, c = coef
        u = torch.lerp(x, ctx.f.denoise(x, at[0]), w)
        return torch.add(x, u - ctx.f.denoise(u, at[1]), alpha=c)


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
    return run_steps(DPM2(), flow, x, schedule, need="denoiser", **loop)


class DPMpp2M(DenoiserRule):
    """DPM-Solver++(2M): data-prediction multistep with the previous denoiser output."""

    name = "dpmpp-2m"

    def __init__(self):
        self.prev = None

    def plan(self, s, i):
        ratio = s[i + 1] / s[i]
        if multistep_order(s, i, 2) == 1:  # the first step, or one reaching too far (solvers.expint.multistep_order)
            return [s[i]], (None, 1.0 - ratio)
        r = math.log(s[i - 1] / s[i]) / math.log(s[i] / s[i + 1])
        return [s[i]], (1.0 + 0.5 / r, 1.0 - ratio)  # D' = lerp(D_prev, D, 1 + 1/(2r))

    def step(self, ctx, x, i, at, coef):
        wd, wx = coef
        d = ctx.f.denoise(x, at[0])
        x = torch.lerp(x, d if wd is None else torch.lerp(self.prev, d, wd), wx)
        self.prev = d
        return x


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
    return run_steps(DPMpp2M(), flow, x, schedule, need="denoiser", **loop)


class DPMppMultistep(DenoiserRule):
    """DPM-Solver++ multistep of order ``order``: the Lagrange interpolant of the last
    ``p = min(order, i + 1)`` data predictions in ``λ``, integrated exactly against
    ``e^{-(h-τ)}`` (weights from :func:`solvers.expint.exp_ab_weights`)."""

    name = "dpmpp-3m"

    def __init__(self, order: int = 3):
        self.order = order
        self.hist: list[Tensor] = []  # newest first

    def plan(self, s, i):
        p = multistep_order(s, i, self.order)
        lam = [-math.log(s[i - j]) for j in range(p)]
        h = math.log(s[i] / s[i + 1])
        return [s[i]], (s[i + 1] / s[i], exp_ab_weights([v - lam[0] for v in lam], h))

    def step(self, ctx, x, i, at, coef):
        decay, w = coef
        self.hist = [ctx.f.denoise(x, at[0])] + self.hist[: self.order - 1]
        out = x.mul(decay)
        for d, wj in zip(self.hist, w):
            out.add_(d, alpha=wj)
        return out


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
    return run_steps(DPMppMultistep(3), flow, x, schedule, need="denoiser", **loop)


class DPMpp2S(DenoiserRule):
    """DPM-Solver++(2S): one intermediate data prediction at ``λ_i + r h``."""

    name = "dpmpp-2s"

    def __init__(self, r: float):
        self.r = r

    def plan(self, s, i):
        sm = s[i] ** (1.0 - self.r) * s[i + 1] ** self.r  # λ_m = λ_i + r h
        return [s[i], sm], (1.0 - sm / s[i], 1.0 - 0.5 / self.r, 1.0 - s[i + 1] / s[i])

    def step(self, ctx, x, i, at, coef):
        wu, wd, wx = coef
        d = ctx.f.denoise(x, at[0])
        dm = ctx.f.denoise(torch.lerp(x, d, wu), at[1])
        return torch.lerp(x, torch.lerp(dm, d, wd) if wd else dm, wx)


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
    return run_steps(DPMpp2S(r), flow, x, schedule, need="denoiser", **loop)
