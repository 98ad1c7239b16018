"""Restart sampling (Xu, Deng, Cheng, Tian, Liu, Jaakkola, arXiv 2306.14878).

The probability-flow ODE is integrated with EDM's Heun rule on the main grid; at one point of
it, ``t_min``, the sampler *restarts* ``k`` times: it jumps forward to ``t_max > t_min`` by
the forward process's own transition and integrates the ODE back down to ``t_min`` with Heun.
The forward noise contracts the error accumulated so far (the paper's Theorem 2: the total
variation to the true marginal shrinks by a factor ``< 1`` per restart), while the ODE steps
keep their small discretisation error.

The jump is exact for a Gaussian kernel in the denoiser form ``x = y + σ ε`` (EDM, VE, PFGM++
at ``D = ∞``; VP through its σ form ``x/a``, ``σ = b/a``, where the dispatcher hands this
sampler the σ coordinates): the forward transition from ``σ`` to ``σ' > σ`` is

    x_{σ'} = x_σ + √(σ'² - σ²) ε,     ε ~ N(0, I),

so ``x_{σ'}`` has the marginal at ``σ'`` whenever ``x_σ`` has the one at ``σ``.  PFGM++ at
finite ``D`` is refused (it does not offer the need ``gaussian``): its kernel
``p_r(x | y) ∝ (‖x - y‖² + r²)^{-(N + D)/2}`` is not a convolution semigroup in ``r``, so no
transition ``r -> r'`` independent of ``y`` maps its marginal at ``r`` onto the one at ``r'``;
the additive Gaussian jump would put the sample off the process's marginals.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from ._loop import DivergenceWatch, check_batch, require, resolve_noise, to_zero
from .base import Counted, NoiseFn, Solution, SolverStats, as_schedule
from .schedules import edm_schedule
from .spec import NOISE_KEYS, STOCHASTIC_OPTIONS, Option, takes

__all__ = ["restart", "RESTART_DEFAULTS", "restart_point"]

RESTART_DEFAULTS = {"restart_intervals": 3, "k": 2, "t_min": 0.06, "t_max": 0.30}
"""Defaults: one restart interval at small σ, ``[0.06, 0.30]``, where the paper places its
CIFAR-10 restarts (errors accumulate there, and the jump is cheap), ``k = 2`` restarts, 3 Heun
steps down each time."""


def _heun(f, x: Tensor, t: float, t_next: float) -> Tensor:
    """One step of EDM's Heun rule (arXiv 2206.00364, Alg. 1) from ``t`` to ``t_next``; the
    denoising step ``x <- D(x, t)`` when ``t_next = 0``."""
    t_b = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
    if t_next == 0.0:
        return to_zero(f, x, t_b, t)
    d = f(x, t_b)
    x_euler = x + (t_next - t) * d
    d_next = f(x_euler, torch.full_like(t_b, t_next))
    return x + (t_next - t) * 0.5 * (d + d_next)


def restart_point(s: Sequence[float], t_min: float) -> Optional[int]:
    """The index of the positive interior grid point nearest ``t_min`` in ``log σ`` (where the
    restarts begin), or ``None`` when the grid has no positive interior point."""
    inner = [i for i in range(1, len(s) - 1) if s[i] > 0]
    return min(inner, key=lambda i: abs(math.log(s[i] / t_min))) if inner else None


@takes("restart", Option("restart_intervals", int, RESTART_DEFAULTS["restart_intervals"],
                         "Heun steps on each way back from t_max to t_min (N_Restart)", lo=1, hi=1000),
       Option("k", int, RESTART_DEFAULTS["k"], "restarts (forward jump and way back) at t_min", lo=0, hi=1000),
       Option("t_min", float, RESTART_DEFAULTS["t_min"], "σ where the restarts begin (the main grid's nearest point)", lo=1e-6),
       Option("t_max", float, RESTART_DEFAULTS["t_max"], "σ the forward jump reaches", lo=1e-6),
       Option("s_noise", float, 1.0, "scale of the jump's noise (1: the exact transition)", lo=0.5, hi=2.0,
              why="1 keeps the marginals exactly (EDM's churn inflates by 1.003, arXiv 2206.00364, Table 5); far from 1 the jump leaves the marginal"),
       base=STOCHASTIC_OPTIONS, passthrough=NOISE_KEYS)
def restart(flow, x: Tensor, schedule: Union[Tensor, Sequence[float]], *, restart_intervals: int, k: int, t_min: float, t_max: float,
            s_noise: float, return_trajectory: bool = False, check_every: int = 10, noise: Optional[NoiseFn] = None,
            generator: Optional[torch.Generator] = None) -> Solution:
    """Restart sampling (arXiv 2306.14878, Alg. 1) on a denoiser-form flow ``dx/dσ = (x - D)/σ``.

    With the main grid ``σ_0 > ... > σ_K`` (usually ending at 0) and ``σ_r``, its interior
    point nearest ``t_min``::

        for i = 0 .. K-1:
            x <- Heun(x, σ_i -> σ_{i+1})                      (the denoising step when σ_{i+1} = 0)
            if i + 1 == r:  repeat k times:
                x <- x + s_noise √(t_max² - σ_r²) ε             (the forward transition, exact)
                for the EDM ρ = 7 grid t_max = τ_0 > ... > τ_N = σ_r, N = restart_intervals:
                    x <- Heun(x, τ_j -> τ_{j+1})

    NFE: ``2K - 1`` (Heun, the last step to 0 one call) plus ``2 k restart_intervals``.
    ``t_max`` must exceed ``σ_r``.  Noise for restart ``j`` is ``noise(j, x)``.  The trajectory
    holds the states on the main grid.
    """
    name = "restart"
    if not t_min < t_max:
        raise ValueError(f"restart: need t_min < t_max (the jump goes up from t_min to t_max), got t_min={t_min:g}, t_max={t_max:g}")
    check_batch(x, name)
    require(flow, "denoiser", name)
    s = as_schedule(schedule)
    noise_fn = resolve_noise(name, noise, generator)
    r = restart_point(s, t_min) if k > 0 else None
    if r is not None and not t_max > s[r]:
        raise ValueError(f"restart: t_max={t_max:g} must exceed the restart point σ={s[r]:.4g} (the main grid's point nearest t_min={t_min:g})")
    back = edm_schedule(restart_intervals + 1, s[r], t_max, append_zero=False).tolist() if r is not None else []
    f, watch = Counted(flow), DivergenceWatch(name, x, hint="lower t_max or k, or take more steps")
    traj = [x] if return_trajectory else None
    for i in range(len(s) - 1):
        x = _heun(f, x, s[i], s[i + 1])
        for j in range(k if i + 1 == r else 0):
            x = x + (s_noise * math.sqrt(t_max**2 - s[r] ** 2)) * noise_fn(j, x)
            for t, t_next in zip(back, back[1:]):
                x = _heun(f, x, t, t_next)
        watch.update(x, i)
        if check_every and ((i + 1) % check_every == 0 or i == len(s) - 2):
            watch.check(x, lambda step: f"step {step} of {len(s) - 1} (σ={s[step]:.4g} -> {s[step + 1]:.4g}, restarts included)")
        if traj is not None:
            traj.append(x)
    extra = {"restart_sigma": s[r] if r is not None else None, "restarts": k if r is not None else 0, "t_max": t_max,
             "restart_intervals": restart_intervals}
    return Solution(x, SolverStats(nfe=f.nfe, steps=len(s) - 1, accepted=(len(s) - 1) * x.shape[0], rejected=0,
                                   trajectory=torch.stack(traj) if traj is not None else None, extra=extra))
