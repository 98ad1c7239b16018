"""Closed-form flows the solver tests share (tests/solvers): a flow not of denoiser form with a
known solution, an NFE counter that also checks what a solver passes, a reverse VE SDE of Gaussian data,
and a seeded batch of starting points."""
from __future__ import annotations

import math

import torch


def _bcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.view((-1,) + (1,) * (x.dim() - 1))


class CosFlow:
    """``dx/ds = -x s cos(s)`` (not of denoiser form): ``x(s) = x0 exp(F(s0) - F(s))``,
    ``F(s) = s sin s + cos s``."""

    def __call__(self, x, s):
        s = _bcast(s, x)
        return -x * s * torch.cos(s)

    @staticmethod
    def exact(x0, s0: float, s1: float):
        F = lambda s: s * math.sin(s) + math.cos(s)
        return x0 * math.exp(F(s0) - F(s1))


class Counting:
    """Own NFE counter; also checks that ``s`` is ``[B]`` and never 0."""

    def __init__(self, flow):
        self.flow, self.calls = flow, 0
        if hasattr(flow, "denoise"):
            self.denoise = self._denoise

    def _check(self, x, s):
        assert s.shape == (x.shape[0],), s.shape
        assert s.dtype == x.dtype and s.device == x.device
        assert bool((s != 0).all()), "a solver evaluated the flow at s = 0"

    def __call__(self, x, s):
        self._check(x, s)
        self.calls += 1
        return self.flow(x, s)

    def _denoise(self, x, s):
        self._check(x, s)
        self.calls += 1
        return self.flow.denoise(x, s)


class GaussianVESDE:
    """Reverse VE SDE (``g(s)^2 = d(s^2)/ds = 2s``) for data ``N(mu, c^2)``: the marginal at
    ``s`` is ``N(mu, c^2 + s^2)``; drift per unit ``ds`` is ``-g^2 score = 2s (x-mu)/(c^2+s^2)``."""

    def __init__(self, mu=1.0, c=0.5):
        self.mu, self.c = mu, c

    def drift(self, x, s):
        s = _bcast(s, x)
        return 2 * s * (x - self.mu) / (self.c**2 + s**2)

    def diffusion(self, s):
        return torch.sqrt(2 * s)


def x0_batch(b=3, d=2, seed=0, scale=10.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, d, generator=g, dtype=dtype) * scale
