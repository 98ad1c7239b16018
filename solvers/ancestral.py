"""Stochastic samplers on the denoiser form, for Gaussian kernels only.

Euler-ancestral and DPM-2-ancestral with ``eta`` (k-diffusion's ``sample_euler_ancestral`` /
``sample_dpm_2_ancestral``), DPM-Solver++ SDE (``sample_dpmpp_sde``), DPM-Solver++(2M) SDE
with its ``midpoint`` and ``heun`` variants (``sample_dpmpp_2m_sde``) and DPM-Solver++(3M)
SDE (``sample_dpmpp_3m_sde``).  k-diffusion (K. Crowson, github.com/crowsonkb/k-diffusion)
is the reference implementation; the equations are below, with every place this code
differs from it.  Each sampler is a step function run by :func:`solvers._loop.run_steps`.

**The target.**  The denoiser form ``dx/dσ = (x - D(x, σ))/σ`` with ``λ = -log σ``
(:mod:`solvers.dpm`): EDM, VE, NCSN, PFGM++ at ``D = inf`` and VP through its σ form
(``x̄ = x/a``, ``σ = b/a``; the dispatcher maps grid and state).  ``D`` is the data
prediction ``target.denoise(x, σ)``, the posterior mean ``E[y | x_σ = x]`` of the data.

**Why only Gaussian kernels.**  These samplers put ``N(0, σ_up² I)`` noise into the state.
For ``x_σ = y + σ ε`` the family of reverse SDEs (EDM, arXiv 2206.00364, eq. 6)

    dx = (1 + η) (D(x, σ) - x) dλ + σ √(2η) dW_λ          (λ increasing, η >= 0)

is the probability-flow ODE (``η = 0``) plus Langevin dynamics at rate ``η`` in ``p_σ``, so
every member has the marginals ``p_σ``; ``η = 1`` is the reverse-time SDE of the VE process.
That argument needs ``∇log p_σ = (D - x)/σ²``, i.e. a Gaussian kernel: for PFGM++ at finite
``D``, Yukawa and PFGM the injected Gaussian noise has the wrong law, so the table says
``needs = ("denoiser", "gaussian")`` and :func:`physgen.sampling.sample` refuses them.

**The ancestral step** (:func:`ancestral_step`: k-diffusion's ``get_ancestral_step``, a
discretisation of the SDE family above, EDM arXiv 2206.00364 eq. 6; DDIM arXiv 2010.02502 eq. 16).  From ``σ`` to ``σ'`` with ``η``::

    σ_up   = min(σ', η σ' √(1 - σ'²/σ²)),     σ_down = √(σ'² - σ_up²)
    x'     = D + (σ_down/σ)(x - D) + S_noise σ_up z

i.e. the exact ODE step with ``D`` held fixed down to ``σ_down`` (DDIM), then fresh noise
back up to ``σ'``.  At ``η = 1`` it is DDPM's posterior step (``σ_up² = σ'²(σ² - σ'²)/σ²``,
the exact Gaussian ``q(x_{σ'} | x_σ, y = D)``); for ``0 <= η <= 1`` it is DDIM(η) in the σ
variables.  The exact solution of the SDE above over ``[λ, λ + h]`` with ``D`` held fixed is
``x' = e^{-(1+η)h} x + (1 - e^{-(1+η)h}) D + σ' √(1 - e^{-2ηh}) z``: at ``η = 1`` the ancestral
step, for other ``η`` the 2M/3M-SDE step; the two ``η`` are different parameterisations.

**Noise** (``ctx.noise(k, like)``; per-sample seeded with :class:`physgen.noise.SeededNoise`,
so a sample does not depend on its batch).  Step ``i`` (from ``σ_i`` to ``σ_{i+1}``) draws
``noise(i)``; DPM-Solver++ SDE draws ``noise(2i)`` and ``noise(2i+1)``.  Nothing is drawn
where nothing is added (``η = 0``, or the last step to ``σ = 0``).  k-diffusion drives the
SDE samplers with a Brownian tree in ``σ`` (``BrownianTreeNoiseSampler``, identity
transform): the noise of a step ``σ_a -> σ_b`` is ``(W(σ_b) - W(σ_a))/√|σ_b - σ_a|``.
Increments of a Brownian motion over disjoint intervals are independent Gaussians, so for
one step per interval (2M/3M-SDE, and the ancestral samplers, which k-diffusion drives with
``randn``) independent ``N(0, I)`` per step have exactly the tree's law.  DPM-Solver++ SDE
draws twice in a step, over ``[σ_s, σ_i]`` and ``[σ_{i+1}, σ_i]``, nested intervals: the two
normalised increments are standard normals with correlation

    ρ = √w,     w = (σ_i - σ_s)/(σ_i - σ_{i+1})

(their covariance is the length of the shared interval over the product of the square roots of
the lengths).  Here ``z_1 = noise(2i)`` (the increment over ``[σ_s, σ_i]``) and
``z_2 = √w z_1 + √(1-w) noise(2i+1)`` (adding the independent increment over
``[σ_{i+1}, σ_s]``): the tree's joint law exactly.  What the tree gives beyond that law (the
same Brownian path for two different grids from one seed) is not reproduced.

**The last step** to ``σ = 0`` is the denoising step ``x <- D(x, σ_{K-1})`` for every
sampler here, as in k-diffusion (its ancestral step to 0 has ``σ_down = σ_up = 0`` and Euler
lands on ``D``; its SDE samplers return ``denoised`` when ``sigmas[i+1] == 0``): it is
:func:`solvers._loop.to_zero`, one NFE, no noise.

**Orders** (tests/test_ancestral.py).  At ``η = 0``: euler-ancestral 1, dpmpp-3m-sde 3 (the exact
integral; k-diffusion's weight gives 2: see :func:`dpmpp_3m_sde`), the others 2.  For ``η > 0`` on Gaussian data (a linear
``D``) the error of the output variance falls as ``h`` for euler-ancestral and ``h²`` for
the others (measured at ``η = 1`` and ``0.5``); for a general ``D`` no weak order is claimed.

**Grids.**  The multistep samplers (2M/3M-SDE) weight ``D_i - D_{i-1}`` by ``1/r``,
``r = h_{i-1}/h_i``: a grid whose steps in ``λ`` jump (VP's default ``vp-time`` grid, uniform
in ``t``, ends with a step 4x its predecessor in ``λ``) amplifies the noise in that
difference.  Such a step is taken at a lower order (:func:`solvers.expint.multistep_order`,
shared with the deterministic multistep solvers).  On the two-mode toy (mode width 0.30)
with VP, the analytic field and 60 steps, the left mode's width on ``vp-time`` was 0.35
for 2M-SDE, 0.41 for its heun variant and 0.55 for 3M-SDE at full order; it is 0.298, 0.305
and 0.310 now (0.306, 0.307, 0.306 with ``--schedule log-uniform``; deterministic dpmpp-2m
0.299), left-mode weights 0.196-0.208 (target 0.2).
"""
from __future__ import annotations

import functools
import math
from typing import Callable, Sequence, Union

import torch
from torch import Tensor

from ._loop import Run, positive_scales, run_steps
from .base import Solution
from .dpm import R_MIN, R_WHY, dpm2_update
from .expint import multistep_order
from .spec import NOISE_KEYS, STOCHASTIC_OPTIONS, Option, takes

__all__ = ["ancestral_step", "brownian_pair_weight", "euler_ancestral", "dpm2_ancestral", "dpmpp_sde", "dpmpp_2m_sde",
           "dpmpp_3m_sde", "SDE_SOLVER_TYPES"]

ETA = Option("eta", float, 1.0, "noise per step: 0 is the deterministic solver, 1 the reverse SDE / DDPM's ancestral step", lo=0.0,
             hi=10.0, why="σ_up = min(σ_next, η σ_next √(1 - σ_next²/σ²)) saturates at σ_next (all noise) once η >= "
                          "1/√(1 - σ_next²/σ²): past 10 it is saturated on every step with σ_next/σ <= 0.995")
S_NOISE = Option("s_noise", float, 1.0, "scale of the injected noise (1 keeps the marginals)", lo=0.75, hi=1.5,
                 why="S_noise offsets the detail a denoiser removes by slightly more noise (EDM tunes it within [1, 1.007], "
                     "arXiv 2206.00364 Table 5); the samples' spread scales about with it (on a Gaussian, 0.75x to 1.5x of "
                     "s_noise = 1's across this range), and at 0 every sample collapses onto the denoised mean")
SDE_SOLVER_TYPES = ("midpoint", "heun")


def ancestral_step(sigma: float, sigma_next: float, eta: float = 1.0) -> tuple[float, float]:
    """``(σ_down, σ_up)`` of an ancestral step from ``σ`` to ``σ_next <= σ`` (module docstring):
    ``σ_up = min(σ_next, η σ_next √(1 - σ_next²/σ²))``, ``σ_down = √(σ_next² - σ_up²)``.
    ``η = 0`` gives ``(σ_next, 0)``; ``σ_next = 0`` gives ``(0, 0)``."""
    if eta == 0.0 or sigma_next == 0.0:
        return sigma_next, 0.0
    up = min(sigma_next, eta * sigma_next * math.sqrt(max(1.0 - (sigma_next / sigma) ** 2, 0.0)))
    return math.sqrt(max(sigma_next**2 - up**2, 0.0)), up


def brownian_pair_weight(sigma: float, sigma_mid: float, sigma_next: float) -> float:
    """``w = (σ - σ_mid)/(σ - σ_next)``: the squared correlation of a Brownian motion's
    normalised increments over ``[σ_mid, σ]`` and ``[σ_next, σ]`` (``σ_next <= σ_mid <= σ``)."""
    return (sigma - sigma_mid) / (sigma - sigma_next)


def decreasing_scales(name: str) -> Callable[[list], None]:
    """The schedule check of a stochastic method on the denoiser form: positive scales (a final 0
    allowed) that decrease (generation)."""

    def check(s: list) -> None:
        positive_scales(s, name)
        if s[1] > s[0]:
            raise ValueError(f"{name} needs a decreasing schedule (sigma_max -> 0), got {s[:6]}")

    return check


def run_sde(step, name: str, target, x: Tensor, schedule, extra: dict, state=None, **loop) -> Solution:
    """Run the stochastic denoiser-form step function ``step`` as the solver ``name`` (statistics: ``extra``)."""
    return run_steps(step, target, x, schedule, name=name, state=state, need="denoiser", stochastic=True, check=decreasing_scales(name),
                     hint="lower eta or s_noise, or take more steps", extra=extra, **loop)


def add_noise(run: Run, i: int, x: Tensor, std: float) -> Tensor:
    """``x + std noise(i)`` (in place; no draw when ``std`` is 0)."""
    return x.add_(run.noise(i, x), alpha=std) if std > 0.0 else x


# ----------------------------------------------------------------------------- ancestral
def euler_ancestral_step(run: Run, i: int, x: Tensor, state, *, eta: float, s_noise: float):
    """DDIM down to ``σ_down`` (one lerp), then ``S_noise σ_up`` noise up to ``σ_{i+1}`` (:func:`euler_ancestral`); no state."""
    s = run.s[i]
    down, up = ancestral_step(s, run.s[i + 1], eta)
    x = torch.lerp(x, run.f.denoise(x, run.at(s)), 1.0 - down / s)
    return add_noise(run, i, x, s_noise * up), state


@takes("euler-ancestral", ETA, S_NOISE, base=STOCHASTIC_OPTIONS, passthrough=NOISE_KEYS)
def euler_ancestral(target, x: Tensor, schedule: Union[Tensor, Sequence[float]], *, eta: float, s_noise: float, **loop) -> Solution:
    """Ancestral sampling with Euler steps (k-diffusion's ``sample_euler_ancestral``), 1 NFE per step.

    For each step ``σ_i -> σ_{i+1}`` with :func:`ancestral_step` ``(σ_down, σ_up)``::

        D = D(x, σ_i),   x <- x + (σ_down - σ_i)(x - D)/σ_i = D + (σ_down/σ_i)(x - D)
        x <- x + S_noise σ_up z,   z = noise(i)

    The Euler step on the denoiser form is exact for a constant ``D`` (it is DDIM), so this is
    DDIM(η) (arXiv 2010.02502, eq. 16, in the σ variables); ``η = 1`` is DDPM's ancestral step
    with the posterior variance (arXiv 2006.11239).  ``η = 0`` is :func:`solvers.euler` (up to
    rounding: one ``lerp`` here).  The last step to 0 is the denoising step ``x <- D(x, σ_{K-1})``.
    """
    return run_sde(functools.partial(euler_ancestral_step, eta=eta, s_noise=s_noise), "euler-ancestral", target, x, schedule,
                   {"eta": eta, "s_noise": s_noise}, **loop)


def dpm2_ancestral_step(run: Run, i: int, x: Tensor, state, *, eta: float, s_noise: float):
    """DPM-Solver-2 (:func:`solvers.dpm.dpm2_update`) down to ``σ_down``, then noise (:func:`dpm2_ancestral`); no state."""
    s = run.s[i]
    down, up = ancestral_step(s, run.s[i + 1], eta)
    if down == 0.0:  # σ_up = σ_{i+1} (eta this large): denoise, then noise up to σ_{i+1}
        x = run.f.denoise(x, run.at(s))
    else:
        x = dpm2_update(run, x, s, down)
    return add_noise(run, i, x, s_noise * up), state


@takes("dpm2-ancestral", ETA, S_NOISE, base=STOCHASTIC_OPTIONS, passthrough=NOISE_KEYS)
def dpm2_ancestral(target, x: Tensor, schedule: Union[Tensor, Sequence[float]], *, eta: float, s_noise: float, **loop) -> Solution:
    """Ancestral sampling with DPM-Solver-2 steps (k-diffusion's ``sample_dpm_2_ancestral``), 2 NFE per step.

    For each step ``σ_i -> σ_{i+1}`` with :func:`ancestral_step` ``(σ_down, σ_up)``, the
    DPM-Solver-2 step (arXiv 2206.00927, Alg. 1, ``r1 = 1/2``) from ``σ_i`` to ``σ_down``
    with the midpoint ``σ_m = √(σ_i σ_down)`` in ``λ``::

        u = x + (σ_m - σ_i)(x - D(x, σ_i))/σ_i,      x <- x + (σ_down - σ_i)(u - D(u, σ_m))/σ_m
        x <- x + S_noise σ_up z,   z = noise(i)

    ``η = 0`` is :func:`solvers.dpm2` bit for bit (the same step rule).  The last step to 0 is
    the denoising step (1 NFE).  Where ``η`` is so large that ``σ_down = 0`` before the end
    (``σ_up`` clamped to ``σ_{i+1}``), the step denoises (1 NFE) and then adds the noise;
    k-diffusion skips the noise in that branch, which leaves the state at ``σ_{i+1} > 0``
    noise-free; here the noise keeps the marginal.
    """
    return run_sde(functools.partial(dpm2_ancestral_step, eta=eta, s_noise=s_noise), "dpm2-ancestral", target, x, schedule,
                   {"eta": eta, "s_noise": s_noise}, **loop)


# ----------------------------------------------------------------------------- DPM-Solver++ SDE
def dpmpp_sde_step(run: Run, i: int, x: Tensor, state, *, eta: float, s_noise: float, r: float):
    """Two ancestral sub-steps from ``σ_i``: to ``σ_s`` (for ``D_2``) and to ``σ_{i+1}``, with the
    Brownian pair ``(z_1, z_2)`` (:func:`dpmpp_sde`); no state."""
    si, st = run.s[i], run.s[i + 1]
    sm = math.exp((1.0 - r) * math.log(si) + r * math.log(st))  # λ_s = λ_i + r h
    down1, up1 = ancestral_step(si, sm, eta)
    down2, up2 = ancestral_step(si, st, eta)
    w = min(max(brownian_pair_weight(si, sm, st), 0.0), 1.0)  # in [0, 1] up to rounding (r = 1: w = 1)
    std1, std2 = s_noise * up1, s_noise * up2
    d = run.f.denoise(x, run.at(si))
    u = torch.lerp(x, d, 1.0 - down1 / si)
    z1 = None
    if std1 > 0.0:
        z1 = run.noise(2 * i, x)
        u.add_(z1, alpha=std1)
    d = torch.lerp(d, run.f.denoise(u, run.at(sm)), 0.5 / r)  # (1 - 1/(2r)) D + 1/(2r) D_2
    x = torch.lerp(x, d, 1.0 - down2 / si)
    if std2 > 0.0:
        x.add_(run.noise(2 * i + 1, x), alpha=std2 * math.sqrt(1.0 - w))
        if z1 is not None:
            x.add_(z1, alpha=std2 * math.sqrt(w))
    return x, state


@takes("dpmpp-sde", ETA, S_NOISE,
       Option("r", float, 0.5, "where the intermediate evaluation sits, as a fraction of the step in λ", lo=R_MIN, hi=1.0, why=R_WHY),
       base=STOCHASTIC_OPTIONS, passthrough=NOISE_KEYS)
def dpmpp_sde(target, x: Tensor, schedule: Union[Tensor, Sequence[float]], *, eta: float, s_noise: float, r: float, **loop) -> Solution:
    """DPM-Solver++ SDE (k-diffusion's ``sample_dpmpp_sde``; DPM-Solver++, Lu et al., arXiv 2211.01095), 2 NFE per step.

    Step ``σ_i -> σ_{i+1}``, ``h = λ_{i+1} - λ_i``, intermediate ``λ_s = λ_i + r h``
    (``σ_s = σ_i^{1-r} σ_{i+1}^r``), both sub-steps ancestral steps from ``σ_i``
    (:func:`ancestral_step` ``(d_1, u_1)`` to ``σ_s`` and ``(d_2, u_2)`` to ``σ_{i+1}``)::

        D   = D(x, σ_i)
        x_2 = D + (d_1/σ_i)(x - D) + S_noise u_1 z_1,            D_2 = D(x_2, σ_s)
        D'  = (1 - 1/(2r)) D + 1/(2r) D_2                          (= D_2 at r = 1/2)
        x  <- D' + (d_2/σ_i)(x - D') + S_noise u_2 z_2

    with ``(z_1, z_2)`` the Brownian pair of the module docstring (``z_1 = noise(2i)``,
    ``z_2 = √w z_1 + √(1-w) noise(2i+1)``, ``w = (σ_i - σ_s)/(σ_i - σ_{i+1})``), which is the
    joint law of k-diffusion's two Brownian-tree draws.  ``η = 0`` is DPM-Solver++(2S)
    (arXiv 2211.01095, Alg. 1; k-diffusion's ``sample_dpmpp_2s_ancestral`` at ``eta = 0``),
    second order.  For ``η > 0`` the combination ``D'`` is placed for the step to ``σ_{i+1}``
    while the deterministic part ends at ``d_2 < σ_{i+1}``, as in k-diffusion.  The last step
    to 0 is the denoising step (1 NFE).
    """
    return run_sde(functools.partial(dpmpp_sde_step, eta=eta, s_noise=s_noise, r=r), "dpmpp-sde", target, x, schedule,
                   {"eta": eta, "s_noise": s_noise, "r": r}, **loop)


# ----------------------------------------------------------------------------- multistep SDE solvers
def multistep_sde_step(run: Run, i: int, x: Tensor, history: tuple, *, eta: float, s_noise: float, depth: int,
                       corrections: Callable[[list, int, float, float], tuple]):
    """The exact step of the η-SDE with ``D`` held fixed, plus multistep corrections from the previous
    data predictions (``history``, newest first)::

        h = λ_{i+1} - λ_i,   H = (1 + η) h,   std = S_noise σ_{i+1} √(1 - e^{-2ηh})
        x <- e^{-H} x + (1 - e^{-H}) D_i + Σ_j c_j (D_{i-j} - D_{i-j-1}) + std z,   c = corrections(s, i, h, H)
    """
    s, s_next = run.s[i], run.s[i + 1]
    h = math.log(s / s_next)
    H = (1.0 + eta) * h
    d = run.f.denoise(x, run.at(s))
    x = torch.lerp(x, d, -math.expm1(-H))  # e^{-H} x + (1 - e^{-H}) D
    chain = (d,) + history
    for j, c in enumerate(corrections(run.s, i, h, H)):
        x.add_(chain[j] - chain[j + 1], alpha=c)
    return add_noise(run, i, x, s_noise * s_next * math.sqrt(-math.expm1(-2.0 * eta * h))), chain[:depth]


def phi2(H: float) -> float:
    """``φ_2(H) = 1 - (1 - e^{-H})/H = (1/H) ∫_0^H e^{-(H-v)} v dv`` (``≈ H/2``): for ``D``
    linear in ``λ``, ``∫ e^{-(H-v)} D dv = (1 - e^{-H}) D_i + φ_2(H) h D'``."""
    return 1.0 + math.expm1(-H) / H


def dpmpp_2m_sde_corrections(s: list, i: int, h: float, H: float, *, solver_type: str) -> tuple:
    """DPM-Solver++(2M) SDE's weight ``c`` of ``D_i - D_{i-1}`` (:func:`dpmpp_2m_sde`)."""
    if multistep_order(s, i, 2) == 1:  # the first step, or one reaching too far
        return ()
    r = math.log(s[i - 1] / s[i]) / h
    if solver_type == "heun":
        return (phi2(H) / r,)
    return (-0.5 * math.expm1(-H) / r,)


@takes("dpmpp-2m-sde", ETA, S_NOISE, Option("solver_type", str, "midpoint", "the second-order correction: midpoint or heun",
                                            choices=SDE_SOLVER_TYPES),
       base=STOCHASTIC_OPTIONS, passthrough=NOISE_KEYS)
def dpmpp_2m_sde(target, x: Tensor, schedule: Union[Tensor, Sequence[float]], *, eta: float, s_noise: float, solver_type: str,
                 **loop) -> Solution:
    """DPM-Solver++(2M) SDE (k-diffusion's ``sample_dpmpp_2m_sde``; DPM-Solver++, arXiv 2211.01095), 1 NFE per step.

    Step ``σ_i -> σ_{i+1}``: ``h = log(σ_i/σ_{i+1})``, ``H = (1 + η) h``, ``D_i = D(x_i, σ_i)``,
    ``r = h_{i-1}/h``::

        x <- e^{-H} x + (1 - e^{-H}) D_i + c (D_i - D_{i-1}) + S_noise σ_{i+1} √(1 - e^{-2ηh}) z
        midpoint: c = (1 - e^{-H})/(2r)        heun: c = φ_2(H)/r,  φ_2(H) = 1 - (1 - e^{-H})/H

    ``z = noise(i)``; the first step has ``c = 0``, as has a step more than twice as long in
    ``λ`` as the one before (:func:`solvers.expint.multistep_order`).  Without ``c`` it is the exact solution of
    the η-SDE of the module docstring with ``D`` held fixed (SDE-DPM-Solver++(1) at ``η = 1``);
    ``c`` integrates the linear extrapolation of ``D`` in ``λ``, exactly (``heun``: ``φ_2``) or
    to leading order (``midpoint``).  ``η = 0``, ``midpoint`` is DPM-Solver++(2M)
    (:func:`solvers.dpmpp_2m`).  The last step to 0 is the denoising step (1 NFE).
    """
    step = functools.partial(multistep_sde_step, eta=eta, s_noise=s_noise, depth=1,
                             corrections=functools.partial(dpmpp_2m_sde_corrections, solver_type=solver_type))
    return run_sde(step, "dpmpp-2m-sde", target, x, schedule, {"eta": eta, "s_noise": s_noise}, state=(), **loop)


def dpmpp_3m_sde_corrections(s: list, i: int, h: float, H: float) -> tuple:
    """DPM-Solver++(3M) SDE's weights of ``D_i - D_{i-1}`` and ``D_{i-1} - D_{i-2}`` (:func:`dpmpp_3m_sde`)."""
    p2, order = phi2(H), multistep_order(s, i, 3)  # 1, 2, 3 over the warm-up; lower on a step reaching too far
    if order == 1:
        return ()
    r0 = math.log(s[i - 1] / s[i]) / h
    if order == 2:
        return (p2 / r0,)
    r1 = math.log(s[i - 2] / s[i - 1]) / h
    p3 = 2.0 * (p2 / H - 0.5)  # 2 φ_3: d2's weight -2 φ_3 is exact (k-diffusion's is -φ_3; see dpmpp_3m_sde)
    # φ_2 d1 - p3 d2 with d1_0 = (D_i - D_{i-1})/r0, d1_1 = (D_{i-1} - D_{i-2})/r1,
    # d1 = d1_0 + (d1_0 - d1_1) r0/(r0 + r1), d2 = (d1_0 - d1_1)/(r0 + r1), as weights of the differences
    q = r0 + r1
    return ((p2 * (1.0 + r0 / q) - p3 / q) / r0, (p3 / q - p2 * r0 / q) / r1)


@takes("dpmpp-3m-sde", ETA, S_NOISE, base=STOCHASTIC_OPTIONS, passthrough=NOISE_KEYS)
def dpmpp_3m_sde(target, x: Tensor, schedule: Union[Tensor, Sequence[float]], *, eta: float, s_noise: float, **loop) -> Solution:
    """DPM-Solver++(3M) SDE (DPM-Solver++, arXiv 2211.01095; k-diffusion's ``sample_dpmpp_3m_sde``
    with the exact weight of the second difference), 1 NFE per step.

    Step ``σ_i -> σ_{i+1}`` with ``h, H = (1 + η) h, r0 = h_{i-1}/h, r1 = h_{i-2}/h`` and
    ``φ_2 = 1 - (1 - e^{-H})/H``, ``φ_3 = φ_2/H - 1/2``::

        d1_0 = (D_i - D_{i-1})/r0,   d1_1 = (D_{i-1} - D_{i-2})/r1
        d1 = d1_0 + (d1_0 - d1_1) r0/(r0 + r1),   d2 = (d1_0 - d1_1)/(r0 + r1)
        x <- e^{-H} x + (1 - e^{-H}) D_i + φ_2 d1 - 2 φ_3 d2 + S_noise σ_{i+1} √(1 - e^{-2ηh}) z

    ``z = noise(i)``; the first step drops both corrections, the second uses ``φ_2 d1_0``
    alone, and so does a step reaching too far for its history
    (:func:`solvers.expint.multistep_order`, as in :func:`solvers.dpmpp_3m`).  ``d1 ≈ h P'`` and ``d2 = h² P''/2`` for the quadratic ``P`` through the last three
    ``D`` in ``λ``, and the drift of the η-SDE integrates it exactly:
    ``(1+η) ∫_0^h e^{-(1+η)(h-v)} P(λ_i + v) dv = (1 - e^{-H}) D_i + φ_2 d1 - 2 φ_3 d2``
    (with ``u = (1+η) v``: ``∫_0^H e^{-(H-u)} (u/H)² du = 1 - 2/H + 2(1 - e^{-H})/H² = -2 φ_3``).

    Where we differ from k-diffusion: its ``sample_dpmpp_3m_sde`` (like the DPM-Solver code
    and diffusers' third-order multistep update) weights ``d2`` by ``-φ_3``, half the exact
    weight, which leaves an ``O(h³)`` local error: at ``η = 0`` it is of order 2 (measured
    1.85-1.93 on the closed-form Gaussian flow) where this one is of order 3 (measured 2.9,
    tests/test_ancestral.py).  We follow the exact integral, as :func:`solvers.dpmpp_3m` does,
    so that ``dpmpp-3m-sde`` at ``η = 0`` is ``dpmpp-3m`` (tested); for ``η > 0`` the two
    differ by the same ``-φ_3 d2`` term, a third-order-small change of the drift.  The last
    step to 0 is the denoising step (1 NFE).
    """
    step = functools.partial(multistep_sde_step, eta=eta, s_noise=s_noise, depth=2, corrections=dpmpp_3m_sde_corrections)
    return run_sde(step, "dpmpp-3m-sde", target, x, schedule, {"eta": eta, "s_noise": s_noise}, state=(), **loop)
