"""PFGM++ (Xu et al. 2023, "PFGM++: Unlocking the Potential of Physics-Inspired Generative
Models", arXiv 2302.04265): Poisson flows with ``D`` augmented dimensions.

The data ``y ∈ R^N`` are charges on the ``D``-dimensional hyperplane ``z = 0`` of
``R^{N+D}``; with ``r = ‖z‖`` the field lines carry ``y`` to ``x`` with the radial kernel

    p_r(x | y) ∝ (‖x - y‖² + r²)^{-(N+D)/2}                          (arXiv 2302.04265, eq. 4)

and, with the alignment ``r = σ √D`` (§4), the probability-flow ODE is EDM's

    dx/dσ = (x - D(x, σ)) / σ,       D(x, σ) = E[y | x, σ]            (§4, eq. 8)

so training is EDM's denoiser loss with this kernel in place of the Gaussian, and every
EDM sampler (here: every solver of the ``solvers`` package) applies unchanged.  As
``D → ∞`` at fixed ``σ`` the kernel tends to ``N(y, σ² I)`` (Prop. 4.1): ``D = inf`` *is*
:class:`physgen.processes.gaussian.EDM`: the same parts on the same kernel, one code path.  ``D = 1`` is PFGM
(arXiv 2209.11178), see :mod:`physgen.processes.pfgm`.
"""
from __future__ import annotations

import math
from typing import Optional

from torch import Tensor

from ..fields.exact import ExactField
from ..config import ExtraDims, parse_D
from ..kernels import GaussianKernel, StudentTKernel
from .gaussian import EDMParts

__all__ = ["PFGMpp"]


class PFGMpp(EDMParts):
    """PFGM++ with ``D`` augmented dimensions (arXiv 2302.04265): EDM's parts
    (:class:`physgen.processes.gaussian.EDMParts`) composed with its kernel.

    * kernel: :class:`StudentTKernel` ``(D)`` at ``r = σ √D``; ``D = inf``: EDM's
      :class:`GaussianKernel`, so ``PFGMpp(D=inf)`` samples, trains and scores exactly as
      ``EDM`` with the same arguments (tested bit for bit);
    * training (§4, Alg. 1): ``ln σ ~ N(P_mean, P_std²)``, ``x = y + R u`` from the kernel at
      ``r = σ√D``, EDM's loss ``λ(σ) ‖D_θ(x, σ) - y‖²`` with ``λ(σ) = (σ² + σ_d²)/(σ σ_d)²``
      and EDM's preconditioning at ``σ`` (EDM's parts);
    * prior: the kernel around the origin at ``r_max = σ_max √D`` (the kernel's prior, as EDM's);
    * sampling: ``dx/dσ = (x - D_θ(x, σ))/σ`` on EDM's ρ-schedule with any solver.

    Only ``D = inf`` offers the Gaussian needs (score, SDE, transition): a Student-t kernel
    gives no Tweedie score, so score-based and noise-injecting samplers are refused for
    finite ``D`` with one line naming what is missing.
    """

    name = "pfgmpp"
    network_kind = "denoiser"

    def __init__(self, D: ExtraDims = 128, sigma_min=0.002, sigma_max=80.0, sigma_data=0.5, rho=7.0, p_mean=-1.2, p_std=1.2, prior_mean=None):
        self.D = parse_D(D)  # parsed where it entered (flag, file, make_process) and passed as it is; a caller's 4 or "inf" is parsed here
        kernel = GaussianKernel() if self.D == math.inf else StudentTKernel(self.D)
        super().__init__(kernel, sigma_min, sigma_max, sigma_data, rho, p_mean, p_std, prior_mean)

    @property
    def r_max(self) -> float:
        """The prior's radius ``σ_max √D`` (``inf`` for ``D = inf``)."""
        return self.s_max * math.sqrt(self.D)

    def exact_field(self, points: Tensor, labels: Optional[Tensor] = None) -> ExactField:
        """The exact denoiser of ``points``: posterior mean with ``log w_i = -(N+D)/2 log(‖x-y_i‖² + r²)``."""
        if self.D == math.inf:
            return super().exact_field(points, labels)
        kernel = self.kernel.bind(points[0].numel())
        return ExactField(points, kernel.log_profile, point_labels=labels)

    def config(self) -> dict:
        return {"D": self.D.number, **super().config()}
