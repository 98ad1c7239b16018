"""Fields from plain callables: a denoiser in EDM's convention, or an ε / v prediction.

* :func:`from_denoiser` takes ``fn(x̄, σ, labels)`` in EDM's (and k-diffusion's) denoiser
  convention (arXiv 2206.00364, eq. 2-4): ``x̄ = y + σ n`` in the data scale,
  ``D(x̄, σ) ≈ E[y | x̄]``.  On a process with a Gaussian marginal ``x = a y + b ε`` at scale
  ``s`` this is the field ``D(x/a(s), b(s)/a(s))``; on the σ processes (EDM, VE, PFGM++,
  whose ``a = 1`` and ``s = σ``) it is ``fn`` itself.
* :func:`from_eps` takes ``fn(x, s, labels) = ε̂`` in the process's own variables (DDPM,
  arXiv 2006.11239): Tweedie gives ``D = (x - b ε̂)/a``.
* :func:`from_v` takes ``fn(x, s, labels) = v̂``, ``v = a ε - b y`` (Salimans & Ho,
  arXiv 2202.00512, who write it for ``a² + b² = 1``): ``y = (a x - b v)/(a² + b²)``.

``labels`` reach ``fn`` as physgen passes them: ``None`` (unconditional) or an integer
tensor ``[B]`` whose ``-1`` / ``num_classes`` entries are the null class.  For
``from_denoiser(..., num_classes=L, one_hot=True)`` they arrive as EDM's one-hot rows
``[B, L]`` instead, all-zero for the null class (EDM's "no label").
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor, nn

from ..errors import UserError
from ..fields.kinds import expand_as_batch
from ..fields.labels import check_label
from ..processes.base import Process

__all__ = ["from_denoiser", "from_eps", "from_v", "CallableField", "one_hot"]


def one_hot(label: Optional[Tensor], num_classes: int, batch: int, device, dtype) -> Optional[Tensor]:
    """EDM's class input: ``[B, L]`` one-hot rows, the all-zero row for the null class; ``None`` if unconditional."""
    if num_classes == 0:
        return None
    out = torch.zeros(batch, num_classes, device=device, dtype=dtype)
    if label is None:
        return out
    real = (label >= 0) & (label < num_classes)
    out[real.nonzero().flatten(), label[real]] = 1
    return out


def _coefficients(process: Process, s: Tensor):
    coefficients = getattr(process, "coefficients", None)
    if coefficients is None:
        return None
    return coefficients(s)


class CallableField(nn.Module):
    """A field estimator around ``fn`` (kind ``denoiser``), see the module docstring."""

    kind = "denoiser"

    def __init__(self, fn: Callable, process: Process, convention: str, num_classes: int = 0, one_hot_labels: bool = False):
        super().__init__()
        if not callable(fn):
            raise UserError(f"a field needs a callable, got {type(fn).__name__}")
        if convention != "denoiser" and _coefficients(process, torch.ones(1, dtype=torch.float64)) is None:
            raise UserError(f"an {convention} prediction needs a Gaussian marginal x = a y + b eps; process {process.describe()} has none")
        self.fn, self.process, self.convention = fn, process, convention
        self.num_classes, self.one_hot_labels = int(num_classes), bool(one_hot_labels)

    def forward(self, x: Tensor, s: Tensor, label: Optional[Tensor] = None) -> Tensor:
        label = check_label(label, self.num_classes, x.shape[0], device=x.device, what="this field") if self.num_classes else label
        if label is not None and not self.num_classes:
            raise UserError("this field is unconditional (num_classes=0) but a label was given")
        if self.one_hot_labels:
            label = one_hot(label, self.num_classes, x.shape[0], x.device, x.dtype)
        ab = _coefficients(self.process, s)
        if self.convention == "denoiser":
            if ab is None:  # a σ process without a Gaussian view: s is σ
                return self.fn(x, s, label)
            a, b = ab
            return self.fn(x / expand_as_batch(a, x), (b / a).to(x.dtype), label)
        a, b = (expand_as_batch(v, x) for v in ab)
        out = self.fn(x, s, label)
        if self.convention == "eps":
            return (x - b * out) / a
        return (a * x - b * out) / (a**2 + b**2)


def from_denoiser(fn: Callable, process: Process, *, num_classes: int = 0, one_hot: bool = False) -> CallableField:
    """A field from ``fn(x̄, σ, labels) -> D`` in EDM's convention (module docstring)."""
    return CallableField(fn, process, "denoiser", num_classes, one_hot)


def from_eps(fn: Callable, process: Process, *, num_classes: int = 0) -> CallableField:
    """A field from ``fn(x, s, labels) -> ε̂`` in the process's variables (Gaussian processes)."""
    return CallableField(fn, process, "eps", num_classes)


def from_v(fn: Callable, process: Process, *, num_classes: int = 0) -> CallableField:
    """A field from ``fn(x, s, labels) -> v̂``, ``v = a ε - b y`` (Gaussian processes)."""
    return CallableField(fn, process, "v", num_classes)
