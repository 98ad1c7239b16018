"""The closed-form conditional of an isotropic Gaussian mixture, and the KS distance to it.

For ``p(x) = Σ_k π_k N(x; μ_k, c_k² I)`` and observed coordinates ``O`` with values ``v``,
each component factorises over coordinates, so

    p(x_U | x_O = v) = Σ_k π'_k N(x_U; μ_{k,U}, c_k² I),     π'_k ∝ π_k N(v; μ_{k,O}, c_k² I_O),

a Gaussian mixture again (same means and stds on the unobserved coordinates, new weights).
Example: ``0.3 N((-1, -1.5), 0.5² I) + 0.7 N((1, 1.5), 0.5² I)`` at ``x_0 = 0`` has both
components at the same distance from 0, so ``x_1 | x_0 = 0 ~ 0.3 N(-1.5, 0.25) + 0.7 N(1.5, 0.25)``.
The editing tests and experiment measure every method against it.

**A noisy linear observation** ``y = A x + n``, ``n ~ N(0, σ_y² I_m)``, ``A`` of shape
``[m, N]``, keeps the mixture a mixture (Bishop, PRML §2.3.3, per component): with
``S_k = c_k² A Aᵀ + σ_y² I``,

    p(x | y) = Σ_k π'_k N(x; m_k, Σ_k),        π'_k ∝ π_k N(y; A μ_k, S_k),
    Σ_k = (I/c_k² + AᵀA/σ_y²)⁻¹,               m_k = Σ_k (μ_k/c_k² + Aᵀ y/σ_y²),

full covariances now (:class:`LinearPosterior`).  Its responsibilities
``r_k(x) = π'_k N(x; m_k, Σ_k)/p(x|y)`` give each component's weight and moments from samples
without assigning them: ``E[r_k] = π'_k``, ``E[r_k x] = π'_k m_k``,
``E[r_k x xᵀ] = π'_k (Σ_k + m_k m_kᵀ)`` under the posterior, exactly, however much the
components overlap (:meth:`LinearPosterior.component_moments`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from ..data.mixture import GaussianMixture
from ..errors import UserError

__all__ = ["conditional_mixture", "mixture_cdf", "ks_statistic", "LinearPosterior", "linear_posterior"]


def conditional_mixture(mixture: GaussianMixture, observed: Sequence[int], values: Sequence[float]) -> GaussianMixture:
    """``p(x_U | x_O = values)`` for the coordinates ``observed`` (module docstring); the result
    lives on the unobserved coordinates, in increasing order."""
    n = mixture.dim
    observed = [int(i) for i in observed]
    if not observed or len(set(observed)) != len(observed) or not all(0 <= i < n for i in observed) or len(observed) >= n:
        raise UserError(f"observed coordinates must be distinct indices in 0..{n - 1}, fewer than {n}, got {observed}")
    if len(values) != len(observed):
        raise UserError(f"{len(observed)} observed coordinates but {len(values)} values")
    unobserved = [i for i in range(n) if i not in observed]
    v = torch.as_tensor([float(x) for x in values], dtype=torch.float64)
    mu_o = mixture.means[:, observed]
    c2 = mixture.stds**2
    log_w = torch.log(mixture.weights) - 0.5 * ((v - mu_o) ** 2).sum(1) / c2 - 0.5 * len(observed) * torch.log(2 * math.pi * c2)
    return GaussianMixture(mixture.means[:, unobserved], mixture.stds, torch.softmax(log_w, 0))


def mixture_cdf(mixture: GaussianMixture, x: Tensor) -> Tensor:
    """The CDF of a one-dimensional mixture at ``x`` (float64)."""
    if mixture.dim != 1:
        raise ValueError(f"mixture_cdf needs a one-dimensional mixture, got dimension {mixture.dim}")
    z = (x.double().reshape(-1, 1) - mixture.means[:, 0]) / mixture.stds
    return (torch.special.ndtr(z) * mixture.weights).sum(1)


def ks_statistic(samples: Tensor, mixture: GaussianMixture) -> float:
    """The Kolmogorov-Smirnov distance ``sup |F_n - F|`` between 1-D ``samples`` and ``mixture``."""
    x = samples.double().flatten().sort().values
    n = x.numel()
    cdf = mixture_cdf(mixture, x)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return float(torch.maximum(i / n - cdf, cdf - (i - 1) / n).max())


@dataclass(eq=False)
class LinearPosterior:
    """``p(x | y) = Σ_k weights[k] N(x; means[k], covs[k])`` (module docstring); float64 CPU
    tensors ``weights [K]``, ``means [K, N]``, ``covs [K, N, N]``."""

    weights: Tensor
    means: Tensor
    covs: Tensor

    def component_log_prob(self, x: Tensor) -> Tensor:
        """``[B, K]``: ``log π'_k + log N(x; m_k, Σ_k)``."""
        chol = torch.linalg.cholesky(self.covs)
        diff = x.double().cpu().T[None] - self.means[:, :, None]  # [K, N, B]
        z = torch.linalg.solve_triangular(chol, diff, upper=False)
        log_det = torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)  # [K]
        log_n = -0.5 * z.pow(2).sum(1).T - log_det - 0.5 * self.means.shape[1] * math.log(2 * math.pi)  # [B, K]
        return torch.log(self.weights) + log_n

    def responsibilities(self, x: Tensor) -> Tensor:
        return torch.softmax(self.component_log_prob(x), dim=1)

    def component_moments(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(weights [K], means [K, N], covs [K, N, N])`` of samples ``x`` by their
        responsibilities (module docstring): the closed form's for exact samples, to sampling error."""
        r = self.responsibilities(x)
        x = x.double().cpu()
        w = r.mean(0)
        means = (r.T @ x) / (r.sum(0)[:, None])
        second = torch.einsum("bk,bi,bj->kij", r, x, x) / r.sum(0)[:, None, None]
        return w, means, second - means[:, :, None] * means[:, None, :]

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """``n`` draws ``[n, N]`` (float64, CPU)."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.means.shape[1], generator=generator, dtype=torch.float64)
        return self.means[k] + (torch.linalg.cholesky(self.covs)[k] @ z.unsqueeze(-1)).squeeze(-1)

    def to_dict(self) -> dict:
        return {"weights": self.weights.tolist(), "means": self.means.tolist(), "covs": self.covs.tolist()}


def linear_posterior(mixture: GaussianMixture, A: Tensor, y: Tensor, noise_std: float) -> LinearPosterior:
    """``p(x | y)`` for ``y = A x + n``, ``n ~ N(0, σ_y² I)`` (module docstring); ``A [m, N]``,
    ``y [m]``, ``noise_std = σ_y > 0``."""
    A, y = torch.as_tensor(A, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64).reshape(-1)
    if A.dim() != 2 or A.shape[1] != mixture.dim or y.numel() != A.shape[0]:
        raise UserError(f"A must be [m, {mixture.dim}] and y [m], got A {tuple(A.shape)} and y {tuple(y.shape)}")
    if not (math.isfinite(noise_std) and noise_std > 0):
        raise UserError(f"the observation noise must be > 0, got {noise_std!r}")
    var, c2 = noise_std**2, mixture.stds**2  # [K]
    eye_n, eye_m = torch.eye(mixture.dim, dtype=torch.float64), torch.eye(A.shape[0], dtype=torch.float64)
    S = c2[:, None, None] * (A @ A.T) + var * eye_m  # [K, m, m]
    res = (y - mixture.means @ A.T).unsqueeze(-1)  # [K, m, 1]
    chol = torch.linalg.cholesky(S)
    z = torch.linalg.solve_triangular(chol, res, upper=False).squeeze(-1)
    log_like = -0.5 * z.pow(2).sum(-1) - torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1) - 0.5 * A.shape[0] * math.log(2 * math.pi)
    covs = torch.linalg.inv(eye_n / c2[:, None, None] + (A.T @ A) / var)
    means = (covs @ (mixture.means / c2[:, None] + (A.T @ y) / var).unsqueeze(-1)).squeeze(-1)
    return LinearPosterior(torch.softmax(torch.log(mixture.weights) + log_like, 0), means, 0.5 * (covs + covs.transpose(1, 2)))
