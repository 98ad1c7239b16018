"""The common 2-D toy sets (FFJORD's ``toy_data.py``, also used by PFGM), batched in torch.

Each generator ``f(n, generator) -> (x, labels)`` draws ``n`` i.i.d. points ``x [n, 2]``
(float64, on the generator's device) and, for sets with natural classes, ``labels``
(``long [n]``), else ``None``.  Scales follow FFJORD so that models and metrics are comparable
with the literature (coordinates of order 1-3, std about 0.5-2.5).  Where FFJORD draws
balanced halves or ``linspace`` angles (through scikit-learn), here every point draws its own
class and angle, so any ``n`` works and points are i.i.d.; the laws are the same.

* ``moons``: class ``c ~ U{0,1}``, ``t ~ U[0, pi]``; upper moon ``(cos t, sin t)``, lower
  moon ``(1 - cos t, 1/2 - sin t)``; add ``N(0, 0.1^2 I)``; then ``2 p + (-1, -0.2)``.
* ``8gaussians``: equal mixture of ``N(4 c_k / 1.414, (0.5/1.414)^2 I)`` with ``c_k`` the 8
  unit vectors at angles ``k pi/4`` (label = ``k``).
* ``25gaussians``: equal mixture of ``N((i, j)/2.828, (0.05/2.828)^2 I)``, ``i, j`` in
  ``{-2..2}`` (label = ``5 (i+2) + (j+2)``).
* ``swissroll``: ``t = 1.5 pi (1 + 2u)``, ``u ~ U[0,1)``; ``(t cos t, t sin t) + N(0, I)``; ``/5``.
* ``checkerboard``: ``x1 ~ U[-2, 2)``, ``x2 = v - 2b + (floor(x1) mod 2)`` with ``v ~ U[0,1)``,
  ``b ~ U{0,1}``; times 2: uniform on the 8 dark squares of a 4x4 board of side-2 squares.
* ``pinwheel``: 5 arms; arm ``c ~ U{0..4}``, ``f = (1 + 0.3 g1, 0.1 g2)``, rotated by angle
  ``2 pi c/5 + 0.25 exp(f_1)``; times 2 (label = arm).
* ``circles``: class ``c ~ U{0,1}``, angle ``t ~ U[0, 2 pi)``; radius 1 (outer, ``c=0``) or
  0.5 (inner, ``c=1``); add ``N(0, 0.08^2 I)``; times 3.
* ``2spirals``: ``r = sqrt(u) 3 pi``, point ``(-r cos r + 0.5 a, r sin r + 0.5 b)``
  (``u, a, b ~ U[0,1)``), negated for the second spiral (``c ~ U{0,1}``); ``/3`` plus
  ``N(0, 0.1^2 I)``.

``8gaussians`` and ``25gaussians`` are Gaussian mixtures: :func:`toy_mixture` returns the
exact :class:`~physgen.data.mixture.GaussianMixture`, and sampling goes through it.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import Tensor

from .mixture import GaussianMixture

__all__ = [
    "TOY_SETS", "ToyFn", "toy_mixture", "toy_num_classes",
    "moons", "eight_gaussians", "twentyfive_gaussians", "swissroll", "checkerboard",
    "pinwheel", "circles", "two_spirals",
]

ToyFn = Callable[[int, torch.Generator], Tuple[Tensor, Optional[Tensor]]]
_F64 = torch.float64


def _rand(n: int, g: torch.Generator, *shape: int) -> Tensor:
    return torch.rand(n, *shape, generator=g, device=g.device, dtype=_F64)


def _randn(n: int, g: torch.Generator, *shape: int) -> Tensor:
    return torch.randn(n, *shape, generator=g, device=g.device, dtype=_F64)


def _randint(n: int, g: torch.Generator, high: int) -> Tensor:
    return torch.randint(high, (n,), generator=g, device=g.device)


def moons(n: int, g: torch.Generator) -> Tuple[Tensor, Tensor]:
    c = _randint(n, g, 2)
    t = _rand(n, g) * math.pi
    upper = torch.stack([torch.cos(t), torch.sin(t)], -1)
    lower = torch.stack([1 - torch.cos(t), 0.5 - torch.sin(t)], -1)
    p = torch.where(c[:, None] == 0, upper, lower) + 0.1 * _randn(n, g, 2)
    return 2 * p + torch.tensor([-1.0, -0.2], dtype=_F64, device=p.device), c


def _eight_gaussians_mixture() -> GaussianMixture:
    scale = 4.0
    r = 1.0 / math.sqrt(2)
    centres = [(1, 0), (-1, 0), (0, 1), (0, -1), (r, r), (r, -r), (-r, r), (-r, -r)]
    # Ordered by angle so that label k sits at angle k pi / 4.
    centres = sorted(centres, key=lambda c: math.atan2(c[1], c[0]) % (2 * math.pi))
    means = torch.tensor(centres, dtype=_F64) * scale / 1.414
    return GaussianMixture(means, torch.full((8,), 0.5 / 1.414, dtype=_F64))


def _twentyfive_gaussians_mixture() -> GaussianMixture:
    means = torch.tensor([(i, j) for i in range(-2, 3) for j in range(-2, 3)], dtype=_F64) / 2.828
    return GaussianMixture(means, torch.full((25,), 0.05 / 2.828, dtype=_F64))


_MIXTURES: Dict[str, Callable[[], GaussianMixture]] = {
    "8gaussians": _eight_gaussians_mixture,
    "25gaussians": _twentyfive_gaussians_mixture,
}


def toy_mixture(name: str) -> Optional[GaussianMixture]:
    """The exact mixture behind a toy set, or ``None`` if it is not a Gaussian mixture."""
    make = _MIXTURES.get(name)
    return None if make is None else make()


def _mixture_sampler(name: str) -> ToyFn:
    def sample(n: int, g: torch.Generator) -> Tuple[Tensor, Optional[Tensor]]:
        mix = toy_mixture(name)
        assert mix is not None
        x, y = mix.sample(n, g, dtype=_F64, return_labels=True)
        return x, y

    sample.__name__ = name
    return sample


eight_gaussians = _mixture_sampler("8gaussians")
twentyfive_gaussians = _mixture_sampler("25gaussians")


def swissroll(n: int, g: torch.Generator) -> Tuple[Tensor, None]:
    t = 1.5 * math.pi * (1 + 2 * _rand(n, g))
    p = torch.stack([t * torch.cos(t), t * torch.sin(t)], -1) + _randn(n, g, 2)
    return p / 5, None


def checkerboard(n: int, g: torch.Generator) -> Tuple[Tensor, None]:
    x1 = _rand(n, g) * 4 - 2
    x2 = _rand(n, g) - 2 * _randint(n, g, 2).to(_F64)
    x2 = x2 + torch.remainder(torch.floor(x1), 2)
    return 2 * torch.stack([x1, x2], -1), None


def pinwheel(n: int, g: torch.Generator) -> Tuple[Tensor, Tensor]:
    num_arms, radial_std, tangential_std, rate = 5, 0.3, 0.1, 0.25
    c = _randint(n, g, num_arms)
    f = _randn(n, g, 2) * torch.tensor([radial_std, tangential_std], dtype=_F64, device=c.device)
    f[:, 0] += 1.0
    angle = 2 * math.pi * c.to(_F64) / num_arms + rate * torch.exp(f[:, 0])
    cos, sin = torch.cos(angle), torch.sin(angle)
    # FFJORD: f @ [[cos, -sin], [sin, cos]]
    x = torch.stack([f[:, 0] * cos + f[:, 1] * sin, -f[:, 0] * sin + f[:, 1] * cos], -1)
    return 2 * x, c


def circles(n: int, g: torch.Generator) -> Tuple[Tensor, Tensor]:
    c = _randint(n, g, 2)
    t = 2 * math.pi * _rand(n, g)
    radius = 1.0 - 0.5 * c.to(_F64)
    p = radius[:, None] * torch.stack([torch.cos(t), torch.sin(t)], -1) + 0.08 * _randn(n, g, 2)
    return 3 * p, c


def two_spirals(n: int, g: torch.Generator) -> Tuple[Tensor, Tensor]:
    c = _randint(n, g, 2)
    r = torch.sqrt(_rand(n, g)) * 540 * (2 * math.pi) / 360
    jitter = _rand(n, g, 2) * 0.5
    p = torch.stack([-torch.cos(r) * r, torch.sin(r) * r], -1) + jitter
    sign = 1.0 - 2.0 * c.to(_F64)
    return p * sign[:, None] / 3 + 0.1 * _randn(n, g, 2), c


# name -> (sampler, number of classes or None)
TOY_SETS: Dict[str, Tuple[ToyFn, Optional[int]]] = {
    "moons": (moons, 2),
    "8gaussians": (eight_gaussians, 8),
    "25gaussians": (twentyfive_gaussians, 25),
    "swissroll": (swissroll, None),
    "checkerboard": (checkerboard, None),
    "pinwheel": (pinwheel, 5),
    "circles": (circles, 2),
    "2spirals": (two_spirals, 2),
}


def toy_num_classes(name: str) -> Optional[int]:
    return TOY_SETS[name][1]
