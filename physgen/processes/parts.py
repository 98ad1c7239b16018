"""The parts a diffusion process is composed of besides its path: what its kernel gives, the law
of the scales it trains at, and its loss.

* **Kernel parts.**  A denoiser-form process (:class:`physgen.processes.gaussian.DenoiserProcess`)
  perturbs with a radial kernel; which one decides what else it offers.  :class:`GaussianKernelPart`
  (a Gaussian kernel, ``x = y + σ ε``): Tweedie's score ``∇log p = (D - x)/σ²`` and every field
  kind through it, the reverse SDE and the exact transition (:data:`GAUSSIAN_NEEDS`), the exact and
  the analytic field from the Gaussian marginal.  :class:`RadialKernelPart` (Student-t, NIG, Kac,
  ...): the denoiser form alone; the score is refused (no Tweedie formula for the kernel), and so
  is a field of another kind than ``denoiser``.  :func:`kernel_part` picks the part once from the
  kernel's own declaration (its ``gaussian`` attribute).
* **Training laws** (``draw(n) -> s``): EDM's ``ln σ ~ N(P_mean, P_std²)`` (:class:`LogNormalSigma`,
  arXiv 2206.00364, Table 1), SMLD/VE's log-uniform ``σ`` (:class:`LogUniformSigma`, arXiv
  2011.13456, App. C) and DDPM/VP's uniform time (:class:`UniformTime`, arXiv 2011.13456, eq. 7).
* **Losses** (per sample, the process's weighting): EDM's denoiser loss is
  :meth:`DenoiserProcess.loss`; :func:`score_matching_loss` (VE: ``σ² ‖s_θ + ε/σ‖²``) and
  :func:`eps_matching_loss` (VP: ``‖ε_θ - ε‖²``).

The preconditionings are parts of :mod:`physgen.fields.neural` (``DenoiserPreconditioning``,
``ScorePreconditioning``, ``EpsPreconditioning``), each chosen by its process's ``precondition``.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import UserError
from ..fields.analytic import GaussianMixtureField
from ..fields.exact import GaussianProfile
from ..fields.kinds import FieldEstimator, convert_gaussian, expand_as_batch
from .base import NoScoreError, Process

__all__ = ["GAUSSIAN_NEEDS", "GaussianKernelPart", "RadialKernelPart", "kernel_part", "gaussian_score", "gaussian_denoise",
           "LogNormalSigma", "LogUniformSigma", "UniformTime", "score_matching_loss", "eps_matching_loss"]

GAUSSIAN_NEEDS = frozenset({"sde", "transition", "score", "gaussian"})
"""What a Gaussian kernel adds to the needs a process meets (:mod:`solvers.spec`)."""


def gaussian_score(process, field: FieldEstimator, x: Tensor, s: Tensor, label=None) -> Tensor:
    """``∇log p_s(x)`` from a field of any kind on the Gaussian marginal ``x = a y + b ε`` of ``process``."""
    a, b = process.coefficients(s)
    return convert_gaussian(field(x, s, label), field.kind, "score", x, a, b)


def gaussian_denoise(process, field: FieldEstimator, x: Tensor, s: Tensor, label=None) -> Tensor:
    """``E[y | x]`` (Tweedie) from a field of any kind on the Gaussian marginal of ``process``."""
    a, b = process.coefficients(s)
    return convert_gaussian(field(x, s, label), field.kind, "denoiser", x, a, b)


class GaussianKernelPart:
    """What a Gaussian kernel gives a denoiser-form process (module docstring)."""

    needs = GAUSSIAN_NEEDS

    def denoise(self, process, field, x, s, label=None) -> Tensor:
        return gaussian_denoise(process, field, x, s, label)

    def score(self, process, field, x, s, label=None) -> Tensor:
        return gaussian_score(process, field, x, s, label)

    def offers(self, process, field, label=None) -> dict:
        view = process.gaussian_view(field, label)
        return {"sde": view, "transition": view, "score": view}

    def exact_profile(self, process):
        return GaussianProfile(process.coefficients)

    def analytic_field(self, process, mixture) -> GaussianMixtureField:
        return GaussianMixtureField(mixture, process.coefficients)


class RadialKernelPart:
    """What a radial kernel that is not Gaussian gives: the denoiser form alone (module docstring)."""

    needs = frozenset()

    def denoise(self, process, field, x, s, label=None) -> Tensor:
        raise UserError(f"process {process.name!r} needs a denoiser field, got a {field.kind!r} field")

    def score(self, process, field, x, s, label=None) -> Tensor:
        raise NoScoreError(f"process {process.describe()} has no score: its kernel is not Gaussian")

    def offers(self, process, field, label=None) -> dict:
        return {}

    def exact_profile(self, process):
        return process.kernel.log_profile

    def analytic_field(self, process, mixture):
        return Process.analytic_field(process, mixture)  # the refusal: no Gaussian-mixture field


GAUSSIAN_PART, RADIAL_PART = GaussianKernelPart(), RadialKernelPart()


def kernel_part(kernel):
    """The part ``kernel`` gives: :class:`GaussianKernelPart` where the kernel declares itself
    Gaussian (``kernel.gaussian``), else :class:`RadialKernelPart`."""
    return GAUSSIAN_PART if getattr(kernel, "gaussian", False) else RADIAL_PART


class LogNormalSigma:
    """EDM's training law (arXiv 2206.00364, Table 1): ``ln σ ~ N(P_mean, P_std²)``."""

    def __init__(self, p_mean, p_std):
        ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (p_mean, p_std))
        if not (ok and p_std > 0):
            raise UserError(f"need a finite p_mean and p_std > 0, got p_mean={p_mean!r}, p_std={p_std!r}")
        self.p_mean, self.p_std = float(p_mean), float(p_std)

    def draw(self, n, *, generator=None, device=None, dtype=None) -> Tensor:
        """``σ = exp(P_mean + P_std ξ)``, ``ξ ~ N(0, 1)``."""
        xi = torch.randn(n, generator=generator, device=device, dtype=dtype)
        return (self.p_mean + self.p_std * xi).exp()


class LogUniformSigma:
    """SMLD / VE's training law (arXiv 2011.13456, App. C): ``σ = σ_min (σ_max/σ_min)^u``, ``u ~ U[0, 1)``."""

    def __init__(self, s_min: float, s_max: float):
        self.s_min, self.s_max = float(s_min), float(s_max)

    def draw(self, n, *, generator=None, device=None) -> Tensor:
        u = torch.rand(n, generator=generator, device=device)
        return self.s_min * (self.s_max / self.s_min) ** u


class UniformTime:
    """DDPM / VP's training law (arXiv 2011.13456, eq. 7): ``t ~ U[t_eps, t_max)``."""

    def __init__(self, t_eps: float, t_max: float):
        self.t_eps, self.t_max = float(t_eps), float(t_max)

    def draw(self, n, *, generator=None, device=None) -> Tensor:
        return self.t_eps + (self.t_max - self.t_eps) * torch.rand(n, generator=generator, device=device)


def score_matching_loss(process, field, y: Tensor, s: Tensor, *, generator=None, label=None) -> Tensor:
    """VE's denoising score matching with ``λ(σ) = σ²`` (arXiv 2011.13456, eq. 7):
    ``σ² ‖s_θ(y + σ ε, σ) + ε/σ‖² = ‖σ s_θ + ε‖²`` per sample (mean over coordinates)."""
    eps = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
    sig = expand_as_batch(s, y)
    score = process.score(field, y + sig * eps, s, label)
    return (sig * score + eps).reshape(y.shape[0], -1).pow(2).mean(1)


def eps_matching_loss(process, field, y: Tensor, t: Tensor, *, generator=None, label=None) -> Tensor:
    """DDPM's simple loss (arXiv 2006.11239, eq. 14): ``‖ε_θ(a y + b ε, t) - ε‖²`` per sample
    (mean over coordinates), a field of any kind converted to ``ε`` on the Gaussian marginal."""
    a, b = process.coefficients(t)
    eps = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
    x = expand_as_batch(a, y) * y + expand_as_batch(b, y) * eps
    eps_hat = convert_gaussian(field(x, t, label), field.kind, "eps", x, a, b)
    return (eps_hat - eps).reshape(y.shape[0], -1).pow(2).mean(1)
