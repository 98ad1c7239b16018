"""Telegrapher: the damped wave equation as a generative process (Kac flows).

Duong, Chemseddine, Friz, Steidl, "Telegrapher's Generative Model via Kac Flows",
arXiv 2506.20641; in GenPhys's terms (arXiv 2304.02637) the dissipative fix of the wave
equation (``physgen genphys check`` lists both).

* **PDE.**  Per coordinate, ``∂_t²u + 2a ∂_t u = c² ∂_x²u``: dispersion
  ``ω = −ia ± √(c²k² − a²)``, whose slow branch decays (``Im ω ≈ −c²k²/2a`` for small k,
  ``−a`` for ``ck > a``, 0 at k = 0: C2).  Its density flow is the Kac process: a particle at
  speed ``c`` whose direction flips at rate ``a``, independently in each coordinate (the
  paper's component-wise process; the isotropic N-dim equation has a signed Green's
  function for N ≥ 2, see :mod:`physgen.genphys.catalogue`).
* **Kernel** (:class:`physgen.kernels.kac.KacKernel`): ``x = y + δ``, ``δ_i`` i.i.d. Kac
  displacements: atoms at ``±ct`` of mass ``e^{−at}/2`` and a Bessel-I0/I1 density inside.
  Noise level: the per-coordinate std ``σ(t) = (c/a) √(at − (1 − e^{−2at})/2)`` (inverted
  by Newton's method, :func:`physgen.kernels.kac.kac_t_of_sigma`).
* **Conditional velocity** ``u(δ, t) = E[c D_t | δ] = h(δ, t) δ / t`` per coordinate
  (``h`` from the closed-form direction densities ``p_±``, :mod:`physgen.kernels.kac`;
  ``h = 1``, ``u = ±c``, on the atoms).  **Marginal ODE** ``dx/dt = v(x, t) = E[u(x − Y, t) | X_t = x]``,
  integrated from ``t_max`` down to 0 in the noise level ``s = σ(t)`` (a monotone change of
  time): ``dx/dσ = v(x, t(σ))/σ'(t) = (x − D_σ)/σ`` with ``D_σ = x − σ v/σ'`` (not a
  posterior mean of ``y`` in general).  Why σ and not t: in the diffusive limit ``D_σ`` is
  EDM's denoiser (``v = (x − D)/2t``) and on an atom ``D_σ → y`` as ``at → 0``, so ``D_σ`` is
  nearly constant along trajectories at both ends, as EDM's is; in ``t`` the diffusive
  trajectories curve like ``√t`` (measured while building this, a = c = 1, exact field of
  1000 points of the two-mode mixture, 18 Heun steps: 0.14 on the left integrating in t,
  0.21-0.23 in σ, target 0.20).  Fields take ``s = σ`` and return
  ``dx/dσ`` (kind ``velocity``); the schedule is EDM's ρ-schedule in σ, ending at σ = 0 with
  the Euler step ``x ← D_σ``, and DPM-Solver applies.
* **Exact field** (:class:`TelegrapherExactField`), derived here.  For points ``{y_j}`` the
  marginal is ``q_t = (1/P) Σ_j Π_i k_t(x_i − y_ji)``; given the point ``j`` the coordinates
  are independent, so ``E[c D^i_t | x, j] = u(x_i − y_ji, t)`` and

      v_i(x, t) = Σ_j w_j h(δ_ji, t) δ_ji / t,   w_j ∝ Π_i k_t(δ_ji),   δ_ji = x_i − y_ji,

  the per-coordinate factors multiplying in the weights.  ``∂_t q + ∇·(q v) = 0`` because
  each pair's ``(p, j = p u)`` satisfies ``∂_t p + ∂_δ j = 0`` (tested).
  **Atoms.**  They have no Lebesgue density, but they are not negligible: the continuous
  part has mass ``(1 − e^{−at})`` per coordinate, so as ``t → 0`` every particle must end on
  them.  Near the cone the inner velocity tends to ``ct/(t + 2/a) < c``: backwards in time
  the cone (shrinking at speed ``c``) overtakes the particle in finite time, and the exact
  flow then carries it on the atom (coalescence: the reverse of the atoms feeding the
  continuous part at rate ``a``).  An absolutely-continuous-only field would instead push
  it out of point ``j``'s support and let other points capture it.  For a finite point set
  this coalescence is singular (a deterministic flow cannot split the fluid that reaches a
  face between "joins the atom" and "passes through", which continuous data do by
  position), so the field regularises each atom: its mass ``e^{−at}/2`` is spread outwards
  from the cone with the density ``e^{−(λ−1)/ε}/(ε c t)`` in ``λ = |δ|/ct ≥ 1``
  (``ε = atom_band``, default 0.01), moving with the atom's self-similar velocity ``δ/t``
  (``h = 1``: ``±c`` on the cone; a band particle keeps ``λ`` and lands exactly on ``y_ji``
  at ``t = 0``, and Euler is exact on it).  A query exactly on the atom (within 16 ulps) is
  on the band's peak; a query beyond every point's cone (a solver overshoot) still has a
  posterior, which decays with its distance ``λ − 1`` from each cone.  ``ε → 0`` is the
  exact field.  Measured on the 2-D two-mode mixture (``physgen experiment telegrapher``:
  1000 points, c = 1, DPM-Solver++(2M); target 0.200 on the left): where the mode weights
  are decided at ``at ≫ 1`` 18 steps suffice (0.204 at a = 3, 0.193 at a = 10); in the
  ballistic regime (a = 0.1: ``at ≈ 0.2`` at the data scale, most mass on atoms sweeping
  across the data) they do not (0.392 at 18 steps, 0.201 at 60).  There the band width
  matters both ways (500 points, Heun, a = 0.1: ε = 0.03 gave 0.146 and ε = 0.01 0.204 at
  50 steps; ε = 0.003 gave 0.335 and ε = 0.01 0.187 at 100): a band wider than the data's
  structure (``ε c t``) moves mass between modes, a thinner one needs finer steps to catch
  the particles the atoms sweep up.  With a → ∞ at fixed ``c²/a`` the atoms vanish and ε
  stops mattering (a = 1 and 10: ε from 0.001 to 0.1 within the sampling error).
* **Prior** (``prior``): ``kac`` (default) the exact Kac law at ``t_max`` around
  ``prior_mean``, or ``gaussian``, ``N(prior_mean, σ²(t_max) I)`` (its diffusive limit with the
  exact variance ``σ² = c²t/a − c²/2a² + …``).  Both ignore the data's spread around its
  mean, as every VE-type prior does.  Measured against the true marginal
  ``p_data * k_{t_max}`` (``physgen experiment telegrapher``, two-mode mixture, per-coordinate
  KS from the CDFs): at the default ``σ_max = 80``, 5e-5 for the Kac prior at every a (the
  data's spread: ``Var(y) max|F''|/2``), and 1.1e-3 for the Gaussian at a = 0.1
  (``a t_max = 64``: the Kac law is not Gaussian yet); at a toy ``σ_max`` of 6 with a = 0.1
  (``a t_max = 0.75``) the Kac prior is off by 0.21, as its atoms still carry the data: the
  prior forgets the data only when ``a t_max ≫ 1`` as well as ``σ_max ≫`` the data's spread.
* **Training** (flow matching on the conditional velocity, as the paper): the loss is
  ``λ(σ) σ² ‖v_θ(x, σ) − u(x − y, t)/σ'(t)‖²`` (in ``dx/dσ`` units) with the atoms' targets
  ``±c`` taken from the sampler's atom mask.  The network is EDM-preconditioned:
  ``v_θ = (x − D̃)/σ`` with ``D̃ = c_skip x + c_out F(c_in x, ln σ/4)``, so ``D̃`` regresses on
  ``D_σ`` (EDM's denoiser in the diffusive limit) with EDM's weight
  ``λ = (σ² + σ_d²)/(σ σ_d)²``.  Scales: ``ln σ ~ N(P_mean, P_std²)``, ``t = t(σ)``.
* **Schedule**: EDM's ρ-schedule in ``σ`` (then 0).

Where the paper and this implementation differ: the paper samples ``t ~ U[0, T]`` on a
fixed horizon (e.g. ``a = 9, c = 3, T = 1`` in 2-D), regresses the velocity with a plain
MLP, clips targets to ``±c`` in a thin layer inside the cone (``ε t c/T``) and starts
sampling from data + Kac noise at ``T`` (a prior that still knows the data); its sampler
draws the continuous part from a tabulated inverse CDF.  Here: the noise-level
parameterisation and schedule above, a data-independent prior, exact (Poisson-Beta)
draws, exact atom labels in training, and an exact field for finite data (the paper has
none).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from ..config import FLOAT32_MAX
from ..errors import UserError, unknown_name
from ..fields.exact import DEFAULT_CHUNK_ELEMS
from ..fields.kinds import expand_as_batch
from ..fields.labels import check_label
from ..fields.neural import DenoiserPreconditioning, NeuralField
from ..kernels.kac import KacKernel, kac_profile_and_speed
from .base import draw, prior_centre
from .gaussian import DenoiserProcess, data_scales

__all__ = ["Telegrapher", "TelegrapherExactField", "TelegrapherNeuralField", "PRIORS"]

PRIORS = ("kac", "gaussian")


class Telegrapher(DenoiserProcess):
    """The Kac-flow process with flip rate ``a`` and speed ``c`` (``--process telegrapher --a A --c C``)."""

    name = "telegrapher"
    network_kind = "velocity"
    default_steps = 40  # Heun on the 0.2/0.8 toy (a = c = 1, exact field): left-mode weight 0.176 at 18 steps, 0.189 at 40; toy a: defaults_for_data

    def __init__(
        self,
        a: float = 1.0,
        c: float = 1.0,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        sigma_data: float = 0.5,
        rho: float = 7.0,
        p_mean: float = -1.2,
        p_std: float = 1.2,
        prior_mean=None,
        prior: str = "kac",
        atom_band: float = 0.01,
    ):
        self.kernel = KacKernel(a, c, atom_band)
        self.a, self.c, self.atom_band = self.kernel.a, self.kernel.c, self.kernel.atom_band
        if prior not in PRIORS:
            raise unknown_name("telegrapher prior", prior, PRIORS)
        super().__init__(sigma_min, sigma_max, sigma_data, rho, prior_mean)
        self.sigma_min, self.sigma_max = self.s_min, self.s_max
        self.t_max = self.kernel.t_of_sigma(self.sigma_max)
        self.set_training_law(p_mean, p_std)
        self.prior = prior

    # --- the σ <-> t map ------------------------------------------------------------
    def t_of_sigma(self, sigma):
        """The Kac time ``t`` at which the kernel's per-coordinate std is ``σ``."""
        return self.kernel.t_of_sigma(sigma)

    # --- training -------------------------------------------------------------------
    def sample_scales(self, n, *, generator=None, device=None) -> Tensor:
        return self.draw_training_sigma(n, generator=generator, device=device)

    def perturb(self, y: Tensor, s: Tensor, *, generator=None) -> Tensor:
        t = self.t_of_sigma(s.to(torch.float64))
        return y + self.kernel.sample_offsets(y.shape, t, generator, y.device, y.dtype)

    def loss(self, field, y, *, generator=None, label=None) -> Tensor:
        sigma = self.sample_scales(y.shape[0], generator=generator, device=y.device).to(y.dtype)
        t = self.t_of_sigma(sigma.to(torch.float64))
        delta, atom = self.kernel.sample_offsets(y.shape, t, generator, y.device, y.dtype, return_atoms=True)
        t = t.to(y.dtype)
        target = self.kernel.velocity(delta, expand_as_batch(t, delta), on_atom=atom) / expand_as_batch(self.kernel.sigma_rate(t), delta)
        v = self.velocity(field, y + delta, sigma, label)
        return self.loss_weight(sigma) * sigma**2 * (v - target).reshape(y.shape[0], -1).pow(2).mean(1)

    # --- sampling -------------------------------------------------------------------
    def prior_scale(self) -> float:
        """The Kac kernel's scale is its time: the prior is the kernel at ``t_max = t(σ_max)``."""
        return float(self.t_max)

    def sample_prior(self, shape, *, generator=None, noise=None, device=None, dtype=torch.float32) -> Tensor:
        """The Kac law at ``t_max`` around ``prior_mean`` (``prior="kac"``), or its diffusive limit
        ``N(prior_mean, σ_max² I)`` (``prior="gaussian"``)."""
        if self.prior == "kac":
            return super().sample_prior(shape, generator=generator, noise=noise, device=device, dtype=dtype)
        shape = tuple(shape)
        sampler = lambda n, g: self.sigma_max * torch.randn((n, *shape[1:]), generator=g, device=device, dtype=torch.float64)  # noqa: E731
        x = draw(shape, sampler, generator=generator, noise=noise, device=device).to(dtype)
        return x if self.prior_mean is None else x + prior_centre(self.prior_mean, x)

    def prior_log_prob(self, x: Tensor) -> Tensor:
        raise UserError("process 'telegrapher' has no prior density for the likelihood: the Kac kernel has atoms")

    def velocity(self, field, x: Tensor, s: Tensor, label: Optional[Tensor] = None) -> Tensor:
        """``dx/dσ`` from a velocity field (the exact field, or a network trained for this process)."""
        if getattr(field, "kind", "velocity") != "velocity":
            raise UserError(f"process 'telegrapher' needs a velocity field (its exact field or an MLP trained for it), got a {field.kind!r} field")
        return field(x, s, label)

    def time_velocity(self, field, x: Tensor, t: Tensor, label: Optional[Tensor] = None) -> Tensor:
        """The paper's ``dx/dt = v(x, t)`` at Kac times ``t`` (``[B]``): ``σ'(t) dx/dσ``."""
        t = t.to(torch.float64)
        sigma = self.kernel.sigma(t).to(x.dtype)
        return expand_as_batch(self.kernel.sigma_rate(t), x) * self.velocity(field, x, sigma, label)

    def denoise(self, field, x: Tensor, s: Tensor, label: Optional[Tensor] = None) -> Tensor:
        """``D_σ = x − σ dx/dσ``: the denoiser-form target of ``dx/dσ = (x − D_σ)/σ``."""
        return x - expand_as_batch(s, x) * self.velocity(field, x, s, label)

    def exact_field(self, points: Tensor, labels: Optional[Tensor] = None) -> "TelegrapherExactField":
        return TelegrapherExactField(points, self.kernel, point_labels=labels)

    def precondition(self, net: nn.Module, sigma_data: Optional[float] = None) -> "TelegrapherNeuralField":
        sd = self.sigma_data if sigma_data is None else sigma_data
        return TelegrapherNeuralField(net, sd)

    @classmethod
    def defaults_for_data(cls, data: Tensor, given: dict) -> dict:
        """The diffusion processes' toy rule (prior at the data mean, ``σ_max = 10 √λ_max``,
        ``σ_data``), and the flip rate ``a = 10 c / σ_d``: a mean free path ``c/a`` of a tenth
        of the data's std, so the data's scale is in the diffusive regime.

        With ``a = c = 1`` (the image default) the mean free path is 1, larger than the 0.3
        std of each mode of the two-mode toy: there the atoms sweep across the modes, the
        field is non-smooth at the scale of a Heun step and the error falls only like 1/steps
        (exact field, 1000 samples: per-mode std 0.345 at 40 steps, 0.325 at 80, 0.31 at 160,
        target 0.30; the module docstring's ballistic regime).  At ``a = 10 c/σ_d`` (7.6 on
        that toy) the default 40 steps give 0.30-0.31 (``benchmarks/RESULTS.md``).  ``--a``
        keeps the ballistic regime within reach (with more ``--steps``).
        """
        rule = super().defaults_for_data(data, given)
        c, sd = given.get("c"), given.get("sigma_data") or data_scales(data)["std"]
        c = 1.0 if c is None else c
        good_c = isinstance(c, (int, float)) and not isinstance(c, bool) and 0 < c < math.inf
        a = 10.0 * float(c) / sd if good_c and isinstance(sd, (int, float)) and sd > 0 else math.inf
        if given.get("a") is None and a <= FLOAT32_MAX:  # else the constructor refuses c (or sigma_data) by name
            rule["a"] = a
        return rule

    def config(self) -> dict:
        return {
            "a": self.a, "c": self.c, "sigma_min": self.sigma_min, "sigma_max": self.sigma_max, "sigma_data": self.sigma_data,
            "rho": self.rho, "p_mean": self.p_mean, "p_std": self.p_std, "prior_mean": self.prior_mean, "prior": self.prior,
            "atom_band": self.atom_band,
        }


class TelegrapherNeuralField(nn.Module):
    """``dx/dσ = (x − D̃(x, σ))/σ`` with ``D̃`` EDM-preconditioned (kind ``velocity``)."""

    kind = "velocity"

    def __init__(self, net: nn.Module, sigma_data: float):
        super().__init__()
        self.inner = NeuralField(net, DenoiserPreconditioning(sigma_data))

    @property
    def net(self) -> nn.Module:
        return self.inner.net

    @property
    def num_classes(self) -> int:
        return self.inner.num_classes

    def forward(self, x: Tensor, s: Tensor, label: Optional[Tensor] = None) -> Tensor:
        return (x - self.inner(x, s, label)) / expand_as_batch(s, x)


class TelegrapherExactField:
    """The exact marginal velocity ``dx/dσ`` of a point set (kind ``velocity``); the module doc derives it.

    ``field(x, σ)`` evaluates ``v(x, t)/σ'(t)`` at ``t = t(σ)``; :meth:`time_velocity` gives
    ``v(x, t)`` at Kac times directly.

    ``field(x, t)`` streams over blocks of points (a running log-sum-exp), so memory stays
    within ``chunk_elems`` pair-coordinates per block.  ``point_labels`` make it
    conditional, as :class:`physgen.fields.exact.ExactField`.
    """

    kind = "velocity"

    def __init__(self, points: Tensor, kernel: KacKernel, *, point_labels: Optional[Tensor] = None, chunk_elems: int = DEFAULT_CHUNK_ELEMS):
        if points.ndim < 2 or points.shape[0] == 0:
            raise ValueError(f"points must be a non-empty [P, ...] tensor, got shape {tuple(points.shape)}")
        if point_labels is not None and point_labels.shape != points.shape[:1]:
            raise ValueError(f"point_labels must be shaped [{points.shape[0]}], got {tuple(point_labels.shape)}")
        self.points, self.kernel, self.point_labels, self.chunk_elems = points, kernel, point_labels, int(chunk_elems)
        self._y_max = float(points.abs().max())  # once here: per call it would sync a GPU

    @property
    def num_classes(self) -> Optional[int]:
        return None if self.point_labels is None else int(self.point_labels.max()) + 1

    def __call__(self, x: Tensor, s: Tensor, label: Optional[Tensor] = None) -> Tensor:
        t = self.kernel.t_of_sigma(s.to(torch.float64))
        return self.time_velocity(x, t, label) / expand_as_batch(self.kernel.sigma_rate(t), x)

    def time_velocity(self, x: Tensor, t: Tensor, label: Optional[Tensor] = None) -> Tensor:
        """``v(x, t) = dx/dt`` at Kac times ``t`` (``[B]``)."""
        q = x.shape[0]
        xf = x.reshape(q, -1)
        yf = self.points.reshape(self.points.shape[0], -1).to(device=x.device, dtype=x.dtype)
        if xf.shape[1] != yf.shape[1]:
            raise ValueError(f"queries have {xf.shape[1]} dims but points have {yf.shape[1]}")
        k = self.num_classes
        label = check_label(label, k, q, device=x.device, what="this exact field")
        labels = None if self.point_labels is None else self.point_labels.to(x.device)
        if label is not None:
            label = torch.where(label == k, torch.full_like(label, -1), label)
        t = t.to(xf.dtype)
        p, n = yf.shape
        kern = self.kernel
        rows = max(1, min(q, max(16, self.chunk_elems // max(p * n, 1))))
        cols = max(1, min(p, self.chunk_elems // (rows * n)))
        out = torch.empty_like(xf)
        ulps = 16.0 * torch.finfo(xf.dtype).eps
        y_max = self._y_max
        for r0 in range(0, q, rows):
            xr, tr = xf[r0 : r0 + rows], t[r0 : r0 + rows]
            m = xr.shape[0]
            atol = (ulps * (xr.abs().amax(1) + y_max))[:, None, None]  # the rounding of δ = x − y
            run_max = torch.full((m, 1), -math.inf, dtype=xf.dtype, device=xf.device)
            run_sum = torch.zeros_like(run_max)
            run_num = torch.zeros_like(xr)
            tt = tr[:, None, None]
            for c0 in range(0, p, cols):
                delta = xr[:, None, :] - yf[None, c0 : c0 + cols, :]  # [m, C, N]
                logk, h = kac_profile_and_speed(delta, tt, kern.a, kern.c, kern.atom_band, atol)
                logw = logk.sum(2)
                hd = h * delta
                if label is not None:
                    lab = label[r0 : r0 + rows, None]
                    match = (labels[c0 : c0 + cols][None, :] == lab) | (lab < 0)
                    logw = logw.masked_fill(~match, -math.inf)
                new_max = torch.maximum(run_max, logw.max(1, keepdim=True).values)
                safe = torch.where(torch.isfinite(new_max), new_max, torch.zeros_like(new_max))
                w = torch.exp(logw - safe)
                run_sum = run_sum * torch.exp(run_max - safe) + w.sum(1, keepdim=True)
                run_num = run_num * torch.exp(run_max - safe) + torch.bmm(w[:, None, :], hd)[:, 0]
                run_max = new_max
            if label is not None and not bool(torch.isfinite(run_max).all()):
                raise ValueError("a requested label has no points in this exact field")
            out[r0 : r0 + rows] = run_num / (run_sum * tr[:, None])
        return out.reshape(x.shape)
