"""The Gaussian kernel ``p_s(x | y) = N(x; y, s² I)`` (diffusion: VE, EDM; PFGM++ at D = inf)."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["GaussianKernel", "per_row"]


def per_row(v: Tensor, x: Tensor) -> Tensor:
    """A per-sample ``[B]`` tensor shaped to broadcast against ``x`` ``[B, ...]``."""
    return v.reshape(v.shape[0], *([1] * (x.ndim - 1))).to(x.dtype)


class GaussianKernel:
    """``p_s(x | y) = N(x; y, s² I)``: offsets ``s ε``, log-profile ``-d²/(2s²)``."""

    gaussian = True

    def sample_offsets(self, shape: Sequence[int], s: Tensor, generator=None, device=None, dtype=torch.float32) -> Tensor:
        eps = torch.randn(tuple(shape), generator=generator, device=device or s.device, dtype=dtype)
        return per_row(s, eps) * eps

    def log_profile(self, sqdist: Tensor, s: Tensor) -> Tensor:
        return -0.5 * sqdist / s**2

    def log_prob(self, offset: Tensor, s: Tensor) -> Tensor:
        """Normalised ``log N(offset; 0, s² I)``, shaped ``[B]``."""
        n = offset[0].numel()
        sq = offset.reshape(offset.shape[0], -1).double().pow(2).sum(1)
        s = s.double()
        return -0.5 * sq / s**2 - 0.5 * n * torch.log(2 * math.pi * s**2)

    def config(self) -> dict:
        return {}
