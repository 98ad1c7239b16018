"""The PFGM++ kernel: a multivariate Student-t with ``D`` degrees of freedom (arXiv 2302.04265).

One home for the Student-t: PFGM++ at any finite ``D``, PFGM (``D = 1``: the Poisson kernel of
the half-space at ``r = z``, and its hemisphere prior) and GenPhys's Poisson and Laplace
entries all use :class:`StudentTKernel`.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from ..config import ExtraDims, parse_D
from ..errors import UserError
from ..random import beta_prime, uniform_sphere
from .gaussian import per_row

__all__ = ["StudentTKernel"]


class StudentTKernel:
    """The PFGM++ perturbation kernel with ``D`` extra dimensions, at ``σ = s`` (``r = s √D``).

    Density on ``R^N`` (arXiv 2302.04265, eq. 4, normalised here):

        p(x | y) = Γ((N+D)/2) / (π^{N/2} Γ(D/2)) · r^D / (‖x - y‖² + r²)^{(N+D)/2}

    It is exactly a multivariate Student-t with ``D`` degrees of freedom and scale ``σ``.
    The radius ``R = ‖x - y‖`` has density ``∝ R^{N-1}/(R² + r²)^{(N+D)/2}``, i.e.
    ``R²/(R² + r²) ~ Beta(N/2, D/2)``, and ``E‖x - y‖² = r² N/(D - 2)`` for ``D > 2``.

    **Sampling** (arXiv 2302.04265, App. B.2): ``x = y + R u`` with ``R = r √(b/(1-b))``,
    ``b ~ Beta(N/2, D/2)``, ``u`` uniform on the unit sphere of ``R^N``.  The odds
    ``b/(1-b)`` are drawn as ``G1/G2`` with ``G1 ~ Gamma(N/2)``, ``G2 ~ Gamma(D/2)``
    (:func:`physgen.random.beta_prime`), which avoids ``1 - b`` cancelling when ``b ≈ 1``
    (large ``N``, small ``D``).  Everything is drawn on the tensor's device with the
    caller's generator, and *nothing is truncated*: the official implementation draws the
    Beta on the CPU with numpy and clips it to ``[1e-3, 1 - 1e-3]``, which for
    ``N = 3072`` moves about 92% of the draws at ``D = 1`` (and 7% at ``D = 8``) onto the
    clip value -- a different kernel from the one the theory (and the exact field, and the
    ODE) assume.  The only clamp here is ``G2 >= 2.2e-308`` (the smallest positive
    float64) against a division by zero, which changes nothing measurable.

    ``N`` is the number of elements of one sample; :meth:`sample_offsets` and
    :meth:`log_prob` read it from their inputs, while :meth:`log_profile` (which sees only
    squared distances) needs a kernel bound to ``N`` with :meth:`bind`.
    """

    gaussian = False

    def __init__(self, D: Union[ExtraDims, int], N: Optional[int] = None):
        D = parse_D(D)  # an ExtraDims (from PFGMpp, the CLI, a file) passes as it is; a caller's int is parsed here
        if D == math.inf:
            raise UserError("StudentTKernel needs a finite D; D = inf is the GaussianKernel")
        if N is not None and (isinstance(N, bool) or int(N) != N or N <= 0):
            raise ValueError(f"N must be a positive integer, got {N!r}")
        self.D = D
        self.N = None if N is None else int(N)

    def bind(self, N: int) -> "StudentTKernel":
        """This kernel with the data dimension ``N`` fixed (needed by :meth:`log_profile`)."""
        return StudentTKernel(self.D, N)

    def radius(self, s: Tensor) -> Tensor:
        """``r = σ √D``."""
        return s * math.sqrt(self.D)

    def sample_offsets(self, shape: Sequence[int], s: Tensor, generator=None, device=None, dtype=torch.float32) -> Tensor:
        """Offsets ``x - y = R u`` shaped ``shape = (B, *data)``, one scale ``s[i] = σ_i`` per row."""
        shape = tuple(int(v) for v in shape)
        device = device or s.device
        n = math.prod(shape[1:])
        odds = beta_prime(n / 2.0, self.D / 2.0, (shape[0],), generator, device=device)  # b/(1-b), float64
        radius = self.radius(s.to(device=device, dtype=torch.float64)) * odds.sqrt()
        u = uniform_sphere(shape, generator, device=device, dtype=dtype)
        return per_row(radius.to(dtype), u) * u

    def log_profile(self, sqdist: Tensor, s: Tensor) -> Tensor:
        """``-(N+D)/2 · log(1 + d²/r²)``: the log-kernel up to a per-query constant.

        Equal to ``-(N+D)/2 · log(d² + r²) + (N+D)/2 · log r²``; the constant does not
        change the posterior weights, and the ``log1p`` form keeps full precision when
        ``r² ≫ d²`` (large ``D``), where it tends to the Gaussian ``-d²/(2σ²)``.
        """
        if self.N is None:
            raise ValueError("StudentTKernel.log_profile needs the data dimension: use kernel.bind(N)")
        r2 = s * s * self.D
        return -0.5 * (self.N + self.D) * torch.log1p(sqdist / r2)

    def log_prob(self, offset: Tensor, s: Tensor) -> Tensor:
        """Normalised ``log p(y + offset | y)`` (float64, shaped ``[B]``); ``N = offset[0].numel()``.

        ``log Γ((N+D)/2) - (N/2) log π - log Γ(D/2) + D log r - (N+D)/2 · log(‖offset‖² + r²)``.
        """
        n = offset[0].numel()
        D = self.D
        sq = offset.reshape(offset.shape[0], -1).double().pow(2).sum(1)
        r2 = s.double() ** 2 * D
        const = math.lgamma((n + D) / 2) - 0.5 * n * math.log(math.pi) - math.lgamma(D / 2)
        # D log r - (N+D)/2 log(sq + r²) = -(N/2) log r² - (N+D)/2 log(1 + sq/r²)
        return const - 0.5 * n * torch.log(r2) - 0.5 * (n + D) * torch.log1p(sq / r2)

    def config(self) -> dict:
        return {"D": self.D.number}

    def __repr__(self) -> str:
        return f"StudentTKernel(D={self.D}{'' if self.N is None else f', N={self.N}'})"
