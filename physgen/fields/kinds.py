"""Field estimators: what they declare, and the named converters between their kinds.

A field estimator answers ``field(x, s, label=None)`` for a batch, with ``s`` shaped ``[B]``.
It declares its output ``kind``:

* ``denoiser``: ``D(x, s) = E[y | x, s]``, the posterior mean of clean data (EDM,
  arXiv 2206.00364; PFGM++, arXiv 2302.04265; Yukawa).
* ``score``: ``∇_x log p_s(x)`` (NCSN arXiv 1907.05600; score SDE arXiv 2011.13456).
* ``eps``: ``E[ε | x, s]`` for ``x = a y + b ε`` (DDPM, arXiv 2006.11239).
* ``v``: ``a ε - b y`` (v-prediction, Salimans & Ho, arXiv 2202.00512, written for any
  affine path; for VP, ``a² + b² = 1``, it is theirs).
* ``velocity``: ``dx/ds`` itself (e.g. PFGM's normalised Poisson field, arXiv 2209.11178;
  for an affine path, flow matching's ``E[a' y + b' ε | x]``, arXiv 2210.02747).

For a Gaussian marginal ``x = a(s) y + b(s) ε`` Tweedie's formula links the first three:

    score = (a D - x) / b²,    D = (x + b² score) / a,    eps = (x - a D) / b = -b score,

and the path alone (any affine path, Gaussian or not) links the denoiser, ``v`` and the
velocity (with ``a' = da/ds``, ``b' = db/ds``)::

    v = (a x - (a² + b²) D) / b,                  D = (a x - b v) / (a² + b²),
    u = a' D + b' (x - a D) / b,                  D = (b u - b' x) / (a' b - a b').

:func:`convert_gaussian` converts between any two kinds: directly where a converter of the
pair is named below, else through the denoiser.

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
    "denoiser_to_v",
    "v_to_denoiser",
    "denoiser_to_velocity",
    "velocity_to_denoiser",
    "convert_gaussian",
]

FieldKind = Literal["denoiser", "score", "eps", "v", "velocity"]
FIELD_KINDS = ("denoiser", "score", "eps", "v", "velocity")


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


def denoiser_to_v(d: Tensor, x: Tensor, a: Tensor, b: Tensor) -> Tensor:
    a, b = expand_as_batch(a, x), expand_as_batch(b, x)
    return (a * x - (a**2 + b**2) * d) / b


def v_to_denoiser(v: Tensor, x: Tensor, a: Tensor, b: Tensor) -> Tensor:
    a, b = expand_as_batch(a, x), expand_as_batch(b, x)
    return (a * x - b * v) / (a**2 + b**2)


def denoiser_to_velocity(d: Tensor, x: Tensor, a: Tensor, b: Tensor, da: Tensor, db: Tensor) -> Tensor:
    a, b, da, db = (expand_as_batch(t, x) for t in (a, b, da, db))
    return da * d + db * (x - a * d) / b


def velocity_to_denoiser(u: Tensor, x: Tensor, a: Tensor, b: Tensor, da: Tensor, db: Tensor) -> Tensor:
    a, b, da, db = (expand_as_batch(t, x) for t in (a, b, da, db))
    return (b * u - db * x) / (da * b - a * db)


_CONVERTERS: dict[tuple[str, str], Callable[..., Tensor]] = {
    ("denoiser", "score"): denoiser_to_score,
    ("score", "denoiser"): score_to_denoiser,
    ("eps", "denoiser"): eps_to_denoiser,
    ("denoiser", "eps"): denoiser_to_eps,
    ("score", "eps"): score_to_eps,
    ("eps", "score"): eps_to_score,
    ("denoiser", "v"): denoiser_to_v,
    ("v", "denoiser"): v_to_denoiser,
}
_PATH_CONVERTERS = {("denoiser", "velocity"): denoiser_to_velocity, ("velocity", "denoiser"): velocity_to_denoiser}
"""The converters that need the path's derivatives ``(a', b')`` too."""


def convert_gaussian(out: Tensor, source: str, target: str, x: Tensor, a: Tensor, b: Tensor,
                     da: Optional[Tensor] = None, db: Optional[Tensor] = None) -> Tensor:
    """Convert a field output between kinds on the path ``x = a y + b ε`` (``da``, ``db``: the
    derivatives ``a'``, ``b'``, needed only to or from ``velocity``): by the pair's converter,
    else through the denoiser; a ``ValueError`` naming the pair where none applies."""
    if source == target:
        return out
    pair = (source, target)
    if pair in _CONVERTERS:
        return _CONVERTERS[pair](out, x, a, b)
    if pair in _PATH_CONVERTERS:
        if da is None or db is None:
            raise ValueError(f"converting a {source!r} field to {target!r} needs the path's derivatives da/ds and db/ds")
        return _PATH_CONVERTERS[pair](out, x, a, b, da, db)
    if source in FIELD_KINDS and target in FIELD_KINDS and "denoiser" not in pair:
        d = convert_gaussian(out, source, "denoiser", x, a, b, da, db)
        return convert_gaussian(d, "denoiser", target, x, a, b, da, db)
    raise ValueError(f"no Gaussian conversion from a {source!r} field to {target!r}")
