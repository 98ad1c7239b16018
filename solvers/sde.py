"""Euler-Maruyama for reverse-time SDEs ``dx = f(x, s) ds + g(s) dW`` over a schedule."""
from __future__ import annotations

import math
from typing import Sequence, Union

import torch
from torch import Tensor

from ._loop import Run, run_steps
from .base import SDE, Solution
from .spec import NOISE_KEYS, STOCHASTIC_OPTIONS, takes

__all__ = ["euler_maruyama", "per_sample"]


def per_sample(v, x: Tensor) -> Tensor:
    """A scalar or ``[B]`` coefficient as a tensor broadcasting against ``x``."""
    t = torch.as_tensor(v, dtype=x.dtype, device=x.device)
    return t.reshape((x.shape[0],) + (1,) * (x.dim() - 1)) if t.numel() == x.shape[0] and t.numel() > 1 else t.reshape((1,) * x.dim())


def euler_maruyama_step(run: Run, i: int, x: Tensor, state):
    """``x <- x + f(x, s_i) dt + g(s_i) sqrt(|dt|) z_i``, ``dt = s_{i+1} - s_i`` (:func:`euler_maruyama`); no state."""
    s = run.at(run.s[i])
    dt = run.s[i + 1] - run.s[i]
    drift = run.f.drift(x, s)
    g = per_sample(run.f.diffusion(s), x)
    return torch.add(x, drift, alpha=dt).addcmul_(g, run.noise(i, x), value=math.sqrt(abs(dt))), state


@takes("euler-maruyama", base=STOCHASTIC_OPTIONS, passthrough=NOISE_KEYS)
def euler_maruyama(sde: SDE, x: Tensor, schedule: Union[Tensor, Sequence[float]], **loop) -> Solution:
    """Euler-Maruyama (Kloeden & Platen 1992; reverse SDE of Song et al., arXiv 2011.13456).

    For a step ``dt = s_{i+1} - s_i`` (negative for a decreasing schedule)::

        x <- x + f(x, s_i) dt + g(s_i) sqrt(|dt|) z_i,      z_i ~ N(0, I)

    with ``z_i = noise(i, x)`` (a :data:`~solvers.base.NoiseFn`, e.g. per-sample seeded
    noise) or draws from ``generator``.  A final step to ``s = 0`` is the noise-free
    denoising step of :func:`solvers._loop.to_zero`: Tweedie's ``D(x, s_{K-1})`` when the
    SDE offers ``denoise`` (the probability-flow Euler step), else the drift-only Euler
    step; ``noise`` is then called for steps ``0..K-2`` only.  NFE counts drift
    evaluations.
    """
    return run_steps(euler_maruyama_step, sde, x, schedule, name="euler-maruyama", need="sde", stochastic=True, **loop)
