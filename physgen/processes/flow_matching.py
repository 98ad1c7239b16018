"""Flow matching on affine Gaussian paths: rectified flow, the VP path and the cosine path.

Data ``y`` and noise ``z ~ N(0, I)`` are joined by the path (time ``t``: 0 data, 1 noise,
physgen's convention: generation runs from ``t_max`` down to ``t_eps``)

    x_t = a(t) y + b(t) z,        u_t = dx_t/dt = a'(t) y + b'(t) z,

and a network regresses the velocity (conditional flow matching, Lipman et al., arXiv
2210.02747, eq. 9 and §4.1; rectified flow, Liu et al., arXiv 2209.03003, eq. 1):

    L(θ) = E_{t ~ U[t_eps, t_max], (y, z) ~ π} ‖u_θ(x_t, t) - (a' y + b' z)‖².

Its minimiser is ``u*(x, t) = E[a' y + b' z | x_t = x] = a' D + b' (x - a D)/b`` with
``D = E[y | x_t = x]`` the path's posterior mean: so the exact field of a point set and the
analytic field of a Gaussian mixture are the Gaussian posterior means of
:mod:`physgen.fields.exact` and :mod:`physgen.fields.analytic` on ``(a, b)``, and the
denoiser form (:class:`~physgen.processes.gaussian.SigmaForm`, ``σ = b/a``, ``x̄ = x/a``)
hands the path to every denoiser-form solver.  The paths:

* ``rectified-flow``: ``a = 1 - t``, ``b = t`` (the CondOT path of 2210.02747 §4.1 with
  ``σ_min = 0``; rectified flow's linear interpolation, 2209.03003): ``σ = t/(1-t)``;
* ``fm-vp``: VP's path (``a = exp(-½∫β)``, ``b = √(1-a²)``; 2210.02747 §4.1, "VP
  diffusion path"), :class:`~physgen.processes.gaussian.VP` with a velocity network;
* ``fm-cosine``: ``a = cos(πt/2)``, ``b = sin(πt/2)`` (the trigonometric interpolant of
  Albergo & Vanden-Eijnden, arXiv 2209.15571; arXiv 2303.08797, §3): ``σ = tan(πt/2)``.

With the independent coupling ``π = p_data × N(0, I)`` the path is Gaussian given ``y``, so
Tweedie's formula gives the score ``(a D - x)/b²`` and with it the reverse SDE of the
forward SDE with the same marginals (``f = a'/a``, ``g² = 2 b b' - 2 f b²``; score SDE,
arXiv 2011.13456): the stochastic samplers of the table.  A coupled ``π`` (minibatch OT,
arXiv 2302.00482) keeps the posterior-mean relation (it uses only ``x = a y + b z``) but not
the score: such a process offers the flow and the denoiser form only, and refuses the score
naming its coupling.  The likelihood integrates the PF-ODE (:mod:`physgen.likelihood`)
from the prior ``N(a(t_max) μ, b(t_max)² I)``.

At ``t = 1`` (``a = 0``) the denoiser form is singular (``σ = ∞``), so paths stop at
``t_max = 0.999`` (``σ_max = 999`` for rectified flow) as VP's cosine schedule does, and at
``t_eps = 1e-3`` where ``b = 0`` would make the velocity of an exact field 0/0.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from ..errors import UserError
from ..fields.kinds import FieldEstimator, convert_gaussian, expand_as_batch
from ..fields.neural import NeuralField, VelocityPreconditioning
from .base import NoScoreError, check_prior_mean, check_scale_range
from .couplings import COUPLINGS, DEFAULT_SINKHORN_EPS, couple
from .gaussian import GAUSSIAN_NEEDS, VP, AffineGaussianPath, data_scales

__all__ = ["FlowMatchingPath", "RectifiedFlow", "FMCosine", "FMVP"]


class FlowMatchingPath(AffineGaussianPath):
    """An affine Gaussian path with a velocity network (module docstring).

    Subclasses give ``coefficients(t) -> (a, b)``, ``derivatives(t) -> (a', b')``,
    ``t_of_sigma`` and ``signal_of_sigma``."""

    network_kind = "velocity"
    default_schedule_name = "edm"  # laid in t, as VP's: small steps near the data, where the field turns
    coupling = "independent"
    sinkhorn_eps = DEFAULT_SINKHORN_EPS

    def set_coupling(self, coupling, sinkhorn_eps) -> None:
        """The training coupling (:mod:`physgen.processes.couplings`) and its ``ε`` (sinkhorn only)."""
        if coupling not in COUPLINGS:
            raise UserError(f"unknown coupling {coupling!r}; valid: {', '.join(COUPLINGS)}")
        if sinkhorn_eps is not None and coupling != "sinkhorn":
            raise UserError(f"sinkhorn_eps (--sinkhorn-eps) applies to the sinkhorn coupling, not {coupling!r}")
        eps = DEFAULT_SINKHORN_EPS if sinkhorn_eps is None else sinkhorn_eps
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (math.isfinite(eps) and 1e-3 <= eps <= 1e4):
            raise UserError(f"sinkhorn_eps (--sinkhorn-eps) must be a number in [1e-3, 1e4] (relative to the mean cost), got {eps!r}")
        self.coupling, self.sinkhorn_eps = coupling, float(eps)

    def coupling_config(self) -> dict:
        return {"coupling": self.coupling, **({"sinkhorn_eps": self.sinkhorn_eps} if self.coupling == "sinkhorn" else {})}

    def describe(self) -> str:
        """The name, and a coupled path's reason for offering no score (named in solver refusals)."""
        if self.coupling == "independent":
            return super().describe()
        return f"{self.name!r} (trained with the {self.coupling!r} coupling: not Gaussian given the data, no score)"

    def path(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(a, b, a', b')`` at ``t``."""
        return (*self.coefficients(t), *self.derivatives(t))

    def convert(self, field: FieldEstimator, x: Tensor, t: Tensor, label, target: str) -> Tensor:
        """The field's output at ``(x, t)`` as ``target`` (``velocity``, ``denoiser``, ...) on this path."""
        return convert_gaussian(field(x, t, label), field.kind, target, x, *self.path(t))

    def velocity(self, field, x, s, label=None) -> Tensor:
        return self.convert(field, x, s, label, "velocity")

    def denoise(self, field, x, s, label=None) -> Tensor:
        return self.convert(field, x, s, label, "denoiser")

    def score(self, field, x, s, label=None) -> Tensor:
        if self.coupling != "independent":
            raise NoScoreError(f"process {self.describe()}: use an ODE solver")
        return self.convert(field, x, s, label, "score")

    def drift_coefficient(self, t: Tensor) -> Tensor:
        """``f = a'/a``: the forward SDE ``dx = f x dt + g dW`` with this path's marginals."""
        a, _ = self.coefficients(t)
        return self.derivatives(t)[0] / a

    def diffusion_squared(self, t: Tensor) -> Tensor:
        """``g² = 2 b b' - 2 f b²``."""
        a, b = self.coefficients(t)
        da, db = self.derivatives(t)
        return 2.0 * b * db - 2.0 * (da / a) * b**2

    def capabilities(self, **modes) -> frozenset:
        both = frozenset({"flow", "denoiser"})
        return both | GAUSSIAN_NEEDS if self.coupling == "independent" else both

    def offers(self, field, label=None, **modes) -> dict:
        out = super().offers(field, label)
        return {need: offer for need, offer in out.items() if need in self.capabilities()}

    def loss(self, field, y, *, generator=None, label=None) -> Tensor:
        """``‖u_θ(x_t, t) - (a' y + b' z)‖²`` per sample, ``t ~ U[t_eps, t_max]``, ``z ~ N(0, I)`` paired
        with ``y`` by the coupling (:func:`physgen.processes.couplings.couple`)."""
        t = self.sample_scales(y.shape[0], generator=generator, device=y.device).to(y.dtype)
        z = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
        y, z = couple(y, z, self.coupling, self.sinkhorn_eps, generator)
        return self.regression(field, y, z, t, label)

    def regression(self, field, y: Tensor, z: Tensor, t: Tensor, label=None) -> Tensor:
        """``‖u_θ(x_t, t) - (a' y + b' z)‖²`` for given pairs ``(y, z)`` and times ``t``."""
        a, b, da, db = (expand_as_batch(v, y) for v in self.path(t))
        u = self.velocity(field, a * y + b * z, t, label)
        return (u - (da * y + db * z)).reshape(y.shape[0], -1).pow(2).mean(1)

    def precondition(self, net, sigma_data: Optional[float] = None) -> NeuralField:
        """:class:`~physgen.fields.neural.VelocityPreconditioning` at the process's ``sigma_data``
        (recorded in checkpoints, so a rebuilt field is the trained one)."""
        return NeuralField(net, VelocityPreconditioning(self.path, self.sigma_data if sigma_data is None else sigma_data))

    def set_sigma_data(self, sigma_data) -> None:
        if isinstance(sigma_data, bool) or not isinstance(sigma_data, (int, float)) or not (math.isfinite(sigma_data) and sigma_data > 0):
            raise UserError(f"sigma_data must be a positive number, got {sigma_data!r}")
        self.sigma_data = float(sigma_data)

    @classmethod
    def defaults_for_data(cls, data: Tensor, given: dict) -> dict:
        """The prior's centre (:meth:`AffineGaussianPath.defaults_for_data`) and ``sigma_data`` = the
        data's std (EDM's definition, for the velocity preconditioning)."""
        out = super().defaults_for_data(data, given)
        return out if given.get("sigma_data") is not None else {**out, "sigma_data": data_scales(data)["std"]}


class AffineFlow(FlowMatchingPath):
    """The options shared by the closed-form paths: ``t ∈ [t_eps, t_max]``, the prior's centre, the
    coupling, and ``sigma_data`` for the preconditioning (toy default: the data's std)."""

    def __init__(self, t_eps: float = 1e-3, t_max: float = 0.999, prior_mean=None, coupling: str = "independent",
                 sinkhorn_eps: Optional[float] = None, sigma_data: float = 0.5):
        check_scale_range("t_eps", t_eps, "t_max", t_max)
        if t_max >= 1:
            raise UserError(f"t_max must be < 1 (at t = 1 the path holds no data and σ = b/a is infinite), got {t_max}")
        self.s_min, self.s_max = float(t_eps), float(t_max)
        self.prior_mean = check_prior_mean(prior_mean)
        self.set_coupling(coupling, sinkhorn_eps)
        self.set_sigma_data(sigma_data)

    def config(self) -> dict:
        return {"t_eps": self.s_min, "t_max": self.s_max, "prior_mean": self.prior_mean, "sigma_data": self.sigma_data,
                **self.coupling_config()}


class RectifiedFlow(AffineFlow):
    """Rectified flow / CondOT: ``x_t = (1 - t) y + t z``, ``u = z - y`` (arXiv 2209.03003,
    2210.02747); ``σ = t/(1-t)``, so ``t = σ/(1+σ)`` and ``a = 1/(1+σ)``."""

    name = "rectified-flow"

    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return 1.0 - t, t

    def derivatives(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return -torch.ones_like(t), torch.ones_like(t)

    def t_of_sigma(self, sigma: Tensor) -> Tensor:
        return sigma / (1.0 + sigma)

    def signal_of_sigma(self, sigma: Tensor) -> Tensor:
        return 1.0 / (1.0 + sigma.double())


class FMCosine(AffineFlow):
    """The cosine path ``x_t = cos(πt/2) y + sin(πt/2) z`` (arXiv 2209.15571, 2303.08797):
    ``σ = tan(πt/2)``, ``t = (2/π) atan σ``, ``a = 1/√(1+σ²)``."""

    name = "fm-cosine"

    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return torch.cos(0.5 * math.pi * t), torch.sin(0.5 * math.pi * t)

    def derivatives(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return -0.5 * math.pi * torch.sin(0.5 * math.pi * t), 0.5 * math.pi * torch.cos(0.5 * math.pi * t)

    def t_of_sigma(self, sigma: Tensor) -> Tensor:
        return torch.atan(sigma) * (2.0 / math.pi)

    def signal_of_sigma(self, sigma: Tensor) -> Tensor:
        return (1.0 + sigma.double() ** 2).rsqrt()


class FMVP(FlowMatchingPath, VP):
    """Flow matching on VP's path (arXiv 2210.02747, §4.1): VP's ``(a, b)`` and options, a
    velocity network; ``a' = -½β a``, ``b' = -a a'/b = ½β a²/b`` (from ``a² + b² = 1``)."""

    name = "fm-vp"

    def __init__(self, beta_schedule: str = "linear", beta_min: float = 0.1, beta_max: float = 20.0, t_eps: float = 1e-3,
                 t_max: Optional[float] = None, cosine_offset: float = 0.008, prior_mean=None, betas: Optional[list] = None,
                 coupling: str = "independent", sinkhorn_eps: Optional[float] = None, sigma_data: float = 0.5):
        super().__init__(beta_schedule, beta_min, beta_max, t_eps, t_max, cosine_offset, prior_mean, betas)
        self.set_coupling(coupling, sinkhorn_eps)
        self.set_sigma_data(sigma_data)

    def derivatives(self, t: Tensor) -> tuple[Tensor, Tensor]:
        a, b = self.coefficients(t)
        da = -0.5 * self.beta(t) * a
        return da, -a * da / b

    def config(self) -> dict:
        return {**super().config(), "sigma_data": self.sigma_data, **self.coupling_config()}
