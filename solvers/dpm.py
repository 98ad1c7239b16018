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
solvers are valid for any process whose ODE has this form.  The flow must expose
``denoise(x, s)``; a step ending at ``s = 0`` is Euler, i.e. ``x <- D(x, s_{K-1})``.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence, Union

import torch
from torch import Tensor

from ._common import check_batch, fixed_stats, require_denoiser, scale_table
from .base import CountedFlow, Solution, as_schedule

__all__ = ["dpm2", "dpmpp_2m"]


def _positive(s: list[float], name: str) -> None:
    pos = s[:-1] if s[-1] == 0.0 else s
    if any(v <= 0 for v in pos):
        raise ValueError(f"{name} works in lambda = -log s and needs positive scales (a final 0 is allowed), got {s[:6]}")


def dpm2(
    flow: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    schedule: Union[Tensor, Sequence[float]],
    *,
    return_trajectory: bool = False,
) -> Solution:
    """DPM-Solver-2 (Lu et al., arXiv 2206.00927, Alg. 1 with ``r1 = 1/2``), 2 NFE per step.

    With ``alpha = 1, sigma = s``, ``h = lambda_t - lambda_u = log(s_u/s_t)`` and the noise
    prediction ``eps(x, s) = (x - D(x, s))/s``, the midpoint in ``lambda`` is
    ``s_m = sqrt(s_u s_t)`` and the step reads::

        u   = x_u - s_m (e^{h/2} - 1) eps(x_u, s_u)  = x_u + (s_m - s_u) eps(x_u, s_u)
        x_t = x_u - s_t (e^{h}   - 1) eps(u,   s_m)  = x_u + (s_t - s_u) eps(u, s_m)

    (second order in ``h``).  The step to ``s = 0`` is Euler: ``x <- D(x, s_{K-1})``.
    """
    check_batch(x, "dpm2")
    s = as_schedule(schedule)
    f = CountedFlow(flow)
    require_denoiser(f, "dpm2")
    _positive(s, "dpm2")
    K = len(s) - 1
    last_euler = s[-1] == 0.0
    n = K - 1 if last_euler else K
    values, plan = [], []
    for i in range(n):
        sm = math.sqrt(s[i] * s[i + 1])
        values += [s[i], sm]
        # u = lerp(x, D, 1 - s_m/s_u);  x_t = x + ((s_t - s_u)/s_m) (u - D(u, s_m))
        plan.append((1.0 - sm / s[i], (s[i + 1] - s[i]) / sm))
    if last_euler:
        values.append(s[K - 1])
    table = scale_table(values, x)

    traj = [x] if return_trajectory else None
    row = 0
    for w, c in plan:
        u = torch.lerp(x, f.denoise(x, table[row]), w)
        x = torch.add(x, u - f.denoise(u, table[row + 1]), alpha=c)
        row += 2
        if traj is not None:
            traj.append(x)
    if last_euler:
        x = f.denoise(x, table[row])
        if traj is not None:
            traj.append(x)
    return Solution(x, fixed_stats(f.nfe, K, x.shape[0], traj))


def dpmpp_2m(
    flow: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    schedule: Union[Tensor, Sequence[float]],
    *,
    return_trajectory: bool = False,
) -> Solution:
    """DPM-Solver++(2M) (Lu et al., arXiv 2211.01095, Alg. 2), 1 NFE per step.

    Data prediction ``D_i = D(x_i, s_i)``, ``h_i = log(s_{i-1}/s_i)``, ``r_i = h_{i-1}/h_i``::

        D'_i    = (1 + 1/(2 r_i)) D_{i-1} - 1/(2 r_i) D_{i-2}
        x_i     = (s_i/s_{i-1}) x_{i-1} - (e^{-h_i} - 1) D'_i
                = (s_i/s_{i-1}) x_{i-1} + (1 - s_i/s_{i-1}) D'_i

    The first step uses ``D'_1 = D_0`` (first order, i.e. DDIM = Euler); the step to
    ``s = 0`` is Euler: ``x <- D(x, s_{K-1})``.  Each update is two ``lerp`` kernels.
    """
    check_batch(x, "dpmpp_2m")
    s = as_schedule(schedule)
    f = CountedFlow(flow)
    require_denoiser(f, "dpmpp_2m")
    _positive(s, "dpmpp_2m")
    K = len(s) - 1
    last_euler = s[-1] == 0.0
    n = K - 1 if last_euler else K
    plan = []
    for i in range(n):
        ratio = s[i + 1] / s[i]
        if i == 0:
            plan.append((None, 1.0 - ratio))
        else:
            r = math.log(s[i - 1] / s[i]) / math.log(s[i] / s[i + 1])
            plan.append((1.0 + 0.5 / r, 1.0 - ratio))  # D' = lerp(D_prev, D, 1 + 1/(2r))
    table = scale_table(s[:K], x)

    traj = [x] if return_trajectory else None
    prev = None
    for i, (wd, wx) in enumerate(plan):
        d = f.denoise(x, table[i])
        x = torch.lerp(x, d if wd is None else torch.lerp(prev, d, wd), wx)
        prev = d
        if traj is not None:
            traj.append(x)
    if last_euler:
        x = f.denoise(x, table[K - 1])
        if traj is not None:
            traj.append(x)
    return Solution(x, fixed_stats(f.nfe, K, x.shape[0], traj))
