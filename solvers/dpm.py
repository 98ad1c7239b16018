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
from .spec import takes

__all__ = ["dpm2", "dpmpp_2m", "DenoiserRule"]


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
        if i == 0:
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

    The first step uses ``D'_1 = D_0`` (first order, i.e. DDIM = Euler); the step to
    ``s = 0`` is the denoising step ``x <- D(x, s_{K-1})``.  Each update is two ``lerp`` kernels.
    """
    return run_steps(DPMpp2M(), flow, x, schedule, need="denoiser", **loop)
