"""Exact, batched, device-side samplers that take a ``torch.Generator``.

``torch.distributions`` cannot take a generator (its samplers draw from the global RNG),
so a run that must be reproducible from its own generator, or a sample that must depend
only on its own seed (:class:`physgen.noise.SeededNoise`), cannot use it.  These samplers
run on the generator's device, draw whole batches at once, and are exact (no truncation
of any law):

* :func:`gamma` -- Marsaglia & Tsang (2000), "A simple method for generating gamma
  variables", ACM TOMS 26(3):363-372, with their boost ``Gamma(a) = Gamma(a+1) U^{1/a}``
  for ``a < 1``;
* :func:`beta` (``G1/(G1+G2)``), :func:`beta_prime` (``G1/G2``, the odds ``b/(1-b)`` of a
  Beta without the ``1 - b`` cancellation), :func:`chi2` (``2 Gamma(df/2)``);
* :func:`uniform_sphere` -- a normalised Gaussian (Muller 1959).

Draws happen in float64 by default: ``Gamma(a < 1)`` puts mass near 0 (``U^{1/a}``) that a
float32 uniform (granularity ``2^-24``) would cut off.  Half-integer concentrations up to
``4`` (``Gamma(1/2)``, ``Gamma(1)``, ... as in PFGM++ at small ``N`` or ``D``) are drawn as
``χ²_k / 2``, a sum of ``k`` squared normals: exact, and cheaper than rejection.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from .errors import UserError

__all__ = ["gamma", "beta", "beta_prime", "chi2", "uniform_sphere"]

Number = Union[float, int, Tensor]

# Candidates per element: the first pass draws one per element (Marsaglia-Tsang accepts
# with probability >= 0.951 for every a >= 1, their Table 1); the few rejected elements then
# draw _RETRY_CANDIDATES at once, so a third pass is needed for ~1e-5 of the elements.
_RETRY_CANDIDATES = 4
# Half-integer concentrations a = k/2 up to this k are drawn as χ²_k / 2 (k normals), which is
# exact and cheaper than rejection for small k (PFGM++ at small N or D: Gamma(1/2), Gamma(1), ...).
_CHI2_MAX_DF = 8


def _device_of(generator: Optional[torch.Generator], device) -> torch.device:
    if device is not None:
        return torch.device(device)
    return generator.device if generator is not None else torch.device("cpu")


def _concentration(a: Number, shape: Sequence[int], device, name: str) -> Union[float, Tensor]:
    """A Python float (the common, cheap case) or a flat float64 tensor broadcast to ``shape``."""
    if not isinstance(a, Tensor) or a.numel() == 1:
        value = float(a)
        if not (math.isfinite(value) and value > 0):
            raise UserError(f"{name} must be positive and finite, got {value!r}")
        return value
    t = a.to(device=device, dtype=torch.float64)
    if not bool(torch.all(torch.isfinite(t) & (t > 0))):
        raise UserError(f"{name} must be positive and finite, got min {t.min().item()!r}")
    return t.expand(tuple(shape)).reshape(-1)


def _mt_candidates(d, c, n: int, k: int, generator, device, dtype) -> tuple[Tensor, Tensor]:
    """``k`` Marsaglia-Tsang candidates for each of ``n`` rows: (accepted ``[n, k]``, values ``d v``).

    ``d``, ``c`` are floats or ``[n, 1]`` tensors.
    """
    x = torch.randn((n, k), generator=generator, device=device, dtype=dtype)
    u = torch.rand((n, k), generator=generator, device=device, dtype=dtype)
    v = (c * x).add_(1.0)
    pos = v > 0
    v = v * v * v
    lv = torch.log(v)  # NaN where v <= 0; those candidates are rejected through ``pos``
    ok = torch.log(u) < (0.5 * x * x).add_(d * (1.0 - v + lv))
    return ok.logical_and_(pos), d * v


def _marsaglia_tsang(a: Union[float, Tensor], n: int, generator, device, dtype) -> Tensor:
    """``n`` draws of ``Gamma(a, 1)`` for ``a >= 1`` (a float, or a flat ``[n]`` tensor).

    With ``d = a - 1/3``, ``c = 1/sqrt(9d)``, ``x ~ N(0,1)``, ``v = (1 + c x)^3``, ``u ~ U(0,1)``:
    accept ``d v`` when ``v > 0`` and ``ln u < x²/2 + d - d v + d ln v``.  The first pass
    draws one candidate for every element; the rejected ones (under 5%) draw
    ``_RETRY_CANDIDATES`` each and keep their first accepted one, looping only on the
    rare remainder.
    """
    scalar = not isinstance(a, Tensor)
    d_all = a - 1.0 / 3.0
    c_all = 1.0 / math.sqrt(9.0 * d_all) if scalar else 1.0 / torch.sqrt(9.0 * d_all)
    d0, c0 = (d_all, c_all) if scalar else (d_all[:, None], c_all[:, None])
    ok, val = _mt_candidates(d0, c0, n, 1, generator, device, dtype)
    out = val.squeeze(1)
    todo = torch.nonzero(~ok.squeeze(1)).squeeze(1)
    while todo.numel() > 0:
        d, c = (d_all, c_all) if scalar else (d_all[todo, None], c_all[todo, None])
        ok, val = _mt_candidates(d, c, todo.numel(), _RETRY_CANDIDATES, generator, device, dtype)
        first = ok.to(torch.int8).argmax(1)  # index of the first accepted candidate
        got = ok.any(1)
        out[todo[got]] = val.gather(1, first[:, None]).squeeze(1)[got]
        todo = todo[~got]
    return out


def gamma(concentration: Number, shape: Sequence[int], generator: Optional[torch.Generator] = None, *,
          device=None, dtype: torch.dtype = torch.float64) -> Tensor:
    """``Gamma(a, 1)`` draws shaped ``shape`` (density ``x^{a-1} e^{-x} / Γ(a)``), exactly.

    Half-integer ``a = k/2`` with ``k <= 8``: ``χ²_k / 2`` as a sum of ``k`` squared standard
    normals (exact; no rejection).  Otherwise Marsaglia & Tsang (2000) for ``a >= 1``; for
    ``a < 1`` the boost
    ``X = Y U^{1/a}`` with ``Y ~ Gamma(a + 1)``, ``U ~ U(0, 1)`` (computed as
    ``exp(ln Y + ln U / a)`` in float64, so ``Gamma(1/2)`` keeps its mass near 0).
    ``concentration`` is a number or a tensor broadcastable to ``shape``; draws are on
    ``device`` (default: the generator's) and computed in float64, then cast to ``dtype``.
    """
    device = _device_of(generator, device)
    shape = tuple(int(s) for s in shape)
    a = _concentration(concentration, shape, device, "gamma concentration")
    n = math.prod(shape)
    if n == 0:
        return torch.empty(shape, device=device, dtype=dtype)
    f64 = torch.float64
    if not isinstance(a, Tensor):
        k = 2.0 * a
        if k <= _CHI2_MAX_DF and k.is_integer():
            # Gamma(k/2) = χ²_k / 2 = Σ g_i² / 2 with k standard normals: exact, no rejection
            g = torch.randn((n, int(k)), generator=generator, device=device, dtype=f64)
            return (0.5 * g.square().sum(1)).reshape(shape).to(dtype)
        if a >= 1:
            y = _marsaglia_tsang(a, n, generator, device, f64)
        else:
            y = _marsaglia_tsang(a + 1.0, n, generator, device, f64)
            u = torch.rand(n, generator=generator, device=device, dtype=f64)
            # u = 0 has probability 2^-53 per draw; it gives X = 0 (the law's limit), harmless
            y = torch.exp(torch.log(y).add_(torch.log(u).div_(a)))
        return y.reshape(shape).to(dtype)
    small = a < 1
    y = _marsaglia_tsang(torch.where(small, a + 1.0, a), n, generator, device, f64)
    if bool(small.any()):
        u = torch.rand(n, generator=generator, device=device, dtype=f64)
        y = torch.where(small, torch.exp(torch.log(y) + torch.log(u) / a), y)
    return y.reshape(shape).to(dtype)


def beta(a: Number, b: Number, shape: Sequence[int], generator: Optional[torch.Generator] = None, *,
         device=None, dtype: torch.dtype = torch.float64) -> Tensor:
    """``Beta(a, b)`` draws: ``G1 / (G1 + G2)`` with ``G1 ~ Gamma(a)``, ``G2 ~ Gamma(b)``."""
    g1 = gamma(a, shape, generator, device=device)
    g2 = gamma(b, shape, generator, device=device)
    return (g1 / (g1 + g2)).to(dtype)


def beta_prime(a: Number, b: Number, shape: Sequence[int], generator: Optional[torch.Generator] = None, *,
               device=None, dtype: torch.dtype = torch.float64) -> Tensor:
    """The odds ``B/(1-B)`` of ``B ~ Beta(a, b)``, i.e. a Beta-prime ``β'(a, b)`` draw, as ``G1/G2``.

    Computing ``G1/G2`` directly avoids forming ``1 - B``, which cancels catastrophically
    when ``B`` is near 1 (e.g. ``Beta(N/2, 1/2)`` for large ``N``).  ``G2`` is floored at
    the smallest positive float64 (``2.2e-308``) so the ratio is never ``inf``; a float64
    ``Gamma(b)`` draw below that has probability far below ``1e-100`` for ``b >= 1/2``, so
    the floor changes nothing measurable.
    """
    g1 = gamma(a, shape, generator, device=device)
    g2 = gamma(b, shape, generator, device=device)
    return (g1 / g2.clamp_min(torch.finfo(torch.float64).tiny)).to(dtype)


def chi2(df: Number, shape: Sequence[int], generator: Optional[torch.Generator] = None, *,
         device=None, dtype: torch.dtype = torch.float64) -> Tensor:
    """``χ²_df`` draws: ``2 Gamma(df/2)``."""
    half = df / 2.0 if not isinstance(df, Tensor) else df.to(torch.float64) / 2.0
    return (2.0 * gamma(half, shape, generator, device=device)).to(dtype)


def uniform_sphere(shape: Sequence[int], generator: Optional[torch.Generator] = None, *,
                   device=None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Directions uniform on the unit sphere of the trailing dims: ``shape = (B, *dims)``.

    ``u = g/‖g‖`` with ``g ~ N(0, I)`` over all of ``dims`` (the Gaussian is rotation
    invariant).  ``g = 0`` has probability zero; were it drawn, the row would be the unit
    vector ``e_1`` rather than a NaN.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        raise ValueError(f"uniform_sphere needs shape (B, *dims), got {shape}")
    device = _device_of(generator, device)
    g = torch.randn(shape, generator=generator, device=device, dtype=dtype)
    flat = g.reshape(shape[0], -1)
    norm = flat.norm(dim=1, keepdim=True)
    e1 = torch.zeros_like(flat)
    e1[:, 0] = 1.0
    u = torch.where(norm > 0, flat / norm.clamp_min(torch.finfo(dtype).tiny), e1)
    return u.reshape(shape)

