"""Stochastic interpolants (Albergo, Boffi & Vanden-Eijnden, arXiv 2303.08797) with a Gaussian base.

The interpolant joins data ``y``, noise ``z ~ N(0, I)`` and a latent ``w ~ N(0, I)``:

    x_t = α(t) y + β(t) z + γ(t) w,      t ∈ [t_eps, t_max] (0 data, 1 noise),

with ``α = 1 - t``, ``β = t`` (``path="linear"``) or ``α = cos(πt/2)``, ``β = sin(πt/2)``
(``"trig"``), and a named ``γ`` vanishing at both ends: ``"bridge"``, ``γ = √(c t(1-t))``
(their eq. 2.23 family), or ``"zero"`` (the deterministic interpolant, then ``x_t`` is
the flow-matching path of :mod:`physgen.processes.flow_matching`).

With ``z`` and ``w`` independent Gaussians and independent of ``y``, ``β z + γ w`` is
``b ε`` with ``b = √(β² + γ²)``: given ``y`` the interpolant is the affine Gaussian path
``x = α y + b ε``, and the velocity ``E[α' y + β' z + γ' w | x]`` is its velocity
``a' D + b' (x - a D)/b`` with ``b' = (β β' + γ γ')/b`` (``E[β' z + γ' w | x, y] =
(b'/b)(x - a y)``).  So the exact and analytic fields, the denoiser form (``σ = b/a``, its
inverse by bisection) and the velocity loss are the affine path's; the loss regresses on
``a' y + b' ε``, which has the same minimiser as the three-term target and a smaller
variance (its conditional expectation given ``(y, x)``; 2303.08797 §2.3 trains ``b`` so).

The SDE family (2303.08797, Thm. 2.21 and eq. 2.33): for any ``ε(t) >= 0``

    dx = [v(x, t) - ε(t) ∇log ρ_t(x)] dt + √(2 ε(t)) dW̄     (t decreasing)

has the interpolant's marginals (``v`` the velocity, the score from the same field by
Tweedie).  ``epsilon=None`` is the path's own reverse SDE (``ε = g²/2``, with the exact
Gaussian transition for ``ddpm`` and ``pc``); a number ``ε`` is the user's constant diffusion
coefficient, offered to the SDE solvers (``euler-maruyama``) only.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from ..errors import UserError
from .flow_matching import AffineFlow
from .gaussian import GaussianSDE

__all__ = ["Interpolant", "InterpolantSDE", "GAMMAS", "PATHS"]

PATHS = ("linear", "trig")
GAMMAS = ("bridge", "zero")


class InterpolantSDE(GaussianSDE):
    """``drift = v - ε score``, ``diffusion = √(2ε)`` (reverse time, module docstring)."""

    def drift(self, x: Tensor, s: Tensor) -> Tensor:
        return self.process.velocity(self.field, x, s, self.label) - self.process.epsilon * self.score(x, s)

    def diffusion(self, s: Tensor) -> Tensor:
        return torch.full_like(s, math.sqrt(2.0 * self.process.epsilon))


class Interpolant(AffineFlow):
    """``x_t = α y + β z + γ w`` (module docstring); options ``path``, ``gamma``, ``gamma_scale``
    (``c``), ``epsilon`` (the SDE's diffusion coefficient, ``None``: the path's own) and the
    flow-matching options (``t_eps``, ``t_max``, ``prior_mean``, the coupling)."""

    name = "interpolant"

    def __init__(self, path: str = "linear", gamma: str = "bridge", gamma_scale: float = 1.0, epsilon: Optional[float] = None,
                 t_eps: float = 1e-3, t_max: float = 0.999, prior_mean=None, coupling: str = "independent",
                 sinkhorn_eps: Optional[float] = None, sigma_data: float = 0.5):
        super().__init__(t_eps, t_max, prior_mean, coupling, sinkhorn_eps, sigma_data)
        if path not in PATHS:
            raise UserError(f"unknown interpolant path {path!r}; valid: {', '.join(PATHS)}")
        if gamma not in GAMMAS:
            raise UserError(f"unknown interpolant gamma {gamma!r}; valid: {', '.join(GAMMAS)}")
        for key, v in (("gamma_scale", gamma_scale), ("epsilon", 0.0 if epsilon is None else epsilon)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and 0 <= v <= 1e3):
                raise UserError(f"{key} must be a number in [0, 1e3], got {v!r}")
        self.path_name, self.gamma, self.gamma_scale = path, gamma, float(gamma_scale)
        self.epsilon = None if epsilon is None else float(epsilon)

    def terms(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``(α, β, γ², α', β', γγ')``."""
        if self.path_name == "linear":
            al, be, dal, dbe = 1.0 - t, t, -torch.ones_like(t), torch.ones_like(t)
        else:
            h = 0.5 * math.pi
            al, be, dal, dbe = torch.cos(h * t), torch.sin(h * t), -h * torch.sin(h * t), h * torch.cos(h * t)
        c = self.gamma_scale if self.gamma == "bridge" else 0.0
        return al, be, c * t * (1.0 - t), dal, dbe, 0.5 * c * (1.0 - 2.0 * t)

    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor]:
        al, be, g2, *_ = self.terms(t)
        return al, (be**2 + g2).sqrt()

    def derivatives(self, t: Tensor) -> tuple[Tensor, Tensor]:
        al, be, g2, dal, dbe, ggd = self.terms(t)
        return dal, (be * dbe + ggd) / (be**2 + g2).sqrt()

    def t_of_sigma(self, sigma: Tensor) -> Tensor:
        return self.scale_of_sigma(sigma.double()).to(sigma.dtype)

    def signal_of_sigma(self, sigma: Tensor) -> Tensor:
        return self.coefficients(self.t_of_sigma(sigma.double()))[0]

    def capabilities(self, **modes) -> frozenset:
        both = super().capabilities()
        return both if self.epsilon is None else both - {"transition"}

    def offers(self, field, label=None, **modes) -> dict:
        out = super().offers(field, label)  # only the needs of capabilities()
        if self.epsilon is not None and "sde" in out:
            view = InterpolantSDE(self, field, label)
            out.update(sde=view, score=view)
        return out

    def config(self) -> dict:
        return {"path": self.path_name, "gamma": self.gamma, "gamma_scale": self.gamma_scale, "epsilon": self.epsilon,
                **super().config()}

