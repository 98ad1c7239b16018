"""How a solver's error is summarised when a few samples carry it (issue 24's benchmark).

Per sample ``i`` the error is the L2 distance ``e_i = ‖x_i - x_i^ref‖`` to the float64 reference
solution from the same start point (:func:`physgen.compare.run.rms_error` is ``sqrt(mean_i e_i²)``).
On a trained field a handful of samples can carry most of ``Σ e_i²`` (issue 24: the worst 1% carried
75-80% on problem (b)), so the RMS alone moves with the draws.  Beside it the benchmark reports

* the *trimmed* RMS, ``sqrt(mean of e_i² over the samples left after dropping the ⌊q n⌋ largest e_i``)
  (``q = 0.01``: "without the worst 1%"), and
* the *worst share*, ``Σ_{worst ⌊q n⌋} e_i² / Σ_i e_i²``: how much of the squared error those samples carry;

and, across independently trained fields, the median and range of each ratio to Euler
(:func:`median_range`).  A non-finite error (a diverged solve) counts as the worst value.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["per_sample_errors", "trimmed_rms_error", "worst_share", "median_range"]


def per_sample_errors(x: Tensor, ref: Tensor) -> Tensor:
    """``e_i = ‖x_i - ref_i‖`` in float64 on the CPU (a flattened sample per row)."""
    if x.shape[0] != ref.shape[0]:
        raise ValueError(f"x has {x.shape[0]} samples but the reference {ref.shape[0]}")
    d = x.reshape(x.shape[0], -1).detach().to("cpu", torch.float64) - ref.reshape(ref.shape[0], -1).detach().to("cpu", torch.float64)
    return d.pow(2).sum(1).sqrt()


def _n_dropped(n: int, drop: float) -> int:
    if not 0.0 <= drop < 1.0:
        raise ValueError(f"drop must be in [0, 1), got {drop}")
    return int(math.floor(drop * n))


def trimmed_rms_error(x: Tensor, ref: Tensor, drop: float = 0.01) -> float:
    """The RMS of ``e_i`` over the samples left after dropping the ``⌊drop n⌋`` largest (NaN errors
    sort as the largest, so a few diverged samples are dropped first; more than that gives NaN)."""
    e = per_sample_errors(x, ref)
    e = torch.where(torch.isfinite(e), e, torch.full_like(e, math.inf))
    k = _n_dropped(e.numel(), drop)
    kept = torch.sort(e).values[: e.numel() - k]
    value = float(kept.pow(2).mean().sqrt())
    return value if math.isfinite(value) else math.nan


def worst_share(x: Tensor, ref: Tensor, drop: float = 0.01) -> float:
    """``Σ_{worst ⌊drop n⌋} e_i² / Σ_i e_i²`` (NaN if an error is not finite, 0 for an exact solve)."""
    sq = per_sample_errors(x, ref).pow(2)
    total = float(sq.sum())
    if not math.isfinite(total):
        return math.nan
    if total == 0.0:
        return 0.0
    k = _n_dropped(sq.numel(), drop)
    return float(torch.sort(sq, descending=True).values[:k].sum()) / total


def median_range(values: Sequence[float]) -> tuple[float, float, float]:
    """``(median, min, max)`` of ``values``; a NaN (a diverged run) counts as +inf, the worst value,
    so one divergence among three fields moves the median by one rank and shows in the maximum."""
    if not values:
        raise ValueError("median_range needs at least one value")
    v = sorted(math.inf if math.isnan(float(x)) else float(x) for x in values)
    n = len(v)
    mid = v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])
    return mid, v[0], v[-1]
