"""The pieces every editing method is built from, on the public process and solver API.

* :func:`solve` runs any solver of the table over a piece of a grid through the one
  dispatcher (:func:`physgen.sampling.sample`), so every editing method takes every solver
  a process offers, with its checks; :class:`Tally` adds up the NFE of the pieces.
* :func:`kernel_draw` draws the process's own perturbation kernel at ``s`` around the known
  values, on the known coordinates alone (``process.perturb`` of a ``[B, m]`` batch).  Every
  kernel here is a scale mixture of Gaussians whose mixing law does not depend on the
  dimension (Gaussian; Student-t of PFGM++ and PFGM, ``x - y = √W z``; Yukawa's NIG) or a
  product over coordinates (the telegrapher's Kac law), so the kernel drawn in ``m``
  dimensions *is* the kernel's marginal on those ``m`` coordinates, exactly.
* :func:`forward_jump` re-noises ``x`` from ``s`` up to ``s' > s`` with the process's forward
  transition ``x_{s'} = r x_s + G z`` (``offers(field)["transition"]``, Gaussian kernels:
  exact); a process without one is refused with the reason.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from solvers.base import Solution, SolverStats

from ..errors import UserError
from ..noise import SeededNoise
from ..sampling import sample

__all__ = ["Tally", "solve", "fresh_noise", "kernel_draw", "forward_jump", "has_transition"]


class Tally:
    """NFE and solver steps summed over the pieces of an editing run."""

    def __init__(self):
        self.nfe, self.steps = 0, 0

    def add(self, sol: Solution) -> Tensor:
        self.nfe += int(sol.stats.nfe)
        self.steps += int(sol.stats.steps)
        return sol.x

    def solution(self, x: Tensor, **extra) -> Solution:
        return Solution(x, SolverStats(nfe=self.nfe, steps=self.steps, accepted=self.steps * x.shape[0], extra=dict(extra)))


def solve(process, field, x: Tensor, schedule: Tensor, method: str, noise: SeededNoise, label=None, options=None,
          from_prior: bool = False) -> Solution:
    """``physgen.sampling.sample`` over ``schedule`` (a piece of the grid); stochastic solvers
    draw the per-sample seeded ``noise`` (the sampling commands' convention).  ``from_prior``:
    ``x`` is a prior draw at ``s_max``, so the dispatcher's divergence check (against the prior
    draws' spread) applies; a piece that starts from an edited or re-noised state skips it."""
    return sample(process, field, x, torch.as_tensor(schedule, dtype=torch.float64), method, label=label, noise=noise,
                  from_prior=from_prior, **(options or {}))


def fresh_noise(generator: torch.Generator, n: int) -> SeededNoise:
    """Per-sample noise for one piece of a run, seeded from ``generator``: the pieces of a run
    (RePaint's steps) each draw new noise, where one seed would repeat its first steps' noise."""
    return SeededNoise(int(torch.randint(0, 2**62, (), generator=generator)), range(n))


def kernel_draw(process, values: Tensor, s: float, generator: torch.Generator) -> Tensor:
    """A draw of the process's kernel at scale ``s`` around ``values [B, m]`` (module docstring);
    ``s = 0`` returns the values."""
    if s == 0.0:
        return values
    scale = torch.full((values.shape[0],), float(s), dtype=values.dtype, device=values.device)
    return process.perturb(values, scale, generator=generator)


def has_transition(process) -> bool:
    return "transition" in process.capabilities()


def forward_jump(process, field, x: Tensor, s: float, s_up: float, generator: torch.Generator, label: Optional[Tensor] = None) -> Tensor:
    """``x_{s'} = r x_s + G z`` from ``s`` up to ``s' = s_up`` (the process's exact Gaussian transition; no NFE)."""
    if not has_transition(process):
        raise UserError(f"RePaint's jumps (jump_n_sample > 1) re-noise with the process's forward transition; process "
                        f"{process.describe()} has none (its kernel is not Gaussian: no closed-form law of x_s' given x_s), "
                        f"so only blend (jump_n_sample = 1) runs there")
    target = process.offers(field, label)["transition"]
    r, g2 = target.transition(torch.tensor([float(s_up)], dtype=torch.float64), torch.tensor([float(s)], dtype=torch.float64))
    z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return float(r) * x + float(g2.sqrt()) * z
