"""Neural fields: a raw network ``F(x_in, c_noise, label)`` wrapped in a process's preconditioning.

The preconditioning decides what the network's output means (its ``kind``) and keeps its
inputs and targets at unit scale across noise levels:

* :class:`DenoiserPreconditioning` (EDM, arXiv 2206.00364, Table 1):
  ``D(x, s) = c_skip x + c_out F(c_in x, c_noise)`` with, for ``σ = σ_eff(s)``,
  ``c_skip = σ_d²/(σ²+σ_d²)``, ``c_out = σ σ_d/√(σ²+σ_d²)``, ``c_in = 1/√(σ²+σ_d²)``,
  ``c_noise = ln(σ)/4``.  PFGM++ uses it at ``σ = r/√D`` and Yukawa at ``σ = √(z/m)``.
* :class:`ScorePreconditioning` (NCSNv2, arXiv 2006.09011, technique 3):
  ``s(x, σ) = F(c_in x, ln(σ)/4) / σ``, so that DSM with ``λ(σ) = σ²`` regresses ``F`` on
  ``-ε`` at every level.
* :class:`EpsPreconditioning` (DDPM, arXiv 2006.11239): ``ε(x, t) = F(c_in x, 999 t)``.
* :class:`VelocityPreconditioning` (flow matching on an affine path, arXiv 2210.02747), EDM's
  rule (arXiv 2206.00364, App. B.6: unit-variance input and target, ``c_skip`` minimising
  ``c_out``) applied here to the velocity target ``u = a' y + b' ε`` for data of std ``σ_d``:
  ``c_in = 1/√(a²σ_d² + b²)``, ``c_skip = (a a' σ_d² + b b')/(a²σ_d² + b²)``,
  ``c_out = σ_d |a' b - a b'| / √(a²σ_d² + b²)``, ``c_noise = ln(b/a)/4`` (EDM's at the
  SNR-matched σ).  Rectified flow (``a = 1-t``, ``b = t``): ``c_out = σ_d/√((1-t)²σ_d² + t²)``.

Each declares ``c_noise_unit``, the size of its ``c_noise`` range's unit: 1 for ``ln(σ)/4``,
``999/4`` for DDPM's ``999 t`` (so ``c_noise / unit = 4 t``).  A network whose embedding
expects O(1) input (the toy MLP) divides by it (:func:`c_noise_unit`); the U-Nets keep
DDPM's positional embedding, built for ``999 t``, and EDM's VP checkpoints keep their own
``(M-1) t`` (:mod:`physgen.pretrained.precond`).
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor, nn

from .kinds import expand_as_batch
from .labels import check_label

__all__ = ["DenoiserPreconditioning", "ScorePreconditioning", "EpsPreconditioning", "VelocityPreconditioning", "NeuralField", "c_noise_unit"]


class DenoiserPreconditioning:
    kind = "denoiser"
    c_noise_unit = 1.0

    def __init__(self, sigma_data: float = 0.5, sigma_of_scale: Optional[Callable[[Tensor], Tensor]] = None):
        if not sigma_data > 0:
            raise ValueError(f"sigma_data must be > 0, got {sigma_data}")
        self.sigma_data = float(sigma_data)
        self.sigma_of_scale = sigma_of_scale

    def __call__(self, net: nn.Module, x: Tensor, s: Tensor, label: Optional[Tensor]) -> Tensor:
        sigma = s if self.sigma_of_scale is None else self.sigma_of_scale(s)
        sd2 = self.sigma_data**2
        sig = expand_as_batch(sigma, x)
        c_skip = sd2 / (sig**2 + sd2)
        c_out = sig * self.sigma_data / (sig**2 + sd2).sqrt()
        c_in = 1.0 / (sig**2 + sd2).sqrt()
        c_noise = sigma.log() / 4
        return c_skip * x + c_out * net(c_in * x, c_noise.to(x.dtype), label)


class ScorePreconditioning:
    kind = "score"
    c_noise_unit = 1.0

    def __init__(self, sigma_data: float = 0.5):
        self.sigma_data = float(sigma_data)

    def __call__(self, net: nn.Module, x: Tensor, s: Tensor, label: Optional[Tensor]) -> Tensor:
        sig = expand_as_batch(s, x)
        c_in = 1.0 / (sig**2 + self.sigma_data**2).sqrt()
        return net(c_in * x, (s.log() / 4).to(x.dtype), label) / sig


class EpsPreconditioning:
    kind = "eps"
    c_noise_unit = 999.0 / 4  # 999 t -> 4 t in [0, 4]: an O(1) embedding input (4 t and ln(σ)/4 measured alike: RESULTS.md)

    def __init__(self, coefficients: Callable[[Tensor], tuple[Tensor, Tensor]], sigma_data: float = 0.5):
        self.coefficients = coefficients
        self.sigma_data = float(sigma_data)

    def __call__(self, net: nn.Module, x: Tensor, s: Tensor, label: Optional[Tensor]) -> Tensor:
        a, b = self.coefficients(s)
        c_in = expand_as_batch(1.0 / (a**2 * self.sigma_data**2 + b**2).sqrt(), x)
        return net(c_in * x, (999.0 * s).to(x.dtype), label)


class VelocityPreconditioning:
    """``u(x, s) = c_skip x + c_out F(c_in x, c_noise)`` (module docstring); ``path(s) -> (a, b, a', b')``."""

    kind = "velocity"

    def __init__(self, path: Callable[[Tensor], tuple[Tensor, Tensor, Tensor, Tensor]], sigma_data: float = 0.5):
        if not sigma_data > 0:
            raise ValueError(f"sigma_data must be > 0, got {sigma_data}")
        self.path = path
        self.sigma_data = float(sigma_data)

    def __call__(self, net: nn.Module, x: Tensor, s: Tensor, label: Optional[Tensor]) -> Tensor:
        a, b, da, db = self.path(s)
        sd2 = self.sigma_data**2
        var = a**2 * sd2 + b**2
        c_in = expand_as_batch(var.rsqrt(), x)
        c_skip = expand_as_batch((a * da * sd2 + b * db) / var, x)
        c_out = expand_as_batch(self.sigma_data * (da * b - a * db).abs() / var.sqrt(), x)
        c_noise = (b / a).log() / 4
        return c_skip * x + c_out * net(c_in * x, c_noise.to(x.dtype), label)


class NeuralField(nn.Module):
    """A field estimator made of a raw network and a preconditioning (``kind`` from the latter)."""

    def __init__(self, net: nn.Module, preconditioning):
        super().__init__()
        self.net = net
        self.preconditioning = preconditioning

    @property
    def kind(self) -> str:
        return self.preconditioning.kind

    @property
    def num_classes(self) -> int:
        return int(getattr(self.net, "num_classes", 0))

    def forward(self, x: Tensor, s: Tensor, label: Optional[Tensor] = None) -> Tensor:
        if s.ndim != 1 or s.shape[0] != x.shape[0]:
            raise ValueError(f"scale must be shaped [B] = [{x.shape[0]}], got {tuple(s.shape)}")
        # labels in [0, K) or the null label K (the net's null embedding); None when all null
        label = check_label(label, self.num_classes, x.shape[0], device=x.device, what="this network")
        return self.preconditioning(self.net, x, s.to(x.dtype), label)


def c_noise_unit(field) -> float:
    """The unit of the ``c_noise`` a field's preconditioning feeds its network (``c_noise_unit``
    of the preconditioning; 1 for those that feed ``ln(σ)/4``-like O(1) values and declare nothing,
    e.g. PFGM's)."""
    return float(getattr(getattr(field, "preconditioning", None), "c_noise_unit", 1.0))
