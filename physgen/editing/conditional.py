"""The closed-form conditional of an isotropic Gaussian mixture, and the KS distance to it.

For ``p(x) = Σ_k π_k N(x; μ_k, c_k² I)`` and observed coordinates ``O`` with values ``v``,
each component factorises over coordinates, so

    p(x_U | x_O = v) = Σ_k π'_k N(x_U; μ_{k,U}, c_k² I),     π'_k ∝ π_k N(v; μ_{k,O}, c_k² I_O),

a Gaussian mixture again (same means and stds on the unobserved coordinates, new weights).
Example: ``0.3 N((-1, -1.5), 0.5² I) + 0.7 N((1, 1.5), 0.5² I)`` at ``x_0 = 0`` has both
components at the same distance from 0, so ``x_1 | x_0 = 0 ~ 0.3 N(-1.5, 0.25) + 0.7 N(1.5, 0.25)``.
The editing tests and experiment measure every method against it.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from ..data.mixture import GaussianMixture
from ..errors import UserError

__all__ = ["conditional_mixture", "mixture_cdf", "ks_statistic"]


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
