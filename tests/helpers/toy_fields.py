"""Closed-form toy fields the tests share (imported like ``crafted_files``: pyproject puts tests/helpers on the path)."""
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


class GaussianPF:
    """The probability-flow ODE of data N(mu, c² I) under x = y + σ ε (VE / EDM, the σ form every
    process maps to) in closed form: ``D(x, σ) = mu + c²/(c² + σ²)(x - mu)``,
    ``dx/dσ = (x - D)/σ = (x - mu) σ/(c² + σ²)``, solved by
    ``x(σ) = mu + (x0 - mu) sqrt((c² + σ²)/(c² + σ0²))``.

    ``c`` is a scalar or one value per sample (the batch is a multiple of its length);
    ``joint`` offers the flow to ``births`` with a zero death rate; ``calls`` counts evaluations.
    """

    def __init__(self, mu: float = 0.5, c=1.0):
        self.mu, self.c, self.calls = mu, torch.as_tensor(c, dtype=torch.float64), 0

    def _c2(self, x):
        c2 = self.c.to(device=x.device, dtype=x.dtype) ** 2
        if c2.dim():
            c2 = c2.repeat(x.shape[0] // c2.numel()).view((-1,) + (1,) * (x.dim() - 1))
        return c2

    def denoise(self, x, s):
        self.calls += 1
        c2, s = self._c2(x), s.view((-1,) + (1,) * (x.dim() - 1))
        return self.mu + c2 / (c2 + s**2) * (x - self.mu)

    def __call__(self, x, s):
        return (x - self.denoise(x, s)) / s.view((-1,) + (1,) * (x.dim() - 1))

    def joint(self, x, s):
        return self(x, s), torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)

    def exact(self, x0, s0: float, s1: float):
        c2 = self._c2(x0)
        return self.mu + (x0 - self.mu) * torch.sqrt((c2 + s1**2) / (c2 + s0**2))


class CountingDenoiser:
    """A denoiser field that counts its calls (the NFE a sampler really spends)."""

    kind = "denoiser"

    def __init__(self, field):
        self.field, self.calls = field, 0

    def __call__(self, x, s, label=None):
        self.calls += 1
        return self.field(x, s, label)
