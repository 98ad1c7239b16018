"""The GenPhys framework: a physical process is one class; a checker classifies it.

GenPhys (Liu, Luo, Xu, Jaakkola, Tegmark, arXiv 2304.02637): a PDE for ``φ(x, t)`` with the
data as its initial (or boundary) condition is a generative model ("s-generative") when

* **C1, density flow**: there are ``p ≥ 0``, a velocity ``v`` and a source ``R`` built from
  φ with ``∂p/∂t + ∇·(p v) = R``.  Any PDE can be written this way with ``R`` absorbing the
  rest; the substance is ``p ≥ 0`` for every non-negative data density, i.e. a
  **non-negative Green's function** (kernel).  The checker evaluates the kernel on a grid of
  radii at several times (closed form where one exists, else the inverse Hankel transform
  of the Fourier propagator, lightly smoothed by ``e^{−ε²k²/2}`` so distributions such as
  the wave equation's light-cone shell can be tested) and, where the process has a
  sampler, compares the sampled radii with the kernel's radial law (KS distance).
* **C2, smoothing**: for plane waves ``φ ∝ exp(i(k·x − ω t))`` every non-zero mode decays
  faster than the zero mode, ``Im ω(k) < Im ω(0)`` for all ``‖k‖ > 0``.  For a PDE of
  second order in t it is enough that one branch does (the one the boundary condition
  selects).  The checker evaluates ``Im ω`` of every branch on a grid of ``‖k‖`` in
  ``[1e-3, 1e3]`` (log-spaced) and reports the first admissible branch or the worst
  violation.

A process whose N-dim kernel is a product of 1-D kernels (independent coordinates, e.g.
the Kac process of the telegrapher) sets ``coordinatewise``: C1 is then checked on the 1-D
factor (a product of non-negative factors is non-negative) and its sampler on one
coordinate.  Point masses of the (radial or 1-D) law are declared by ``atoms(t)`` and enter
the sampler's KS comparison as steps of the model CDF.

A process declares: ``pde`` (text), ``order`` in t, ``dispersion(k)`` (all branches,
``[branches, K]`` complex) and its text, the density-flow triple (text, plus callables on
a point set via :meth:`PhysicalProcess.point_fields` where they exist), its kernel
(``kernel(ρ, t, N)`` closed form, or ``propagator(k, t)`` in Fourier space), a kernel
sampler where one exists, its prior, and the physgen process it becomes (if any).
"""
from __future__ import annotations

import math
from abc import ABC
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
from torch import Tensor

from ..errors import UserError
from ..processes import make_process

__all__ = ["PhysicalProcess", "Verdict", "check_c1", "check_c2", "classify", "radial_kernel_grid", "hankel_inverse"]


class PhysicalProcess(ABC):
    """One physical process (a PDE with the data as initial/boundary condition)."""

    name: str = ""
    title: str = ""
    pde: str = ""
    order: int = 1  # order of the PDE in t (second order: one admissible branch suffices for C2)
    time: str = "t"  # the evolution variable's name (t, or z for the boundary-value problems)
    omega_text: str = ""
    density: str = ""
    velocity: str = ""
    source: str = ""
    kernel_text: str = ""
    prior: str = ""
    generative_process: Optional[str] = None  # the physgen process it becomes
    expected: str = ""  # GENPHYS.md's verdict, for the table's reason column
    reason: str = ""  # why (from GENPHYS.md / the paper)
    params: dict = {}
    coordinatewise: bool = False  # the N-dim kernel is the product of the 1-D kernel over coordinates

    # --- dispersion -----------------------------------------------------------------
    def dispersion(self, k: np.ndarray) -> np.ndarray:
        """``ω(k)`` on every branch: complex ``[branches, len(k)]`` for ``k = ‖k‖ ≥ 0``."""
        raise NotImplementedError

    # --- kernel ---------------------------------------------------------------------
    def kernel(self, rho: np.ndarray, t: float, n_dim: int) -> Optional[np.ndarray]:
        """The (normalised) kernel at time ``t`` as a function of the radius, or None."""
        return None

    def propagator(self, k: np.ndarray, t: float) -> Optional[np.ndarray]:
        """The kernel's Fourier transform (real part used) as a function of ``‖k‖``, or None."""
        return None

    def length(self, t: float) -> float:
        """A length scale of the kernel at ``t`` (sets the grid of radii)."""
        return max(float(t), 1e-3)

    def sample_kernel(self, n: int, t: float, n_dim: int, generator: Optional[torch.Generator] = None) -> Optional[Tensor]:
        """Offsets ``[n, N]`` drawn from the normalised kernel at ``t``, or None."""
        return None

    def atoms(self, t: float) -> tuple:
        """Point masses ``((radius, mass), ...)`` of the kernel's radial law at ``t`` (none by default)."""
        return ()

    def point_fields(self, points: Tensor):
        """The density-flow fields (``density``, ``velocity``, ``source``) of a point set, or None."""
        return None

    def times(self) -> tuple:
        return (0.1, 1.0, 10.0)

    def make_process(self, **options):
        """The physgen process this PDE becomes (lazily by name), e.g. ``yukawa`` for Yukawa."""
        if self.generative_process is None:
            raise UserError(f"{self.name!r} is not a generative process ({self.expected or 'fails C1/C2'})")
        return make_process(self.generative_process, **options)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.params.items())})"


@dataclass
class Verdict:
    """The checker's answer for one process."""

    name: str
    pde: str
    omega: str
    c1: bool
    c2: bool
    c1_detail: str
    c2_detail: str
    reason: str
    generative_process: Optional[str] = None
    extra: dict = field(default_factory=dict)

    @property
    def generative(self) -> bool:
        return self.c1 and self.c2

    @property
    def verdict(self) -> str:
        if self.generative:
            return "s-generative" + (f" -> {self.generative_process}" if self.generative_process else "")
        failed = [c for c, ok in (("C1", self.c1), ("C2", self.c2)) if not ok]
        return "fails " + " and ".join(failed)


# ---------------------------------------------------------------------------------- C2

def check_c2(proc: PhysicalProcess, k_min: float = 1e-3, k_max: float = 1e3, n_k: int = 2001, rtol: float = 1e-12) -> tuple[bool, str]:
    """``Im ω(k) < Im ω(0)`` for all ``k`` in a log-grid of ``[k_min, k_max]``, per branch."""
    k = np.geomspace(k_min, k_max, n_k)
    im0 = np.imag(np.asarray(proc.dispersion(np.zeros(1)), dtype=complex)).reshape(-1)
    im = np.imag(np.asarray(proc.dispersion(k), dtype=complex))
    if im.ndim == 1:
        im = im[None, :]
    details = []
    for b in range(im.shape[0]):
        gap = im[b] - im0[b]  # must be < 0 everywhere
        tol = rtol * max(1.0, abs(im0[b]))
        bad = gap >= -tol
        if not bad.any():
            return True, f"branch {b + 1}/{im.shape[0]}: Im ω(k) - Im ω(0) <= {gap.max():.3g} < 0 on k in [{k_min:g}, {k_max:g}]"
        first = k[np.argmax(bad)]
        details.append(f"branch {b + 1}: Im ω(k) >= Im ω(0) = {im0[b]:.3g} at k = {first:.3g} ({bad.mean():.0%} of the grid)")
    return False, "; ".join(details) + (" (no admissible branch)" if im.shape[0] > 1 else "")


# ---------------------------------------------------------------------------------- C1

def hankel_inverse(fhat: Callable[[np.ndarray], np.ndarray], rho: np.ndarray, n_dim: int, k_max: float, n_k: int = 4001) -> np.ndarray:
    """Radial inverse Fourier transform in ``N`` dims of a radial ``f̂(‖k‖)`` (trapezoid in k):

    ``f(ρ) = (2π)^{−N/2} ρ^{1−N/2} ∫_0^∞ f̂(k) J_{N/2−1}(kρ) k^{N/2} dk``; elementary for
    ``N = 1`` (``(1/π) ∫ f̂ cos kρ dk``) and ``N = 3`` (``(1/(2π²)) ∫ f̂ k² sinc dk``), ``J_0``
    for ``N = 2``.
    """
    from scipy.special import j0, jv  # scipy, loaded only by this diagnostic transform (an import of seconds)

    k = np.linspace(0.0, k_max, n_k)
    fk = np.real(fhat(k))
    rho = np.asarray(rho, dtype=float)
    kr = np.outer(rho, k)
    if n_dim == 1:
        integrand, pre = fk * np.cos(kr), 1.0 / math.pi
    elif n_dim == 2:
        integrand, pre = fk * j0(kr) * k, 1.0 / (2 * math.pi)
    elif n_dim == 3:
        integrand, pre = fk * k * k * np.sinc(kr / math.pi), 1.0 / (2 * math.pi**2)
    else:
        r = np.maximum(rho, 1e-12)[:, None]  # ρ → 0: r^{1−N/2} J_{N/2−1}(kr) → finite limit
        nu = 0.5 * n_dim - 1.0
        integrand = fk * jv(nu, k * r) * k ** (0.5 * n_dim) * r ** (1.0 - 0.5 * n_dim)
        pre = (2 * math.pi) ** (-0.5 * n_dim)
    return pre * np.trapezoid(integrand, k, axis=1)


def radial_kernel_grid(proc: PhysicalProcess, t: float, n_dim: int, n_rho: int = 200, smoothing: float = 0.02) -> tuple[np.ndarray, np.ndarray, str]:
    """``(ρ, kernel(ρ), how)`` on a grid of radii up to 10 kernel lengths."""
    L = proc.length(t)
    rho = np.linspace(0.0, 10.0 * L, n_rho)
    direct = proc.kernel(rho, t, n_dim)
    if direct is not None:
        return rho, np.asarray(direct, dtype=float), "closed form"
    eps = smoothing * L
    k_max = 8.0 / eps
    vals = hankel_inverse(lambda k: proc.propagator(k, t) * np.exp(-0.5 * (eps * k) ** 2), rho, n_dim, k_max)
    return rho, vals, f"Fourier propagator, smoothed at ε = {eps:.3g}"


def _radial_ks(proc: PhysicalProcess, t: float, n_dim: int, n: int = 4000, seed: int = 0) -> Optional[float]:
    """KS distance between sampled radii and the kernel's radial law (numerically integrated)."""
    g = torch.Generator().manual_seed(seed)
    draws = proc.sample_kernel(n, t, n_dim, g)
    if draws is None:
        return None
    if proc.coordinatewise:  # one coordinate of the product kernel
        draws, n_dim = draws[:, :1], 1
    radii = np.sort(draws.double().norm(dim=1).numpy())
    L = proc.length(t)
    hi = max(float(radii[-1]), 10 * L) * 1.01
    # dense grid, log-spaced near 0 so small radii are resolved; S_{N-1} ρ^{N-1} k(ρ)
    rho = np.concatenate([[0.0], np.geomspace(1e-6 * L, hi, 40000)])
    kern = proc.kernel(rho, t, n_dim)
    if kern is None:
        return None
    sphere = 2 * math.pi ** (0.5 * n_dim) / math.gamma(0.5 * n_dim)
    dens = sphere * rho ** (n_dim - 1) * kern
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(rho))])
    # sup |F_n − F| on both sides of every sample: exact for continuous laws and at the atoms' jumps
    values, counts = np.unique(radii, return_counts=True)
    emp_right = np.cumsum(counts) / n
    emp_left = emp_right - counts / n
    model_left = np.interp(values, rho, cdf)
    model_right = model_left.copy()
    for radius, mass in proc.atoms(t):
        on = np.abs(values - radius) <= 1e-12 * max(radius, 1e-300)
        model_right += mass * ((values > radius) | on)
        model_left += mass * ((values > radius) & ~on)
    return float(max(np.max(np.abs(emp_right - model_right)), np.max(np.abs(emp_left - model_left))))


def check_c1(proc: PhysicalProcess, n_dim: int = 2, rtol: float = 1e-6) -> tuple[bool, str, dict]:
    """Non-negativity of the kernel on a grid of radii at each of ``proc.times()``."""
    worst, how_used, extra = 0.0, "", {}
    grid_dim = 1 if proc.coordinatewise else n_dim
    for t in proc.times():
        rho, vals, how = radial_kernel_grid(proc, t, grid_dim)
        how_used = how
        scale = float(np.max(np.abs(vals))) or 1.0
        rel = float(np.min(vals)) / scale
        if not np.all(np.isfinite(vals)):
            return False, f"kernel not finite at {proc.time}={t:g}", extra
        if rel < worst:
            worst = rel
            extra["negative_at"] = (t, float(rho[int(np.argmin(vals))]))
    ks = _radial_ks(proc, proc.times()[1], n_dim)
    if ks is not None:
        extra["sampler_ks"] = ks
    tail = f"; sampler vs kernel KS D = {ks:.3f}" if ks is not None else ""
    if proc.coordinatewise:
        how_used += f"; the {n_dim}-dim kernel is the product of this 1-D kernel over coordinates"
    if worst >= -rtol:
        return True, f"kernel >= 0 on the grid at {proc.time} in {list(proc.times())} ({how_used}){tail}", extra
    t, r = extra["negative_at"]
    return False, f"kernel changes sign: min/max = {worst:.3g} (at {proc.time}={t:g}, radius {r:.3g}; {how_used}){tail}", extra


def classify(proc: PhysicalProcess, n_dim: int = 2) -> Verdict:
    """Run both checks and say why."""
    c1, c1_detail, extra = check_c1(proc, n_dim)
    c2, c2_detail = check_c2(proc)
    return Verdict(proc.name, proc.pde, proc.omega_text, c1, c2, c1_detail, c2_detail, proc.reason, proc.generative_process if (c1 and c2) else None, extra)
