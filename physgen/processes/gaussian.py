"""The diffusion family: VE (SMLD), VP (DDPM, linear and cosine β) and EDM.

All share a Gaussian marginal ``x = a(s) y + b(s) ε`` (score SDE, arXiv 2011.13456):

* forward SDE ``dx = f(s) x ds + g(s) dW`` with ``f = a'/a`` and ``g² = 2 b b' - 2 f b²``;
* reverse SDE ``dx = [f x - g² ∇log p_s(x)] ds + g dW̄`` (integrated with ``ds < 0``);
* probability-flow ODE ``dx/ds = f x - ½ g² ∇log p_s(x)``, which for ``a = 1, b = s``
  (VE and EDM, ``g² = 2s``) is ``dx/ds = (x - D(x, s))/s`` (EDM, arXiv 2206.00364, eq. 4).

The σ-parameterised members (VE, EDM, and PFGM++ built on EDM) are
:class:`DenoiserProcess` instances: their ODE has the denoiser form shared with PFGM++ and
Yukawa, and a radial ``kernel`` decides the perturbation, the prior and the exact field.
A Gaussian kernel adds the score and the SDE.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor

from ..errors import UserError
from ..fields.analytic import GaussianMixtureField
from ..fields.exact import ExactField, GaussianProfile
from ..fields.kinds import FieldEstimator, convert_gaussian, expand_as_batch
from ..fields.neural import DenoiserPreconditioning, EpsPreconditioning, NeuralField, ScorePreconditioning
from .base import Process, check_scale_range, draw

__all__ = ["GaussianKernel", "GaussianReverseSDE", "DenoiserProcess", "EDM", "VE", "VP"]


class GaussianKernel:
    """``p_s(x | y) = N(x; y, s² I)``: offsets ``s ε``, log-profile ``-d²/(2s²)``."""

    gaussian = True

    def sample_offsets(self, shape: Sequence[int], s: Tensor, generator=None, device=None, dtype=torch.float32) -> Tensor:
        eps = torch.randn(tuple(shape), generator=generator, device=device or s.device, dtype=dtype)
        return expand_as_batch(s, eps) * eps

    def log_profile(self, sqdist: Tensor, s: Tensor) -> Tensor:
        return -0.5 * sqdist / s**2

    def log_prob(self, offset: Tensor, s: Tensor) -> Tensor:
        """Normalised ``log N(offset; 0, s² I)``, shaped ``[B]``."""
        n = offset[0].numel()
        sq = offset.reshape(offset.shape[0], -1).double().pow(2).sum(1)
        s = s.double()
        return -0.5 * sq / s**2 - 0.5 * n * torch.log(2 * math.pi * s**2)

    def config(self) -> dict:
        return {}


class GaussianReverseSDE:
    """Reverse-time SDE of a Gaussian process: drift ``f x - g² ∇log p``, diffusion ``g``."""

    def __init__(self, process: "Process", field: FieldEstimator, label: Optional[Tensor] = None):
        self.process, self.field, self.label = process, field, label

    def drift(self, x: Tensor, s: Tensor) -> Tensor:
        f = expand_as_batch(self.process.drift_coefficient(s), x)
        g2 = expand_as_batch(self.process.diffusion_squared(s), x)
        return f * x - g2 * self.process.score(self.field, x, s, self.label)

    def diffusion(self, s: Tensor) -> Tensor:
        return self.process.diffusion_squared(s).sqrt()

    def score(self, x: Tensor, s: Tensor) -> Tensor:
        """The score, for samplers (Langevin correctors) that need it directly."""
        return self.process.score(self.field, x, s, self.label)


def _gaussian_score(process, field, x, s, label):
    a, b = process.coefficients(s)
    return convert_gaussian(field(x, s, label), field.kind, "score", x, a, b)


class DenoiserProcess(Process):
    """A process whose ODE is ``dx/ds = (x - D(x, s))/s`` with a radial kernel around the data.

    Perturbation ``x = y + offset`` with ``offset ~ kernel(s)``; prior: the kernel around the
    origin at ``s_max``; exact field: the kernel's posterior mean.  Training and
    preconditioning follow EDM at ``σ = sigma_of_scale(s)`` (identity here).
    """

    denoiser_form = True
    kernel = GaussianKernel()

    def __init__(self, s_min: float, s_max: float, sigma_data: float = 0.5, rho: float = 7.0):
        check_scale_range("sigma_min", s_min, "sigma_max", s_max)
        if not sigma_data > 0:
            raise UserError(f"sigma_data must be > 0, got {sigma_data}")
        self.s_min, self.s_max, self.sigma_data, self.rho = float(s_min), float(s_max), float(sigma_data), float(rho)

    @property
    def has_score(self) -> bool:  # type: ignore[override]
        return bool(getattr(self.kernel, "gaussian", False))

    def sigma_of_scale(self, s: Tensor) -> Tensor:
        return s

    # Gaussian marginal (only meaningful for a Gaussian kernel)
    def coefficients(self, s: Tensor) -> tuple[Tensor, Tensor]:
        return torch.ones_like(s), s

    def drift_coefficient(self, s: Tensor) -> Tensor:
        return torch.zeros_like(s)

    def diffusion_squared(self, s: Tensor) -> Tensor:
        return 2.0 * s

    # perturbation and prior
    def perturb(self, y: Tensor, s: Tensor, *, generator=None) -> Tensor:
        return y + self.kernel.sample_offsets(y.shape, s, generator, y.device, y.dtype)

    def sample_prior(self, shape, *, generator=None, noise=None, device=None, dtype=torch.float32) -> Tensor:
        shape = tuple(shape)

        def sampler(n, g):
            s = torch.full((n,), self.s_max, device=device, dtype=torch.float64)
            return self.kernel.sample_offsets((n, *shape[1:]), s, g, device, torch.float64).to(dtype)

        return draw(shape, sampler, generator=generator, noise=noise, device=device)

    # the field and the ODE
    def denoise(self, field: FieldEstimator, x: Tensor, s: Tensor, label: Optional[Tensor] = None) -> Tensor:
        out = field(x, s, label)
        if field.kind == "denoiser":
            return out
        if not self.has_score:
            raise UserError(f"process {self.name!r} needs a denoiser field, got a {field.kind!r} field")
        a, b = self.coefficients(s)
        return convert_gaussian(out, field.kind, "denoiser", x, a, b)

    def velocity(self, field: FieldEstimator, x: Tensor, s: Tensor, label: Optional[Tensor] = None) -> Tensor:
        return (x - self.denoise(field, x, s, label)) / expand_as_batch(s, x)

    def score(self, field, x, s, label=None):
        if not self.has_score:
            return super().score(field, x, s, label)
        return _gaussian_score(self, field, x, s, label)

    def sde(self, field, label=None):
        if not self.has_score:
            return super().sde(field, label)
        return GaussianReverseSDE(self, field, label)

    def default_schedule(self, steps: int) -> Tensor:
        from solvers.schedules import edm_schedule

        return edm_schedule(steps, self.s_min, self.s_max, rho=self.rho)

    def exact_field(self, points: Tensor, labels: Optional[Tensor] = None) -> ExactField:
        profile = GaussianProfile(self.coefficients) if self.has_score else self.kernel.log_profile
        return ExactField(points, profile, point_labels=labels)

    def analytic_field(self, mixture) -> GaussianMixtureField:
        if not self.has_score:
            return super().analytic_field(mixture)
        return GaussianMixtureField(mixture, self.coefficients)

    # training (EDM, arXiv 2206.00364, §5 and Table 1)
    def loss_weight(self, sigma: Tensor) -> Tensor:
        """``λ(σ) = (σ² + σ_d²)/(σ σ_d)²``: unit effective loss weight at every σ."""
        return (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2

    def loss(self, field, y, *, generator=None, label=None) -> Tensor:
        s = self.sample_scales(y.shape[0], generator=generator, device=y.device).to(y.dtype)
        x = self.perturb(y, s, generator=generator)
        d = self.denoise(field, x, s, label)
        err = (d - y).reshape(y.shape[0], -1).pow(2).mean(1)
        return self.loss_weight(self.sigma_of_scale(s)) * err

    def precondition(self, net, sigma_data: Optional[float] = None) -> NeuralField:
        sd = self.sigma_data if sigma_data is None else sigma_data
        return NeuralField(net, DenoiserPreconditioning(sd, self.sigma_of_scale))

    def config(self) -> dict:
        return {"sigma_min": self.s_min, "sigma_max": self.s_max, "sigma_data": self.sigma_data, "rho": self.rho}


class EDM(DenoiserProcess):
    """EDM (Karras et al. 2022, arXiv 2206.00364): ``σ(t) = t``, ``ln σ ~ N(P_mean, P_std²)``
    for training, the preconditioned denoiser, ``λ(σ) = (σ²+σ_d²)/(σσ_d)²``, and the ρ-schedule
    ``σ_i = (σ_max^{1/ρ} + i/(K-1)(σ_min^{1/ρ} - σ_max^{1/ρ}))^ρ`` with a final ``σ = 0``.
    """

    name = "edm"
    network_kind = "denoiser"

    def __init__(self, sigma_min=0.002, sigma_max=80.0, sigma_data=0.5, rho=7.0, p_mean=-1.2, p_std=1.2):
        super().__init__(sigma_min, sigma_max, sigma_data, rho)
        if not p_std > 0:
            raise UserError(f"p_std must be > 0, got {p_std}")
        self.p_mean, self.p_std = float(p_mean), float(p_std)

    def sample_scales(self, n, *, generator=None, device=None) -> Tensor:
        z = torch.randn(n, generator=generator, device=device)
        return (self.p_mean + self.p_std * z).exp()

    def config(self) -> dict:
        return {**super().config(), "p_mean": self.p_mean, "p_std": self.p_std}


class VE(DenoiserProcess):
    """VE SDE / SMLD (Song & Ermon 2019, arXiv 1907.05600; Song et al. 2021, arXiv 2011.13456).

    ``x = y + σ ε``, ``σ ∈ [σ_min, σ_max]`` log-uniform for training (``σ(t) =
    σ_min (σ_max/σ_min)^t`` with ``t ~ U[0, 1]``); denoising score matching with ``λ(σ) = σ²``:
    ``L = σ² ‖s_θ(x, σ) + ε/σ‖²``; the network is a score (NCSNv2 scaling ``F/σ``);
    PF-ODE ``dx/dσ = -σ ∇log p_σ(x) = (x - D)/σ``; reverse SDE with ``g² = 2σ``.
    """

    name = "ve"
    network_kind = "score"

    def __init__(self, sigma_min=0.01, sigma_max=50.0, sigma_data=0.5, rho=7.0):
        super().__init__(sigma_min, sigma_max, sigma_data, rho)

    def sample_scales(self, n, *, generator=None, device=None) -> Tensor:
        u = torch.rand(n, generator=generator, device=device)
        return self.s_min * (self.s_max / self.s_min) ** u

    def loss(self, field, y, *, generator=None, label=None) -> Tensor:
        s = self.sample_scales(y.shape[0], generator=generator, device=y.device).to(y.dtype)
        eps = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
        sig = expand_as_batch(s, y)
        x = y + sig * eps
        score = self.score(field, x, s, label)
        return (sig * score + eps).reshape(y.shape[0], -1).pow(2).mean(1)

    def precondition(self, net, sigma_data: Optional[float] = None) -> NeuralField:
        return NeuralField(net, ScorePreconditioning(self.sigma_data if sigma_data is None else sigma_data))


class VP(Process):
    """VP SDE / DDPM (Ho et al. 2020, arXiv 2006.11239; Song et al. 2021, arXiv 2011.13456).

    ``x = a(t) y + b(t) ε`` with ``a = exp(-½∫₀ᵗβ)``, ``b = √(1 - a²)``;
    forward SDE ``dx = -½β(t) x dt + √β(t) dW``.  ``linear``: ``β(t) = β_min + t(β_max - β_min)``.
    ``cosine`` (Nichol & Dhariwal, arXiv 2102.09672): ``a² = f(t)/f(0)``,
    ``f(t) = cos²((t+c)/(1+c) · π/2)``, ``β = -d ln a²/dt``; ``β → ∞`` at ``t = 1``, so the
    cosine schedule stops at ``t_max = 0.999`` (where ``a ≈ 1.6e-3``: the prior ``N(0, I)``
    is still exact to that precision).  Loss: ``‖ε_θ(x, t) - ε‖²`` with ``t ~ U[t_eps, t_max]``.
    """

    name = "vp"
    network_kind = "eps"
    has_score = True

    def __init__(self, beta_schedule: str = "linear", beta_min: float = 0.1, beta_max: float = 20.0, t_eps: float = 1e-3, t_max: Optional[float] = None, cosine_offset: float = 0.008):
        if beta_schedule not in ("linear", "cosine"):
            raise UserError(f"unknown VP beta schedule {beta_schedule!r}; valid: cosine, linear")
        if not 0 <= beta_min < beta_max:
            raise UserError(f"need 0 <= beta_min < beta_max, got beta_min={beta_min}, beta_max={beta_max}")
        t_max = (1.0 if beta_schedule == "linear" else 0.999) if t_max is None else float(t_max)
        if not 0 < t_eps < t_max <= 1:
            raise UserError(f"need 0 < t_eps < t_max <= 1, got t_eps={t_eps}, t_max={t_max}")
        self.beta_schedule, self.beta_min, self.beta_max, self.cosine_offset = beta_schedule, float(beta_min), float(beta_max), float(cosine_offset)
        self.s_min, self.s_max = float(t_eps), t_max

    def _log_alpha(self, t: Tensor) -> Tensor:
        if self.beta_schedule == "linear":
            return -0.5 * (self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2)
        c = self.cosine_offset
        return torch.log(torch.cos((t + c) / (1 + c) * math.pi / 2) / math.cos(c / (1 + c) * math.pi / 2))

    def beta(self, t: Tensor) -> Tensor:
        if self.beta_schedule == "linear":
            return self.beta_min + t * (self.beta_max - self.beta_min)
        c = self.cosine_offset
        return math.pi / (1 + c) * torch.tan((t + c) / (1 + c) * math.pi / 2)

    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor]:
        a = self._log_alpha(t.double()).exp()
        return a.to(t.dtype), (1 - a**2).clamp_min(0).sqrt().to(t.dtype)

    def drift_coefficient(self, t: Tensor) -> Tensor:
        return -0.5 * self.beta(t)

    def diffusion_squared(self, t: Tensor) -> Tensor:
        return self.beta(t)

    def sample_scales(self, n, *, generator=None, device=None) -> Tensor:
        return self.s_min + (self.s_max - self.s_min) * torch.rand(n, generator=generator, device=device)

    def perturb(self, y, s, *, generator=None) -> Tensor:
        a, b = self.coefficients(s)
        eps = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
        return expand_as_batch(a, y) * y + expand_as_batch(b, y) * eps

    def loss(self, field, y, *, generator=None, label=None) -> Tensor:
        t = self.sample_scales(y.shape[0], generator=generator, device=y.device).to(y.dtype)
        a, b = self.coefficients(t)
        eps = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
        x = expand_as_batch(a, y) * y + expand_as_batch(b, y) * eps
        eps_hat = convert_gaussian(field(x, t, label), field.kind, "eps", x, a, b)
        return (eps_hat - eps).reshape(y.shape[0], -1).pow(2).mean(1)

    def sample_prior(self, shape, *, generator=None, noise=None, device=None, dtype=torch.float32) -> Tensor:
        shape = tuple(shape)
        return draw(shape, lambda n, g: torch.randn((n, *shape[1:]), generator=g, device=device, dtype=dtype), generator=generator, noise=noise, device=device)

    def score(self, field, x, s, label=None) -> Tensor:
        return _gaussian_score(self, field, x, s, label)

    def velocity(self, field, x, s, label=None) -> Tensor:
        f = expand_as_batch(self.drift_coefficient(s), x)
        g2 = expand_as_batch(self.diffusion_squared(s), x)
        return f * x - 0.5 * g2 * self.score(field, x, s, label)

    def sde(self, field, label=None) -> GaussianReverseSDE:
        return GaussianReverseSDE(self, field, label)

    def default_schedule(self, steps: int) -> Tensor:
        from solvers.schedules import vp_time_schedule

        return vp_time_schedule(steps + 1, t_eps=self.s_min, t_max=self.s_max)  # steps intervals

    def exact_field(self, points, labels=None) -> ExactField:
        return ExactField(points, GaussianProfile(self.coefficients), alpha=lambda t: self.coefficients(t)[0], point_labels=labels)

    def analytic_field(self, mixture) -> GaussianMixtureField:
        return GaussianMixtureField(mixture, self.coefficients)

    def precondition(self, net, sigma_data: float = 0.5) -> NeuralField:
        return NeuralField(net, EpsPreconditioning(self.coefficients, sigma_data))

    def config(self) -> dict:
        return {"beta_schedule": self.beta_schedule, "beta_min": self.beta_min, "beta_max": self.beta_max, "t_eps": self.s_min, "t_max": self.s_max, "cosine_offset": self.cosine_offset}
