"""Stochastic samplers: predictor-corrector, EDM's churn sampler and ancestral (DDPM) sampling.

All are physics-agnostic and batched: they receive a target (a Gaussian process's score and
exact transition, or a denoiser-form flow), count NFE at it, draw noise from a
:data:`~solvers.base.NoiseFn`, and stop with a ``FloatingPointError`` naming the step and
the level where a non-finite value first appeared (the flag accumulates on the device and
is read every ``check_every`` steps).  Each is a step function run by :func:`solvers._loop.run_steps`.

* :func:`pc`: predictor-corrector sampling (Song et al. 2021, arXiv 2011.13456, Alg. 4/5).
* :func:`edm_sde`: EDM's stochastic sampler (Karras et al. 2022, arXiv 2206.00364, Alg. 2),
  built on the Heun step of :mod:`solvers.runge_kutta`.
* :func:`ddpm_ancestral`: ancestral sampling on the exact Gaussian transition (DDPM, Ho et
  al. 2020, arXiv 2006.11239, Alg. 2, generalised to any Gaussian process and grid).
"""
from __future__ import annotations

import functools
import math
from typing import Sequence, Union

import torch
from torch import Tensor

from ._loop import Run, run_steps, to_zero
from .ancestral import S_NOISE
from .base import Solution
from .runge_kutta import HEUN, rk_update
from .sde import per_sample
from .spec import NOISE_KEYS, STOCHASTIC_OPTIONS, Option, takes

__all__ = ["pc", "edm_sde", "ddpm_ancestral", "PREDICTORS", "EDM_CHURN", "host_transition"]

PREDICTORS = ("reverse-diffusion", "euler-maruyama")


def host_transition(target, s: float, s_next: float) -> tuple[float, float]:
    """``(r, G²)`` of ``target.transition`` at two host scales, computed once in float64 on the CPU."""
    r, g2 = target.transition(torch.tensor([s], dtype=torch.float64), torch.tensor([s_next], dtype=torch.float64))
    return float(torch.as_tensor(r).reshape(-1)[0]), max(float(torch.as_tensor(g2).reshape(-1)[0]), 0.0)


def host_noise_std(target, s: float) -> float:
    """``b(s)`` of ``target.marginal``, on the host."""
    _, b = target.marginal(torch.tensor([s], dtype=torch.float64))
    return float(torch.as_tensor(b).reshape(-1)[0])


def pc_step(run: Run, i: int, x: Tensor, state, *, target, predictor: str, snr: float, corrector_steps: int, denoise_last: bool,
            norms: str):
    """Correctors at ``s_i`` then one predictor ``s_i -> s_{i+1}`` (the score-SDE code's order; :func:`pc`); no state.
    The watch counts every draw: corrector ``j`` of step ``i`` is ``i (M + 1) + j``, the predictor ``i (M + 1) + M``."""
    s, s_next, M = run.s[i], run.s[i + 1], corrector_steps
    quiet = s_next == 0.0 or (i == len(run.s) - 2 and denoise_last)  # no noise in the last predictor
    r, g2 = host_transition(target, s, s_next)
    s_k, base, tiny = run.at(s), i * (M + 1), torch.finfo(x.dtype).tiny
    for j in range(M):  # corrector: ε = 2 α (snr ‖z‖/‖g‖)², x <- x + ε g + √(2ε) z, α = r²
        g = run.f.score(x, s_k)
        z = run.noise(base + j, x)
        gn = g.reshape(x.shape[0], -1).norm(dim=1)
        zn = z.reshape(x.shape[0], -1).norm(dim=1)
        if norms == "batch":
            gn, zn = gn.mean(), zn.mean()
        shape = (-1,) + (1,) * (x.dim() - 1)
        step = 2.0 * r * r * (snr * zn.reshape(shape) / gn.clamp_min(tiny).reshape(shape)) ** 2
        x = x + step * g + (2.0 * step).sqrt() * z
        run.watch.update(x, base + j)
    if predictor == "reverse-diffusion":  # the exact transition reversed: (2 - r) x + G² score + G z
        x = torch.add(x, run.f.score(x, s_k), alpha=g2).add_(x, alpha=1.0 - r)
        if not quiet:
            x.add_(run.noise(base + M, x), alpha=math.sqrt(g2))
    else:
        dt = s_next - s
        x_mean = torch.add(x, run.f.drift(x, s_k), alpha=dt)
        x = x_mean if quiet else x_mean + per_sample(run.f.diffusion(s_k), x) * math.sqrt(abs(dt)) * run.noise(base + M, x)
    run.watch.update(x, base + M)  # numbered like the correctors (pc_describe reads it back)
    return x, state


def pc_describe(s: list, k: int, *, corrector_steps: int) -> str:
    """Where draw ``k`` of :func:`pc_step` was taken."""
    i, j = divmod(k, corrector_steps + 1)
    what = "predictor" if j == corrector_steps else f"corrector step {j}"
    return f"step {i} of {len(s) - 1} ({what}; level s={s[i]:.4g} -> {s[i + 1]:.4g})"


@takes("pc", Option("predictor", str, "reverse-diffusion", "reverse-diffusion (exact transition) or euler-maruyama", choices=PREDICTORS),
       Option("snr", float, 0.16, "Langevin corrector signal-to-noise ratio", lo=0.0, hi=1.0,
              why="the corrector's step is 2 (snr ‖z‖/‖s‖)²: at snr = 1 its noise is as large as the noise level itself "
                  "(score-SDE uses 0.01 to 0.17)"),
       Option("corrector_steps", int, 1, "corrector steps per level", lo=0, hi=1000),
       Option("denoise_last", bool, True, "no noise in the last predictor step (score-SDE's noise_removal)"),
       Option("norms", str, "auto", "corrector step size from per-sample or batch-mean norms (auto: per sample from 64 dimensions)",
              choices=("auto", "sample", "batch")),
       base=STOCHASTIC_OPTIONS, passthrough=NOISE_KEYS)
def pc(target, x: Tensor, schedule: Union[Tensor, Sequence[float]], *, predictor: str, snr: float, corrector_steps: int,
       denoise_last: bool, norms: str, **loop) -> Solution:
    """Predictor-corrector sampling (Song et al. 2021, arXiv 2011.13456, Alg. 4 VE / Alg. 5 VP).

    At each scale ``s_k`` (``k = 0..K-1``) it runs ``corrector_steps`` Langevin corrector
    steps at ``s_k``, then one predictor step from ``s_k`` to ``s_{k+1}`` (the order of the
    score-SDE code, so that the last step ends on the clean sample).  ``target`` offers the
    score, the reverse SDE and the exact transition ``(r, G²)`` (see
    :class:`solvers.base.GaussianTransition`).

    *Corrector* (App. G): ``g = score(x, s_k)``, ``z ~ N(0, I)``,
    ``ε = 2 α (snr ‖z‖/‖g‖)²`` with norms per sample (``norms="batch"``: batch means, one
    step size for the batch, as the score-SDE code; ``"auto"``, the default: per sample from
    :data:`PC_SAMPLE_NORMS_MIN_DIM` dimensions), ``x <- x + ε g + √(2ε) z``, ``α = r²``.
    Per-sample norms keep a sample independent of its batch, but in low dimension the jump
    ``2 snr ‖z‖²/‖g‖`` is heavy-tailed where ``‖g‖ → 0`` near a mode (``P(jump > J) ~ J^{-N}``).

    *Predictor*: ``"reverse-diffusion"`` (App. E), the exact forward transition
    ``x_s = r x_{s_next} + G z`` reversed, ``x <- (2 - r) x + G² score(x, s_k) + G z``
    (VE: ``r = 1``, ``G² = s² - s_next²``; VP: ``r = √(1-β_i)``, ``G² = β_i``);
    ``"euler-maruyama"``: ``x <- x + drift Δs + g √|Δs| z``.  The last predictor adds no
    noise when ``denoise_last`` or when it ends at ``s = 0``.  NFE = ``K (corrector_steps + 1)``.
    Noise for draw ``j`` of step ``k`` is ``noise(k (M+1) + j, x)``.
    """
    if norms == "auto":
        norms = "sample" if x[0].numel() >= PC_SAMPLE_NORMS_MIN_DIM else "batch"
    step = functools.partial(pc_step, target=target, predictor=predictor, snr=snr, corrector_steps=corrector_steps,
                             denoise_last=denoise_last, norms=norms)
    return run_steps(step, target, x, schedule, name="pc", need="transition", stochastic=True, own_final=True,
                     hint="lower snr or take more steps", describe=functools.partial(pc_describe, corrector_steps=corrector_steps),
                     extra={"snr": snr, "corrector_steps": corrector_steps, "batch_norms": int(norms == "batch")}, **loop)


PC_SAMPLE_NORMS_MIN_DIM = 64
"""``norms="auto"`` uses per-sample norms from this many dimensions per sample: ``‖z‖/√N``
then spreads by ``1/√(2N) <= 9%``; below, the score-SDE code's batch means, because per-sample
steps are heavy-tailed in low dimension (a 2-D mixture sampled with them loses its mode
weights).  Batch means make a sample depend on its batch; pass ``norms="sample"`` to avoid that."""

EDM_CHURN = {"s_churn": 40.0, "s_min": 0.05, "s_max": 50.0, "s_noise": 1.003}
"""EDM's stochastic settings for ImageNet-64 (arXiv 2206.00364, Table 5): the defaults."""


def churn_level(s: float, *, s_churn: float, s_min: float, s_max: float, n_steps: int) -> float:
    """``σ̂ = (1 + γ) σ`` with ``γ = min(S_churn/N, √2 - 1)`` if ``S_min <= σ <= S_max`` else 0 (EDM's Alg. 2)."""
    gamma = min(s_churn / n_steps, math.sqrt(2.0) - 1.0) if s_min <= s <= s_max else 0.0
    return s + gamma * s


def edm_sde_step(run: Run, i: int, x: Tensor, state, *, s_churn: float, s_min: float, s_max: float, s_noise: float, n_steps: int):
    """EDM's Alg. 2 step (:func:`edm_sde`): noise raises σ_i to σ̂, then a Heun step σ̂ -> σ_{i+1}
    (the denoising step when σ_{i+1} = 0); no state."""
    t, t_next = run.s[i], run.s[i + 1]
    t_hat = churn_level(t, s_churn=s_churn, s_min=s_min, s_max=s_max, n_steps=n_steps)
    kick = math.sqrt(t_hat**2 - t**2) * s_noise  # 0 where γ = 0
    if kick > 0.0:
        x = torch.add(x, run.noise(i, x), alpha=kick)
    if t_next == 0.0:
        return to_zero(run.f, x, run.at(t_hat), t_hat), state
    return rk_update(run, x, t_hat, t_next, HEUN), state


def edm_sde_describe(s: list, i: int, **churn) -> str:
    return f"step {i} of {len(s) - 1} (level σ={churn_level(s[i], **churn):.4g} -> {s[i + 1]:.4g})"


@takes("edm-sde", Option("s_churn", float, EDM_CHURN["s_churn"], "S_churn: total churn", lo=0.0),
       Option("s_min", float, EDM_CHURN["s_min"], "churn only for σ >= S_min", lo=0.0),
       Option("s_max", float, EDM_CHURN["s_max"], "churn only for σ <= S_max", lo=0.0, inf_ok=True),
       Option("s_noise", float, EDM_CHURN["s_noise"], "S_noise: noise inflation", lo=S_NOISE.lo, hi=S_NOISE.hi, why=S_NOISE.why),
       base=STOCHASTIC_OPTIONS, passthrough=NOISE_KEYS)
def edm_sde(flow, x: Tensor, schedule: Union[Tensor, Sequence[float]], *, s_churn: float, s_min: float, s_max: float,
            s_noise: float, **loop) -> Solution:
    """EDM's stochastic sampler (Karras et al. 2022, arXiv 2206.00364, Alg. 2).

    ``flow`` is of the denoiser form ``dx/dσ = (x - D(x, σ))/σ`` with a Gaussian kernel and
    ``schedule`` the decreasing ``σ_0 > … > σ_N`` (usually ending at 0).  For each step::

        γ_i = min(S_churn/N, √2 - 1)  if S_min <= σ_i <= S_max  else 0
        σ̂ = (1 + γ_i) σ_i,      x̂ = x + √(σ̂² - σ_i²) S_noise z
        x <- Heun step of the flow from σ̂ to σ_{i+1}   (the denoising step when σ_{i+1} = 0)

    The Heun step is the tableau rule of :func:`solvers.heun`, so with ``S_churn = 0`` (or
    no σ in ``[S_min, S_max]``) the result is bit-for-bit the Heun ODE sampler on the same
    schedule.  Defaults: EDM's ImageNet-64 settings (:data:`EDM_CHURN`).  Noise for step
    ``i`` is ``noise(i, x)`` (drawn only when ``γ_i > 0``).
    """
    if s_min > s_max:
        raise ValueError(f"edm-sde: need s_min <= s_max, got s_min={s_min}, s_max={s_max}")
    n_steps = len(schedule) - 1
    churn = {"s_churn": s_churn, "s_min": s_min, "s_max": s_max, "n_steps": max(n_steps, 1)}
    return run_steps(functools.partial(edm_sde_step, s_noise=s_noise, **churn), flow, x, schedule, name="edm-sde", need="denoiser",
                     stochastic=True, own_final=True, hint="lower s_churn or s_noise, or take more steps",
                     describe=functools.partial(edm_sde_describe, **churn), extra={"s_churn": s_churn, "s_noise": s_noise}, **loop)


VARIANCES = ("beta", "beta_tilde")


def ddpm_step(run: Run, i: int, x: Tensor, state, *, target, variance: str):
    """One ancestral step on the exact transition ``x_s = r x_{s'} + G z``: ``x <- (x + G² score)/r + σ z``
    (:func:`ddpm_ancestral`; no noise on the last step); no state."""
    s, s_next = run.s[i], run.s[i + 1]
    r, g2 = host_transition(target, s, s_next)
    var = g2 if variance == "beta" else g2 * (host_noise_std(target, s_next) / host_noise_std(target, s)) ** 2
    std = 0.0 if i == len(run.s) - 2 else math.sqrt(var)
    x = torch.add(x, run.f.score(x, run.at(s)), alpha=g2)
    inv_r = 1.0 / r
    if inv_r != 1.0:
        x.mul_(inv_r)
    return (x.add_(run.noise(i, x), alpha=std) if std > 0.0 else x), state


@takes("ddpm", Option("variance", str, "beta", "σ_t² = β_t (DDPM's CIFAR-10 choice) or the posterior β̃_t", choices=VARIANCES),
       base=STOCHASTIC_OPTIONS, passthrough=NOISE_KEYS)
def ddpm_ancestral(target, x: Tensor, schedule: Union[Tensor, Sequence[float]], *, variance: str, **loop) -> Solution:
    """Ancestral sampling (DDPM, Ho et al. 2020, arXiv 2006.11239, Alg. 2) on any Gaussian process.

    For each step ``s -> s'`` of the decreasing grid, with the exact forward transition
    ``x_s = r x_{s'} + G z`` of the process (``r = a(s)/a(s')``, ``G² = b(s)² - r² b(s')²``)::

        x_{s'} = (x_s + G² ∇log p_s(x_s)) / r + σ z,      σ² = G²  or  σ² = G² b(s')²/b(s)²

    For VP this is exactly Alg. 2 (``r = √α_t``, ``G² = β_t``, ``∇log p = -ε/√(1-ᾱ_t)``,
    ``β̃_t = (1-ᾱ_{t-1})/(1-ᾱ_t) β_t``) with the discrete ``ᾱ_j = a(τ_j)²`` of the continuous
    schedule at the grid times ``τ_j``; for VE it is SMLD's reverse diffusion with the
    posterior variance.  The last step adds no noise (DDPM's ``z = 0`` at ``t = 1``); a last
    step to ``s = 0`` is Tweedie's denoising step.  ``--steps K`` is K transitions and K NFE.
    """
    return run_steps(functools.partial(ddpm_step, target=target, variance=variance), target, x, schedule, name="ddpm", need="transition",
                     stochastic=True, hint="check the score model and the schedule", **loop)
