"""Closed-form toy fields the tests share (imported like ``crafted_files``: tests/ is on the path)."""
from __future__ import annotations

import torch


class UnitGaussianVE:
    """The VE process (σ(s) = s) of data N(0, I) in closed form: every need of the solver table.

    ``scale`` makes the score that many times too strong (a field that blows the state up);
    ``break_at`` makes the score call of that number return NaN (a field that breaks mid-run).
    """

    def __init__(self, scale: float = 1.0, break_at: int | None = None):
        self.scale, self.break_at, self.calls = scale, break_at, 0

    def score(self, x, s):
        self.calls += 1
        if self.calls == self.break_at:
            return torch.full_like(x, torch.nan)
        return -self.scale * x / (1 + s[:, None] ** 2)

    def denoise(self, x, s):
        return x + s[:, None] ** 2 * self.score(x, s)

    def __call__(self, x, s):
        return (x - self.denoise(x, s)) / s[:, None]

    def drift(self, x, s):
        return -2 * s[:, None] * self.score(x, s)

    def diffusion(self, s):
        return (2 * s).sqrt()

    def marginal(self, s):
        return torch.ones_like(s), s

    def transition(self, s, s_next):
        return torch.ones_like(s), s**2 - s_next**2


class CountingDenoiser:
    """A denoiser field that counts its calls (the NFE a sampler really spends)."""

    kind = "denoiser"

    def __init__(self, field):
        self.field, self.calls = field, 0

    def __call__(self, x, s, label=None):
        self.calls += 1
        return self.field(x, s, label)
