"""The Kac (telegraph-process) kernel: the law of ``X_t − X_0`` for a particle at finite speed.

Kac (1974, "A stochastic model related to the telegrapher's equation"); as a generative
kernel: Duong, Chemseddine, Friz, Steidl, "Telegrapher's Generative Model via Kac Flows",
arXiv 2506.20641.

**1-D process.**  A particle moves at speed ``c`` in direction ``D_t ∈ {±1}``; ``D_0 = ±1``
with probability 1/2 each and ``D`` flips at the events of a Poisson process of rate ``a``.
The displacement ``δ = X_t − X_0 = c ∫_0^t D_s ds`` has the law

    k_t(dδ) = (e^{−at}/2) (δ_{+ct} + δ_{−ct})(dδ) + p(δ, t) 1{|δ| < ct} dδ,
    p(δ, t) = (a e^{−at} / 2c) [I_0(z) + (ct/r) I_1(z)],   r = √(c²t² − δ²),  z = a r / c,

two atoms (no flip yet, mass ``e^{−at}/2`` each) and a density on the light cone's inside,
which solves the telegrapher (damped wave) equation ``∂_t²p + 2a ∂_t p = c² ∂_δ²p``.
Resolved by the current direction, ``p_±(δ, t)`` (density of ``δ`` and ``D_t = ±1``) solve
``∂_t p_± = ∓c ∂_δ p_± − a p_± + a p_∓``; with ``p = p_+ + p_−`` and the flux
``j = c (p_+ − p_−)``:

    j(δ, t) = (a e^{−at} / 2) δ I_1(z) / r,      ∂_t p + ∂_δ j = 0,   ∂_t j + 2a j = −c² ∂_δ p

(the second pair gives the telegrapher equation on eliminating ``j``), and
``p_± = (p ± j/c)/2 ≥ 0``.

**Conditional velocity** (the Kac flow's): ``u(δ, t) = E[c D_t | δ] = j/p = h δ/t`` with

    h(δ, t) = a t g(z) / (e^{−z}I_0(z) + a t g(z)) ∈ [0, 1),   g(z) = e^{−z} I_1(z) / z,

on the inside, and ``u = ±c = δ/t`` (``h = 1``) on the atoms.  ``h → 1/2`` for ``at → ∞``
(``u → δ/2t``: the heat equation's PF-ODE, see below) and ``h → 0`` for ``at → 0`` (one
flip at a uniform time: both directions are equally likely given ``δ``).  Everything is
computed with the exponentially scaled Bessels ``i0e``, ``i1e``, so large ``at`` neither
overflows nor cancels: ``log p = log(a/2c) − at + z + log(i0e(z) + a t g(z))``.

**Moments.**  ``E[δ] = 0``, ``E[δ²] = σ²(t) = (c²/a) (t − (1 − e^{−2at})/(2a))``: ``c²t²``
(ballistic) for ``at ≪ 1``, ``c²t/a − c²/2a²`` (diffusive) for ``at ≫ 1``.

**Sampler** (exact, batched, any device, a ``torch.Generator``): the number of flips is
``n ~ Poisson(at)``; ``n = 0`` gives the atom ``δ = D_0 c t``; given ``n ≥ 1`` the flip times
are uniform order statistics, so the ``n + 1`` spacings are ``t · Dirichlet(1, …, 1)`` and
the time spent in the initial direction is ``t B``, ``B ~ Beta(⌊n/2⌋ + 1, ⌈n/2⌉)``;
``δ = D_0 c t (2B − 1)`` with ``B = G_1/(G_1 + G_2)`` from two Gamma draws
(:func:`physgen.random.gamma`).  No table, no truncation, no loop over samples.

**N dimensions**: independent coordinates (arXiv 2506.20641's component-wise Kac process),
``k_t^{(N)}(dδ) = Π_i k_t(dδ_i)``; the N-dim law is not radial.

**Limit.**  ``a → ∞`` with ``c²/a`` fixed: ``k_t → N(0, (c²t/a) I)``, the heat kernel
(VE with ``σ² = c²t/a``); ``a → 0``: the two atoms (ballistic).

The exact fields of a finite point set need a rule for the atoms, which have no Lebesgue
density: :func:`kac_log_profile` spreads each atom's mass outwards from the light cone
with the density ``e^{−(λ−1)/ε}/(ε c t)`` in ``λ = |δ|/ct ≥ 1`` (``ε = atom_band``), and
:func:`kac_profile_and_speed` gives this band the atom's self-similar velocity ``δ/t``
(``= ±c`` on the cone, and the same relative position ``λ`` at every earlier ``t``).
:mod:`physgen.processes.telegrapher` explains why that is the right limit.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor

from ..errors import UserError
from ..random import gamma

__all__ = [
    "KacKernel",
    "kac_offsets",
    "kac_log_density",
    "kac_flux",
    "kac_direction_densities",
    "kac_speed",
    "kac_velocity",
    "kac_log_profile",
    "kac_profile_and_speed",
    "kac_log_prob",
    "kac_variance",
    "kac_sigma_rate",
    "kac_t_of_sigma",
    "atom_log_mass",
]

def check_kac_parameters(a: float, c: float) -> tuple[float, float]:
    a, c = float(a), float(c)
    if not (a > 0 and math.isfinite(a)):
        raise UserError(f"Kac flip rate a must be a positive number, got a={a}")
    if not (c > 0 and math.isfinite(c)):
        raise UserError(f"Kac speed c must be a positive number, got c={c}")
    return a, c


def _g(z: Tensor) -> Tensor:
    """``e^{−z} I_1(z)/z`` (``→ 1/2`` at ``z = 0``), for ``z ≥ 0`` (``i1e`` is accurate down to tiny z)."""
    pos = z > 0
    zs = torch.where(pos, z, torch.ones_like(z))
    return torch.where(pos, torch.special.i1e(zs) / zs, torch.full_like(z, 0.5))


def _inside(delta: Tensor, t: Tensor, a: float, c: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(z, z − at, e^{−z}I_0(z), a t g(z))`` with ``r`` clamped to ``[0, ct]``.

    ``z − at = −(a/c) δ²/(r + ct)`` is formed without cancellation (at ``at ~ 10⁴`` the
    difference of the two large numbers would lose the Gaussian part in float32).
    """
    ct = c * t
    d = delta.abs()
    r = torch.sqrt(torch.clamp((ct - d) * (ct + d), min=0.0))
    z = (a / c) * r
    zm = -(a / c) * torch.minimum(d, ct) ** 2 / (r + ct)
    return z, zm, torch.special.i0e(z), a * t * _g(z)


def kac_log_density(delta: Tensor, t: Tensor, a: float, c: float) -> Tensor:
    """``log p(δ, t)`` of the continuous part (``−inf`` on and beyond the cone ``|δ| ≥ ct``).

    ``t`` broadcasts against ``delta``; the continuous part has mass ``1 − e^{−at}``.
    """
    _, zm, i0e, atg = _inside(delta, t, a, c)
    logp = math.log(a / (2.0 * c)) + zm + torch.log(i0e + atg)
    return torch.where(delta.abs() < c * t, logp, torch.full_like(logp, -math.inf))


def kac_flux(delta: Tensor, t: Tensor, a: float, c: float) -> Tensor:
    """``j = c (p_+ − p_−) = (a e^{−at}/2) δ I_1(z)/r`` on the inside (0 outside)."""
    z, zm, _, _ = _inside(delta, t, a, c)
    # I_1(z)/r = (a/c) g(z) e^{z}; so j = (a²/2c) δ g(z) e^{z − at}
    j = (a * a / (2.0 * c)) * delta * _g(z) * torch.exp(zm)
    return torch.where(delta.abs() < c * t, j, torch.zeros_like(j))


def kac_direction_densities(delta: Tensor, t: Tensor, a: float, c: float) -> tuple[Tensor, Tensor]:
    """``(p_+, p_−)``: the continuous part resolved by the current direction ``D_t``."""
    p = kac_log_density(delta, t, a, c).exp()
    j = kac_flux(delta, t, a, c)
    return 0.5 * (p + j / c), 0.5 * (p - j / c)


def kac_speed(delta: Tensor, t: Tensor, a: float, c: float, on_atom: Optional[Tensor] = None) -> Tensor:
    """``h`` in ``u = h δ/t``: ``a t g/(i0e + a t g)`` inside the cone, 1 on and beyond it.

    ``on_atom`` (bool, like ``delta``) marks offsets known to be atoms (from
    :func:`kac_offsets`); without it an offset is on the atom when ``|δ| ≥ ct (1 − tol)``
    with ``tol`` = 16 ulps of ``delta``'s dtype (an atom drawn in float64 and stored in
    float32 lands within rounding of the cone).
    """
    _, _, i0e, atg = _inside(delta, t, a, c)
    h = atg / (i0e + atg)
    if on_atom is None:
        tol = 16.0 * torch.finfo(delta.dtype).eps
        on_atom = delta.abs() >= c * t * (1.0 - tol)
    return torch.where(on_atom, torch.ones_like(h), h)


def kac_velocity(delta: Tensor, t: Tensor, a: float, c: float, on_atom: Optional[Tensor] = None) -> Tensor:
    """The conditional velocity ``u(δ, t) = E[c D_t | δ] = h δ / t`` (``±c`` on the atoms)."""
    return kac_speed(delta, t, a, c, on_atom) * delta / t


def atom_log_mass(t: Tensor, a: float) -> Tensor:
    """``log(e^{−at}/2)``: the log-mass of each atom."""
    return -a * t - math.log(2.0)


def kac_log_prob(delta: Tensor, t: Tensor, a: float, c: float, tol: Optional[float] = None) -> Tensor:
    """Per-coordinate ``log k_t`` against Lebesgue measure plus counting measure at ``±ct``.

    Inside the cone: ``log p``; on it (``| |δ|/ct − 1 | ≤ tol``, default 16 ulps of
    ``delta``'s dtype): the atom's log-mass ``−at − log 2``; beyond: ``−inf``.
    """
    tol = 16.0 * torch.finfo(delta.dtype).eps if tol is None else float(tol)
    ct = c * t
    d = delta.abs()
    on_atom = (d >= ct * (1.0 - tol)) & (d <= ct * (1.0 + tol))
    inside = kac_log_density(delta, t, a, c)
    atom = torch.broadcast_to(atom_log_mass(t, a), inside.shape).to(inside.dtype)
    return torch.where(on_atom, atom, inside)


def kac_log_profile(delta: Tensor, t: Tensor, a: float, c: float, atom_band: float) -> Tensor:
    """Per-coordinate log-weights of the band-regularised kernel (for the exact field).

    Inside the cone (``λ = |δ|/ct < 1 − tol``): ``log p``.  On and beyond it: each atom's mass
    ``e^{−at}/2`` spread outwards with the normalised density ``e^{−(λ − 1)/ε}/(ε c t)``
    (``ε = atom_band``), i.e. ``log(e^{−at}/2) − log(ε c t) − (λ − 1)/ε``.  ``tol`` (16 ulps)
    keeps a query riding an atom on the band whatever its rounding.  Nowhere ``−inf``: a
    query beyond every point's cone still has a posterior.
    """
    return kac_profile_and_speed(delta, t, a, c, atom_band)[0]


def kac_profile_and_speed(delta: Tensor, t: Tensor, a: float, c: float, atom_band: float, atol=0.0) -> tuple[Tensor, Tensor]:
    """``(kac_log_profile, h)`` in one pass: what an exact field needs per pair and coordinate.

    ``h`` is :func:`kac_speed` with the band on the atom (``h = 1``: velocity ``δ/t``).
    ``atol`` (broadcast against ``delta``) widens the atom by the rounding of ``δ = x − y``
    itself, ``~ ulp(max(|x|, |y|))``, which exceeds 16 ulps of ``ct`` when ``ct ≪ |y|``.
    Temporaries are reused in place: the exact field calls this on ``[queries, points, N]``
    blocks, where allocation is a visible share of the cost on the CPU.
    """
    tol = 16.0 * torch.finfo(delta.dtype).eps
    ct = c * t
    d = delta.abs()
    inside = d < ct * (1.0 - tol) - atol
    r = (ct - d).clamp_(min=0.0).mul_(ct + d).sqrt_()
    z = r * (a / c)
    s = torch.special.i0e(z)
    atg = torch.special.i1e(z).div_(z.clamp_(min=torch.finfo(z.dtype).tiny)).mul_(a * t)  # a t g(z); z = 0 only off the inside
    s.add_(atg)
    h = atg.div_(s)
    # log p = log(a/2c) − (a/c) δ²/(r + ct) + log(i0e + a t g)   (no cancellation, see _inside)
    logp = torch.minimum(d, ct).square_().div_(r.add_(ct)).mul_(-a / c).add_(s.log_()).add_(math.log(a / (2.0 * c)))
    band = d.div_(ct).sub_(1.0).clamp_(min=0.0).mul_(-1.0 / atom_band).add_(atom_log_mass(t, a) - torch.log(atom_band * ct))
    return torch.where(inside, logp, band), h.masked_fill_(~inside, 1.0)


def kac_variance(t: Tensor, a: float, c: float) -> Tensor:
    """``E[δ²] = (c²/a)(t − (1 − e^{−2at})/(2a)) = (c/a)² f(at)``, ``f(τ) = τ + expm1(−2τ)/2``."""
    return (c / a) ** 2 * _f(a * t)


def _f(tau: Tensor) -> Tensor:
    """``f(τ) = τ − (1 − e^{−2τ})/2``; below ``τ = 0.01`` its series ``Σ_{k≥2} (−2)^k τ^k/(2 k!)``
    to ``k = 8`` (truncation < 1e-17 relative), where the direct form would lose ``eps/τ``."""
    small = tau < 1e-2
    coeffs = [(-2.0) ** k / (2.0 * math.factorial(k)) for k in range(2, 9)]
    series = torch.full_like(tau, coeffs[-1])
    for co in reversed(coeffs[:-1]):
        series = series * tau + co
    series = series * tau * tau
    return torch.where(small, series, tau + 0.5 * torch.expm1(-2.0 * tau))


def kac_sigma_rate(t: Tensor, a: float, c: float) -> Tensor:
    """``dσ/dt`` for ``σ = √(kac_variance)``: ``c f'(τ)/(2√f(τ))``, ``f' = 1 − e^{−2τ}``, ``τ = at`` (``→ c`` as t → 0)."""
    tau = a * t
    f = _f(tau)
    pos = f > 0
    ratio = -torch.expm1(-2.0 * tau) / (2.0 * torch.sqrt(torch.where(pos, f, torch.ones_like(f))))
    return c * torch.where(pos, ratio, torch.ones_like(f))


def kac_t_of_sigma(sigma, a: float, c: float):
    """Inverse of ``σ(t) = √(kac_variance(t))`` (float or tensor): Newton on ``f(τ) = (aσ/c)²``.

    ``f`` is convex and increasing with ``f(τ) ≤ τ²`` and ``f(τ) ≥ τ − 1/2``, so Newton from
    ``τ_0 = √y + y ≥ τ*`` decreases monotonically to the root: 5 steps reach the rounding
    floor for every ``y`` in ``[1e-30, 1e30]`` (measured); 8 are taken.  (The exact fields
    call this on every evaluation, so the count matters for small problems.)
    """
    scalar = not isinstance(sigma, Tensor)
    s = torch.as_tensor(sigma, dtype=torch.float64)
    y = (a * s / c) ** 2
    tau = torch.sqrt(y) + y
    for _ in range(8):
        fp = -torch.expm1(-2.0 * tau)
        tau = torch.clamp(tau - (_f(tau) - y) / torch.clamp(fp, min=1e-300), min=0.0)
    t = tau / a
    return float(t) if scalar else t.to(sigma.dtype)


def kac_offsets(shape: Sequence[int], t: Tensor, a: float, c: float, generator: Optional[torch.Generator] = None, device=None,
                dtype: torch.dtype = torch.float32, return_atoms: bool = False):
    """Exact draws of ``δ ~ k_t`` per coordinate, shaped ``shape`` with ``t`` shaped ``[shape[0]]``.

    Returns ``δ`` (and, with ``return_atoms``, the bool mask of the atoms, ``n = 0``).
    Drawn in float64 on ``device`` (default: ``t``'s), then cast to ``dtype``.
    """
    shape = tuple(int(s) for s in shape)
    device = torch.device(device) if device is not None else t.device
    f64 = torch.float64
    tt = t.to(device=device, dtype=f64).reshape(shape[0], *([1] * (len(shape) - 1))).expand(shape).contiguous()
    n = torch.poisson(a * tt, generator=generator)
    half = torch.floor(0.5 * n)
    g1 = gamma(half + 1.0, shape, generator, device=device)
    g2 = gamma(torch.clamp(n - half, min=1.0), shape, generator, device=device)
    frac = (g1 - g2) / (g1 + g2)  # 2B − 1, B ~ Beta(⌊n/2⌋ + 1, ⌈n/2⌉)
    atom = n == 0
    frac = torch.where(atom, torch.ones_like(frac), frac)
    # the sign in float64 (torch.where with scalars gives float32, which would round c)
    sign = 1.0 - 2.0 * (torch.rand(shape, generator=generator, device=device, dtype=f64) < 0.5).to(f64)
    delta = (c * tt * frac * sign).to(dtype)
    return (delta, atom) if return_atoms else delta


class KacKernel:
    """The N-dim product Kac kernel (independent coordinates) with rate ``a`` and speed ``c``.

    The same API as the other kernels (``sample_offsets``, ``log_prob``, ``config``), plus
    the per-coordinate ``log_profile`` (band-regularised atoms, for exact fields), the
    conditional ``speed``/``velocity`` and the noise level ``sigma(t)`` (per-coordinate std).
    """

    gaussian = False

    def __init__(self, a: float, c: float, atom_band: float = 0.01):
        self.a, self.c = check_kac_parameters(a, c)
        atom_band = float(atom_band)
        if not (0 < atom_band <= 10):
            raise UserError(f"atom_band must be in (0, 10], got {atom_band}")
        self.atom_band = atom_band

    def sample_offsets(self, shape: Sequence[int], s: Tensor, generator=None, device=None, dtype=torch.float32, return_atoms: bool = False):
        return kac_offsets(shape, s, self.a, self.c, generator, device, dtype, return_atoms)

    def log_prob(self, offset: Tensor, s: Tensor) -> Tensor:
        """``Σ_i log k_t(δ_i)`` shaped ``[B]`` (float64; atoms against counting measure)."""
        d = offset.reshape(offset.shape[0], -1)
        # the cone test at the offset's own precision: a float32 atom sits within its rounding
        tol = 16.0 * torch.finfo(d.dtype).eps
        return kac_log_prob(d.double(), s.to(torch.float64)[:, None], self.a, self.c, tol).sum(1)

    def log_profile(self, delta: Tensor, t: Tensor) -> Tensor:
        return kac_log_profile(delta, t, self.a, self.c, self.atom_band)

    def speed(self, delta: Tensor, t: Tensor, on_atom: Optional[Tensor] = None) -> Tensor:
        return kac_speed(delta, t, self.a, self.c, on_atom)

    def velocity(self, delta: Tensor, t: Tensor, on_atom: Optional[Tensor] = None) -> Tensor:
        return kac_velocity(delta, t, self.a, self.c, on_atom)

    def sigma(self, t: Tensor) -> Tensor:
        return torch.sqrt(kac_variance(t, self.a, self.c))

    def sigma_rate(self, t: Tensor) -> Tensor:
        return kac_sigma_rate(t, self.a, self.c)

    def t_of_sigma(self, sigma):
        return kac_t_of_sigma(sigma, self.a, self.c)

    def config(self) -> dict:
        return {"a": self.a, "c": self.c, "atom_band": self.atom_band}
