"""The diffusion family: VE (SMLD), VP (DDPM, linear and cosine β) and EDM.

All share a Gaussian marginal ``x = a(s) y + b(s) ε`` (score SDE, arXiv 2011.13456):

* forward SDE ``dx = f(s) x ds + g(s) dW`` with ``f = a'/a`` and ``g² = 2 b b' - 2 f b²``;
* reverse SDE ``dx = [f x - g² ∇log p_s(x)] ds + g dW̄`` (integrated with ``ds < 0``);
* probability-flow ODE ``dx/ds = f x - ½ g² ∇log p_s(x)``, which for ``a = 1, b = s``
  (VE and EDM, ``g² = 2s``) is ``dx/ds = (x - D(x, s))/s`` (EDM, arXiv 2206.00364, eq. 4);
* exact transition ``x_s = r x_{s'} + G z``, ``r = a(s)/a(s')``, ``G² = b(s)² - r² b(s')²``
  (VE: ``1, s² - s'²``; VP: ``√(1-β_i), β_i``): the physics of the reverse-diffusion
  predictor and of ancestral (DDPM) sampling, offered to the solvers by :class:`GaussianSDE`.

The σ-parameterised members (VE, EDM, and PFGM++ built on EDM) are
:class:`DenoiserProcess` instances: their ODE has the denoiser form shared with PFGM++ and
Yukawa, and a radial ``kernel`` decides the perturbation, the prior and the exact field.
A Gaussian kernel adds the score, the SDE and the transition.  VP offers the denoiser form
too, in EDM's variables ``x̄ = x/a``, ``σ = b/a`` (:class:`SigmaForm`).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from solvers.base import Solution
from solvers.offers import CoordinateChange
from solvers.schedules import EDM_RHO
from solvers.spec import OptionError

from ..errors import UserError
from ..fields.analytic import GaussianMixtureField
from ..fields.exact import ExactField, GaussianProfile
from ..fields.kinds import FieldEstimator, expand_as_batch
from ..fields.neural import DenoiserPreconditioning, EpsPreconditioning, NeuralField, ScorePreconditioning
from ..kernels import GaussianKernel
from .base import DenoiserFlow, KernelPrior, Process, ProcessFlow, check_prior_mean, check_scale_range, draw, prior_centre
from .discrete_vp import DiscreteBetas
from .ncsnv2 import geometric_levels, level_count
from .parts import (GAUSSIAN_NEEDS, LogNormalSigma, LogUniformSigma, UniformTime, eps_matching_loss, gaussian_denoise, gaussian_score, kernel_part,
                    score_matching_loss)

__all__ = ["GaussianSDE", "GaussianMarginal", "AffineGaussianPath", "DenoiserProcess", "SigmaForm", "LogNormalSigma", "EDMParts", "EDM", "VE", "VP", "data_scales", "GAUSSIAN_NEEDS"]

PRIOR_VARIANCE_TOLERANCE = 0.01
"""Toy defaults: the largest data variance may be at most this fraction of ``σ_max²``."""


def data_scales(data: Tensor) -> dict:
    """``mean`` (per coordinate), ``std`` (EDM's σ_data: all coordinates pooled) and
    ``lambda_max`` (the largest eigenvalue of the covariance) of toy data, on a subsample."""
    sub = data[:2000].reshape(min(data.shape[0], 2000), -1).double()
    if sub.shape[0] < 2 or not bool(torch.isfinite(sub).all()):
        raise UserError(f"need at least 2 finite data points to set the scales, got shape {tuple(data.shape)}")
    cov = torch.cov(sub.T).reshape(sub.shape[1], sub.shape[1])
    return {"mean": sub.mean(0).tolist(), "std": float(sub.std()), "lambda_max": float(torch.linalg.eigvalsh(cov)[-1])}


class GaussianSDE:
    """A Gaussian process with a field, as the score-based samplers see it
    (:class:`solvers.base.GaussianTransition`, :class:`solvers.base.SDE`).

    ``score`` and ``denoise`` (Tweedie, ``(x + b² score)/a``) call the field once each;
    ``drift = f x - g² score`` (reverse time), ``diffusion = g``; ``marginal = (a, b)``;
    ``transition(s, s') = (r, G²)`` in float64; calling it gives the probability-flow velocity.
    """

    def __init__(self, process: "GaussianMarginal", field: FieldEstimator, label: Optional[Tensor] = None):
        self.process, self.field, self.label = process, field, label

    def score(self, x: Tensor, s: Tensor) -> Tensor:
        return self.process.score(self.field, x, s, self.label)

    def denoise(self, x: Tensor, s: Tensor) -> Tensor:
        return self.process.denoise(self.field, x, s, self.label)

    def drift(self, x: Tensor, s: Tensor) -> Tensor:
        f = expand_as_batch(self.process.drift_coefficient(s), x)
        g2 = expand_as_batch(self.process.diffusion_squared(s), x)
        return f * x - g2 * self.score(x, s)

    def diffusion(self, s: Tensor) -> Tensor:
        return self.process.diffusion_squared(s).sqrt()

    def marginal(self, s: Tensor) -> tuple[Tensor, Tensor]:
        return self.process.coefficients(s)

    def transition(self, s: Tensor, s_next: Tensor) -> tuple[Tensor, Tensor]:
        a1, b1 = self.process.coefficients(s.double())
        a0, b0 = self.process.coefficients(s_next.double())
        r = a1.double() / a0.double()
        return r, (b1.double() ** 2 - r**2 * b0.double() ** 2).clamp_min(0.0)

    def __call__(self, x: Tensor, s: Tensor) -> Tensor:
        return self.process.velocity(self.field, x, s, self.label)


class GaussianMarginal:
    """What every process with a Gaussian marginal ``x = a y + b ε`` shares: its score, its
    Gaussian view for the solvers, and the levels of annealed Langevin.

    ``langevin_levels`` follows NCSNv2 (:mod:`physgen.processes.ncsnv2`) on the VE-equivalent
    noise level ``σ = b/a`` (the SNR-matched VE level; ``σ`` itself for VE and EDM) between
    its ends at ``s_max`` and ``s_min``, and maps the levels back to the process's scale.
    """

    max_ratio: float = 1.5
    scale_is_sigma = False  # an affine path's scale is a time; its σ = b/a (SigmaForm, t_of_sigma)

    def score(self, field, x: Tensor, s: Tensor, label=None) -> Tensor:
        return gaussian_score(self, field, x, s, label)

    def denoise(self, field, x: Tensor, s: Tensor, label=None) -> Tensor:
        return gaussian_denoise(self, field, x, s, label)

    def signal_scale(self, s: float) -> float:
        return float(self.coefficients(torch.tensor([float(s)], dtype=torch.float64))[0][0])

    def gaussian_view(self, field, label=None) -> GaussianSDE:
        return GaussianSDE(self, field, label)

    def equivalent_sigma(self, s: Tensor) -> Tensor:
        a, b = self.coefficients(s.double())
        return b.double() / a.double()

    def scale_of_sigma(self, sigma: Tensor) -> Tensor:
        """The scales ``s`` with ``b(s)/a(s) = σ`` (bisection; ``b/a`` increases with ``s``)."""
        lo = torch.full_like(sigma, float(self.s_min))
        hi = torch.full_like(sigma, float(self.s_max))
        for _ in range(100):
            mid = 0.5 * (lo + hi)
            below = self.equivalent_sigma(mid) < sigma
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        return 0.5 * (lo + hi)

    def langevin_levels(self, dim: int, num_levels: Optional[int] = None) -> Tensor:
        """``L`` decreasing Langevin levels (float64 scales) from ``s_max`` to ``s_min``: NCSNv2's
        technique 2 for ``L`` unless given, geometric in ``b/a``."""
        ends = self.equivalent_sigma(torch.tensor([float(self.s_max), float(self.s_min)], dtype=torch.float64))
        L = level_count(float(ends[0]), float(ends[1]), dim, num_levels, max_ratio=self.max_ratio)
        scales = self.scale_of_sigma(geometric_levels(float(ends[0]), float(ends[1]), L))
        scales[0], scales[-1] = float(self.s_max), float(self.s_min)
        return scales


class DenoiserProcess(GaussianMarginal, KernelPrior, Process):
    """A process whose ODE is ``dx/ds = (x - D(x, s))/s`` with a radial kernel around the data.

    Perturbation ``x = y + offset`` with ``offset ~ kernel(s)``; prior: the kernel at
    ``s_max`` around ``prior_mean`` (default the origin); exact field: the kernel's
    posterior mean.  Training and preconditioning follow EDM at ``σ = sigma_of_scale(s)``
    (identity here).  The grid is EDM's ρ-schedule ending with the denoising step to 0.
    """

    ends_at_zero = True
    default_schedule_name = "edm"
    scale_is_sigma = True  # s is σ: the denoiser form dx/ds = (x - D)/s itself
    kernel = GaussianKernel()

    def __init__(self, s_min: float, s_max: float, sigma_data: float = 0.5, rho: float = 7.0, prior_mean=None):
        check_scale_range("sigma_min", s_min, "sigma_max", s_max)
        if not (isinstance(sigma_data, (int, float)) and math.isfinite(sigma_data) and sigma_data > 0):
            raise UserError(f"sigma_data must be a positive number, got {sigma_data!r}")
        try:  # the ρ of the process's own EDM schedule: the schedule's keyword, with its bounds
            rho = EDM_RHO.parse(rho, f"process {self.name!r}")
        except OptionError as exc:
            raise UserError(str(exc)) from None
        self.s_min, self.s_max, self.sigma_data, self.rho = float(s_min), float(s_max), float(sigma_data), float(rho)
        self.prior_mean = check_prior_mean(prior_mean)

    @property
    def kernel_part(self):
        """What the kernel gives besides the denoiser form (:func:`physgen.processes.parts.kernel_part`):
        the score, the SDE, the transition and the Gaussian fields for a Gaussian kernel, nothing else otherwise."""
        return kernel_part(self.kernel)

    @property
    def gaussian(self) -> bool:
        """Whether the kernel is Gaussian (it then offers :data:`GAUSSIAN_NEEDS`)."""
        return bool(self.kernel_part.needs)

    def sigma_of_scale(self, s: Tensor) -> Tensor:
        return s

    # EDM's training law (arXiv 2206.00364, Table 1), a part shared by every process trained
    # at EDM's σ (EDM, PFGM++, Yukawa, telegrapher)
    def set_training_law(self, p_mean, p_std) -> None:
        self.training_law = LogNormalSigma(p_mean, p_std)
        self.p_mean, self.p_std = self.training_law.p_mean, self.training_law.p_std  # the config's keys

    def draw_training_sigma(self, n, *, generator=None, device=None, dtype=None) -> Tensor:
        """``σ = exp(P_mean + P_std ξ)``, ``ξ ~ N(0, 1)`` (:class:`LogNormalSigma`)."""
        return self.training_law.draw(n, generator=generator, device=device, dtype=dtype)

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

    # the field and the ODE
    def denoise(self, field: FieldEstimator, x: Tensor, s: Tensor, label: Optional[Tensor] = None) -> Tensor:
        if field.kind == "denoiser":
            return field(x, s, label)
        return self.kernel_part.denoise(self, field, x, s, label)

    def velocity(self, field: FieldEstimator, x: Tensor, s: Tensor, label: Optional[Tensor] = None) -> Tensor:
        return (x - self.denoise(field, x, s, label)) / expand_as_batch(s, x)

    def score(self, field, x, s, label=None):
        return self.kernel_part.score(self, field, x, s, label)

    def flow(self, field, label=None) -> DenoiserFlow:
        return DenoiserFlow(self, field, label)

    def capabilities(self, **modes) -> frozenset:
        return frozenset({"flow", "denoiser"}) | self.kernel_part.needs

    def offers(self, field, label=None, **modes) -> dict:
        flow = self.flow(field, label)
        return {"flow": flow, "denoiser": flow, **self.kernel_part.offers(self, field, label)}

    def schedule_options(self, name: str) -> dict:
        return {"rho": self.rho} if name == "edm" else {}

    def exact_field(self, points: Tensor, labels: Optional[Tensor] = None) -> ExactField:
        return ExactField(points, self.kernel_part.exact_profile(self), point_labels=labels)

    def analytic_field(self, mixture) -> GaussianMixtureField:
        return self.kernel_part.analytic_field(self, mixture)

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

    @classmethod
    def defaults_for_data(cls, data: Tensor, given: dict) -> dict:
        """Toy defaults that make the prior match the perturbed data's marginal at ``σ_max``.

        * ``prior_mean`` = the data mean: the prior is the kernel at ``σ_max`` around it,
          so the first moment of the marginal ``p_data * k_σ`` is matched exactly;
        * ``sigma_max = 10 √λ_max`` (``λ_max`` the largest eigenvalue of the data covariance):
          along every principal axis the marginal's variance ``λ + σ²`` exceeds the prior's
          ``σ²`` by at most 1% (:data:`PRIOR_VARIANCE_TOLERANCE`; for a Student-t or NIG
          kernel, whose variance per coordinate is larger, by less).  On the 0.2/0.8
          two-mode mixture this moves the left-mode weight of an exact-field sampler from
          0.254 (σ_max = the largest pairwise distance, NCSNv2's rule for Langevin mixing,
          prior at 0) to within 0.01 of 0.2;
        * ``sigma_data`` = the data's std (EDM's definition, for the preconditioning).
        """
        stats = data_scales(data)
        rule = {"prior_mean": stats["mean"], "sigma_data": stats["std"],
                "sigma_max": math.sqrt(stats["lambda_max"] / PRIOR_VARIANCE_TOLERANCE)}
        return {k: v for k, v in rule.items() if given.get(k) is None}

    def config(self) -> dict:
        return {"sigma_min": self.s_min, "sigma_max": self.s_max, "sigma_data": self.sigma_data, "rho": self.rho,
                "prior_mean": self.prior_mean}


class EDMParts(DenoiserProcess):
    """EDM's parts on a radial ``kernel`` (arXiv 2206.00364): ``σ(t) = t``, the training law
    ``ln σ ~ N(P_mean, P_std²)`` (:class:`LogNormalSigma`), the preconditioned denoiser, the
    loss weight ``λ(σ) = (σ²+σ_d²)/(σσ_d)²`` and the ρ-schedule ``σ_i = (σ_max^{1/ρ} +
    i/(K-1)(σ_min^{1/ρ} - σ_max^{1/ρ}))^ρ`` with a final ``σ = 0``.  :class:`EDM` puts them
    on the Gaussian kernel, :class:`physgen.processes.pfgmpp.PFGMpp` on its own."""

    network_kind = "denoiser"

    def __init__(self, kernel, sigma_min=0.002, sigma_max=80.0, sigma_data=0.5, rho=7.0, p_mean=-1.2, p_std=1.2, prior_mean=None):
        super().__init__(sigma_min, sigma_max, sigma_data, rho, prior_mean)
        self.set_training_law(p_mean, p_std)
        self.kernel = kernel

    def sample_scales(self, n, *, generator=None, device=None) -> Tensor:
        return self.draw_training_sigma(n, generator=generator, device=device)

    def config(self) -> dict:
        return {**super().config(), "p_mean": self.p_mean, "p_std": self.p_std}


class EDM(EDMParts):
    """EDM (Karras et al. 2022, arXiv 2206.00364): :class:`EDMParts` on the Gaussian kernel ``N(y, σ² I)``."""

    name = "edm"

    def __init__(self, sigma_min=0.002, sigma_max=80.0, sigma_data=0.5, rho=7.0, p_mean=-1.2, p_std=1.2, prior_mean=None):
        super().__init__(GaussianKernel(), sigma_min, sigma_max, sigma_data, rho, p_mean, p_std, prior_mean)


class VE(DenoiserProcess):
    """VE SDE / SMLD (Song & Ermon 2019, arXiv 1907.05600; Song et al. 2021, arXiv 2011.13456).

    ``x = y + σ ε``, ``σ ∈ [σ_min, σ_max]`` log-uniform for training (``σ(t) =
    σ_min (σ_max/σ_min)^t`` with ``t ~ U[0, 1]``); denoising score matching with ``λ(σ) = σ²``:
    ``L = σ² ‖s_θ(x, σ) + ε/σ‖²``; the network is a score (NCSNv2 scaling ``F/σ``);
    PF-ODE ``dx/dσ = -σ ∇log p_σ(x) = (x - D)/σ``; reverse SDE with ``g² = 2σ``.
    """

    name = "ve"
    network_kind = "score"

    def __init__(self, sigma_min=0.01, sigma_max=50.0, sigma_data=0.5, rho=7.0, prior_mean=None):
        super().__init__(sigma_min, sigma_max, sigma_data, rho, prior_mean)
        self.training_law = LogUniformSigma(self.s_min, self.s_max)

    def sample_scales(self, n, *, generator=None, device=None) -> Tensor:
        return self.training_law.draw(n, generator=generator, device=device)

    def loss(self, field, y, *, generator=None, label=None) -> Tensor:
        s = self.sample_scales(y.shape[0], generator=generator, device=y.device).to(y.dtype)
        return score_matching_loss(self, field, y, s, generator=generator, label=label)

    def precondition(self, net, sigma_data: Optional[float] = None) -> NeuralField:
        return NeuralField(net, ScorePreconditioning(self.sigma_data if sigma_data is None else sigma_data))


class SigmaForm(CoordinateChange, DenoiserFlow):
    """Any affine Gaussian path ``x = a(s) y + b(s) ε`` in EDM's denoiser form (arXiv
    2206.00364, eq. 4 with ``s(t) = a(t)``, ``σ(t) = b(t)/a(t)``): with ``x̄ = x/a``,

        dx̄/dσ = (x̄ - D(a x̄, s(σ)))/σ,

    so every denoiser-form solver integrates the path.  The path (a :class:`GaussianMarginal`)
    gives ``coefficients(s) -> (a, b)``, ``equivalent_sigma(s) = b/a``, its inverse
    ``t_of_sigma(σ)`` and ``signal_of_sigma(σ) = a(s(σ))`` (closed forms; VP's hold for its
    linear, cosine and discrete β).  The coordinate change is the
    offer's (:class:`solvers.offers.CoordinateChange`): :meth:`to_solver` maps the prior
    draws ``x -> x/a(s_0)`` and the grid ``s -> σ(s)``; :meth:`from_solver` maps the result
    back, ``x = a(s_K) x̄``, and a recorded trajectory at the σ of each state (the grid's,
    or the solver's own, ``stats.extra["grid"]``: dpm-fast) by ``x = a(σ) x̄``."""

    def to_solver(self, x: Tensor, schedule: Tensor) -> tuple[Tensor, Tensor]:
        t = torch.as_tensor(schedule, dtype=torch.float64).cpu()
        return x / float(self._signal(t)[0]), self.process.equivalent_sigma(t)

    def from_solver(self, solution: Solution, schedule: Tensor) -> Solution:
        t = torch.as_tensor(schedule, dtype=torch.float64).cpu()
        x = solution.x
        solution.x = x * float(self._signal(t)[-1])
        traj = solution.stats.trajectory
        points = torch.as_tensor(solution.stats.extra.get("grid", self.process.equivalent_sigma(t)), dtype=torch.float64)
        if traj is not None and points.shape[0] == traj.shape[0]:
            scale = self.process.signal_of_sigma(points).double().to(x.device, x.dtype)
            solution.stats.trajectory = traj * scale.reshape(-1, *[1] * (x.dim()))
        return solution

    def _signal(self, t: Tensor) -> Tensor:
        return self.process.coefficients(t.double())[0].double()

    def denoise(self, xbar: Tensor, sigma: Tensor) -> Tensor:
        t = self.process.t_of_sigma(sigma)
        a = self.process.coefficients(t)[0]
        return self.process.denoise(self.field, expand_as_batch(a, xbar) * xbar, t, self.label)


class AffineGaussianPath(GaussianMarginal, Process):
    """What every affine Gaussian path ``x = a(s) y + b(s) ε`` on ``s ∈ [s_min, s_max]`` shares,
    whatever its network predicts (VP; the flow-matching paths of
    :mod:`physgen.processes.flow_matching`): the perturbation, training times ``s ~ U[s_min,
    s_max]``, the prior ``N(a(s_max) prior_mean, b(s_max)² I)``, the offers (the flow, the
    denoiser form through :class:`SigmaForm`, the score-based samplers through
    :class:`GaussianSDE`), and the exact and analytic fields (the path's posterior mean).
    Subclasses give ``coefficients``, ``signal_of_sigma``/``t_of_sigma`` (for :class:`SigmaForm`),
    ``drift_coefficient``/``diffusion_squared``, ``velocity``, ``loss`` and ``precondition``."""

    prior_mean: Optional[list] = None

    def sample_scales(self, n, *, generator=None, device=None) -> Tensor:
        return self.s_min + (self.s_max - self.s_min) * torch.rand(n, generator=generator, device=device)

    def perturb(self, y, s, *, generator=None) -> Tensor:
        a, b = self.coefficients(s)
        eps = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
        return expand_as_batch(a, y) * y + expand_as_batch(b, y) * eps

    def sample_prior(self, shape, *, generator=None, noise=None, device=None, dtype=torch.float32) -> Tensor:
        shape = tuple(shape)
        a, b = (float(v) for v in self.coefficients(torch.tensor([self.s_max], dtype=torch.float64)))
        x = draw(shape, lambda n, g: torch.randn((n, *shape[1:]), generator=g, device=device, dtype=torch.float64).mul_(b).to(dtype),
                 generator=generator, noise=noise, device=device)
        return x if self.prior_mean is None else x + a * prior_centre(self.prior_mean, x)

    def prior_log_prob(self, x: Tensor) -> Tensor:
        """``log N(x; a(s_max) prior_mean, b(s_max)² I)``."""
        a, b = (float(v) for v in self.coefficients(torch.tensor([self.s_max], dtype=torch.float64)))
        offset = x.double() if self.prior_mean is None else x.double() - a * prior_centre(self.prior_mean, x.double())
        n = x[0].numel()
        sq = offset.reshape(x.shape[0], -1).pow(2).sum(1)
        return -0.5 * sq / b**2 - 0.5 * n * math.log(2 * math.pi * b**2)

    def capabilities(self, **modes) -> frozenset:
        return frozenset({"flow", "denoiser"}) | GAUSSIAN_NEEDS

    def offers(self, field, label=None, **modes) -> dict:
        view = self.gaussian_view(field, label)
        return {"flow": ProcessFlow(self, field, label), "denoiser": SigmaForm(self, field, label), "sde": view, "transition": view,
                "score": view}

    def exact_field(self, points, labels=None) -> ExactField:
        return ExactField(points, GaussianProfile(self.coefficients), alpha=lambda t: self.coefficients(t)[0], point_labels=labels)

    def analytic_field(self, mixture) -> GaussianMixtureField:
        return GaussianMixtureField(mixture, self.coefficients)

    @classmethod
    def defaults_for_data(cls, data: Tensor, given: dict) -> dict:
        """``prior_mean`` = the data mean (the prior is then ``N(a(s_max) μ, b(s_max)² I)``, whose
        mean is the marginal's); ``s_max`` stays the path's (its ``a(s_max)`` decides how large a
        data variance the prior's variance matches: see each path)."""
        return {} if given.get("prior_mean") is not None else {"prior_mean": data_scales(data)["mean"]}


class VP(AffineGaussianPath):
    """VP SDE / DDPM (Ho et al. 2020, arXiv 2006.11239; Song et al. 2021, arXiv 2011.13456).

    ``x = a(t) y + b(t) ε`` with ``a = exp(-½∫₀ᵗβ)``, ``b = √(1 - a²)``;
    forward SDE ``dx = -½β(t) x dt + √β(t) dW``.  ``linear``: ``β(t) = β_min + t(β_max - β_min)``.
    ``cosine`` (Nichol & Dhariwal, arXiv 2102.09672): ``a² = f(t)/f(0)``,
    ``f(t) = cos²((t+c)/(1+c) · π/2)``, ``β = -d ln a²/dt``; ``β → ∞`` at ``t = 1``, so the
    cosine schedule stops at ``t_max = 0.999``.  ``discrete`` (DDPM's ``T`` steps ``betas``,
    :mod:`physgen.processes.discrete_vp`): ``a² = ᾱ_τ`` at ``t = (τ+1)/T``, ``log a²``
    linear in between.  Loss: ``‖ε_θ(x, t) - ε‖²`` with
    ``t ~ U[t_eps, t_max]``.  Prior: the kernel at ``t_max`` around ``prior_mean`` (default
    0), ``N(a(t_max) prior_mean, b(t_max)² I)``.  The default grid is EDM's ρ-schedule
    (arXiv 2206.00364, eq. 5, ρ = 7) laid in ``t`` from ``t_max`` to ``t_eps``, ``steps + 1``
    points: below ``σ = b/a ≈ 1.5`` its steps are nearly equal in ``log σ`` (linear β: 0.34-0.36 at 18
    steps).  Score SDE's grid, uniform in ``t`` (``--schedule vp-time``), is built for 1000
    steps: at 18 its last step spans σ 0.195 -> 0.0105 (``log σ`` 2.92), where Heun's second
    stage turns the contraction ``σ₂/σ₁ = 0.054`` into -0.59 and scatters samples (two-mode
    toy, exact field, 4000 samples: 3 beyond 2 of a mode's centre, per-mode sliced W2 0.091;
    with this grid 0.021 and none beyond 1.26, as ``dopri5``).  Toy default ``prior_mean`` = the data
    mean (:meth:`AffineGaussianPath.defaults_for_data`); linear β: ``a(1)² = 4.4e-5``, so the
    marginal's variance ``a² λ + b²`` matches ``b²`` within 1% for data variances ``λ`` up to 227.
    """

    name = "vp"
    network_kind = "eps"

    def __init__(self, beta_schedule: str = "linear", beta_min: float = 0.1, beta_max: float = 20.0, t_eps: float = 1e-3,
                 t_max: Optional[float] = None, cosine_offset: float = 0.008, prior_mean=None, betas: Optional[list] = None):
        if beta_schedule not in ("linear", "cosine", "discrete"):
            raise UserError(f"unknown VP beta schedule {beta_schedule!r}; valid: cosine, discrete, linear")
        if (beta_schedule == "discrete") != (betas is not None):
            raise UserError("betas (DDPM's discrete schedule) go with beta_schedule='discrete', and only with it")
        self.discrete = DiscreteBetas(betas) if betas is not None else None
        for name, v in (("beta_min", beta_min), ("beta_max", beta_max), ("t_eps", t_eps), ("cosine_offset", cosine_offset)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise UserError(f"{name} must be a finite number, got {v!r}")
        if not 0 <= beta_min < beta_max <= 1e4:
            raise UserError(f"need 0 <= beta_min < beta_max <= 1e4, got beta_min={beta_min}, beta_max={beta_max}")
        t_max = (0.999 if beta_schedule == "cosine" else 1.0) if t_max is None else t_max
        if isinstance(t_max, bool) or not isinstance(t_max, (int, float)) or not 0 < t_eps < t_max <= 1:
            raise UserError(f"need 0 < t_eps < t_max <= 1, got t_eps={t_eps}, t_max={t_max}")
        if not 0 < cosine_offset < 1:
            raise UserError(f"cosine_offset must be in (0, 1), got {cosine_offset}")
        self.beta_schedule, self.beta_min, self.beta_max, self.cosine_offset = beta_schedule, float(beta_min), float(beta_max), float(cosine_offset)
        self.s_min, self.s_max = float(t_eps), float(t_max)
        self.prior_mean = check_prior_mean(prior_mean)
        self.training_law = UniformTime(self.s_min, self.s_max)

    default_schedule_name = "edm"  # laid in t (class docstring); vp-time's last Heun step scatters samples

    def _log_alpha(self, t: Tensor) -> Tensor:
        if self.discrete is not None:
            return 0.5 * self.discrete.log_alpha_bar(t)
        if self.beta_schedule == "linear":
            return -0.5 * (self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2)
        c = self.cosine_offset
        return torch.log(torch.cos((t + c) / (1 + c) * math.pi / 2) / math.cos(c / (1 + c) * math.pi / 2))

    def beta(self, t: Tensor) -> Tensor:
        if self.discrete is not None:
            return self.discrete.beta(t)
        if self.beta_schedule == "linear":
            return self.beta_min + t * (self.beta_max - self.beta_min)
        c = self.cosine_offset
        return math.pi / (1 + c) * torch.tan((t + c) / (1 + c) * math.pi / 2)

    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor]:
        a = self._log_alpha(t.double()).exp()
        return a.to(t.dtype), (1 - a**2).clamp_min(0).sqrt().to(t.dtype)

    def signal_of_sigma(self, sigma: Tensor) -> Tensor:
        """``a = 1/√(1 + σ²)`` at ``σ = b/a``: variance preserving, ``a² + b² = 1``."""
        return (1.0 + sigma.double() ** 2).rsqrt()

    def t_of_sigma(self, sigma: Tensor) -> Tensor:
        """The time with ``b(t)/a(t) = σ``: ``-log a² = log(1 + σ²)`` solved in closed form."""
        log1p = torch.log1p(sigma.double() ** 2)
        if self.discrete is not None:
            return self.discrete.t_of_log_alpha_bar(-log1p).to(sigma.dtype)
        if self.beta_schedule == "linear":
            d = self.beta_max - self.beta_min
            t = 2.0 * log1p / (self.beta_min + torch.sqrt(self.beta_min**2 + 2.0 * d * log1p))
        else:
            c = self.cosine_offset
            theta0 = c / (1 + c) * math.pi / 2
            t = (1 + c) * 2.0 / math.pi * torch.arccos(math.cos(theta0) * torch.exp(-0.5 * log1p)) - c
        return t.to(sigma.dtype)

    def drift_coefficient(self, t: Tensor) -> Tensor:
        return -0.5 * self.beta(t)

    def diffusion_squared(self, t: Tensor) -> Tensor:
        return self.beta(t)

    def sample_scales(self, n, *, generator=None, device=None) -> Tensor:
        return self.training_law.draw(n, generator=generator, device=device)

    def loss(self, field, y, *, generator=None, label=None) -> Tensor:
        t = self.sample_scales(y.shape[0], generator=generator, device=y.device).to(y.dtype)
        return eps_matching_loss(self, field, y, t, generator=generator, label=label)

    def velocity(self, field, x, s, label=None) -> Tensor:
        f = expand_as_batch(self.drift_coefficient(s), x)
        g2 = expand_as_batch(self.diffusion_squared(s), x)
        return f * x - 0.5 * g2 * self.score(field, x, s, label)

    def precondition(self, net, sigma_data: float = 0.5) -> NeuralField:
        return NeuralField(net, EpsPreconditioning(self.coefficients, sigma_data))

    def config(self) -> dict:
        out = {"beta_schedule": self.beta_schedule, "beta_min": self.beta_min, "beta_max": self.beta_max, "t_eps": self.s_min,
               "t_max": self.s_max, "cosine_offset": self.cosine_offset, "prior_mean": self.prior_mean}
        return out if self.discrete is None else {**out, "betas": self.discrete.config()}
