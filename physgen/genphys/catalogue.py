"""The catalogue of physical processes (GENPHYS.md; GenPhys, arXiv 2304.02637, §3-4).

s-generative (pass C1 and C2): heat (= diffusion, physgen's EDM/VE with ``σ² = 2t``),
Poisson in N+1 (= PFGM), Laplace in N+D (= PFGM++), Yukawa (new, with deaths), the damped
wave per coordinate (telegrapher = Kac flows, arXiv 2506.20641).  Described and failing,
with the reason: Helmholtz, wave, the isotropic damped wave in N ≥ 2 (C2 holds on its slow
branch, but its Green's function changes sign near the light cone), Klein-Gordon,
Schrödinger, hyper-diffusion.
Adding a process is one class here plus one line in :data:`CATALOGUE`.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from ..errors import UserError, unknown_name
from .framework import PhysicalProcess, Verdict, classify
from ..kernels.kac import kac_log_density, kac_offsets, kac_variance
from ..kernels.nig import nig_log_density, nig_offsets
from .fields import HeatFields, LaplaceFields, PoissonFields, YukawaFields

__all__ = [
    "Heat", "Poisson", "Laplace", "YukawaPDE", "Helmholtz", "Wave", "DampedWave", "Telegrapher", "KleinGordon", "Schrodinger",
    "HyperDiffusion",
    "CATALOGUE", "physical_process_names", "get_physical_process", "classify_all",
]


def _two_branches(w: np.ndarray) -> np.ndarray:
    return np.stack([w, -w])


class Heat(PhysicalProcess):
    name = "heat"
    title = "heat equation (diffusion)"
    pde = "∂_tφ = ∇²φ"
    order = 1
    omega_text = "-i k²"
    density, velocity, source = "φ", "-∇ log p", "0"
    kernel_text = "N(0, 2t I)"
    prior = "N(mean, 2 t_max I)"
    generative_process = "edm"
    expected = "s-generative: diffusion (σ² = 2t)"
    reason = "every mode decays as e^{-k²t}, the zero mode not at all; the Gaussian kernel is positive: diffusion (EDM/VE with σ = √(2t))"

    def dispersion(self, k):
        return (-1j * np.asarray(k, dtype=float) ** 2)[None, :]

    def kernel(self, rho, t, n_dim):
        return (4 * math.pi * t) ** (-0.5 * n_dim) * np.exp(-np.asarray(rho) ** 2 / (4 * t))

    def length(self, t):
        return math.sqrt(2 * t)

    def sample_kernel(self, n, t, n_dim, generator=None):
        return math.sqrt(2 * t) * torch.randn(n, n_dim, generator=generator, dtype=torch.float64)

    def point_fields(self, points):
        return HeatFields(points)


class Poisson(PhysicalProcess):
    name = "poisson"
    title = "Poisson equation in N+1 dims (electrostatics)"
    pde = "∂_z²φ + ∇²φ = 0, z > 0"
    order = 2
    time = "z"
    omega_text = "±i|k| (decaying branch -i|k|)"
    density, velocity, source = "-2∂_zφ", "E_x/E_z", "0"
    kernel_text = "Cauchy: Γ((N+1)/2) z / (π^{(N+1)/2} (ρ² + z²)^{(N+1)/2})"
    prior = "the kernel at z_max (multivariate Cauchy)"
    generative_process = "pfgm"
    expected = "s-generative: PFGM"
    reason = "on the decaying branch mode k falls as e^{-|k|z}; the kernel (flux density of a point charge) is positive: PFGM"

    def dispersion(self, k):
        return _two_branches(-1j * np.abs(np.asarray(k, dtype=float)))

    def kernel(self, rho, t, n_dim):
        n = n_dim
        return math.exp(math.lgamma(0.5 * (n + 1)) - 0.5 * (n + 1) * math.log(math.pi)) * t / (np.asarray(rho) ** 2 + t * t) ** (0.5 * (n + 1))

    def sample_kernel(self, n, t, n_dim, generator=None):
        g = torch.randn(n, n_dim, generator=generator, dtype=torch.float64)
        xi = torch.randn(n, 1, generator=generator, dtype=torch.float64)
        return t * g / xi.abs()

    def point_fields(self, points):
        return PoissonFields(points)


class Laplace(PhysicalProcess):
    name = "laplace"
    title = "Laplace equation in N+D dims, radial in the D extra dims"
    time = "r"
    order = 2
    density, velocity, source = "S_{D-1} r^{D-1} E_r", "E_x/E_r", "0"
    prior = "the kernel at r_max (multivariate Student-t, D degrees of freedom)"
    generative_process = "pfgmpp"
    expected = "s-generative: PFGM++"

    def __init__(self, D: int = 4):
        if not (int(D) == D and D >= 1):
            raise UserError(f"Laplace: D must be a positive integer, got {D}")
        self.D = int(D)
        self.params = {"D": self.D}
        self.pde = f"∂_r²φ + ((D-1)/r) ∂_rφ + ∇²φ = 0, r = ‖z‖, z ∈ R^D (D={self.D})"
        self.omega_text = "±i|k| for the e^{∓|k|r} factor (the power r^{-(D-1)/2} is common to all modes)"
        self.kernel_text = "Γ((N+D)/2) r^D / (π^{N/2} Γ(D/2) (ρ² + r²)^{(N+D)/2})"
        self.reason = (f"at large r every mode k ≠ 0 carries e^{{-|k|r}} on the decaying branch (D={self.D}); the kernel is a "
                       "positive Student-t: PFGM++")

    def dispersion(self, k):
        return _two_branches(-1j * np.abs(np.asarray(k, dtype=float)))

    def kernel(self, rho, t, n_dim):
        n, D = n_dim, self.D
        logc = math.lgamma(0.5 * (n + D)) - 0.5 * n * math.log(math.pi) - math.lgamma(0.5 * D)
        return np.exp(logc + D * math.log(t) - 0.5 * (n + D) * np.log(np.asarray(rho) ** 2 + t * t))

    def sample_kernel(self, n, t, n_dim, generator=None):
        g = torch.randn(n, n_dim, generator=generator, dtype=torch.float64)
        chi2 = torch.randn(n, self.D, generator=generator, dtype=torch.float64).pow(2).sum(1, keepdim=True)
        return t * g / chi2.sqrt()

    def point_fields(self, points):
        return LaplaceFields(points, self.D)

    def make_process(self, **options):
        options.setdefault("D", self.D)
        return super().make_process(**options)


class YukawaPDE(PhysicalProcess):
    name = "yukawa"
    title = "Yukawa (screened Poisson) equation in N+1 dims"
    time = "z"
    order = 2
    density, velocity, source = "-2∂_zφ", "E_x/E_z", "-2m²φ (deaths, κ = 2m²φ/p)"
    prior = "the NIG kernel at z_max around the data mean"
    generative_process = "yukawa"
    expected = "s-generative: new family"

    def __init__(self, m: float = 1.0):
        if not (m > 0 and math.isfinite(m)):
            raise UserError(f"Yukawa: m must be > 0, got {m}")
        self.m = float(m)
        self.params = {"m": self.m}
        self.pde = f"∂_z²φ + ∇²φ - m²φ = 0, z > 0 (m={self.m:g})"
        self.omega_text = "±i√(k²+m²) (decaying branch -i√(k²+m²))"
        self.kernel_text = "NIG(α=m, β=0, δ=z) = e^{mz} P_m; mass e^{-mz}"
        self.reason = ("on the decaying branch Im ω = -√(k²+m²) < -m = Im ω(0); the normalised kernel is the positive NIG law; "
                       "mass dies at rate κ = 2m²φ/p (births when sampling backwards)")

    def dispersion(self, k):
        return _two_branches(-1j * np.sqrt(np.asarray(k, dtype=float) ** 2 + self.m**2))

    def kernel(self, rho, t, n_dim):
        sq = torch.as_tensor(np.asarray(rho, dtype=float) ** 2)
        return nig_log_density(sq, torch.tensor(float(t), dtype=torch.float64), self.m, n_dim).exp().numpy()

    def length(self, t):
        return t / math.sqrt(1.0 + self.m * t)

    def sample_kernel(self, n, t, n_dim, generator=None):
        z = torch.full((n,), float(t), dtype=torch.float64)
        return nig_offsets((n, n_dim), z, self.m, generator, dtype=torch.float64)

    def point_fields(self, points):
        return YukawaFields(points, self.m)

    def make_process(self, **options):
        options.setdefault("m", self.m)
        return super().make_process(**options)


class Helmholtz(PhysicalProcess):
    name = "helmholtz"
    title = "Helmholtz equation in N+1 dims"
    time = "z"
    order = 2
    density, velocity, source = "-2∂_zφ (no sign)", "-", "-"
    prior = "-"
    expected = "fails C1 and C2"
    reason = "modes with |k| < k₀ oscillate without decay (ω real, Im ω(k) = Im ω(0) = 0) and the kernel oscillates in sign"

    def __init__(self, k0: float = 1.0):
        self.k0 = float(k0)
        self.params = {"k0": self.k0}
        self.pde = f"∂_z²φ + ∇²φ + k₀²φ = 0 (k₀={self.k0:g})"
        self.omega_text = "±√(k₀² - k²): real for |k| < k₀"
        self.kernel_text = "Re e^{iz√(k₀²-k²)} in Fourier space (standing wave)"

    def dispersion(self, k):
        return _two_branches(np.sqrt(self.k0**2 - np.asarray(k, dtype=float) ** 2 + 0j))

    def propagator(self, k, t):
        return np.real(np.exp(1j * t * np.sqrt(self.k0**2 - np.asarray(k, dtype=float) ** 2 + 0j)))

    def times(self):
        return (0.5, 2.0, 8.0)

    def length(self, t):
        return max(t, 2 * math.pi / self.k0)


class Wave(PhysicalProcess):
    name = "wave"
    title = "wave equation"
    order = 2
    density, velocity, source = "φ (data as initial displacement)", "-", "-"
    prior = "-"
    expected = "fails C2 (fix: damping -> telegrapher)"
    reason = "ω = ±c|k| is real: no mode decays, so the data are never forgotten; damping (the telegrapher equation) fixes C2"

    def __init__(self, c: float = 1.0):
        self.c = float(c)
        self.params = {"c": self.c}
        self.pde = f"∂_t²φ = c²∇²φ (c={self.c:g})"
        self.omega_text = "±c|k| (real)"
        self.kernel_text = "cos(c|k|t) in Fourier space (initial displacement, zero velocity)"

    def dispersion(self, k):
        return _two_branches(self.c * np.abs(np.asarray(k, dtype=float)) + 0j)

    def propagator(self, k, t):
        return np.cos(self.c * np.asarray(k, dtype=float) * t)

    def length(self, t):
        return self.c * t


def _damped_wave_branches(k: np.ndarray, a: float, c: float) -> np.ndarray:
    """``ω = −ia ± √(c²k² − a²)`` as ``[slow, fast]``; the slow one from ``ω_slow ω_fast = −c²k²``
    (Vieta), since ``−ia + i√(a² − c²k²)`` cancels catastrophically for ``ck ≪ a``."""
    k = np.asarray(k, dtype=float)
    fast = -1j * a - np.sqrt(c * c * k * k - a * a + 0j)
    with np.errstate(divide="ignore", invalid="ignore"):
        slow = np.where(np.abs(fast) > 0, -(c * c * k * k) / fast, 0j)
    return np.stack([slow, fast])


class _DampedWaveBase(PhysicalProcess):
    """What the isotropic damped wave and its per-coordinate (Kac) version share: ``a``, ``c``, ω(k)."""

    order = 2
    omega_text = "-ia ± √(c²k² - a²) (slow branch: -ic²k²/2a for small k, -ia ± real for ck > a)"

    def __init__(self, a: float = 1.0, c: float = 1.0):
        a, c = float(a), float(c)
        if not (a >= 0 and math.isfinite(a)):
            raise UserError(f"{self.name}: a must be >= 0 (a = 0 is the wave equation), got {a}")
        if not (c > 0 and math.isfinite(c)):
            raise UserError(f"{self.name}: c must be > 0, got {c}")
        self.a, self.c = a, c
        self.params = {"a": a, "c": c}

    def dispersion(self, k):
        return _damped_wave_branches(k, self.a, self.c)

    def times(self):
        s = 1.0 / self.a if self.a > 0 else 1.0
        return (0.5 * s, 2.0 * s, 8.0 * s)

    def make_process(self, **options):
        options.setdefault("a", self.a)
        options.setdefault("c", self.c)
        return super().make_process(**options)


class DampedWave(_DampedWaveBase):
    name = "damped-wave"
    title = "damped wave (telegrapher) equation, isotropic in N dims"
    density, velocity, source = "φ (data as initial displacement, ∂_tφ = 0)", "- (1-D: the Kac flow)", "0"
    prior = "- (1-D: the Kac law at t_max)"
    generative_process = "telegrapher"  # in 1-D it is the Kac process; its verdict decides per N
    expected = "fails C1 in N >= 2 (s-generative in 1-D; per coordinate -> telegrapher)"

    def __init__(self, a: float = 1.0, c: float = 1.0):
        super().__init__(a, c)
        self.pde = f"∂_t²φ + 2a ∂_tφ = c²∇²φ (a={self.a:g}, c={self.c:g})"
        self.kernel_text = "e^{-at}[cosh(t√(a²-c²k²)) + a sinh(t√(a²-c²k²))/√(a²-c²k²)] in Fourier space"
        self.reason = ("damping fixes C2 on the slow branch (Im ω ≈ -c²k²/2a for small k, -a for ck > a, 0 at k = 0), but in "
                       "N >= 2 the Green's function (φ = δ, ∂_tφ = 0) is negative just inside the light cone, like the wave "
                       "equation's; in 1-D it is the positive Kac law, so the equation applied per coordinate (telegrapher) is "
                       "s-generative")

    def propagator(self, k, t):
        """``e^{-at}[cosh(st) + a sinh(st)/s]``, ``s = √(a² − c²k²)``, as exponentials (no overflow at large at)."""
        k = np.asarray(k, dtype=float)
        s = np.sqrt(self.a**2 - (self.c * k) ** 2 + 0j)
        up, down = np.exp((s - self.a) * t), np.exp(-(s + self.a) * t)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(np.abs(s) > 1e-12, (up - down) / (2 * s), t * np.exp(-self.a * t))  # sinh(st)e^{-at}/s
        return np.real(0.5 * (up + down) + self.a * ratio)

    def length(self, t):
        return self.c * t


class Telegrapher(_DampedWaveBase):
    name = "telegrapher"
    title = "damped wave per coordinate: the Kac process (telegrapher's generative model, arXiv 2506.20641)"
    density, velocity, source = "the Kac law of the data", "E[c D_t | x] per coordinate (Kac flow)", "0"
    prior = "the Kac law at t_max around the data mean"
    generative_process = "telegrapher"
    expected = "s-generative: Kac flows"
    coordinatewise = True

    def __init__(self, a: float = 1.0, c: float = 1.0):
        super().__init__(a, c)
        self.pde = f"∂_t²φ + 2a ∂_tφ = c²∂_i²φ in each coordinate i, independently (a={self.a:g}, c={self.c:g})"
        self.kernel_text = "Π_i Kac law: atoms e^{-at}/2 at ±ct and (a e^{-at}/2c)[I0(z) + (ct/r)I1(z)] inside, r = √(c²t²-δ²), z = ar/c"
        self.reason = ("per coordinate the slow branch decays (Im ω ≈ -c²k²/2a for small k, -a for ck > a, 0 at k = 0; a mode k "
                       "decays as the sum over its coordinates) and the 1-D Green's function is the positive Kac law (a particle "
                       "at speed c flipping at rate a); with a = 0 it is the wave equation and fails C2")

    def kernel(self, rho, t, n_dim):
        """The 1-D Kac law's density (continuous part) at ``|δ| = ρ`` (the checker asks for ``n_dim = 1``)."""
        rho = np.asarray(rho, dtype=float)
        if self.a == 0:
            return np.zeros_like(rho)
        return kac_log_density(torch.from_numpy(rho), torch.tensor(float(t), dtype=torch.float64), self.a, self.c).exp().numpy()

    def atoms(self, t):
        return ((self.c * t, math.exp(-self.a * t)),)

    def length(self, t):
        if self.a == 0:
            return self.c * t
        return math.sqrt(float(kac_variance(torch.tensor(float(t), dtype=torch.float64), self.a, self.c)))

    def sample_kernel(self, n, t, n_dim, generator=None):
        if self.a == 0:
            sign = torch.randint(0, 2, (n, n_dim), generator=generator, dtype=torch.float64) * 2 - 1
            return self.c * t * sign
        return kac_offsets((n, n_dim), torch.full((n,), float(t), dtype=torch.float64), self.a, self.c, generator, dtype=torch.float64)


class KleinGordon(PhysicalProcess):
    name = "klein-gordon"
    title = "Klein-Gordon equation"
    order = 2
    density, velocity, source = "φ (data as initial displacement)", "-", "-"
    prior = "-"
    expected = "fails C2 (Euclidean version = Yukawa)"
    reason = "ω = ±√(k²+m²) is real: modes oscillate, none decays; its Euclidean version (t -> i z) is Yukawa"

    def __init__(self, m: float = 1.0):
        self.m = float(m)
        self.params = {"m": self.m}
        self.pde = f"∂_t²φ - ∇²φ + m²φ = 0 (m={self.m:g})"
        self.omega_text = "±√(k²+m²) (real)"
        self.kernel_text = "cos(t√(k²+m²)) in Fourier space"

    def dispersion(self, k):
        return _two_branches(np.sqrt(np.asarray(k, dtype=float) ** 2 + self.m**2) + 0j)

    def propagator(self, k, t):
        return np.cos(t * np.sqrt(np.asarray(k, dtype=float) ** 2 + self.m**2))

    def length(self, t):
        return max(t, 1.0 / self.m)


class Schrodinger(PhysicalProcess):
    name = "schrodinger"
    title = "free Schrödinger equation"
    order = 1
    density, velocity, source = "|ψ|²", "(1/μ) ∇ arg ψ (Madelung)", "0"
    prior = "-"
    expected = "fails C2 (imaginary time = heat)"
    reason = "p = |ψ|² >= 0 (Madelung flow) but ω = k²/2μ is real: the phase rotates, nothing decays; imaginary time gives the heat equation"

    def __init__(self, mu: float = 1.0):
        self.mu = float(mu)
        self.params = {"mu": self.mu}
        self.pde = f"i∂_tψ = -∇²ψ/(2μ) (μ={self.mu:g})"
        self.omega_text = "k²/(2μ) (real)"
        self.kernel_text = "|G|² = (μ/(2πt))^N (the density of the propagator)"

    def dispersion(self, k):
        return (np.asarray(k, dtype=float) ** 2 / (2 * self.mu) + 0j)[None, :]

    def kernel(self, rho, t, n_dim):
        return np.full_like(np.asarray(rho, dtype=float), (self.mu / (2 * math.pi * t)) ** n_dim)


class HyperDiffusion(PhysicalProcess):
    name = "hyper-diffusion"
    title = "hyper-diffusion (biharmonic heat) equation"
    order = 1
    density, velocity, source = "φ", "-", "-"
    prior = "-"
    expected = "fails C1 (kernel changes sign)"
    pde = "∂_tφ = -∇⁴φ"
    omega_text = "-i k⁴"
    kernel_text = "inverse Fourier transform of e^{-k⁴t} (negative lobes)"
    reason = "modes decay (C2 holds) but the kernel, the inverse transform of e^{-k⁴t}, has negative lobes: p = φ turns negative"

    def dispersion(self, k):
        return (-1j * np.asarray(k, dtype=float) ** 4)[None, :]

    def propagator(self, k, t):
        return np.exp(-np.asarray(k, dtype=float) ** 4 * t)

    def length(self, t):
        return t**0.25


CATALOGUE = {
    "heat": Heat,
    "poisson": Poisson,
    "laplace": Laplace,
    "yukawa": YukawaPDE,
    "helmholtz": Helmholtz,
    "wave": Wave,
    "damped-wave": DampedWave,
    "telegrapher": Telegrapher,
    "klein-gordon": KleinGordon,
    "schrodinger": Schrodinger,
    "hyper-diffusion": HyperDiffusion,
}
"""Name -> class (constructed with its default parameters unless given)."""


def physical_process_names() -> list[str]:
    return list(CATALOGUE)


def get_physical_process(name: str, **params) -> PhysicalProcess:
    """The catalogued process called ``name``; UserError listing the valid names otherwise."""
    if name not in CATALOGUE:
        raise unknown_name("PDE", name, CATALOGUE)
    return CATALOGUE[name](**params)


def classify_all(n_dim: int = 2, names: Optional[list] = None) -> list[Verdict]:
    """:func:`classify` every catalogued process (or those in ``names``)."""
    return [classify(get_physical_process(n), n_dim) for n in (names or CATALOGUE)]
