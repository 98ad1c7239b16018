"""Known-region replacement: blended diffusion and RePaint (Lugmayr et al. 2022, arXiv 2201.09865).

Inpainting a sample whose coordinates ``M`` (the mask) are known, ``x^M = y``: the
unconditional sampler runs with the known coordinates replaced by a draw of the process's
own kernel around ``y`` at the current scale,

    x^{M}_{s}  ~ k_{s}( · | y),      x^{M̄} moved by the solver's step from the field at (x^M_s, x^{M̄}_s)

(RePaint, Alg. 1, lines 4-7, which replaces once per step; here the draw is made at each
field evaluation, :class:`KnownReplaced`, so one solve covers the grid with any solver's own
step rule and a single-stage step is RePaint's exactly), with the known coordinates drawn from the kernel's *marginal*
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
is counted.  The re-descents are separate solves of ``j`` steps, so a solver whose last
step differs (DDPM adds no noise on its last step; multistep methods restart their history)
takes that form once per jump point.  ``n = 1`` is *blended* diffusion (no jumps).  Jumps need the Gaussian forward
transition and are refused elsewhere, with the reason.

Neither method samples the conditional ``p(x^{M̄} | x^M = y)``: the replaced coordinates
are drawn from ``k_s(· | y)``, not from ``p_s(x^M | x^{M̄}, y)``, so the unknown part is
pulled towards the known one only through the steps after each replacement.  The bias is
measured on ``0.3 N((-1,-1.5), 0.5² I) + 0.7 N((1,1.5), 0.5² I)`` observed at ``x_0 = 0``
against the closed-form conditional ``0.3 N(-1.5, 0.25) + 0.7 N(1.5, 0.25)`` (4000 samples,
analytic field, 8 seeds; pinned in ``tests/editing/test_editing_targets.py``): blend with
the defaults (heun, 35 NFE) widens each mode to 0.55 and gives the left one weight 0.317
(KS 0.041) under EDM and VP; RePaint (``ddpm``, 100 steps, ``j = 10``, ``n = 5``, 460 NFE)
comes to 0.507 and 0.311 (KS 0.017).  PFGM++ at finite ``D`` has no analytic field; on the
exact field of 20000 mixture draws (``benchmarks/editing_bias.py``, 2000 samples, 3 seeds)
blend gives KS 0.042 / left weight 0.292 / spread 0.522 at ``D = 4``, 0.050 / 0.307 / 0.540
at ``D = 128`` and 0.054 / 0.311 / 0.541 at ``D = inf`` (EDM) on the same field.
:func:`physgen.editing.smc_condition` removes the bias where the kernel is Gaussian.

**PFGM++ at finite D: what is exact, what is measured.**  Exact: the known coordinates'
draw is the kernel's own marginal on them (checked against the full kernel's draw restricted
to them, ``tests/editing/test_editing_methods.py``), and SDEdit's start is the kernel itself
(PFCM's hijack, :mod:`.sdedit`).  Not exact: the draw ignores the coupling of the known and
unknown offsets through the kernel's one radius, on top of the replacement bias every kernel
has, and with no Gaussian transition there is nothing to twist (SMC and RePaint's jumps are
refused), so no sampler here is asymptotically exact at finite ``D``.  The total is measured,
not derived: the numbers above and the ``pfgmpp-D4`` / ``pfgmpp-D128`` rows of
``physgen experiment editing`` (``benchmarks/RESULTS.md``).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from solvers.base import Solution

from ..errors import UserError
from ..noise import SeededNoise
from ..sampling import grid as sampling_grid
from .masks import check_known, check_mask, known_part, with_known
from .steps import Tally, forward_jump, fresh_noise, kernel_draw, solve

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


class KnownReplaced:
    """The field evaluated with the known coordinates replaced: ``field(x̃, s)``, ``x̃^{M̄} = x^{M̄}``,
    ``x̃^M ~ k_s(· | y)`` drawn afresh at each evaluation (``s`` per sample, as solvers pass it).

    Wrapping the field rather than editing the state between steps lets one solve run the
    whole grid with any solver's own step rule (multistep histories, DDPM's last step):
    the unknown coordinates' update reads the known ones only through the field."""

    def __init__(self, field, process, mask: Tensor, values: Tensor, generator: torch.Generator):
        self.field, self.process, self.mask, self.values, self.generator = field, process, mask, values, generator

    def __call__(self, x: Tensor, s: Tensor, label: Optional[Tensor] = None) -> Tensor:
        drawn = self.process.perturb(self.values.to(x.dtype), s.to(x.dtype), generator=self.generator)
        return self.field(with_known(x, self.mask, drawn), s, label)

    def __getattr__(self, name: str):
        return getattr(self.field, name)


def _segments(visited: list[int]) -> list[tuple[int, int]]:
    """``visited`` as runs ``(from, to)`` of consecutive moves in one direction."""
    runs, start = [], 0
    for k in range(1, len(visited) - 1):
        if (visited[k] - visited[k - 1]) != (visited[k + 1] - visited[k]):
            runs.append((visited[start], visited[k]))
            start = k
    runs.append((visited[start], visited[-1]))
    return runs


def inpaint(process, field, known: Tensor, mask, *, method: str = "heun", steps: Optional[int] = None,
            schedule: Optional[str] = None, jump_length: int = 1, jump_n_sample: int = 1, seed: int = 0,
            label: Optional[Tensor] = None, x_start: Optional[Tensor] = None, **options) -> Solution:
    """Fill in the unknown coordinates of ``known [B, *data]`` where ``mask`` is 0 (module docstring).

    ``method``, ``steps``, ``schedule`` and ``options`` are the unconditional sampler's (any
    solver the process offers, on :func:`physgen.sampling.grid`); ``seed`` seeds the prior
    draw per sample (``SeededNoise(seed, range(B))``, the sampling commands' own: row ``i``'s
    start does not depend on the batch), the kernel draws, the jumps and stochastic solvers
    (these from one generator, so they still depend on the batch); ``x_start`` replaces the prior draw.
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
    if x_start is None:
        x = process.sample_prior(known.shape, noise=SeededNoise(int(seed), range(known.shape[0])), device=known.device, dtype=known.dtype)
    else:
        x = x_start
    wrapped = KnownReplaced(field, process, mask, values, generator)
    tally = Tally()
    for i, j in _segments(visited):
        if j > i:  # down the grid: one solve with the known part drawn from the kernel at each evaluated scale
            x = tally.add(solve(process, wrapped, x, s[i:j + 1], method, fresh_noise(generator, x.shape[0]), label, options,
                                from_prior=i == 0 and x_start is None))
        else:  # a RePaint jump: j levels up at once (the Gaussian transitions compose exactly)
            x = forward_jump(process, field, with_known(x, mask, kernel_draw(process, values, s[i], generator)), s[i], s[j],
                             generator, label)
    name = "blend" if jump_n_sample == 1 else "repaint"
    return tally.solution(with_known(x, mask, values), editing=name, solver=method, jump_length=jump_length,
                          jump_n_sample=jump_n_sample, grid=s)
