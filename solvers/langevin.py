"""Langevin samplers driven by a score ``score(x, s) = ∇_x log p_s(x)``: annealed and plain.

Convention (NCSN, Song & Ermon 2019, arXiv 1907.05600, Alg. 1): one Langevin step of size
``α`` at level ``σ`` is

    x <- x + (α/2) s(x, σ) + √α z,        z ~ N(0, I).

The NCSN and NCSNv2 code (and NCSNv2's Alg. 1, arXiv 2006.09011) write the same step as
``x + a s + √(2a) z``, so their ``a`` is our ``α/2`` and their ``ε`` (``step_lr``) is half of
ours: NCSNv2's CIFAR-10 ``ε = 6.2e-6`` is ``eps = 1.24e-5`` here.

Both samplers are one step function run by :func:`solvers._loop.run_steps` whose "step" is one
*level*: ``T`` Langevin updates at ``σ_i`` (the schedule lists the levels and ends at 0, the
final denoising step).  The target offers ``score(x, s)`` and, optionally, ``marginal(s) -> (a,
b)``; the noise std ``b`` sets the step sizes (without ``marginal``, ``b`` is the level itself, as for VE).  NCSNv2's technique 4
(:func:`choose_eps`) picks ``ε`` when it is not given.
"""
from __future__ import annotations

import functools
import math
from typing import Sequence, Union

import numpy as np
import torch
from torch import Tensor

from ._loop import Run, run_steps, to_zero
from .base import Solution, as_schedule
from .spec import NOISE_KEYS, STOCHASTIC_OPTIONS, Option, takes
from .stochastic import host_noise_std

__all__ = ["annealed_langevin", "langevin", "choose_eps", "default_eps", "variance_ratio", "check_stable_step", "DEFAULT_BUDGET", "LOW_DIM"]

DEFAULT_BUDGET = 1000
"""Score evaluations of annealed Langevin when ``steps_per_level`` is not given (``T = budget // L``)."""


def variance_ratio(eps: float, gamma: float, sigma_min: float, steps: int) -> float:
    """NCSNv2 Eq. (6) in our step convention: ``s_T²/σ_i²`` after ``T`` steps from level ``i-1``.

    For the data ``δ_0`` the level-``σ_i`` marginal is ``N(0, σ_i² I)``; starting from level
    ``i-1``'s law ``N(0, γ² σ_i² I)``, ``T`` steps with ``α_i = ε σ_i²/σ_L²`` give per coordinate
    (``u = ε/(2σ_L²)``): ``s_T²/σ_i² = (1 - u)^{2T} (γ² - r) + r``, ``r = 1/(1 - u/2)``.
    """
    u = eps / (2.0 * sigma_min**2)
    r = 1.0 / (1.0 - u / 2.0)
    return (1.0 - u) ** (2 * steps) * (gamma**2 - r) + r


def choose_eps(gamma: float, sigma_min: float, steps: int) -> tuple[float, float]:
    """NCSNv2 technique 4: the ``ε`` that brings Eq. (6) closest to 1, for ``u = ε/(2σ_L²) ∈ (0, 1]``.

    Returns ``(ε, s_T²/σ²)``.  A log-spaced grid over ``u`` finds the basin of
    ``|Eq. (6) - 1|``; a golden-section search on ``log u`` refines it.  With NCSNv2's
    CIFAR-10 values (``T = 5``, ``γ`` of 232 levels from 50 to 0.01) the minimiser is the
    published ``ε = 6.2e-6`` in the code convention.
    """

    def loss(log_u):
        u = np.exp(log_u)
        r = 1.0 / (1.0 - u / 2.0)
        return np.abs((1.0 - u) ** (2 * steps) * (gamma**2 - r) + r - 1.0)

    grid = np.linspace(math.log(1e-10), 0.0, 4001)
    i = int(np.argmin(loss(grid)))
    lo, hi = float(grid[max(i - 1, 0)]), float(grid[min(i + 1, len(grid) - 1)])
    g = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = lo + (1 - g) * (hi - lo), lo + g * (hi - lo)
    fa, fb = loss(a), loss(b)
    for _ in range(80):
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = lo + (1 - g) * (hi - lo)
            fa = loss(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = loss(b)
    best = min((float(grid[i]), a, b), key=lambda v: float(loss(v)))
    eps = 2.0 * math.exp(best) * sigma_min**2
    return eps, variance_ratio(eps, gamma, sigma_min, steps)


LOW_DIM = 4
"""Up to this many dimensions per sample the Langevin chain must also mix between modes (see :func:`default_eps`)."""


def default_eps(gamma: float, sigma_min: float, steps: int, dim: int) -> float:
    """The default step size of annealed Langevin: NCSNv2's technique 4 (:func:`choose_eps`),
    with Eq. (6) reached after ``T`` steps in more than :data:`LOW_DIM` dimensions and after
    ``ceil(T/4)`` steps below.

    Why the departure in low dimension.  Technique 4 makes the per-level variance relax from
    the previous level's just in time (its ``ε T`` is about constant in ``T``), an argument for
    one concentrated mode.  In 2-D the mode weights are decided by mixing *between* modes at the
    levels where they separate, and a chain that only just relaxes leaves them biased towards
    the even split: on the 0.2/0.8 two-mode toy (NCSN, σ 16.3 -> 0.01, 20 levels, T = 50) the
    left-mode weight was 0.229-0.233 (seeds 0, 1, exact and analytic fields) with technique 4,
    0.219-0.221 when Eq. (6) is met after a quarter of the steps (the rest of each level then
    mixes at equilibrium); a larger ε again biases the chain (ULA's own discretisation error:
    0.245 at 4x that).  In high dimension both rules relax and the published NCSNv2 ε is kept.
    """
    horizon = steps if dim > LOW_DIM else max(1, math.ceil(steps / 4))
    return choose_eps(gamma, sigma_min, horizon)[0]


def langevin_level_step(run: Run, i: int, x: Tensor, state, *, levels: list, sigmas: list, eps: float, steps_per_level: int,
                        final_denoise: bool):
    """``T`` updates ``x <- x + (α_i/2) s(x, σ_i) + √α_i z`` at level ``i``, ``α_i = ε b_i²/b_L²``
    (``α = ε`` for one level); after the last level, with ``final_denoise``, Tweedie's denoising
    step (NCSNv2's final step).  The loop runs one step per level over the index grid ``L, ..., 0``
    (:func:`run_langevin`); the watch counts the inner steps, ``k = i T + t``; no state."""
    T = steps_per_level
    alpha = eps * (sigmas[i] / sigmas[-1]) ** 2 if len(sigmas) > 1 else eps
    level, k = run.at(levels[i]), i * T
    for _ in range(T):
        x = torch.add(x, run.f.score(x, level), alpha=0.5 * alpha).add_(run.noise(k, x), alpha=math.sqrt(alpha))
        run.watch.update(x, k)
        k += 1
        if run.check_every and k % run.check_every == 0:  # inner steps count: a long level stops early too
            run.watch.check(x, functools.partial(langevin_describe, run.s, levels=levels, sigmas=sigmas, steps_per_level=T))
    if i == len(levels) - 1 and final_denoise:  # Tweedie: x + σ_L² s(x, σ_L) for VE, (x + b² s)/a in general
        x = to_zero(run.f, x, level, levels[i]) if run.f.has("denoise") else torch.add(x, run.f.score(x, level), alpha=sigmas[-1] ** 2)
        run.watch.update(x, k)
    return x, state


def langevin_describe(s: list, k: int, *, levels: list, sigmas: list, steps_per_level: int) -> str:
    """Where inner step ``k`` of :func:`langevin_level_step` was taken."""
    L = len(levels)
    i, t = divmod(k, steps_per_level)
    if i >= L:
        return f"the final denoising step at level {L - 1} (σ={sigmas[-1]:.4g})"
    return f"step {k} (level {i} of {L}, σ={sigmas[i]:.4g}, step {t} of {steps_per_level} at that level)"


def run_langevin(name: str, target, x: Tensor, levels: list, sigmas: list, eps: float, steps_per_level: int, final_denoise: bool,
                 extra: dict, **loop) -> Solution:
    """Run :func:`langevin_level_step` over the levels as the solver ``name``."""
    levels_of = {"levels": levels, "sigmas": sigmas, "steps_per_level": steps_per_level}
    grid = [float(i) for i in range(len(levels), -1, -1)]  # one step per level; the scales are levels[i]
    return run_steps(functools.partial(langevin_level_step, eps=eps, final_denoise=final_denoise, **levels_of), target, x, grid,
                     name=name, need="score", stochastic=True, own_final=True, hint=f"lower eps (eps={eps:g}) or raise the number of levels",
                     describe=functools.partial(langevin_describe, **levels_of), extra=extra, **loop)


def _levels(schedule, name: str) -> list[float]:
    s = as_schedule(schedule) if len(schedule) > 1 else [float(v) for v in schedule]
    levels = s[:-1] if s[-1] == 0.0 else s
    if not levels or not all(v > 0 and math.isfinite(v) for v in levels):
        raise ValueError(f"{name}: levels must be positive and finite, got {s[:6]}")
    if len(levels) > 1 and levels[-1] > levels[0]:
        raise ValueError(f"{name}: levels must decrease (σ_1 > … > σ_L), got {levels[:6]}")
    return levels


@takes("ald", Option("eps", float, None, "step size ε (default: NCSNv2 technique 4)", lo=0.0, lo_open=True, none_ok=True),
       Option("steps_per_level", int, None, f"T Langevin steps per level (default: {DEFAULT_BUDGET} // levels)", lo=1,
              hi=100_000, none_ok=True),
       Option("final_denoise", bool, True, "end with Tweedie's step x + σ_L² s(x, σ_L)"),
       base=STOCHASTIC_OPTIONS, passthrough=NOISE_KEYS)
def annealed_langevin(target, x: Tensor, schedule: Union[Tensor, Sequence[float]], *, eps, steps_per_level,
                      final_denoise: bool, **loop) -> Solution:
    """Annealed Langevin dynamics (NCSN, arXiv 1907.05600, Alg. 1; NCSNv2, arXiv 2006.09011).

    ``target`` offers ``score(x, s)`` (a bare score callable is accepted too) and ``schedule``
    lists the levels ``σ_1 > … > σ_L`` (a trailing 0 is allowed: the grid of the dispatcher).  With
    ``b_i`` the noise std of the target's marginal at level ``i`` (``b = σ`` for VE) and
    ``T = steps_per_level``::

        α_i = ε b_i² / b_L²
        repeat T times:   x <- x + (α_i/2) s(x, σ_i) + √α_i z

    then, with ``final_denoise``, NCSNv2's final step ``x <- x + σ_L² s(x, σ_L)`` (Tweedie's
    posterior mean).  ``x`` should be drawn at ``σ_1``.  ``T`` defaults to
    ``max(1, 1000 // L)``, ``ε`` to NCSNv2's technique 4 (:func:`default_eps`) at the largest
    ratio ``b_{i-1}/b_i``.  Noise for step ``k = i T + t`` is ``noise(k, x)``.  NFE = ``L T``
    (+1 for the final denoising); the trajectory holds the state at the start and after
    each level.
    """
    target = as_score_target(target)
    levels = _levels(schedule, "ald")
    sigmas = _noise_stds(target, levels)
    T = max(1, DEFAULT_BUDGET // len(levels)) if steps_per_level is None else steps_per_level
    if eps is None:
        gamma = max([a / b for a, b in zip(sigmas[:-1], sigmas[1:])] or [1.5])
        eps = default_eps(max(gamma, 1.0 + 1e-9), sigmas[-1], T, x[0].numel())
    check_stable_step("ald", "eps", eps, sigmas[-1])
    extra = {"levels": len(levels), "steps_per_level": T, "eps": eps, "sigma_max": sigmas[0], "sigma_min": sigmas[-1]}
    return run_langevin("ald", target, x, levels, sigmas, eps, T, final_denoise, extra, **loop)


def check_stable_step(name: str, option: str, alpha: float, b: float) -> None:
    """``ValueError`` naming ``option`` if a Langevin step ``alpha`` at noise std ``b > 0`` is past
    stability: on the level's Gaussian component, ``x <- x - (α/2b²) x + √α z`` contracts only
    for ``α < 4 b²`` (at ``α = 4 b²`` it flips sign each step, beyond it grows)."""
    if b > 0 and not alpha < 4.0 * b * b:
        raise ValueError(f"{name}: {option}={alpha:g} is at least 4 b² = {4.0 * b * b:.3g} (b = {b:.3g}, the noise std of its "
                         f"{'last ' if name == 'ald' else ''}level): a Langevin step that large diverges; take {option} < {4.0 * b * b:.3g}")


class ScoreFunction:
    """A bare ``score(x, s)`` callable as a ``score`` target (no marginal: ``b`` is the level)."""

    def __init__(self, fn):
        self.score = fn


def as_score_target(target):
    """``target`` if it has ``score``, else a bare callable wrapped as :class:`ScoreFunction`."""
    return target if callable(getattr(target, "score", None)) or not callable(target) else ScoreFunction(target)


def _noise_stds(target, levels: list[float]) -> list[float]:
    """The noise std ``b`` at each level (the level itself for a target without a marginal: VE)."""
    return [host_noise_std(target, v) for v in levels] if callable(getattr(target, "marginal", None)) else list(levels)


@takes("langevin", Option("sigma", float, None, "the level (default: the last positive scale of the schedule; 0: the data's score)",
                          lo=0.0, none_ok=True),
       Option("step", float, None, "step size α (default: NCSNv2 technique 4 for one level reached from 1.5 σ)", lo=0.0,
              lo_open=True, none_ok=True),
       Option("n_steps", int, 1000, "number of Langevin steps", lo=1, hi=10_000_000),
       base=STOCHASTIC_OPTIONS, passthrough=NOISE_KEYS)
def langevin(target, x: Tensor, schedule: Union[Tensor, Sequence[float]], *, sigma, step, n_steps: int, **loop) -> Solution:
    """Plain (unadjusted) Langevin dynamics at one level (NCSN, arXiv 1907.05600, eq. 2).

    ``x <- x + (step/2) s(x, σ) + √step z`` for ``n_steps`` steps with the score at the fixed
    scale ``σ`` (default: the last positive scale of ``schedule``), no final denoising: the
    annealed sampler with one level.  Noise for step ``k`` is ``noise(k, x)``; NFE = ``n_steps``.
    """
    target = as_score_target(target)
    levels = _levels(schedule, "langevin")
    level = levels[-1] if sigma is None else sigma
    if not (level == 0.0 or levels[-1] <= level <= levels[0]):
        raise ValueError(f"langevin: sigma={level:g} is outside the schedule's scales [{levels[-1]:g}, {levels[0]:g}] (or 0, the "
                         f"data's score), where the field is defined")
    b = _noise_stds(target, [level])
    if step is None:
        if not b[0] > 0:
            raise ValueError("langevin: at sigma = 0 give the step size (step=...)")
        step, _ = choose_eps(1.5, b[0], n_steps)
    check_stable_step("langevin", "step", step, b[0])
    return run_langevin("langevin", target, x, [level], b, step, n_steps, False, {"step": step, "sigma": level}, **loop)
