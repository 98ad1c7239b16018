"""The Yukawa kernel: Normal-Inverse-Gaussian offsets, densities, death rate and radial transport.

Yukawa's equation in ``d = N+1`` dims with the data as a charge sheet at ``z = 0``,
``(∂_z² + ∇² − m²)φ = −p_data δ(z)`` (GenPhys, Liu et al., arXiv 2304.02637), has

* Green's function ``G(r) = (2π)^{-d/2} (m/r)^{d/2-1} K_{d/2-1}(m r)``;
* density at height ``z`` from one unit charge ``P_m(x, z) = −2∂_zG = 2 (2π)^{-d/2} z m^{d/2}
  r^{-d/2} K_{d/2}(m r)``, ``r = √(‖x‖² + z²)``, whose mass is ``e^{−mz}``;
* normalised kernel ``k_z = e^{mz} P_m``: the Normal-Inverse-Gaussian law with ``α = m``,
  ``β = 0``, ``δ = z``: ``x = y + √W ε``, ``W ~ IG(mean z/m, shape z²)``, ``ε ~ N(0, I_N)``
  (per-dimension variance ``z/m``);
* per-particle death rate ``κ = 2m²φ/p = (m/z) E[r K_ν(m r)/K_{ν+1}(m r) | x, z]`` with
  ``ν = (N−1)/2`` (the posterior over charges weighted by ``k_z``).

All of this is marked *derived* in GENPHYS.md; the derivations are repeated here where the
code depends on them.  Everything is float64 inside and batched in torch.

**Log-profile** (what the exact field's posterior weights need, constants in ``y``
dropped): ``log k_z(ρ) = log K_{(N+1)/2}(m R) − (N+1)/2 · log R + const(z)``,
``R = √(ρ² + z²)``.  For ``N = 2`` the order is ``3/2`` and ``K_{3/2}(u) = √(π/(2u)) e^{-u}
(1 + 1/u)``, so ``log k = −mR + log(1 + mR) − 3 log R + const``; other ``N`` use
:func:`physgen.kernels.special.log_bessel_k` (exact for ``N ≤ 79``, Debye above).

**Radial transport** (beyond the paper; GENPHYS.md).  The quantile map of the radial law
``F_z`` of ``k_z`` moves a point at radius ρ with ``dρ/dz = −∂_zF_z(ρ)/f_z(ρ)``.  In the
dimensionless variables ``ρ̃ = ρ/z`` and ``a = m z`` the kernel depends on ``a`` only, and
the log-log speed ``h = d log ρ / d log z`` is (derived here)

    h(ρ̃, a) = 1 − a ∂_aF̃(ρ̃; a) / (ρ̃ f̃(ρ̃; a)),     ∂_a log f̃ = 1 − R̃ K_ν(aR̃)/K_{ν+1}(aR̃),

with ``R̃ = √(1 + ρ̃²)``, ``ν = (N−1)/2``, ``f̃`` the radial density at ``z = 1, m = a``.
(The second identity also shows ``E[r K_ν/K_{ν+1}]/z = 1`` under the kernel: the
p-weighted mean of κ is m.)  For ``N = 2`` it is closed form (GENPHYS.md's
``dρ/dz = (ρ² + z m R (R − z))/(ρ z (m R + 1))``, rewritten without the cancelling
``R − z = ρ²/(R + z)``): ``h = (1 + a R̃/(R̃ + 1))/(1 + a R̃)``.  ``m → 0`` gives PFGM's
``h = 1`` (``ρ ∝ z``), ``a → ∞`` diffusion's ``h = ½`` (``ρ ∝ √z``).  For other ``N``,
:class:`RadialSpeedTable` tabulates ``h`` once per ``N`` on a grid of ``(log a, log ρ̃)``
(cumulative trapezoid in log-space) and interpolates bilinearly.
"""
from __future__ import annotations

import math
from functools import lru_cache, partial
from typing import Optional, Sequence

import torch
from torch import Tensor

from .special import bessel_k_ratio, log_bessel_k

__all__ = [
    "NIGKernel",
    "sample_inverse_gaussian",
    "nig_offsets",
    "nig_log_profile",
    "nig_log_density",
    "yukawa_log_density",
    "yukawa_green",
    "death_rate_pair",
    "rate_scale",
    "centre_speed",
    "radial_speed",
    "transport_log_profile",
    "inverse_radial_speed",
    "RadialSpeedTable",
    "radial_speed_table",
]

_LOG_2PI = math.log(2.0 * math.pi)


def sample_inverse_gaussian(mean: Tensor, shape_param: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
    """Exact draws from ``IG(mean μ, shape λ)`` (Michael, Schucany & Haas 1976), batched.

    With ``ν ~ N(0, 1)``, ``y = ν²`` and ``a = μ y/(2λ)`` the smaller root of the MSH
    quadratic is ``x = μ (1 + a − √(a² + 2a))``, computed here as ``μ/(1 + a + √(a(a+2)))``
    (the same number, no cancellation when ``a`` is large, i.e. ``m z`` small); then
    ``x`` is kept with probability ``μ/(μ + x)`` and replaced by ``μ²/x`` otherwise.
    ``mean`` and ``shape_param`` broadcast; draws are float64 on their device.
    """
    mu = mean.to(torch.float64)
    lam = shape_param.to(torch.float64)
    shape = torch.broadcast_shapes(mu.shape, lam.shape)
    nu = torch.randn(shape, generator=generator, device=mu.device, dtype=torch.float64)
    uni = torch.rand(shape, generator=generator, device=mu.device, dtype=torch.float64)
    a = mu * nu * nu / (2.0 * lam)
    t = 1.0 / (1.0 + a + torch.sqrt(a * (a + 2.0)))  # x/μ ∈ (0, 1]
    return torch.where(uni * (1.0 + t) <= 1.0, mu * t, mu / t)


def nig_offsets(shape: Sequence[int], z: Tensor, m: float, generator=None, device=None, dtype=torch.float32) -> Tensor:
    """Offsets ``√W ε`` of the NIG kernel at heights ``z [B]`` (``shape = (B, ...)``).

    ``W ~ IG(z/m, z²)`` then ``ε ~ N(0, I)``, both from ``generator``, in that order.
    """
    shape = tuple(shape)
    z64 = z.to(device=device or z.device, dtype=torch.float64)
    w = sample_inverse_gaussian(z64 / m, z64 * z64, generator)
    eps = torch.randn(shape, generator=generator, device=z64.device, dtype=torch.float64)
    return (w.sqrt().reshape(shape[0], *([1] * (len(shape) - 1))) * eps).to(dtype)


def nig_log_profile(sqdist: Tensor, z: Tensor, m: float, n_dim: int) -> Tensor:
    """``log k_z`` up to a function of ``z`` (the exact field's posterior log-weights).

    ``sqdist`` is ``ρ²`` (any shape), ``z`` broadcasts against it.  ``N = 2`` is computed in
    sqdist's dtype (closed form), other ``N`` in float64; returned in sqdist's dtype.
    """
    if n_dim == 2:
        big_r = torch.sqrt(sqdist + z * z)
        u = m * big_r
        return torch.log1p(u) - u - 3.0 * torch.log(big_r)
    sq, zz = sqdist.to(torch.float64), z.to(torch.float64)
    big_r = torch.sqrt(sq + zz * zz)
    out = log_bessel_k((n_dim + 1) / 2, m * big_r) - 0.5 * (n_dim + 1) * torch.log(big_r)
    return out.to(sqdist.dtype)


def transport_log_profile(sqdist: Tensor, z: Tensor, m: float, n_dim: int) -> Tensor:
    """``log(k_z h)`` up to a function of ``z``: the posterior log-weights of the transport field.

    ``N = 2`` fused: ``log k + log h = −mR − 3 log R + log(1 + m z R/(R + z))`` (the
    ``log(1 + mR)`` cancels).
    """
    if n_dim == 2:
        big_r = torch.sqrt(sqdist + z * z)
        return torch.log1p(m * z * big_r / (big_r + z)) - m * big_r - 3.0 * torch.log(big_r)
    return nig_log_profile(sqdist, z, m, n_dim) + torch.log(radial_speed(sqdist, z, m, n_dim).clamp_min(1e-300))


def inverse_radial_speed(sqdist: Tensor, z: Tensor, m: float, n_dim: int) -> Tensor:
    """``1/h`` (``N = 2``: ``(1 + mR)/(1 + m z R/(R + z))``), in sqdist's dtype."""
    if n_dim == 2:
        big_r = torch.sqrt(sqdist + z * z)
        return (1.0 + m * big_r) / (1.0 + m * z * big_r / (big_r + z))
    return 1.0 / radial_speed(sqdist, z, m, n_dim).clamp_min(1e-300)


def nig_log_density(sqdist: Tensor, z: Tensor, m: float, n_dim: int) -> Tensor:
    """Normalised ``log k_z(x)`` at ``‖x − y‖² = sqdist``:
    ``log 2 + log z + m z − (N+1)/2 log 2π + (N+1)/2 (log m − log R) + log K_{(N+1)/2}(m R)``."""
    sq, zz = sqdist.to(torch.float64), torch.as_tensor(z, dtype=torch.float64, device=sqdist.device)
    big_r = torch.sqrt(sq + zz * zz)
    nu1 = 0.5 * (n_dim + 1)
    out = (math.log(2.0) + torch.log(zz) + m * zz - nu1 * _LOG_2PI + nu1 * (math.log(m) - torch.log(big_r))
           + log_bessel_k(nu1, m * big_r))
    return out


def yukawa_log_density(sqdist: Tensor, z: Tensor, m: float, n_dim: int) -> Tensor:
    """``log P_m = log k_z − m z``: the (unnormalised) Yukawa density of one unit charge."""
    zz = torch.as_tensor(z, dtype=torch.float64, device=sqdist.device)
    return nig_log_density(sqdist, zz, m, n_dim) - m * zz


def yukawa_green(r: Tensor, m: float, d: int) -> Tensor:
    """``G(r) = (2π)^{-d/2} (m/r)^{d/2-1} K_{d/2-1}(m r)``, the Green's function of ``−∇² + m²`` in ``d`` dims."""
    r64 = r.to(torch.float64)
    nu = 0.5 * d - 1.0
    if nu < 0:  # d = 1: K_{-1/2} = K_{1/2}
        nu = -nu
    logg = -0.5 * d * _LOG_2PI + (0.5 * d - 1.0) * (math.log(m) - torch.log(r64)) + log_bessel_k(nu, m * r64)
    return torch.exp(logg)


def death_rate_pair(sqdist: Tensor, z: Tensor, m: float, n_dim: int) -> Tensor:
    """Per-pair death rate ``(m/z) r K_ν(m r)/K_{ν+1}(m r)``, ``ν = (N−1)/2``, ``r = √(ρ² + z²)``.

    Its posterior mean under ``k_z`` is κ.  ``N = 2``: ``K_{1/2}/K_{3/2} = u/(1 + u)``, so the
    pair rate is ``m² r²/(z (1 + m r))`` (in sqdist's dtype); other N in float64.
    """
    if n_dim == 2:
        r2 = sqdist + z * z
        return m * m * r2 / (z * (1.0 + m * torch.sqrt(r2)))
    sq, zz = sqdist.to(torch.float64), z.to(torch.float64)
    r = torch.sqrt(sq + zz * zz)
    out = (m / zz) * r / bessel_k_ratio(0.5 * (n_dim - 1), m * r)
    return out.to(sqdist.dtype)


def rate_scale(a: Tensor, n_dim: int) -> Tensor:
    """``√Var_k(c)`` of the per-pair target ``c = κ_pair/m`` under the kernel, approximately.

    ``E_k[c] = 1`` exactly (derived: ``∫ k ∂_a log k = 0``); measured here (2e5 NIG draws,
    N ∈ {1, 2, 3, 8, 32}, a = m z ∈ [1e-3, 100]) ``Var_k(c) = 1/(a (1 + 2a/N))`` within a
    factor 2.5 everywhere (``(χ²_N − N)/(2a)`` at large a, heavy ``1/a`` tails at small a).
    Used to scale the learned rate head and to weight its loss (a fitted choice, not the paper's).
    """
    return torch.rsqrt(a * (1.0 + 2.0 * a / n_dim))


def centre_speed(a: Tensor, n_dim: int) -> Tensor:
    """``h(0, a) = 1 − a (1 − K_ν(a)/K_{ν+1}(a))/N`` (derived: the ρ̃ → 0 limit of ``h``; ``N = 2``:
    ``(1 + a/2)/(1 + a)``): 1 in the PFGM limit, ½ in the diffusion limit.  The neural transport
    head is parameterised around it, ``T = (1 − h_0) x + h_0 D̃``."""
    a64 = a.to(torch.float64)
    if n_dim == 2:
        return ((1.0 + 0.5 * a64) / (1.0 + a64)).to(a.dtype)
    return (1.0 - a64 * (1.0 - 1.0 / bessel_k_ratio(0.5 * (n_dim - 1), a64)) / n_dim).to(a.dtype)


# ------------------------------------------------------------------------------------------
# radial transport speed h = d log ρ / d log z of the NIG kernel's quantile map

def _exp(x: Tensor) -> Tensor:
    """``exp`` with arguments below -700 flushed to 0 (denormal results are slow on CPUs)."""
    return torch.where(x > -700.0, torch.exp(x.clamp_min(-700.0)), torch.zeros_like(x))


def _log_intervals(lg: Tensor, dl: float) -> Tensor:
    """``log ∫`` of ``exp(lg)`` over each grid interval (last dim), interpolating ``lg`` linearly.

    Exact for an exponential, so tails that fall by many e-folds per step stay accurate (the
    plain trapezoid's relative error there grows like the square of the fall per step):
    ``∫ = dl e^{L_0} (e^Δ − 1)/Δ`` with ``Δ = L_1 − L_0``.  An end at ``−∞`` gives ``−∞``.
    """
    l0, l1 = lg[..., :-1], lg[..., 1:]
    ok = torch.isfinite(l0) & torch.isfinite(l1)
    d = torch.where(ok, l1 - l0, torch.zeros_like(l0))
    ad = d.abs().clamp_min(1e-300)
    # log((e^Δ − 1)/Δ) = max(Δ, 0) + log((1 − e^{−|Δ|})/|Δ|), series near 0
    phi = torch.where(ad < 1e-6, 0.5 * d, d.clamp_min(0.0) + torch.log(-torch.expm1(-ad)) - torch.log(ad))
    out = l0 + phi + math.log(dl)
    return torch.where(ok, out, torch.full_like(out, -math.inf))


def _h_closed_form_2d(rho_t: Tensor, a: Tensor) -> Tensor:
    big_r = torch.sqrt(1.0 + rho_t * rho_t)
    return (1.0 + a * big_r / (big_r + 1.0)) / (1.0 + a * big_r)


def radial_speed(sqdist: Tensor, z: Tensor, m: float, n_dim: int) -> Tensor:
    """``h(ρ/z, m z)``: the conditional transport velocity is ``u(x | y, z) = h (x − y)/z``.

    Closed form for ``N = 2`` (in sqdist's dtype); the cached :class:`RadialSpeedTable`
    otherwise (float64 inside).  Returned in sqdist's dtype.
    """
    if n_dim == 2:
        big_r = torch.sqrt(sqdist + z * z)
        return (1.0 + m * z * big_r / (big_r + z)) / (1.0 + m * big_r)
    sq, zz = sqdist.to(torch.float64), z.to(torch.float64)
    rho_t = torch.sqrt(sq) / zz
    out = radial_speed_table(n_dim)(rho_t, (m * zz).expand_as(rho_t))
    return out.to(sqdist.dtype)


class RadialSpeedTable:
    """``h(ρ̃, a)`` tabulated on a regular grid of ``(log a, log ρ̃)`` for one dimension ``N``.

    For each ``a`` the radial density ``f̃(s)`` (z = 1, m = a) and the integrand
    ``f̃ (1 − R̃ K_ν/K_{ν+1})`` of ``∂_aF̃`` are integrated with a cumulative trapezoid on a
    grid uniform in ``log s`` (spacing ``dlog_rho / refine``), entirely in log-space
    (``logcumsumexp``), so tails where ``f̃`` underflows stay exact.  ``∂_aF̃`` is taken as
    the integral from 0 where ``F̃ < ½`` and minus the integral to ∞ elsewhere (no
    cancellation).  Outside the grid: ``h`` is constant below ``ρ̃_min`` (it tends to a
    constant as ρ̃ → 0), ``h ∝ 1/ρ̃`` above ``ρ̃_max`` (the NIG tail ``e^{−mρ}`` moves at a
    constant ``dρ/dz``), and ``a`` is clamped to ``[a_min, a_max]`` (there ``h`` is 1 resp.
    its diffusion limit to within the grid's accuracy).  Max error against the closed form
    at ``N = 2``: see tests/test_yukawa_kernel.py.
    """

    def __init__(self, n_dim: int, a_range=(1e-6, 1e6), n_a: int = 121, log_rho_range=(-14.0, 20.0), dlog_rho: float = 0.02, refine: int = 2, tail_switch: float = 80.0):
        self.n_dim = int(n_dim)
        if self.n_dim < 1:
            raise ValueError(f"dimension must be >= 1, got {n_dim}")
        self.tail_switch = float(tail_switch)
        self.log_a = torch.linspace(math.log(a_range[0]), math.log(a_range[1]), n_a, dtype=torch.float64)
        n_rho = int(round((log_rho_range[1] - log_rho_range[0]) / dlog_rho)) + 1
        self.log_rho = torch.linspace(log_rho_range[0], log_rho_range[1], n_rho, dtype=torch.float64)
        fine = torch.linspace(log_rho_range[0], log_rho_range[1], (n_rho - 1) * refine + 1, dtype=torch.float64)
        rows = [self._rows(self.log_a[i : i + 16, None], fine[None, :])[:, ::refine] for i in range(0, n_a, 16)]
        self.table = torch.cat(rows)  # [n_a, n_rho]
        self._on: dict = {}

    def _log_f_lam(self, log_a: Tensor, log_s: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``log f̃``, ``λ = −d log f̃/ds`` and ``q = ∂_a log f̃`` on the grid ``[A, S]``."""
        n = self.n_dim
        a, s = log_a.exp(), log_s.exp()
        big_r = torch.sqrt(1.0 + s * s)
        nu, nu1 = 0.5 * (n - 1), 0.5 * (n + 1)
        log_sphere = math.log(2.0) + 0.5 * n * math.log(math.pi) - math.lgamma(0.5 * n)
        log_k = math.log(2.0) + a - nu1 * _LOG_2PI + nu1 * (log_a - torch.log(big_r)) + log_bessel_k(nu1, a * big_r)
        log_f = log_sphere + (n - 1) * log_s + log_k
        ratio = bessel_k_ratio(nu, a * big_r)  # K_{ν+1}/K_ν at a R̃
        q = 1.0 - big_r / ratio
        # λ from K'_{ν+1}/K_{ν+1} = −1/ratio − (ν+1)/u
        lam = -(n - 1) / s + (n + 1) * s / big_r**2 + a * s / (big_r * ratio)
        return log_f, lam, q

    def _log_tail(self, log_a: Tensor, log_s: Tensor, dl: float) -> tuple[Tensor, Tensor]:
        """Watson's expansion ``log F̄ ≈ log f̃ − log λ + log(1 − λ'/λ²)`` and ``λ s``."""
        log_f, lam, _ = self._log_f_lam(log_a, log_s)
        s = log_s.exp()
        dlam = torch.gradient(lam, spacing=dl, dim=1)[0] / s
        corr = (1.0 - dlam / lam**2).clamp_min(1e-3)
        return log_f - torch.log(lam.abs()) + torch.log(corr), lam * s

    def _tail_slope(self, log_tail: Tensor, log_f: Tensor, lam_s: Tensor, dl: float) -> Tensor:
        """``∂ log F̄/∂ log s``: ``−λ s`` analytically plus the gradient of the slowly varying rest."""
        rest = log_tail - log_f
        return -lam_s + torch.gradient(rest, spacing=dl, dim=1)[0]

    def _rows(self, log_a: Tensor, log_s: Tensor) -> Tensor:
        n = self.n_dim
        a = log_a.exp()
        dl = float(log_s[0, 1] - log_s[0, 0])
        log_f, lam, q = self._log_f_lam(log_a, log_s)
        log_fs = log_f + log_s  # the integrand f̃ ds = f̃ s d(log s)
        log_pos = log_fs + torch.log(q.clamp_min(0.0))
        log_neg = log_fs + torch.log((-q).clamp_min(0.0))
        head = log_fs[:, :1] - math.log(n)  # ∫_0^{s_0} f̃ ds ≈ f̃(s_0) s_0 / N  (f̃ ∝ s^{N-1})
        q0 = q[:, :1]
        ninf = torch.full_like(head, -math.inf)
        head_pos = torch.where(q0 > 0, head + torch.log(q0.clamp_min(1e-300)), ninf)
        head_neg = torch.where(q0 < 0, head + torch.log((-q0).clamp_min(1e-300)), ninf)

        def left(lg: Tensor, hv: Tensor) -> Tensor:  # log ∫_0^{s_j}
            return torch.logcumsumexp(torch.cat([hv, _log_intervals(lg, dl)], dim=1), dim=1)

        log_cdf = left(log_fs, head)
        h_left = 1.0 - a * (_exp(left(log_pos, head_pos) - log_fs) - _exp(left(log_neg, head_neg) - log_fs))
        # far past the bulk (λ s >= tail_switch): Watson's expansion of the tail
        delta = 1e-4
        log_tail, lam_s = self._log_tail(log_a, log_s, dl)
        d_log_a = (self._log_tail(log_a + delta, log_s, dl)[0] - self._log_tail(log_a - delta, log_s, dl)[0]) / (2 * delta)
        h_tail = 1.0 - d_log_a / self._tail_slope(log_tail, log_f, lam_s, dl)
        idx = torch.arange(log_s.shape[1])[None, :]
        tail = (idx > torch.argmax(log_f, dim=1, keepdim=True)) & (lam_s >= self.tail_switch)
        jstar = torch.where(tail.any(1), tail.float().argmax(1), torch.full((tail.shape[0],), tail.shape[1] - 1)).long()
        # in between: ∫_{s_j}^{s_jstar} on the grid, plus the tail's ∂_aF̄ at s_jstar
        keep = idx[:, :-1] < jstar[:, None]

        def right(lg: Tensor) -> Tensor:  # log ∫_{s_j}^{s_jstar}
            iv = torch.where(keep, _log_intervals(lg, dl), torch.full_like(keep, -math.inf, dtype=lg.dtype))
            c = torch.logcumsumexp(iv.flip(1), dim=1).flip(1)
            return torch.cat([c, torch.full_like(c[:, :1], -math.inf)], dim=1)

        rows = torch.arange(log_a.shape[0])
        star = (log_tail[rows, jstar][:, None], d_log_a[rows, jstar][:, None])
        # a ∂_aF̄(s_jstar) / (s_j f̃_j) = F̄* ∂_{log a} log F̄* / (s_j f̃_j)
        tail_term = _exp(star[0] - log_fs) * star[1]
        h_right = 1.0 + a * (_exp(right(log_pos) - log_fs) - _exp(right(log_neg) - log_fs)) + tail_term
        use_left = log_cdf < math.log(0.5)
        return torch.where(use_left, h_left, torch.where(tail, h_tail, h_right))

    def __call__(self, rho_t: Tensor, a: Tensor) -> Tensor:
        """Bilinear interpolation of ``h`` at ``(ρ̃, a)`` (broadcasting tensors, float64 out)."""
        table = self._on.get(rho_t.device)
        if table is None:  # one copy per device, not one per call
            table = self._on[rho_t.device] = self.table.to(rho_t.device)
        la = torch.log(a.to(torch.float64)).clamp(float(self.log_a[0]), float(self.log_a[-1]))
        lr = torch.log(rho_t.to(torch.float64).clamp_min(1e-300))
        lr_max = float(self.log_rho[-1])
        lrc = lr.clamp(float(self.log_rho[0]), lr_max)
        fa = (la - float(self.log_a[0])) / float(self.log_a[1] - self.log_a[0])
        fr = (lrc - float(self.log_rho[0])) / float(self.log_rho[1] - self.log_rho[0])
        ia = fa.floor().long().clamp(0, table.shape[0] - 2)
        ir = fr.floor().long().clamp(0, table.shape[1] - 2)
        wa, wr = fa - ia, fr - ir
        t00, t01 = table[ia, ir], table[ia, ir + 1]
        t10, t11 = table[ia + 1, ir], table[ia + 1, ir + 1]
        h = (1 - wa) * ((1 - wr) * t00 + wr * t01) + wa * ((1 - wr) * t10 + wr * t11)
        return torch.where(lr > lr_max, h * torch.exp(lr_max - lr), h)


@lru_cache(maxsize=8)
def radial_speed_table(n_dim: int) -> RadialSpeedTable:
    """The cached :class:`RadialSpeedTable` for dimension ``n_dim`` (built once, ~1 s)."""
    return RadialSpeedTable(n_dim)


class NIGKernel:
    """The normalised Yukawa kernel ``k_z`` (Normal-Inverse-Gaussian, α = m, β = 0, δ = z)."""

    gaussian = False

    def __init__(self, m: float):
        self.m = float(m)

    def sample_offsets(self, shape: Sequence[int], s: Tensor, generator=None, device=None, dtype=torch.float32) -> Tensor:
        return nig_offsets(shape, s, self.m, generator, device, dtype)

    def log_profile_for(self, n_dim: int):
        """``log_profile(sqdist, z)`` for the exact field in ``n_dim`` dimensions."""
        return partial(nig_log_profile, m=self.m, n_dim=int(n_dim))

    def log_prob(self, offset: Tensor, s: Tensor) -> Tensor:
        """Normalised ``log k_z(offset)``, shaped ``[B]`` (float64)."""
        n = offset[0].numel()
        sq = offset.reshape(offset.shape[0], -1).double().pow(2).sum(1)
        return nig_log_density(sq, s.double(), self.m, n)

    def config(self) -> dict:
        return {"m": self.m}
