"""Modified Bessel functions of the second kind in log space, batched in torch (float64).

The Yukawa kernel (GenPhys, arXiv 2304.02637) needs ``log K_ν(u)`` for ``ν = (N+1)/2`` and
the ratio ``K_{ν+1}(u)/K_ν(u)`` for ``ν = (N-1)/2`` on every (query, data point) pair, so
calling scipy on the host in a loop is out.  What is used, by order:

* **Half-integer ν = n + ½** (N even): exact.  ``K_{1/2}(u) = √(π/(2u)) e^{-u}`` and
  ``K_{3/2}/K_{1/2} = 1 + 1/u``; higher orders by the ratio recurrence below.
* **Integer ν** (N odd): exact up to torch's own accuracy.  ``K_0, K_1`` from
  ``torch.special.scaled_modified_bessel_k0/k1`` (``e^u K``: no underflow at large u),
  higher orders by the ratio recurrence.
* **Ratio recurrence** (for ν up to :data:`RECURRENCE_MAX`): with ``r_ν = K_{ν+1}/K_ν``,
  ``K_{ν+1} = K_{ν-1} + (2ν/u) K_ν`` gives ``r_ν = 1/r_{ν-1} + 2ν/u``.  Every term is
  positive, so upward recurrence is stable for K (the dominant solution), and
  ``log K_ν = log K_{ν0} + Σ log r`` never overflows however small u is.
* **Large or non-(half-)integer ν**: the uniform asymptotic (Debye) expansion
  (DLMF 10.41.4), ``K_ν(νt) ~ √(π/(2ν)) e^{-νη} (1+t²)^{-1/4} Σ_k (-1)^k u_k(p)/ν^k`` with
  ``η = √(1+t²) + log(t/(1+√(1+t²)))``, ``p = (1+t²)^{-1/2}`` and ``u_0 … u_4`` (DLMF
  10.41.10), uniform in ``t ∈ (0, ∞)``; the first neglected term is ``O(ν^{-5})`` (below
  1e-8 relative for ν > 40).  The ratio is then ``exp(log K_{ν+1} - log K_ν)``.

Tested against ``scipy.special.kve`` (tests/test_yukawa_kernel.py).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["log_bessel_k", "bessel_k_ratio", "RECURRENCE_MAX"]

RECURRENCE_MAX = 40.0
"""Largest order computed by the exact recurrence; above it the Debye expansion is used."""


def _order_kind(nu: float) -> str:
    if nu < 0:
        raise ValueError(f"Bessel order must be >= 0 here, got {nu}")
    if nu <= RECURRENCE_MAX:
        if float(nu).is_integer():
            return "integer"
        if float(2 * nu).is_integer():
            return "half"
    return "debye"


def _start(kind: str, u: Tensor) -> tuple[float, Tensor, Tensor]:
    """``(ν0, log K_{ν0}(u), K_{ν0+1}(u)/K_{ν0}(u))`` for the recurrence's first order."""
    if kind == "half":
        return 0.5, 0.5 * torch.log(math.pi / (2.0 * u)) - u, 1.0 + 1.0 / u
    k0 = torch.special.scaled_modified_bessel_k0(u)
    k1 = torch.special.scaled_modified_bessel_k1(u)
    return 0.0, torch.log(k0) - u, k1 / k0


def _walk(nu: float, u: Tensor) -> tuple[Tensor, Tensor]:
    """``(log K_ν(u), K_{ν+1}(u)/K_ν(u))`` by the ratio recurrence (exact orders only)."""
    nu0, logk, ratio = _start(_order_kind(nu), u)
    order = nu0
    while order < nu - 1e-9:
        logk = logk + torch.log(ratio)
        order += 1.0
        ratio = 1.0 / ratio + 2.0 * order / u
    return logk, ratio


def _debye_log_k(nu: float, u: Tensor) -> Tensor:
    t = u / nu
    sq = torch.hypot(torch.ones_like(t), t)  # √(1 + t²)
    p = 1.0 / sq
    eta = sq + torch.log(t / (1.0 + sq))
    p2 = p * p
    u1 = p * (3.0 - 5.0 * p2) / 24.0
    u2 = p2 * (81.0 - 462.0 * p2 + 385.0 * p2 * p2) / 1152.0
    u3 = p * p2 * (30375.0 + p2 * (-369603.0 + p2 * (765765.0 - 425425.0 * p2))) / 414720.0
    u4 = p2 * p2 * (4465125.0 + p2 * (-94121676.0 + p2 * (349922430.0 + p2 * (-446185740.0 + 185910725.0 * p2)))) / 39813120.0
    series = 1.0 - u1 / nu + u2 / nu**2 - u3 / nu**3 + u4 / nu**4
    return 0.5 * math.log(math.pi / (2.0 * nu)) - nu * eta - 0.5 * torch.log(sq) + torch.log(series)


def log_bessel_k(nu: float, u: Tensor) -> Tensor:
    """``log K_ν(u)`` elementwise for ``u > 0`` (computed in float64, returned in u's dtype)."""
    x = u.to(torch.float64)
    kind = _order_kind(float(nu))
    out = _debye_log_k(float(nu), x) if kind == "debye" else _walk(float(nu), x)[0]
    return out.to(u.dtype)


def bessel_k_ratio(nu: float, u: Tensor) -> Tensor:
    """``K_{ν+1}(u) / K_ν(u)`` (≥ 1) elementwise for ``u > 0``, float64 inside.

    Limits: ``(ν + √(ν² + u²))/u`` is exact to leading order in both ``u → 0`` and
    ``u → ∞`` (GENPHYS.md); here the value is exact (recurrence) or Debye-accurate.
    """
    x = u.to(torch.float64)
    kind = _order_kind(float(nu))
    if kind == "debye" or _order_kind(float(nu) + 1.0) == "debye":
        out = torch.exp(_debye_or_walk(float(nu) + 1.0, x) - _debye_or_walk(float(nu), x))
    else:
        out = _walk(float(nu), x)[1]
    return out.to(u.dtype)


def _debye_or_walk(nu: float, x: Tensor) -> Tensor:
    return _debye_log_k(nu, x) if _order_kind(nu) == "debye" else _walk(nu, x)[0]
