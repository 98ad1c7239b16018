"""NCSNv2's techniques 1 and 2 (Song & Ermon 2020, arXiv 2006.09011): the noise levels.

NCSN (arXiv 1907.05600) samples by annealed Langevin dynamics on ``L`` geometric noise
levels ``σ_1 > σ_2 > … > σ_L`` (``σ_i = σ_1 γ^{-(i-1)}``); NCSNv2 chooses its settings:

1. ``σ_1`` at least the largest Euclidean distance between two training points
   (:func:`max_pairwise_distance`; the toy defaults choose a larger ``σ_max`` by the
   prior-matching rule of :meth:`physgen.processes.gaussian.DenoiserProcess.defaults_for_data`,
   which satisfies it).
2. ``γ = σ_{i-1}/σ_i`` such that ``Φ(√(2N)(γ-1) + 3γ) - Φ(√(2N)(γ-1) - 3γ) ≈ 0.5``: the
   probability that a sample of ``N(0, σ_i² I)`` falls in the 3-standard-deviation shell of
   ``‖x‖`` at level ``σ_{i-1}`` (``‖x‖ ≈ N(σ√N, σ²/2)``).  We take the smallest ``L`` whose
   ratio meets ``≥ 0.5`` (CIFAR-10, ``σ_1 = 50``, ``σ_L = 0.01``: ``L = 220``; the paper used
   232, overlap 0.57).  For ``N ≤ 4`` the overlap exceeds 0.99 for *every* ratio (the
   shells are wider than their radii), so the rule alone would allow ``L = 2``; the ratio is
   therefore also capped at ``max_ratio`` (default 1.5: NCSN's 2-D toy used 20 → 1 in 10
   levels, ratio 1.39).
4. ``T`` and ``ε``, the sampler's settings, are chosen with the sampler, not here:
   :mod:`physgen.ncsnv2_plan` (the whole plan, :func:`physgen.ncsnv2_plan.ncsnv2_levels`).

Step convention: ours is NCSN's Alg. 1, ``x <- x + (α/2) s + √α z``; the NCSN/NCSNv2 code
(and NCSNv2's Alg. 1) write ``x + a s + √(2a) z``, so ``a = α/2`` and ``ε_code = ε/2``.
Every Gaussian process gets these levels for ``ald`` (:meth:`GaussianMarginal.langevin_levels`
in :mod:`physgen.processes.gaussian`), placed on its VE-equivalent noise level ``b/a``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field as dc_field
from typing import Optional

import torch
from torch import Tensor

from ..errors import UserError

__all__ = [
    "level_count",
    "max_pairwise_distance",
    "shell_overlap",
    "choose_num_levels",
    "geometric_levels",
    "DEFAULT_MAX_RATIO",
]

DEFAULT_MAX_RATIO = 1.5
_MAX_LEVELS = 100_000


def _phi(v: float) -> float:
    return 0.5 * (1.0 + math.erf(v / math.sqrt(2.0)))


def geometric_levels(sigma_max: float, sigma_min: float, num_levels: int) -> Tensor:
    """``σ_i = σ_1 (σ_L/σ_1)^{(i-1)/(L-1)}``, ``i = 1..L`` (float64, endpoints exact)."""
    if num_levels == 1:
        return torch.tensor([float(sigma_max)], dtype=torch.float64)
    la, lb = math.log(sigma_max), math.log(sigma_min)
    values = [math.exp(la + (lb - la) * i / (num_levels - 1)) for i in range(num_levels)]
    values[0], values[-1] = float(sigma_max), float(sigma_min)
    return torch.tensor(values, dtype=torch.float64)


def max_pairwise_distance(data: Tensor, max_points: int = 2000) -> float:
    """NCSNv2 technique 1: the largest Euclidean distance between two of the first ``max_points`` points."""
    if not isinstance(data, Tensor):
        data = torch.as_tensor(data)
    if data.ndim < 2 or data.shape[0] < 2:
        raise UserError(f"need at least 2 data points shaped [n, ...] to pick sigma_max, got shape {tuple(data.shape)}")
    sub = data[:max_points].reshape(min(data.shape[0], max_points), -1).double()
    if not bool(torch.isfinite(sub).all()):
        raise UserError("data contains NaN or Inf; cannot pick sigma_max from it")
    return float(torch.cdist(sub, sub).max())


def shell_overlap(gamma: float, dim: int) -> float:
    """NCSNv2 technique 2: ``Φ(√(2N)(γ-1) + 3γ) - Φ(√(2N)(γ-1) - 3γ)``."""
    a = math.sqrt(2.0 * dim) * (gamma - 1.0)
    return _phi(a + 3.0 * gamma) - _phi(a - 3.0 * gamma)


def choose_num_levels(sigma_max: float, sigma_min: float, dim: int, *, target: float = 0.5,
                      max_ratio: float = DEFAULT_MAX_RATIO) -> tuple[int, float, float, str]:
    """Smallest ``L >= 2`` whose ratio ``γ = (σ_1/σ_L)^{1/(L-1)}`` has overlap ``>= target`` and ``γ <= max_ratio``.

    Returns ``(L, γ, overlap, reason)`` where ``reason`` says which condition decided.
    """
    span = math.log(sigma_max / sigma_min)
    by_cap = 2 if max_ratio == math.inf else max(2, 1 + math.ceil(span / math.log(max_ratio) - 1e-12))
    L = 2
    while shell_overlap(math.exp(span / (L - 1)), dim) < target:
        L += 1
        if L > _MAX_LEVELS:
            raise UserError(f"no level count up to {_MAX_LEVELS} reaches overlap {target} in {dim} dimensions")
    by_rule = L
    L = max(by_rule, by_cap)
    gamma = math.exp(span / (L - 1))
    reason = "overlap rule" if by_rule >= by_cap else "ratio cap"
    return L, gamma, shell_overlap(gamma, dim), reason


def _check_int(name: str, value, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise UserError(f"{name} must be an integer >= {lo}, got {value!r}")
    return value


def level_count(sigma_max: float, sigma_min: float, dim: int, num_levels: Optional[int] = None,
                max_ratio: float = DEFAULT_MAX_RATIO, target_overlap: float = 0.5) -> int:
    """``L``: ``num_levels`` when given (an integer >= 2), else technique 2's (:func:`choose_num_levels`)."""
    if num_levels is not None:
        return _check_int("levels", num_levels, 2)
    return choose_num_levels(sigma_max, sigma_min, _check_int("dim", dim, 1), target=target_overlap, max_ratio=max_ratio)[0]
