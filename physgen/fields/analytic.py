"""Analytic fields of an isotropic Gaussian mixture under a Gaussian process.

Data ``y ~ Σ_k π_k N(μ_k, c_k² I)`` perturbed by ``x = a y + b ε`` has the marginal

    p_s(x) = Σ_k π_k N(x; a μ_k, v_k I),          v_k = a² c_k² + b²,

so the score is ``Σ_k r_k(x) (a μ_k - x)/v_k`` with responsibilities
``r_k ∝ π_k N(x; a μ_k, v_k I)``, and the posterior mean (Tweedie) is

    D(x, s) = Σ_k r_k(x) [μ_k + (a c_k² / v_k)(x - a μ_k)].

(Score SDE, arXiv 2011.13456, App. on mixtures; NCSN, arXiv 1907.05600, §3.)  The exact
log-density makes exact likelihood tests possible.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor

from .labels import check_label

__all__ = ["GaussianMixtureField"]


class GaussianMixtureField:
    """Denoiser, score and log-density of a Gaussian mixture under ``x = a(s) y + b(s) ε``.

    ``coefficients(s) -> (a, b)`` comes from the process.  ``label`` restricts the mixture
    to one component (the exact conditional field).
    """

    kind = "denoiser"

    def __init__(self, mixture, coefficients: Callable[[Tensor], tuple[Tensor, Tensor]]):
        self.mixture = mixture
        self.coefficients = coefficients

    @property
    def num_classes(self) -> int:
        return int(self.mixture.weights.shape[0])

    def _terms(self, x: Tensor, s: Tensor, label: Optional[Tensor]):
        xf = x.reshape(x.shape[0], -1)
        dtype = torch.float64
        mu = self.mixture.means.to(x.device, dtype)  # [K, N]
        c2 = self.mixture.stds.to(x.device, dtype) ** 2  # [K]
        logpi = torch.log(self.mixture.weights.to(x.device, dtype))
        a, b = (t.to(dtype)[:, None] for t in self.coefficients(s))  # [B, 1]
        v = a**2 * c2[None, :] + b**2  # [B, K]
        xd = xf.to(dtype)
        n = xd.shape[1]
        sq = (xd * xd).sum(1, keepdim=True) - 2 * a * (xd @ mu.T) + a**2 * (mu * mu).sum(1)[None, :]
        logp = logpi[None, :] - 0.5 * sq.clamp_min(0) / v - 0.5 * n * torch.log(2 * math.pi * v)
        label = check_label(label, mu.shape[0], x.shape[0], device=x.device, what="this Gaussian-mixture field")
        if label is not None:  # null entries (= K) keep every component
            keep = (torch.arange(mu.shape[0], device=x.device)[None, :] == label[:, None]) | (label[:, None] == mu.shape[0])
            logp = logp.masked_fill(~keep, -torch.inf)
        return xd, mu, a, c2, v, logp

    def __call__(self, x: Tensor, s: Tensor, label: Optional[Tensor] = None) -> Tensor:
        xd, mu, a, c2, v, logp = self._terms(x, s, label)
        r = torch.softmax(logp, dim=1)  # [B, K]
        gain = a * c2[None, :] / v  # [B, K]
        # Σ_k r_k [μ_k + g_k (x - a μ_k)] = r@μ (1 - ...) written without a [B, K, N] tensor
        d = r @ mu + (r * gain).sum(1, keepdim=True) * xd - a * ((r * gain) @ mu)
        return d.to(x.dtype).reshape(x.shape)

    def score(self, x: Tensor, s: Tensor, label: Optional[Tensor] = None) -> Tensor:
        xd, mu, a, c2, v, logp = self._terms(x, s, label)
        r = torch.softmax(logp, dim=1)
        sc = a * ((r / v) @ mu) - (r / v).sum(1, keepdim=True) * xd
        return sc.to(x.dtype).reshape(x.shape)

    def log_prob(self, x: Tensor, s: Tensor, label: Optional[Tensor] = None) -> Tensor:
        """``log p_s(x)`` of the perturbed mixture, shaped ``[B]`` (float64)."""
        *_, logp = self._terms(x, s, label)
        return torch.logsumexp(logp, dim=1)
