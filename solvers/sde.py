"""Euler-Maruyama for reverse-time SDEs ``dx = f(x, s) ds + g(s) dW`` over a schedule."""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from ._common import check_batch, scale_table
from .base import SDE, CountedSDE, NoiseFn, Solution, SolverStats, as_schedule, default_noise

__all__ = ["euler_maruyama"]


def euler_maruyama(
    sde: SDE,
    x: Tensor,
    schedule: Union[Tensor, Sequence[float]],
    *,
    noise: Optional[NoiseFn] = None,
    generator: Optional[torch.Generator] = None,
    return_trajectory: bool = False,
) -> Solution:
    """Euler-Maruyama (Kloeden & Platen 1992; reverse SDE of Song et al., arXiv 2011.13456).

    For a step ``dt = s_{i+1} - s_i`` (negative for a decreasing schedule)::

        x <- x + f(x, s_i) dt + g(s_i) sqrt(|dt|) z_i,      z_i ~ N(0, I)

    with ``z_i = noise(i, x)`` (a :data:`NoiseFn`, e.g. per-sample seeded noise) or
    ``default_noise(generator)``.  A final step to ``s = 0`` is the drift-only Euler step
    (no noise, the flow is never evaluated at 0); ``noise`` is then called for steps
    ``0..K-2`` only.  NFE counts drift evaluations (:class:`CountedSDE`).
    """
    check_batch(x, "euler_maruyama")
    if noise is not None and generator is not None:
        raise ValueError("euler_maruyama: pass either noise or generator, not both")
    s = as_schedule(schedule)
    sde_c = CountedSDE(sde)
    noise_fn = noise if noise is not None else default_noise(generator)
    K = len(s) - 1
    last_plain = s[-1] == 0.0
    table = scale_table(s[:K], x)
    bshape = (x.shape[0],) + (1,) * (x.dim() - 1)
    traj = [x] if return_trajectory else None
    for i in range(K):
        dt = s[i + 1] - s[i]
        drift = sde_c.drift(x, table[i])
        if last_plain and i == K - 1:
            x = torch.add(x, drift, alpha=dt)
        else:
            g = torch.as_tensor(sde_c.diffusion(table[i]), dtype=x.dtype, device=x.device)
            g = g.reshape(bshape if g.numel() == x.shape[0] else (1,) * x.dim())
            z = noise_fn(i, x)
            x = torch.add(x, drift, alpha=dt).addcmul_(g, z, value=math.sqrt(abs(dt)))
        if traj is not None:
            traj.append(x)
    stats = SolverStats(
        nfe=sde_c.nfe,
        steps=K,
        accepted=K * x.shape[0],
        trajectory=torch.stack(traj) if traj is not None else None,
    )
    return Solution(x, stats)
