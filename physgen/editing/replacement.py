"""Known-region replacement: blended diffusion and RePaint (Lugmayr et al. 2022, arXiv 2201.09865).

Inpainting a sample whose coordinates ``M`` (the mask) are known, ``x^M = y``: at every
point ``s_{i+1}`` of the process's grid,

    x^{M̄}_{s_{i+1}} = one solver step of the unconditional sampler from x_{s_i}
    x^{M}_{s_{i+1}}  ~ k_{s_{i+1}}( · | y)        (the process's own kernel around y)

(RePaint, Alg. 1, lines 4-7), with the known coordinates drawn from the kernel's *marginal*
on them (:func:`physgen.editing.steps.kernel_draw`: for PFGM++ at finite D a Student-t of D
degrees of freedom in ``m = |M|`` dimensions at the same σ).  For PFGM++ the kernel is not a
product over coordinates (one radius for all of them); conditioning the known part's offset
on the unknown part's would need the unknown part's offset from *its* clean value, which is
what is being generated, so the marginal is the only law that can be drawn.

**Jumps** (RePaint §4.2, ``jump_length`` ``j``, ``jump_n_sample`` ``n``): after arriving at
every ``j``-th noise level, the sample is re-noised ``j`` levels up with the process's exact
forward transition ``x_{s'} = r x_s + G z`` and regenerated down again, ``n - 1`` times
(the paper's schedule, on this grid: with ``K`` steps, at the levels ``1, 1 + j, 1 + 2j, ...``
counted from the end, below ``K - j``).  Each re-descent runs the solver again and its NFE
is counted.  ``n = 1`` is *blended* diffusion (no jumps).  Jumps need the Gaussian forward
transition and are refused elsewhere, with the reason.

Neither method samples the conditional ``p(x^{M̄} | x^M = y)``: the replaced coordinates
are drawn from ``k_s(· | y)``, not from ``p_s(x^M | x^{M̄}, y)``, so the unknown part is
pulled towards the known one only through the steps after each replacement.  The bias is
measured on a Gaussian mixture against the closed-form conditional
(``tests/editing/test_bias.py``); :func:`physgen.editing.smc_condition` removes it.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from solvers.base import Solution

from ..errors import UserError
from ..sampling import grid as sampling_grid
from .masks import check_known, check_mask, known_part, with_known
from .steps import Tally, forward_jump, fresh_noise, replace_known, solve

__all__ = ["inpaint", "jump_schedule"]


def _check_jumps(jump_length, jump_n_sample) -> tuple[int, int]:
    for name, v in (("jump_length", jump_length), ("jump_n_sample", jump_n_sample)):
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 1000:
            raise UserError(f"{name} must be an integer in 1..1000, got {v!r}")
    return jump_length, jump_n_sample


def jump_schedule(steps: int, jump_length: int = 1, jump_n_sample: int = 1) -> list[int]:
    """The visited grid indices (``0`` = ``s_max``, ``steps`` = the end): RePaint's
    ``get_schedule_jump`` on a grid of ``steps`` steps.  A decrease of the index is a solver
    step, an increase a forward re-noising."""
    jumps = {level: jump_n_sample - 1 for level in range(1, steps - jump_length + 1, jump_length)}
    level, visited = steps, [0]
    while level > 0:
        level -= 1
        visited.append(steps - level)
        if jumps.get(level, 0) > 0:
            jumps[level] -= 1
            for _ in range(jump_length):
                level += 1
                visited.append(steps - level)
    return visited


def inpaint(process, field, known: Tensor, mask, *, method: str = "heun", steps: Optional[int] = None,
            schedule: Optional[str] = None, jump_length: int = 1, jump_n_sample: int = 1, seed: int = 0,
            label: Optional[Tensor] = None, x_start: Optional[Tensor] = None, **options) -> Solution:
    """Fill in the unknown coordinates of ``known [B, *data]`` where ``mask`` is 0 (module docstring).

    ``method``, ``steps``, ``schedule`` and ``options`` are the unconditional sampler's (any
    solver the process offers, on :func:`physgen.sampling.grid`); ``seed`` seeds the prior,
    the kernel draws, the jumps and stochastic solvers; ``x_start`` replaces the prior draw.
    Returns the samples with the known coordinates at their values and the NFE of every
    solver step (re-descents included); ``stats.extra`` records the method and the jumps.
    """
    known = check_known(known)
    mask = check_mask(mask, known.shape[1:])
    jump_length, jump_n_sample = _check_jumps(jump_length, jump_n_sample)
    s = sampling_grid(process, steps, schedule, method=method).tolist()
    visited = jump_schedule(len(s) - 1, jump_length, jump_n_sample)
    generator = torch.Generator(device=known.device).manual_seed(int(seed))
    values = known_part(known, mask)
    x = process.sample_prior(known.shape, generator=generator, device=known.device, dtype=known.dtype) if x_start is None else x_start
    x = replace_known(process, x, mask, values, s[0], generator)
    tally = Tally()
    for i, j in zip(visited[:-1], visited[1:]):
        if j > i:  # a solver step down the grid, then the known part from the kernel at the new scale
            x = tally.add(solve(process, field, x, s[i:j + 1], method, fresh_noise(generator, x.shape[0]), label, options))
            x = replace_known(process, x, mask, values, s[j], generator)
        else:
            x = forward_jump(process, field, x, s[i], s[j], generator, label)
    name = "blend" if jump_n_sample == 1 else "repaint"
    return tally.solution(with_known(x, mask, values), editing=name, solver=method, jump_length=jump_length,
                          jump_n_sample=jump_n_sample, grid=s)
