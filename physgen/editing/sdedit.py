"""SDEdit (Meng et al. 2022, arXiv 2108.01073) and hijacking (PFCM, arXiv 2402.08159).

Perturb a user's input ``y`` with the process's own kernel at an intermediate scale
``s_start`` and integrate the unconditional sampler from there to the end of the grid:

    x_{s_start} ~ k_{s_start}( · | y),      x_{s_end} = Solve(x_{s_start}; s_start -> s_end)

(SDEdit, Alg. 1: ``x(t_0) ~ N(x^g; σ²(t_0) I)``, then the reverse SDE or ODE from ``t_0``).
``strength`` ``f ∈ [0, 1]`` is a fraction of the grid, as in diffusers' img2img: of the
``K`` steps of :func:`physgen.sampling.grid`, the last ``round(f K)`` are run, starting at
their first point.  ``f = 0`` returns the input (no step, 0 NFE); ``f = 1`` starts at
``s_max`` from the process's *prior* draw itself, so SDEdit at strength 1 is unconditional
sampling with the same seed and grid (SDEdit's ``t_0 = 1`` limit, where the perturbed input
is the prior up to its centre).  ``s_start`` instead gives the scale itself (the grid's
points below it are kept).

For PFGM++ at finite ``D`` this is PFCM's *hijacked* start: the input is moved to the
kernel's law at ``s_start`` (a Student-t of ``D`` degrees of freedom, drawn exactly by
``process.perturb``) and the Poisson flow takes over from there.  Any process and any solver
it offers run, since the start is the process's own perturbation and the rest is the
unconditional sampler.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from solvers.base import Solution

from ..errors import UserError
from ..noise import SeededNoise
from ..sampling import grid as sampling_grid
from .masks import check_known, check_strength
from .steps import Tally, solve

__all__ = ["sdedit", "start_index"]


def start_index(steps: int, strength: float) -> int:
    """The grid index SDEdit starts at: ``K - round(f K)`` (``f = 1``: 0, ``f = 0``: ``K``)."""
    return steps - int(round(check_strength(strength) * steps))


def _piece(s: list, strength: Optional[float], s_start: Optional[float]) -> tuple[list, bool]:
    """``(grid piece to run, whether it starts from the prior)``."""
    if (strength is None) == (s_start is None):
        raise UserError("give exactly one of strength (a fraction of the schedule) and s_start (a scale)")
    if strength is not None:
        k = start_index(len(s) - 1, strength)
        return s[k:], k == 0
    if isinstance(s_start, bool) or not isinstance(s_start, (int, float)) or not math.isfinite(s_start) or not 0 <= s_start <= s[0]:
        raise UserError(f"--s-start must be a scale in [0, {s[0]:g}] (the process's grid runs from s_max = {s[0]:g}), got {s_start!r}")
    return [float(s_start), *(v for v in s if v < s_start)], False


def sdedit(process, field, x: Tensor, *, strength: Optional[float] = None, s_start: Optional[float] = None, method: str = "heun",
           steps: Optional[int] = None, schedule: Optional[str] = None, seed: int = 0, label: Optional[Tensor] = None,
           **options) -> Solution:
    """Edit ``x [B, *data]`` by SDEdit at ``strength`` (or from ``s_start``); see the module docstring.

    ``method``, ``steps``, ``schedule``, ``options``: the unconditional sampler's.  ``seed``
    seeds the kernel draw; the prior draw and stochastic solvers take the per-sample noise
    ``SeededNoise(seed, range(B))``, as ``physgen toy`` does.  ``stats.extra`` records the
    strength, the start scale and the grid run.
    """
    x = check_known(x)
    s = sampling_grid(process, steps, schedule, method=method).tolist()
    piece, from_prior = _piece(s, strength, s_start)
    generator = torch.Generator(device=x.device).manual_seed(int(seed))
    tally = Tally()
    extra = dict(editing="sdedit", solver=method, strength=strength, s_start=piece[0], grid=piece)
    if len(piece) == 1:  # nothing to run (strength 0, or a start at the grid's end): the input itself
        return tally.solution(x.clone(), **extra)
    noise = SeededNoise(int(seed), range(x.shape[0]))
    if from_prior:  # the sampling commands' own prior draw (physgen toy, sample)
        start = process.sample_prior(x.shape, noise=noise, device=x.device, dtype=x.dtype)
    else:
        start = process.perturb(x, torch.full((x.shape[0],), piece[0], dtype=x.dtype, device=x.device), generator=generator)
    return tally.solution(tally.add(solve(process, field, start, piece, method, noise, label, options, from_prior=from_prior)), **extra)
