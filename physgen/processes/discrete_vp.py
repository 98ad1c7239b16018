"""DDPM's discrete noise schedule as a continuous-time VP process (for networks trained on it).

DDPM (Ho et al., arXiv 2006.11239) trains at ``T`` timesteps ``τ = 0..T-1`` with
``ᾱ_τ = Π_{j≤τ} (1 - β_j)`` and ``x_τ = √ᾱ_τ y + √(1-ᾱ_τ) ε``.  physgen's VP runs in a
continuous time ``t``; here ``t = (τ + 1)/T`` at the trained steps (``t = 0``: the data,
``ᾱ = 1``; ``t = 1``: the last step) and ``log ᾱ`` is linear in ``t`` between them, i.e. the
VP SDE ``dx = -½β(t) x dt + √β(t) dW`` with the piecewise-constant rate

    β(t) = -T log(1 - β_τ)      on  (τ/T, (τ+1)/T],

whose marginals are exactly DDPM's at every trained step (score SDE, arXiv 2011.13456,
§3.3: DDPM is this SDE's discretisation).  A network is fed the fractional timestep
``τ(t) = T t - 1``: at the trained steps, where DDIM and DPM-Solver evaluate on the
scheduler's own grid, it is the trained one; between them it interpolates linearly in
``log ᾱ`` (k-diffusion's ``DiscreteSchedule`` interpolates the timestep linearly in
``log σ`` instead; the two agree at the trained steps and differ only where no network was
trained).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ..errors import UserError

__all__ = ["DiscreteBetas"]

MAX_TIMESTEPS = 100_000


class DiscreteBetas:
    """``β_0..β_{T-1}`` as the continuous schedule of the module docstring (float64 knots)."""

    def __init__(self, betas: Sequence[float]):
        try:
            b = torch.as_tensor([float(v) for v in betas], dtype=torch.float64)
        except (TypeError, ValueError):
            raise UserError(f"betas must be a list of numbers, got {type(betas).__name__}") from None
        if not 2 <= b.numel() <= MAX_TIMESTEPS:
            raise UserError(f"betas must list 2..{MAX_TIMESTEPS} timesteps, got {b.numel()}")
        if not bool(((b > 0) & (b < 1)).all()):
            bad = b[~((b > 0) & (b < 1))][0].item()
            raise UserError(f"every beta must be in (0, 1), got {bad}")
        self.betas = b
        self.T = b.numel()
        # log ᾱ at t = 0, 1/T, ..., 1
        self.knots = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(torch.log1p(-b), 0)])

    def log_alpha_bar(self, t: Tensor) -> Tensor:
        """``log ᾱ(t)``, linear between the knots (``t`` clamped to ``[0, 1]``)."""
        u = t.double().clamp(0.0, 1.0) * self.T
        i = u.floor().clamp(max=self.T - 1).long()
        knots = self.knots.to(u.device)
        return knots[i] + (u - i) * (knots[i + 1] - knots[i])

    def beta(self, t: Tensor) -> Tensor:
        """``β(t) = -d log ᾱ/dt`` (the rate of the step ``t`` falls in; left-continuous)."""
        i = (t.double().clamp(0.0, 1.0) * self.T).ceil().clamp(1, self.T).long() - 1
        return (-self.T * torch.log1p(-self.betas.to(t.device)))[i].to(t.dtype)

    def t_of_log_alpha_bar(self, value: Tensor) -> Tensor:
        """The time with ``log ᾱ(t) = value`` (``log ᾱ`` decreases in ``t``)."""
        v = value.double()
        knots = self.knots.to(v.device)
        descending = -knots  # increasing
        i = torch.searchsorted(descending, -v.contiguous()).clamp(1, self.T)
        lo, hi = knots[i - 1], knots[i]
        frac = ((v - lo) / (hi - lo)).clamp(0.0, 1.0)
        return (i - 1 + frac) / self.T

    def timestep(self, t: Tensor) -> Tensor:
        """The fractional DDPM timestep ``τ = T t - 1`` a network trained on the steps is fed."""
        return self.T * t - 1.0

    def config(self) -> list:
        return self.betas.tolist()
