"""Field estimators: what they declare, and the named converters between their kinds.

A field estimator answers ``field(x, s, label=None)`` for a batch, with ``s`` shaped ``[B]``.
It declares its output ``kind``:

* ``denoiser``: ``D(x, s) = E[y | x, s]``, the posterior mean of clean data (EDM,
  arXiv 2206.00364; PFGM++, arXiv 2302.04265; Yukawa).
* ``score``: ``∇_x log p_s(x)`` (NCSN arXiv 1907.05600; score SDE arXiv 2011.13456).
* ``eps``: ``E[ε | x, s]`` for ``x = a y + b ε`` (DDPM, arXiv 2006.11239).
* ``velocity``: ``dx/ds`` itself (e.g. PFGM's normalised Poisson field, arXiv 2209.11178).

For a Gaussian marginal ``x = a(s) y + b(s) ε`` Tweedie's formula links the first three:

    score = (a D - x) / b²,    D = (x + b² score) / a,    eps = (x - a D) / b = -b score.

These links hold only for Gaussian kernels; a PFGM++ or Yukawa denoiser has no such score,
which is why processes, not fields, decide which conversions are valid.
"""
from __future__ import annotations

from typing import Callable, Literal, Optional, Protocol, runtime_checkable

from torch import Tensor

__all__ = [
    "FieldKind",
    "FIELD_KINDS",
    "FieldEstimator",
    "expand_as_batch",
    "denoiser_to_score",
    "score_to_denoiser",
    "eps_to_denoiser",
    "denoiser_to_eps",
    "score_to_eps",
    "eps_to_score",
    "convert_gaussian",
]

FieldKind = Literal["denoiser", "score", "eps", "velocity"]
FIELD_KINDS = ("denoiser", "score", "eps", "velocity")


@runtime_checkable
class FieldEstimator(Protocol):
    """``field(x [B, ...], s [B], label=None) -> [B, ...]`` of the declared ``kind``."""

    kind: str

    def __call__(self, x: Tensor, s: Tensor, label: Optional[Tensor] = None) -> Tensor: ...


def expand_as_batch(v: Tensor, x: Tensor) -> Tensor:
    """Reshape a per-sample ``[B]`` tensor to broadcast against ``x`` ``[B, ...]``."""
    return v.reshape(v.shape[0], *([1] * (x.ndim - 1))).to(x.dtype)


def denoiser_to_score(d: Tensor, x: Tensor, a: Tensor, b: Tensor) -> Tensor:
    a, b = expand_as_batch(a, x), expand_as_batch(b, x)
    return (a * d - x) / b**2


def score_to_denoiser(score: Tensor, x: Tensor, a: Tensor, b: Tensor) -> Tensor:
    a, b = expand_as_batch(a, x), expand_as_batch(b, x)
    return (x + b**2 * score) / a


def eps_to_denoiser(eps: Tensor, x: Tensor, a: Tensor, b: Tensor) -> Tensor:
    a, b = expand_as_batch(a, x), expand_as_batch(b, x)
    return (x - b * eps) / a


def denoiser_to_eps(d: Tensor, x: Tensor, a: Tensor, b: Tensor) -> Tensor:
    a, b = expand_as_batch(a, x), expand_as_batch(b, x)
    return (x - a * d) / b


def score_to_eps(score: Tensor, x: Tensor, a: Tensor, b: Tensor) -> Tensor:
    return -expand_as_batch(b, x) * score


def eps_to_score(eps: Tensor, x: Tensor, a: Tensor, b: Tensor) -> Tensor:
    return -eps / expand_as_batch(b, x)


_CONVERTERS: dict[tuple[str, str], Callable[..., Tensor]] = {
    ("denoiser", "score"): denoiser_to_score,
    ("score", "denoiser"): score_to_denoiser,
    ("eps", "denoiser"): eps_to_denoiser,
    ("denoiser", "eps"): denoiser_to_eps,
    ("score", "eps"): score_to_eps,
    ("eps", "score"): eps_to_score,
}


def convert_gaussian(out: Tensor, source: str, target: str, x: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Convert a field output between kinds under the Gaussian marginal ``x = a y + b ε``."""
    if source == target:
        return out
    try:
        fn = _CONVERTERS[(source, target)]
    except KeyError:
        raise ValueError(f"no Gaussian conversion from a {source!r} field to {target!r}") from None
    return fn(out, x, a, b)
