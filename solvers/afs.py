"""The analytical first step (AFS): the first denoiser call replaced by the data's mean.

At the start of sampling, ``σ_0 = σ_max`` is far above the data's scale, and the denoiser
there is the posterior mean

    D(x, σ_max) = E[y | x] = μ + Cov(y) (x - μ) / σ_max² + ...  ≈  μ,

the data's mean, to ``O(σ_data² / σ_max²)`` relative to the prior's spread (for EDM's
``σ_max = 80`` and ``σ_data = 0.5``: 4e-5).  Dockhorn et al. (GENIE, arXiv 2210.05475) and
the few-step solvers built on it (AMED-Solver, arXiv 2312.00094; DC-Solver, arXiv 2409.03755)
use this to save the first network call: one NFE fewer at the same grid.  The mean is the
process's prior centre (its ``prior_mean``, the origin when none): the prior is the kernel
at ``σ_max`` around the data's mean.

:class:`FirstCallMean` wraps a denoiser-form target: its first evaluation, at ``σ_0``, returns
``μ`` (``denoise``) or ``(x - μ)/σ_0`` (the flow) without calling the network; the sampler's
NFE is then one fewer than the target counted (:attr:`saved`).
"""
from __future__ import annotations

from torch import Tensor

__all__ = ["FirstCallMean"]


class FirstCallMean:
    """A denoiser-form target whose first evaluation is the data mean ``mean`` (shaped like one
    sample, or broadcastable to it); every later one, and every other attribute, is the target's."""

    def __init__(self, target, mean: Tensor):
        self.target, self.mean, self.saved = target, mean, 0

    def _first(self) -> bool:
        if self.saved:
            return False
        self.saved = 1
        return True

    def denoise(self, x: Tensor, s: Tensor) -> Tensor:
        if self._first():
            return self.mean.to(device=x.device, dtype=x.dtype).expand_as(x).clone()
        return self.target.denoise(x, s)

    def __call__(self, x: Tensor, s: Tensor) -> Tensor:
        if self._first():
            shape = (-1,) + (1,) * (x.dim() - 1)
            return (x - self.mean.to(device=x.device, dtype=x.dtype)) / s.reshape(shape)
        return self.target(x, s)

    def __getattr__(self, name: str):
        if name == "target":  # not set yet (copying): no recursion
            raise AttributeError(name)
        return getattr(self.target, name)
