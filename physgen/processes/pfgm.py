"""PFGM: Poisson Flow Generative Models (Xu, Liu, Tegmark & Jaakkola 2022, arXiv 2209.11178).

The data ``y ∈ R^N`` are charges on the plane ``z = 0`` of the augmented space
``x̃ = (x, z) ∈ R^{N+1}``.  Their Poisson field (§3, eq. 3)

    E(x̃) = (1/S_N) ∫ (x̃ - ỹ) / ‖x̃ - ỹ‖^{N+1} p(y) dy,     S_N = 2 π^{(N+1)/2} / Γ((N+1)/2)

carries the data distribution, along its field lines, to a distribution on the plane
``z = z_max`` that is (for large ``z_max``) the field of a point charge: the hemisphere
prior, a multivariate Cauchy (§3.3)

    p_prior(x) ∝ z_max / (‖x‖² + z_max²)^{(N+1)/2},   ‖x‖ = z_max √(β/(1-β)),  β ~ Beta(N/2, 1/2).

Sampling runs the field lines backwards: ``dx/dz = E_x / E_z`` from ``z_max`` down to
``z_min``, or in ``t = ln z`` (the paper's choice, §3.3): ``dx/dt = z E_x / E_z``.  The
solver state is ``x`` alone; ``z`` (or ``t``) is the integration variable, the ``s`` of
every solver.

**Exact field.**  For a finite set ``{y_i}`` the field is a direct sum.  With
``w_i = ‖x̃ - ỹ_i‖^{-(N+1)}``:  ``E_x ∝ Σ w_i (x - y_i)``, ``E_z ∝ z Σ w_i``, so

    E_x / E_z = (x - D(x, z)) / z,     D = Σ w_i y_i / Σ w_i,   log w_i = -(N+1)/2 · log(‖x - y_i‖² + z²),

a posterior mean (the PFGM++ kernel at ``D = 1``, ``r = z``: arXiv 2302.04265, §3), computed
by :func:`physgen.fields.exact.posterior_mean` (chunked, streaming log-sum-exp).

**Training** (§3.2, App. B.1, Alg. 1), implemented from PFGM's own objective: perturb a
point as ``m ~ U[0, M]``, ``ε = (ε_x, ε_z) ~ N(0, σ² I_{N+1})``,
``x = y + ‖ε_x‖ (1+τ)^m u`` (``u`` uniform on the sphere; ``‖ε_x‖u`` has the law of ``ε_x``,
which is what is drawn), ``z = |ε_z| (1+τ)^m``; the target is the normalised empirical field
of the batch, ``Ê(x̃) = Σ_j w_j (x̃ - ỹ_j)`` with ``w_j ∝ ‖x̃ - ỹ_j‖^{-(N+1)}`` normalised,
``target = -√N Ê / (‖Ê‖ + γ)``, and the loss is ``‖f_θ(x̃) - target‖²`` (averaged over the
``N+1`` components).  Since every charge sits at ``z = 0``, ``Ê_z = z`` exactly.

**Constants from the data scale.**  The paper's values are for data in ``[-1, 1]``
(CIFAR-10, per-coordinate std ``σ_d ≈ 0.5``): ``σ = 0.01``, ``τ = 0.03``, ``z_max = 40``,
``z_min = 1e-3``, ``γ = 5``, ``M = 291``.  Here ``σ`` and ``z_max`` default to those values
times ``sigma_data / 0.5`` (``sigma_data``: the data's per-coordinate std, which the toy
pipeline fills in from the data), ``z_min`` to the paper's value / 100 times the same
factor (``1e-5``: the prior's tail needs the wider range, :class:`PFGM`), and ``M`` to the
value at which the mean of ``z`` at ``m = M`` reaches ``z_max``: ``σ √(2/π) (1+τ)^M = z_max``,
i.e. ``M = ln(z_max / (σ√(2/π))) / ln(1+τ)`` (288 for the paper's constants; the paper: 291).
"""
from __future__ import annotations

import contextlib
import math
from typing import Optional

import torch
from torch import Tensor

from ..errors import UserError
from ..fields.exact import DEFAULT_CHUNK_ELEMS, posterior_mean
from ..fields.kinds import FieldEstimator, expand_as_batch
from ..fields.neural import NeuralField
from ..kernels import StudentTKernel
from .base import KernelPrior, Process, check_prior_mean
from .gaussian import data_scales

__all__ = ["PFGM", "PoissonExactField", "PoissonPreconditioning", "normalised_poisson_field", "poisson_field", "poisson_log_profile"]

PAPER_SIGMA_DATA = 0.5  # per-coordinate std of CIFAR-10 in [-1, 1], which the paper's constants assume
VARIABLES = {"log_z": "log_z", "log z": "log_z", "logz": "log_z", "t": "log_z", "ln_z": "log_z", "z": "z"}


def poisson_log_profile(n: int):
    """``log w = -(N+1)/2 · log(1 + d²/z²)``: ``‖x̃ - ỹ‖^{-(N+1)}`` up to a per-query constant (arXiv 2209.11178, eq. 3).

    (``‖x̃ - ỹ‖² = d² + z²`` for a charge on the plane.)  It is the Student-t kernel's
    log-profile at ``D = 1`` and ``r = z`` (:class:`physgen.kernels.StudentTKernel`).
    """
    return StudentTKernel(1, n).log_profile


def normalised_poisson_field(e_x: Tensor, z: Tensor, gamma: float) -> Tensor:
    """``-√N Ê / (‖Ê‖ + γ)`` for ``Ê = (e_x, z)`` (``e_x`` shaped ``[B, N]``): ``[B, N+1]`` (arXiv 2209.11178, eq. 7)."""
    n = e_x.shape[1]
    e = torch.cat([e_x, z.to(e_x.dtype)[:, None]], dim=1)
    return e * (-math.sqrt(n) / (e.norm(dim=1, keepdim=True) + gamma))


def poisson_field(x: Tensor, z: Tensor, points: Tensor, chunk_elems: int = DEFAULT_CHUNK_ELEMS) -> tuple[Tensor, Tensor]:
    """The Poisson field ``(E_x [Q, ...], E_z [Q])`` of the empirical distribution of ``points`` at ``(x, z)``.

    ``E(x̃) = (1/(P S_N)) Σ_i (x̃ - ỹ_i) / ‖x̃ - ỹ_i‖^{N+1}`` (arXiv 2209.11178, eq. 3) with
    ``S_N = 2π^{(N+1)/2}/Γ((N+1)/2)``, computed as ``E_x = S (x - D)``, ``E_z = S z`` with
    ``D`` the posterior mean and ``log S = logsumexp_i(-(N+1)/2 log(d_i² + z²)) - log P - log S_N``,
    in chunks (float64 recommended for the magnitude; the direction is exact in any dtype).
    """
    q, n = x.shape[0], x[0].numel()
    xf, yf = x.reshape(q, -1), points.reshape(points.shape[0], -1).to(x.dtype)
    z = z.to(x.dtype)
    d = posterior_mean(x, points.to(x.dtype), z, poisson_log_profile(n), chunk_elems=chunk_elems).reshape(q, -1)
    rows = max(1, chunk_elems // max(yf.shape[0], 1))
    log_sum = torch.empty(q, dtype=x.dtype, device=x.device)
    for r0 in range(0, q, rows):
        sq = torch.cdist(xf[r0 : r0 + rows], yf).pow(2)
        log_sum[r0 : r0 + rows] = torch.logsumexp(-0.5 * (n + 1) * torch.log(sq + z[r0 : r0 + rows, None] ** 2), dim=1)
    log_sn = math.log(2.0) + 0.5 * (n + 1) * math.log(math.pi) - math.lgamma((n + 1) / 2)
    scale = torch.exp(log_sum - math.log(yf.shape[0]) - log_sn)
    return (scale[:, None] * (xf - d)).reshape(x.shape), scale * z


class PoissonExactField:
    """The exact PFGM field of a finite point set, as ``dx/ds`` in the process's variable (kind ``velocity``; arXiv 2209.11178).

    ``dx/dz = E_x/E_z = (x - D(x, z))/z`` and ``dx/dt = z · dx/dz = x - D`` for ``t = ln z``,
    with ``D`` the posterior mean of the points under ``w_i ∝ ‖x̃ - ỹ_i‖^{-(N+1)}``.
    """

    kind = "velocity"

    def __init__(self, process: "PFGM", points: Tensor, point_labels: Optional[Tensor] = None, chunk_elems: int = DEFAULT_CHUNK_ELEMS):
        if points.ndim < 2 or points.shape[0] == 0:
            raise ValueError(f"points must be a non-empty [P, ...] tensor, got shape {tuple(points.shape)}")
        self.process, self.points, self.point_labels, self.chunk_elems = process, points, point_labels, chunk_elems
        self.log_profile = poisson_log_profile(points[0].numel())

    @property
    def num_classes(self) -> Optional[int]:
        return None if self.point_labels is None else int(self.point_labels.max()) + 1

    def denoise(self, x: Tensor, z: Tensor, label: Optional[Tensor] = None) -> Tensor:
        """``D(x, z) = Σ w_i y_i / Σ w_i`` at height ``z`` (``[B]``)."""
        labels = None if self.point_labels is None else self.point_labels.to(x.device)
        if label is not None:
            label = torch.as_tensor(label, device=x.device)
            label = label.expand(x.shape[0]) if label.ndim == 0 else label
        return posterior_mean(x, self.points.to(device=x.device, dtype=x.dtype), z.to(x.dtype), self.log_profile,
                              point_labels=labels, label=label, chunk_elems=self.chunk_elems)

    def __call__(self, x: Tensor, s: Tensor, label: Optional[Tensor] = None) -> Tensor:
        z = self.process.z_of(s)
        return self.process.velocity_from_ratio((x - self.denoise(x, z, label)) / expand_as_batch(z, x), z, x)


class PoissonPreconditioning:
    """A raw network ``F(x_in, c_noise, label)`` as PFGM's normalised field (kind ``velocity``).

    Inputs: ``x_in = x / √(σ_d² + z²)`` (the spread of ``x`` at height ``z`` is about
    ``σ_d`` plus ``z`` per coordinate) and ``c_noise = ln(z)/4`` -- so ``z`` always reaches
    the network.  Two output designs, chosen by the shape the network returns:

    * an ``x``-shaped output (the default: any network of the toolkit, the toy MLP, the
      U-Net): since all
      charges lie on ``z = 0``, the normalised-weight empirical field always has
      ``Ê_z = z`` exactly, so only ``Ê_x = x - D`` is unknown.  The network gives
      ``D̂ = c_skip x + c_out F`` with EDM's coefficients at ``σ = z`` (arXiv 2206.00364,
      Table 1), the field is ``Ê = (x - D̂, z)`` and the normalised field
      ``f = -√N Ê/(‖Ê‖ + γ)``; the loss is PFGM's on ``f``, and ``dx/dz = (x - D̂)/z``.
      This builds the exact constraint ``Ê_z = z`` into the network, avoids dividing by a
      learned ``f_z`` near 0, and works with every backbone.
    * ``N + 1`` numbers per sample (e.g. ``MLP(N, out_dim=N+1)``): the paper's design
      (arXiv 2209.11178, §3.2): the output *is* the normalised field ``f = (f_x, f_z)``, and
      ``dx/dz = f_x / f_z``, with ``f_z`` capped at ``-1e-6`` (the target's ``f_z`` is
      always negative; the cap only keeps an untrained network finite).  Supported, but
      fragile: ``f_z`` is small wherever ``‖x - D‖ ≫ z`` (the Cauchy tail of the prior) and
      near the data at small ``z``, and there the ratio amplifies the network's error (on
      the two-mode toy after 2000 steps its samples still had outliers where the
      ``x``-shaped design had none).
    """

    kind = "velocity"

    def __init__(self, process: "PFGM", sigma_data: float):
        if not sigma_data > 0:
            raise UserError(f"sigma_data must be > 0, got {sigma_data}")
        self.process, self.sigma_data = process, float(sigma_data)
        self._normalised = False

    def _raw(self, net, x: Tensor, z: Tensor, label):
        sd2 = self.sigma_data**2
        zb = expand_as_batch(z, x)
        out = net(x / (sd2 + zb**2).sqrt(), (z.log() / 4).to(x.dtype), label)
        if out.shape == x.shape:
            c_skip = sd2 / (zb**2 + sd2)
            c_out = zb * self.sigma_data / (zb**2 + sd2).sqrt()
            return "denoiser", c_skip * x + c_out * out
        flat = out.reshape(x.shape[0], -1)
        if flat.shape[1] != x[0].numel() + 1:
            raise ValueError(f"a PFGM network must return x's shape {tuple(x.shape)} or [B, N+1] = [{x.shape[0]}, {x[0].numel() + 1}], got {tuple(out.shape)}")
        return "field", flat

    @contextlib.contextmanager
    def normalised_output(self):
        """Within this context the field's forward returns the normalised field ``f_θ [B, N+1]``
        instead of ``dx/ds`` (the loss needs it; going through forward keeps DDP/compile wrappers)."""
        previous, self._normalised = self._normalised, True
        try:
            yield self
        finally:
            self._normalised = previous

    def normalised(self, net, x: Tensor, z: Tensor, label: Optional[Tensor] = None) -> Tensor:
        """The network's normalised field ``f_θ(x, z)``, shaped ``[B, N+1]`` (what the loss regresses)."""
        form, out = self._raw(net, x, z, label)
        if form == "field":
            return out
        return normalised_poisson_field((x - out).reshape(x.shape[0], -1), z, self.process.gamma)

    def __call__(self, net, x: Tensor, s: Tensor, label: Optional[Tensor]) -> Tensor:
        z = self.process.z_of(s)
        if self._normalised:
            return self.normalised(net, x, z, label)
        form, out = self._raw(net, x, z, label)
        if form == "denoiser":
            ratio = (x - out) / expand_as_batch(z, x)
        else:
            f_z = out[:, -1].clamp(max=-1e-6)
            ratio = (out[:, :-1] / f_z[:, None]).reshape(x.shape)
        return self.process.velocity_from_ratio(ratio, z, x)


class PFGM(KernelPrior, Process):
    """PFGM (arXiv 2209.11178): the Poisson field in ``N+1`` dimensions, sampled backwards in ``z``.

    ``variable``: ``"log_z"`` (default, the paper: integrate ``dx/dt = z E_x/E_z`` in
    ``t = ln z``) or ``"z"`` (``dx/dz = E_x/E_z``).  The process's scale ``s`` (what solvers
    and schedules see, and ``s_min``/``s_max``) is that variable: ``s = ln z`` runs from
    ``ln z_max`` down to ``ln z_min`` (negative values are normal).  Schedules are laid out in
    ``z``; the default grid is log-uniform in ``z`` (uniform in ``ln z``), ``steps + 1``
    points; the paper integrates with RK45 at ``rtol = atol = 1e-4``:
    ``--solver dopri5 --rtol 1e-4 --atol 1e-4``.  The prior is the hemisphere (Cauchy)
    kernel at ``z_max`` around ``prior_mean`` (default the origin).

    **The prior's tail and ``z_min``.**  The hemisphere prior is heavy-tailed in every
    dimension: ``P(‖x‖ > k z_max) = 1/√(1+k²)`` at ``N = 2`` and ``≈ 2/(k B(N/2, 1/2))``
    (``≈ √(2N/π)/k`` for large ``N``) far out.  There the field is a point charge's, so the
    field line from ``‖x‖ = k z_max`` is a ray, ``x ∝ z``, and at ``z_min`` it is still about
    ``k z_min`` from the data's centre: a fraction ``≈ 2 z_min/(d B(N/2, 1/2))`` of the samples
    ends farther than ``d`` from it, whatever ``z_max``, the steps or the solver.
    Measured on the two-mode toy (``benchmarks/RESULTS.md``, 4000 samples, exact field): with
    the paper's ``z_min`` (``1e-3 σ_d/0.5``) 7 samples ended 5-131 from both modes, each at
    1.1-1.2 x ``k z_min`` from the data's centre (the excess is Heun's ``1 + h + h²/2`` for
    ``e^h``; ``dopri5`` leaves the same 7, the farthest at 112); sliced W2 1.48.  What the
    paper's code does (``Newbeeer/Poisson_flow``, ``methods.py``): it clips the prior radius
    to ``[1, upper_norm]`` with ``upper_norm = √N σ (1+τ)^M = z_max √(πN/2)``, the training
    range (3000 for CIFAR-10, App. B.2): in 2-D that moves 50% of the draws onto that circle
    (measured: left-mode weight 0.190, per-mode sliced W2 0.148 / 0.086).  A final step
    ``x ← D(x, z_min)`` (PFGM++'s at ``D = 1``) keeps the strays in the data's hull but leaves
    them between the modes (up to 1.94 from a mode's centre).  Here ``z_min`` is the paper's
    / 100 (``2e-5 σ_d``): no truncation and no bias, and the stray fraction falls 100-fold
    (in 2-D ``2e-5 σ_d/d``: one sample in 500,000 ends farther than 10 σ_d from the data's
    centre, against one in 5000 before); the same 4000 samples all end within 1.0 of a
    mode's centre.  The price is ``ln 100`` more range in ``ln z``: 50 Heun steps keep the
    step near that of the paper's range at 40 (0.30 against 0.27).  Below its training range a
    neural field's ``D̂ = c_skip x + c_out F`` gives ``dx/d ln z = (1 - c_skip) x - c_out F ≈ -z F``,
    which moves a sample by at most about ``1e-3 σ_d |F|`` between the paper's ``z_min`` and
    this one: nothing near the data.  It does not tame the network's own extrapolation: the
    toy MLP (default training, same seed) throws a few samples beyond 1e18 with either
    ``z_min`` (3 of 4000 beyond 2 of a mode's centre with the paper's, 5 with this one; not
    traced, presumably draws from the prior's tail, outside the radii it was trained on, which
    the official code's radius clip keeps out at the bias measured above); ``stray_fraction``
    reports them.

    Constants (see the module docstring for the data-scale rule): ``z_max``, ``z_min``,
    ``sigma`` (training perturbation scale ``σ``), ``tau`` (``τ``), ``M``, ``gamma`` (``γ``),
    ``sigma_data`` (the data's per-coordinate std; scales the defaults and the network input).
    """

    name = "pfgm"
    network_kind = "velocity"
    default_schedule_name = "log-uniform"
    default_steps = 50  # Heun in ln z (step ≈ 0.30 over ln(z_max/z_min) = 15.2); the paper's z range: 0.218 left at 18 steps, 0.204 at 40

    def __init__(self, z_max: Optional[float] = None, z_min: Optional[float] = None, sigma: Optional[float] = None, tau: float = 0.03,
                 M: Optional[float] = None, gamma: float = 5.0, sigma_data: float = PAPER_SIGMA_DATA, variable: str = "log_z",
                 prior_mean=None):
        if not (isinstance(sigma_data, (int, float)) and math.isfinite(sigma_data) and sigma_data > 0):
            raise UserError(f"sigma_data must be a positive number, got {sigma_data!r}")
        scale = sigma_data / PAPER_SIGMA_DATA
        z_max = 40.0 * scale if z_max is None else z_max
        z_min = 1e-5 * scale if z_min is None else z_min  # the paper's 1e-3 / 100: the prior's tail (class docstring)
        sigma = 0.01 * scale if sigma is None else sigma
        for name, v in (("z_max", z_max), ("z_min", z_min), ("sigma", sigma), ("tau", tau)):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise UserError(f"{name} must be a positive number, got {v!r}")
        if z_min >= z_max:
            raise UserError(f"z_min={z_min} must be < z_max={z_max}")
        if not (isinstance(gamma, (int, float)) and math.isfinite(gamma) and gamma >= 0):
            raise UserError(f"gamma must be a number >= 0, got {gamma!r}")
        if M is None:
            M = math.log(z_max / (sigma * math.sqrt(2 / math.pi))) / math.log1p(tau)
        if not (isinstance(M, (int, float)) and math.isfinite(M) and M > 0):
            raise UserError(f"M must be a positive number, got {M!r} (with z_max={z_max}, sigma={sigma}: z_max must exceed sigma)")
        if variable not in VARIABLES:
            raise UserError(f"unknown PFGM variable {variable!r}; valid: log_z, z")
        self.z_max, self.z_min, self.sigma, self.tau = float(z_max), float(z_min), float(sigma), float(tau)
        self.M, self.gamma, self.sigma_data, self.variable = float(M), float(gamma), float(sigma_data), VARIABLES[variable]
        self.log_variable = self.variable == "log_z"
        self.s_min = math.log(self.z_min) if self.log_variable else self.z_min
        self.s_max = math.log(self.z_max) if self.log_variable else self.z_max
        self.kernel = StudentTKernel(1)  # at s = z this is the Poisson kernel of the half-space: r = z
        self.prior_mean = check_prior_mean(prior_mean)

    # --- the integration variable -------------------------------------------------
    def z_of(self, s: Tensor) -> Tensor:
        """``z`` from the scale ``s`` (``exp(s)`` for ``t = ln z``)."""
        return s.exp() if self.log_variable else s

    def s_of(self, z: Tensor) -> Tensor:
        return z.log() if self.log_variable else z

    def velocity_from_ratio(self, ratio: Tensor, z: Tensor, x: Tensor) -> Tensor:
        """``dx/ds`` from ``dx/dz = E_x/E_z``: ``z · dx/dz`` in ``t = ln z``, itself in ``z``."""
        return ratio * expand_as_batch(z, x) if self.log_variable else ratio

    # --- training -------------------------------------------------------------------
    def _training_heights(self, n: int, generator, device) -> tuple[Tensor, Tensor]:
        """``(|ε_z|, (1+τ)^m)`` for ``n`` samples, ``m ~ U[0, M]``, ``ε_z ~ N(0, σ²)``."""
        m = torch.rand(n, generator=generator, device=device) * self.M
        growth = torch.exp(m * math.log1p(self.tau))
        eps_z = torch.randn(n, generator=generator, device=device).abs() * self.sigma
        return eps_z, growth

    def sample_scales(self, n: int, *, generator=None, device=None) -> Tensor:
        """Training scales: ``s`` of ``z = |ε_z| (1+τ)^m`` (the marginal of PFGM's perturbation)."""
        eps_z, growth = self._training_heights(n, generator, device)
        return self.s_of(eps_z * growth)

    def perturb_training(self, y: Tensor, *, generator=None) -> tuple[Tensor, Tensor]:
        """PFGM's perturbation (arXiv 2209.11178, Alg. 1): ``x = y + ε_x (1+τ)^m``, ``z = |ε_z| (1+τ)^m``."""
        eps_z, growth = self._training_heights(y.shape[0], generator, y.device)
        eps_x = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype) * self.sigma
        return y + expand_as_batch(growth, y) * eps_x, (eps_z * growth).to(y.dtype)

    def perturb(self, y: Tensor, s: Tensor, *, generator=None) -> Tensor:
        """``x ~ p_z(x | y)`` at fixed ``z``: the Poisson kernel ``∝ z/(‖x-y‖² + z²)^{(N+1)/2}``
        (where the field lines of a single charge ``y`` cross the plane at height ``z``)."""
        return y + self.kernel.sample_offsets(y.shape, self.z_of(s), generator, y.device, y.dtype)

    def empirical_target(self, x: Tensor, z: Tensor, charges: Tensor, *, label: Optional[Tensor] = None,
                         charge_labels: Optional[Tensor] = None) -> Tensor:
        """``-√N Ê/(‖Ê‖ + γ)`` with ``Ê = Σ_j w_j (x̃ - ỹ_j)`` over ``charges`` (``[B, N+1]``).

        ``w_j ∝ ‖x̃ - ỹ_j‖^{-(N+1)}``, normalised; so ``Ê_x = x - D`` (``D`` the posterior
        mean of the charges) and ``Ê_z = z``.  With labels, only same-label charges count.
        """
        d = posterior_mean(x, charges, z, poisson_log_profile(x[0].numel()), point_labels=charge_labels, label=label)
        return normalised_poisson_field((x - d).reshape(x.shape[0], -1), z, self.gamma)

    def normalised_field(self, field: FieldEstimator, x: Tensor, z: Tensor, label: Optional[Tensor] = None) -> Tensor:
        """A field's normalised Poisson field ``[B, N+1]``: the network's own for a PFGM neural
        field, else from its velocity (any field with ``Ê_z = z``: exact or denoiser-based)."""
        pre = getattr(field, "preconditioning", None)
        if isinstance(pre, PoissonPreconditioning):
            with pre.normalised_output():
                return field(x, self.s_of(z), label)
        v = self.velocity(field, x, self.s_of(z), label)
        dxdz = v / expand_as_batch(z, x) if self.log_variable else v
        return normalised_poisson_field((dxdz * expand_as_batch(z, x)).reshape(x.shape[0], -1), z, self.gamma)

    def loss(self, field: FieldEstimator, y: Tensor, *, generator=None, label: Optional[Tensor] = None) -> Tensor:
        """``‖f_θ(x̃) - target‖²`` per sample (mean over the ``N+1`` components); the batch ``y``
        is both the regressed points and the charges of the empirical target field."""
        x, z = self.perturb_training(y, generator=generator)
        with torch.no_grad():
            target = self.empirical_target(x, z, y, label=label, charge_labels=label)
        f = self.normalised_field(field, x, z, label)
        return (f - target).pow(2).mean(1)

    # --- sampling -------------------------------------------------------------------
    def prior_scale(self) -> float:
        """The hemisphere prior is the Poisson kernel at ``z_max``: ``x = z_max √(β/(1-β)) u``, ``β ~ Beta(N/2, 1/2)``."""
        return self.z_max

    def velocity(self, field: FieldEstimator, x: Tensor, s: Tensor, label: Optional[Tensor] = None) -> Tensor:
        """``dx/ds``: a ``velocity`` field's own output; a ``denoiser`` field ``D`` gives ``(x - D)/z · dz/ds``."""
        if field.kind == "velocity":
            return field(x, s, label)
        if field.kind == "denoiser":
            z = self.z_of(s)
            return self.velocity_from_ratio((x - field(x, z, label)) / expand_as_batch(z, x), z, x)
        raise UserError(f"process 'pfgm' needs a velocity (normalised Poisson field) or denoiser field, got a {field.kind!r} field")

    def schedule_bounds(self) -> tuple[float, float]:
        return self.z_min, self.z_max

    def from_schedule_space(self, z: Tensor) -> Tensor:
        return self.s_of(z)

    def exact_field(self, points: Tensor, labels: Optional[Tensor] = None) -> PoissonExactField:
        return PoissonExactField(self, points, labels)

    def precondition(self, net: torch.nn.Module, sigma_data: Optional[float] = None) -> NeuralField:
        return NeuralField(net, PoissonPreconditioning(self, self.sigma_data if sigma_data is None else sigma_data))

    @classmethod
    def defaults_for_data(cls, data: Tensor, given: dict) -> dict:
        """``prior_mean`` = the data mean, ``sigma_data`` = its std (which scales the paper's
        constants, module docstring), and ``z_max = max(80 σ_d, 10 √λ_max)``: the paper's
        ``z_max = 40`` at ``σ_d = 0.5``, raised where the data's largest principal variance
        ``λ_max`` would exceed 1% of ``z_max²`` (the rule of the diffusion processes)."""
        stats = data_scales(data)
        sd = given.get("sigma_data") or stats["std"]
        rule = {"prior_mean": stats["mean"], "sigma_data": stats["std"],
                "z_max": max(40.0 * sd / PAPER_SIGMA_DATA, 10.0 * math.sqrt(stats["lambda_max"]))}
        return {k: v for k, v in rule.items() if given.get(k) is None}

    def config(self) -> dict:
        return {"z_max": self.z_max, "z_min": self.z_min, "sigma": self.sigma, "tau": self.tau, "M": self.M,
                "gamma": self.gamma, "sigma_data": self.sigma_data, "variable": self.variable, "prior_mean": self.prior_mean}
