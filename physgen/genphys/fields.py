"""Density-flow fields of a finite point set, for the s-generative processes (float64, torch).

For data ``{y_i}`` (unit total charge, equal weights) each class returns, at queries
``x [Q, N]`` and a scalar time ``t``:

* ``density(x, t)``: ``p ≥ 0``;
* ``velocity(x, t)``: ``v``, so that the flux is ``J = p v``;
* ``source(x, t)``: ``R`` in ``∂p/∂t + ∇·(p v) = R``;

which the tests check by finite differences (``∂_t p + ∇·J − R ≈ 0``).  The velocities are
posterior means (:func:`physgen.fields.exact.posterior_mean`), the densities direct sums.

* heat (``σ² = 2t``): ``p = mean_i N(x; y_i, 2t I)``, ``v = −∇ log p = (x − D)/(2t)``, ``R = 0``;
* Poisson in N+1 (``t = z``): ``p = −2∂_zφ = mean_i Γ((N+1)/2) z/(π^{(N+1)/2} r_i^{N+1})``,
  ``v = E_x/E_z = (x − D)/z`` (Cauchy posterior), ``R = 0`` (PFGM, arXiv 2209.11178);
* Laplace in N+D (``t = r``): ``p = S_{D−1} r^{D−1} E_r = mean_i Γ((N+D)/2) r^D/(π^{N/2} Γ(D/2)
  (ρ_i² + r²)^{(N+D)/2})``, ``v = E_x/E_r = (x − D)/r``, ``R = 0`` (PFGM++, arXiv 2302.04265);
* Yukawa (``t = z``): ``p = mean_i P_m``, ``v = (x − D)/z``, ``R = −κ p = −2m²φ`` with the
  potential ``φ = mean_i G(r_i)`` (:mod:`physgen.kernels.nig`).
"""
from __future__ import annotations

import math
from functools import partial

import torch
from torch import Tensor

from ..fields.exact import posterior_mean
from ..kernels.nig import death_rate_pair, nig_log_profile, yukawa_green, yukawa_log_density

__all__ = ["HeatFields", "PoissonFields", "LaplaceFields", "YukawaFields"]


def _sqdist(x: Tensor, points: Tensor) -> Tensor:
    return torch.cdist(x.double(), points.double()).pow(2)


class _Fields:
    def __init__(self, points: Tensor):
        self.points = points.reshape(points.shape[0], -1).double()
        self.n_dim = self.points.shape[1]

    def _t(self, x: Tensor, t) -> Tensor:
        return torch.full((x.shape[0],), float(t), dtype=torch.float64)

    def flux(self, x: Tensor, t) -> Tensor:
        return self.density(x, t)[:, None] * self.velocity(x, t)

    def source(self, x: Tensor, t) -> Tensor:
        return torch.zeros(x.shape[0], dtype=torch.float64)


class HeatFields(_Fields):
    def density(self, x, t):
        s2 = 2.0 * float(t)
        lp = -0.5 * _sqdist(x, self.points) / s2 - 0.5 * self.n_dim * math.log(2 * math.pi * s2)
        return torch.logsumexp(lp, 1).exp() / self.points.shape[0]

    def velocity(self, x, t):
        s2 = 2.0 * float(t)
        d = posterior_mean(x.double(), self.points, self._t(x, t), lambda sq, s: -0.5 * sq / (2.0 * s))
        return (x.double() - d) / s2


class LaplaceFields(_Fields):
    """Laplace in ``N+D`` dimensions (``t = r``), the radial field of PFGM++; ``D = 1`` is Poisson."""

    def __init__(self, points: Tensor, D: int):
        super().__init__(points)
        self.D = int(D)

    def _logk(self, sq, r):
        n, D = self.n_dim, self.D
        return (math.lgamma(0.5 * (n + D)) - 0.5 * n * math.log(math.pi) - math.lgamma(0.5 * D) + D * torch.log(r)
                - 0.5 * (n + D) * torch.log(sq + r * r))

    def density(self, x, t):
        r = torch.tensor(float(t), dtype=torch.float64)
        return torch.logsumexp(self._logk(_sqdist(x, self.points), r), 1).exp() / self.points.shape[0]

    def velocity(self, x, t):
        d = posterior_mean(x.double(), self.points, self._t(x, t), lambda sq, s: -0.5 * (self.n_dim + self.D) * torch.log(sq + s * s))
        return (x.double() - d) / float(t)


class PoissonFields(LaplaceFields):
    """Poisson in ``N+1`` dimensions (``t = z``, PFGM): the Laplace fields at ``D = 1``
    (``Γ(1/2) = √π`` turns the constant into ``Γ((N+1)/2)/π^{(N+1)/2}``)."""

    def __init__(self, points: Tensor):
        super().__init__(points, 1)


class YukawaFields(_Fields):
    def __init__(self, points: Tensor, m: float):
        super().__init__(points)
        self.m = float(m)

    def density(self, x, t):
        z = torch.tensor(float(t), dtype=torch.float64)
        return torch.logsumexp(yukawa_log_density(_sqdist(x, self.points), z, self.m, self.n_dim), 1).exp() / self.points.shape[0]

    def potential(self, x, t):
        """``φ = mean_i G(√(ρ_i² + z²))`` in ``N+1`` dims."""
        r = torch.sqrt(_sqdist(x, self.points) + float(t) ** 2)
        return yukawa_green(r, self.m, self.n_dim + 1).mean(1)

    def denoise_and_rate(self, x, t):
        return posterior_mean(x.double(), self.points, self._t(x, t), partial(nig_log_profile, m=self.m, n_dim=self.n_dim),
                              pair_value=partial(death_rate_pair, m=self.m, n_dim=self.n_dim))

    def velocity(self, x, t):
        d, _ = self.denoise_and_rate(x, t)
        return (x.double() - d) / float(t)

    def death_rate(self, x, t):
        return self.denoise_and_rate(x, t)[1]

    def source(self, x, t):
        return -self.death_rate(x, t) * self.density(x, t)
