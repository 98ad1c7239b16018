"""Langevin samplers driven by a score ``score(x, s) = ∇_x log p_s(x)``: plain and annealed.

Convention (NCSN, Song & Ermon 2019, arXiv 1907.05600, Alg. 1): one Langevin step of size
``α`` at level ``σ`` is

    x <- x + (α/2) s(x, σ) + √α z,        z ~ N(0, I).

The NCSN and NCSNv2 code (and NCSNv2's Alg. 1, arXiv 2006.09011) write the same step as
``x + a s + √(2a) z``, so their ``a`` is our ``α/2`` and their ``ε`` (``step_lr``) is half of
ours: NCSNv2's CIFAR-10 ``ε = 6.2e-6`` is ``eps = 1.24e-5`` here.

Both samplers are physics-agnostic and batched: ``score`` is any callable taking
``x [B, ...]`` and a scale tensor ``[B]``; NFE is counted at the callable; noise comes from
a :data:`~solvers.base.NoiseFn` (per-sample seeded noise makes a sample independent of its
batch).  A diverging run stops with a ``FloatingPointError`` naming the first step (and
level) that produced a non-finite value; the test accumulates on the device and is read
once per level (once every ``check_every`` steps for plain Langevin), so it costs no
synchronisation per step.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor

from ._common import check_batch, scale_table
from .base import CountedFlow, NoiseFn, Solution, SolverStats, as_schedule, default_noise

__all__ = ["annealed_langevin", "langevin", "DivergenceWatch"]

Score = Callable[[Tensor, Tensor], Tensor]


class DivergenceWatch:
    """Records the first step at which the state stopped being finite, without syncing.

    ``update(x, step)`` is a device-side reduction and a masked fill (no host transfer);
    ``check(describe)`` reads the flag once (one sync) and raises ``FloatingPointError``
    with ``describe(step)`` (e.g. "level 3 (σ=0.5), step 12 of 100") when it was set.
    """

    def __init__(self, name: str, x: Tensor, hint: str = ""):
        self.name, self.hint = name, hint
        self.first = torch.full((), -1, dtype=torch.long, device=x.device)

    def update(self, x: Tensor, step: int) -> None:
        bad = ~torch.isfinite(x).all()
        self.first.masked_fill_(bad & (self.first == -1), step)

    def check(self, x: Tensor, describe: Callable[[int], str]) -> None:
        k = int(self.first)  # -1: never non-finite; -2: the initial state already was
        if k == -1:
            return
        rows = int((~torch.isfinite(x.reshape(x.shape[0], -1)).all(1)).sum())
        where = "the initial state" if k == -2 else describe(k)
        hint = f"; {self.hint}" if self.hint else ""
        raise FloatingPointError(
            f"{self.name} diverged: non-finite values first appeared at {where} "
            f"({rows} of {x.shape[0]} samples non-finite now){hint}"
        )


def _check_positive(name: str, value: float, owner: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{owner}: {name} must be a number, got {value!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise ValueError(f"{owner}: {name} must be positive and finite, got {name}={value!r}")
    return v


def _check_count(name: str, value: int, owner: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive integer, got {name}={value!r}")
    return value


def annealed_langevin(
    score: Score,
    x: Tensor,
    levels: Union[Tensor, Sequence[float]],
    *,
    eps: float,
    steps_per_level: int,
    noise: Optional[NoiseFn] = None,
    generator: Optional[torch.Generator] = None,
    sigmas: Optional[Union[Tensor, Sequence[float]]] = None,
    final_denoise: bool = True,
    return_trajectory: bool = False,
) -> Solution:
    """Annealed Langevin dynamics (NCSN, arXiv 1907.05600, Alg. 1; NCSNv2, arXiv 2006.09011).

    For levels ``σ_1 > … > σ_L`` and ``T = steps_per_level``::

        α_i = ε σ_i² / σ_L²
        repeat T times:   x <- x + (α_i/2) s(x, σ_i) + √α_i z

    then, with ``final_denoise``, NCSNv2's final step ``x <- x + σ_L² s(x, σ_L)`` (Tweedie's
    posterior mean for a VE perturbation; no noise).  ``x`` should be drawn at ``σ_1`` (e.g.
    ``N(0, σ_1² I)``, NCSNv2 technique 1).

    ``levels`` are the scales handed to ``score``; ``sigmas`` (default: ``levels``) are the
    noise standard deviations that set the step sizes, for processes whose scale is not
    ``σ`` itself (VP: ``levels`` are times ``t_i``, ``sigmas`` are ``b(t_i)``).  Noise for
    step ``k = i T + t`` is ``noise(k, x)``.  NFE = ``L T`` (+1 for the final denoising).
    The trajectory, when asked for, holds the state at the start and after each level
    (and after the final denoising), not after every step.
    """
    owner = "annealed_langevin"
    check_batch(x, owner)
    eps = _check_positive("eps", eps, owner)
    T = _check_count("steps_per_level", steps_per_level, owner)
    if noise is not None and generator is not None:
        raise ValueError(f"{owner}: pass either noise or generator, not both")
    lv = _levels(levels, owner)
    sg = lv if sigmas is None else _levels(sigmas, owner, "sigmas")
    if len(sg) != len(lv):
        raise ValueError(f"{owner}: sigmas has {len(sg)} entries but levels has {len(lv)}")
    L = len(lv)
    noise_fn = noise if noise is not None else default_noise(generator)
    f = CountedFlow(score)
    table = scale_table(lv, x)
    watch = DivergenceWatch(owner, x, hint=f"lower eps (eps={eps:g}) or raise the number of levels")
    watch.update(x, -2)
    traj = [x] if return_trajectory else None
    sig_last2 = sg[-1] ** 2

    def describe(k: int) -> str:
        i, t = divmod(k, T)
        if i >= L:
            return f"the final denoising step at level {L - 1} (σ={sg[-1]:.4g})"
        return f"step {k} (level {i} of {L}, σ={sg[i]:.4g}, step {t} of {T} at that level)"

    k = 0
    for i in range(L):
        alpha = eps * sg[i] ** 2 / sig_last2
        half, root = 0.5 * alpha, math.sqrt(alpha)
        s_i = table[i]
        for _ in range(T):
            g = f(x, s_i)
            z = noise_fn(k, x)
            x = torch.add(x, g, alpha=half).add_(z, alpha=root)
            watch.update(x, k)
            k += 1
        watch.check(x, describe)
        if traj is not None:
            traj.append(x)
    if final_denoise:
        x = torch.add(x, f(x, table[L - 1]), alpha=sig_last2)
        watch.update(x, L * T)
        watch.check(x, describe)
        if traj is not None:
            traj.append(x)
    stats = SolverStats(
        nfe=f.nfe,
        steps=L * T + int(final_denoise),
        accepted=(L * T + int(final_denoise)) * x.shape[0],
        trajectory=torch.stack(traj) if traj is not None else None,
        extra={"levels": L, "steps_per_level": T, "eps": eps, "sigma_max": sg[0], "sigma_min": sg[-1]},
    )
    return Solution(x, stats)


def langevin(
    score: Score,
    x: Tensor,
    sigma: float,
    *,
    step: float,
    n_steps: int,
    noise: Optional[NoiseFn] = None,
    generator: Optional[torch.Generator] = None,
    check_every: int = 100,
    return_trajectory: bool = False,
) -> Solution:
    """Plain (unadjusted) Langevin dynamics at one level (NCSN, arXiv 1907.05600, eq. 2).

    ``x <- x + (step/2) s(x, σ) + √step z`` for ``n_steps`` steps, with the score at the fixed
    scale ``sigma``.  Noise for step ``k`` is ``noise(k, x)``; NFE = ``n_steps``.  The
    divergence flag is read every ``check_every`` steps and at the end; the trajectory, when
    asked for, holds the state at the start and at each of those checks.
    """
    owner = "langevin"
    check_batch(x, owner)
    step = _check_positive("step", step, owner)
    n = _check_count("n_steps", n_steps, owner)
    every = _check_count("check_every", check_every, owner)
    sigma = float(sigma)
    if not (sigma >= 0 and math.isfinite(sigma)):
        raise ValueError(f"{owner}: sigma must be >= 0 and finite, got sigma={sigma!r}")
    if noise is not None and generator is not None:
        raise ValueError(f"{owner}: pass either noise or generator, not both")
    noise_fn = noise if noise is not None else default_noise(generator)
    f = CountedFlow(score)
    s = scale_table([sigma], x)[0]
    watch = DivergenceWatch(owner, x, hint=f"lower the step size (step={step:g})")
    watch.update(x, -2)
    traj = [x] if return_trajectory else None
    half, root = 0.5 * step, math.sqrt(step)

    def describe(k: int) -> str:
        return f"step {k} of {n} (level 0, the only level, σ={sigma:.4g})"

    for k in range(n):
        g = f(x, s)
        z = noise_fn(k, x)
        x = torch.add(x, g, alpha=half).add_(z, alpha=root)
        watch.update(x, k)
        if (k + 1) % every == 0 or k == n - 1:
            watch.check(x, describe)
            if traj is not None:
                traj.append(x)
    stats = SolverStats(
        nfe=f.nfe,
        steps=n,
        accepted=n * x.shape[0],
        trajectory=torch.stack(traj) if traj is not None else None,
        extra={"step": step, "sigma": sigma},
    )
    return Solution(x, stats)


def _levels(levels, owner: str, name: str = "levels") -> list[float]:
    if isinstance(levels, Tensor):
        values = levels.detach().to("cpu", torch.float64).flatten().tolist()
    else:
        try:
            values = [float(v) for v in levels]
        except TypeError:
            raise ValueError(f"{owner}: {name} must be a sequence of scales, got {levels!r}") from None
    if not values:
        raise ValueError(f"{owner}: {name} is empty")
    if not all(v > 0 and math.isfinite(v) for v in values):
        raise ValueError(f"{owner}: {name} must be positive and finite, got {values[:6]}")
    if len(values) > 1:
        as_schedule(values)  # strictly monotone
        if values[-1] > values[0]:
            raise ValueError(f"{owner}: {name} must decrease (σ_1 > … > σ_L), got {values[:6]}")
    return values
