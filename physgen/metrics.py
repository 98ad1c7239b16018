"""Sample metrics between a generated point set ``x [n, d]`` and a reference ``y [m, d]``.

All computations run in float64 on ``x``'s device.  Pairwise sums are taken over blocks of
rows (about ``_PAIR_BLOCK`` = 65536 pair entries at once), so 10k x 10k (or 100k x 100k,
slowly) runs in bounded memory.  Inputs may be torch tensors or numpy arrays.

* :func:`sliced_w2`: ``SW2(mu, nu) = (E_theta W2^2(theta#mu, theta#nu))^{1/2}`` with
  ``theta`` uniform on the unit sphere, estimated with ``P`` fixed projections drawn from a
  seed (:func:`projections`).  Each 1-D ``W2^2`` is exact, also for unequal sizes.
* :func:`mmd`: unbiased squared MMD with a sum of RBF kernels.
* :func:`energy_distance`: the (squared) energy distance
  ``2 E|X-Y| - E|X-X'| - E|Y-Y'|`` of the two empirical laws.
* :func:`exact_w2`: exact ``W2`` between equal-size sets by optimal assignment.
* :func:`sample_metrics`: the dict the CLI writes to ``metrics.json``.
* :func:`mode_weights`: the fraction of samples nearest to each centre.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from .errors import UserError

__all__ = [
    "sliced_w2", "projections", "mmd", "default_bandwidths", "energy_distance", "exact_w2",
    "sample_metrics", "mode_weights", "EXACT_W2_MAX", "SAMPLE_METRICS_EXACT_MAX",
]

EXACT_W2_MAX = 5000  # largest n for exact_w2 (an n x n cost matrix and an O(n^3) solve)
SAMPLE_METRICS_EXACT_MAX = 2000  # sample_metrics adds exact_w2 when both sets are this small
_PAIR_BLOCK = 1 << 16  # pair entries per block (512 KiB in float64: elementwise work stays in cache)
_PAIR_BLOCK_ACCEL = 1 << 24  # on an accelerator: bigger blocks, fewer kernel launches
_PROJ_BLOCK = 1 << 22  # projected values per block in sliced_w2 (32 MiB in float64)
_BANDWIDTH_MULTIPLES = (0.25, 0.5, 1.0, 2.0, 4.0)
_MEDIAN_SUBSAMPLE = 2000


def _points(a: Any, name: str, device: Optional[torch.device] = None) -> Tensor:
    if isinstance(a, Tensor):
        t = a.detach()
    else:
        t = torch.as_tensor(np.asarray(a))
    if t.ndim == 1:
        t = t[:, None]
    if t.ndim != 2:
        raise UserError(f"{name}: expected points shaped [n, d], got shape {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise UserError(f"{name}: expected at least one point, got shape {tuple(t.shape)}")
    return t.to(device=t.device if device is None else device, dtype=torch.float64)


def _pair(x: Any, y: Any) -> tuple[Tensor, Tensor]:
    xt = _points(x, "x")
    yt = _points(y, "y", xt.device)
    if xt.shape[1] != yt.shape[1]:
        raise UserError(f"point sets differ in dimension: x is [{xt.shape[0]}, {xt.shape[1]}], "
                        f"y is [{yt.shape[0]}, {yt.shape[1]}]")
    return xt, yt


def _cdist(a: Tensor, b: Tensor) -> Tensor:
    """Euclidean distances ``[len(a), len(b)]``; direct differences in low dimension (exact zeros)."""
    mode = "donot_use_mm_for_euclid_dist" if a.shape[1] <= 16 else "use_mm_for_euclid_dist"
    return torch.cdist(a, b, compute_mode=mode)


def _block(device: torch.device) -> int:
    return _PAIR_BLOCK if device.type == "cpu" else _PAIR_BLOCK_ACCEL


def _pair_sum(a: Tensor, b: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
    """``sum_{i,j} fn(|a_i - b_j|)`` over blocks of rows of ``a`` (``fn`` is elementwise)."""
    rows = max(1, _block(a.device) // max(1, b.shape[0]))
    total = a.new_zeros(())
    for start in range(0, a.shape[0], rows):
        total = total + fn(_cdist(a[start:start + rows], b)).sum()
    return total


# ------------------------------------------------------------------ sliced W2
def projections(dim: int, n_projections: int = 256, seed: int = 0) -> Tensor:
    """``[P, dim]`` float64 unit vectors, uniform on the sphere, from ``torch.Generator(seed)``.

    Drawn on the CPU (normalised standard normals), so they are the same on every device.
    """
    if n_projections < 1:
        raise UserError(f"n_projections must be >= 1, got {n_projections}")
    g = torch.Generator().manual_seed(int(seed))
    theta = torch.randn(int(n_projections), int(dim), generator=g, dtype=torch.float64)
    return theta / theta.norm(dim=1, keepdim=True)


def _w2sq_1d_sorted(a: Tensor, b: Tensor) -> Tensor:
    """Exact ``W2^2`` per column between the empirical laws of sorted columns ``a [n, P]``, ``b [m, P]``.

    ``W2^2 = int_0^1 (F^{-1}(u) - G^{-1}(u))^2 du``; both quantile functions are steps with
    jumps at ``i/n`` and ``j/m``, so the integral is a finite sum over the merged breaks.
    """
    n, m = a.shape[0], b.shape[0]
    if n == m:
        return ((a - b) ** 2).mean(0)
    # Merge the breakpoints i/n and j/m (in integer units of 1/(n m) to avoid rounding).
    breaks = torch.cat([torch.arange(1, n + 1, device=a.device) * m,
                        torch.arange(1, m + 1, device=a.device) * n]).unique(sorted=True)
    lo = torch.cat([breaks.new_zeros(1), breaks[:-1]])
    width = (breaks - lo).to(torch.float64) / (n * m)
    # On (lo, hi], F^{-1} takes sample index ceil(u n) - 1 = floor(lo / m) (lo in units 1/(nm)).
    ia = torch.div(lo, m, rounding_mode="floor")
    ib = torch.div(lo, n, rounding_mode="floor")
    return (width[:, None] * (a[ia] - b[ib]) ** 2).sum(0)


def sliced_w2(x: Any, y: Any, n_projections: int = 256, seed: int = 0) -> float:
    """Sliced Wasserstein-2 distance between the empirical laws of ``x [n, d]`` and ``y [m, d]``.

    ``SW2^2 = (1/P) sum_p W2^2(<theta_p, x>, <theta_p, y>)`` with ``theta = projections(d, P,
    seed)``.  Each 1-D ``W2^2`` is the exact distance between the projected empirical laws:
    sorted pairs for ``n == m``; for ``n != m`` the integral of the squared difference of the
    two step quantile functions over the merged breakpoints (no subsampling, no interpolation).
    For a translate, ``SW2(x, x + v)^2 = (1/P) sum_p <theta_p, v>^2``, whose expectation over
    ``theta`` is ``|v|^2 / d``.  Returns ``SW2`` (not squared).
    """
    xt, yt = _pair(x, y)
    theta = projections(xt.shape[1], n_projections, seed).to(xt.device)
    # Blocks of projections so [n + m, block] stays bounded.
    block = max(1, _PROJ_BLOCK // (xt.shape[0] + yt.shape[0]))
    total = xt.new_zeros(())
    for start in range(0, theta.shape[0], block):
        th = theta[start:start + block]
        a = torch.sort(xt @ th.T, dim=0).values
        b = torch.sort(yt @ th.T, dim=0).values
        total = total + _w2sq_1d_sorted(a, b).sum()
    return float(torch.sqrt(total / theta.shape[0]))


# ------------------------------------------------------------------------ MMD
def default_bandwidths(z: Any) -> list[float]:
    """RBF bandwidths ``h * (0.25, 0.5, 1, 2, 4)`` with ``h`` the median pairwise distance of ``z``.

    ``h`` is computed on at most 2000 points of ``z`` taken at evenly spaced indices
    (deterministic); if it is 0 (all points equal) ``h = 1``.
    """
    zt = _points(z, "z")
    if zt.shape[0] > _MEDIAN_SUBSAMPLE:
        idx = torch.linspace(0, zt.shape[0] - 1, _MEDIAN_SUBSAMPLE, device=zt.device).round().long()
        zt = zt[idx]
    n = zt.shape[0]
    if n < 2:
        h = 1.0
    else:
        d = _cdist(zt, zt)
        iu = torch.triu_indices(n, n, offset=1, device=zt.device)
        h = float(d[iu[0], iu[1]].median())
        if not (h > 0 and math.isfinite(h)):
            h = 1.0
    return [h * c for c in _BANDWIDTH_MULTIPLES]


def _rbf_sum(inv: list[float]) -> Callable[[Tensor], Tensor]:
    """``d -> sum_c exp(-c d^2)`` for ascending ``c``.

    When every ``c / c_0`` is a power of two (the default bandwidths: ratios 4, 16, 64, 256)
    only ``exp(-c_0 d^2)`` is evaluated and the others follow by repeated squaring,
    ``exp(-2^k c_0 d^2) = exp(-c_0 d^2)^(2^k)`` (relative rounding grows like ``2^k`` ulp).
    """
    c0 = inv[0]
    powers = [math.log2(c / c0) for c in inv]
    squarings = [round(p) for p in powers]
    fast = all(abs(p - q) < 1e-9 and q >= 0 for p, q in zip(powers, squarings))

    def kern(d: Tensor) -> Tensor:
        d2 = d.square_()  # d is a fresh block: work in place to stay in cache
        if not fast:
            out = torch.zeros_like(d2)
            for c in inv:
                out += torch.exp(d2 * -c)
            return out
        e = d2.mul_(-c0).exp_()
        out = torch.zeros_like(e)
        done = 0
        for q in squarings:
            while done < q:
                e.square_()
                done += 1
            out += e
        return out

    return kern


def mmd(x: Any, y: Any, bandwidths: Optional[Sequence[float]] = None, unbiased: bool = True) -> float:
    """Squared maximum mean discrepancy with the kernel ``k(a, b) = sum_h exp(-|a-b|^2 / (2 h^2))``.

    Unbiased (U-statistic, default)::

        MMD^2_u = sum_{i != j} k(x_i, x_j) / (n(n-1)) + sum_{i != j} k(y_i, y_j) / (m(m-1))
                  - 2 sum_{i,j} k(x_i, y_j) / (n m)

    (can be slightly negative; its mean is the population ``MMD^2``).  ``unbiased=False``
    gives the biased V-statistic (diagonals kept, ``/n^2``, ``/m^2``; always >= 0).
    ``bandwidths=None`` uses :func:`default_bandwidths` of the pooled sample ``x`` and ``y``
    (:func:`sample_metrics` passes the reference's bandwidths, so values are comparable
    across runs against one reference).
    """
    xt, yt = _pair(x, y)
    n, m = xt.shape[0], yt.shape[0]
    if unbiased and (n < 2 or m < 2):
        raise UserError(f"unbiased MMD needs at least 2 points in each set, got {n} and {m}")
    if bandwidths is None:
        bandwidths = default_bandwidths(torch.cat([xt, yt]))
    h = torch.as_tensor([float(b) for b in bandwidths], dtype=torch.float64, device=xt.device)
    if h.numel() == 0 or not bool((h > 0).all()) or not bool(torch.isfinite(h).all()):
        raise UserError(f"MMD bandwidths must be finite and > 0, got {list(bandwidths)}")
    kern = _rbf_sum(sorted((1.0 / (2 * h ** 2)).tolist()))

    kxx, kyy, kxy = _pair_sum(xt, xt, kern), _pair_sum(yt, yt, kern), _pair_sum(xt, yt, kern)
    k = float(h.numel())  # k(a, a)
    if unbiased:
        val = (kxx - n * k) / (n * (n - 1)) + (kyy - m * k) / (m * (m - 1)) - 2 * kxy / (n * m)
    else:
        val = kxx / n ** 2 + kyy / m ** 2 - 2 * kxy / (n * m)
    return float(val)


# ------------------------------------------------------------ energy distance
def energy_distance(x: Any, y: Any) -> float:
    """Squared energy distance ``2 E|X-Y| - E|X-X'| - E|Y-Y'|`` of the two empirical laws.

    V-statistics (all pairs, diagonals included), so the value is >= 0 and exactly 0 for
    identical sets (clamped at 0 against rounding).  In 1-D it equals
    ``scipy.stats.energy_distance(x, y) ** 2`` (``= 2 int (F - G)^2``).
    """
    xt, yt = _pair(x, y)
    n, m = xt.shape[0], yt.shape[0]
    ident = lambda d: d  # noqa: E731
    exy = _pair_sum(xt, yt, ident) / (n * m)
    exx = _pair_sum(xt, xt, ident) / (n * n)
    eyy = _pair_sum(yt, yt, ident) / (m * m)
    return max(0.0, float(2 * exy - exx - eyy))


# ----------------------------------------------------------------- exact W2
def exact_w2(x: Any, y: Any, max_points: int = EXACT_W2_MAX) -> float:
    """``W2 = min_perm ((1/n) sum_i |x_i - y_perm(i)|^2)^{1/2}`` between equal-size sets.

    Solved exactly by ``scipy.optimize.linear_sum_assignment`` on the squared-distance cost
    matrix (the optimal coupling of two uniform ``n``-point laws is a permutation).  Raises
    :class:`UserError` when sizes differ or exceed ``max_points`` (default 5000).
    """
    from scipy.optimize import linear_sum_assignment  # scipy, loaded only for the exact W2 (an import of seconds)

    xt, yt = _pair(x, y)
    n, m = xt.shape[0], yt.shape[0]
    if n != m:
        raise UserError(f"exact_w2 needs point sets of equal size, got {n} and {m}")
    if n > max_points:
        raise UserError(f"exact_w2 is limited to {max_points} points (an n x n assignment), got {n}; "
                        f"use sliced_w2 for larger sets")
    cost = (_cdist(xt, yt) ** 2).cpu().numpy()
    if not np.isfinite(cost).all():
        raise UserError("exact_w2: point sets contain non-finite values")
    rows, cols = linear_sum_assignment(cost)
    return float(math.sqrt(max(0.0, cost[rows, cols].mean())))


# ------------------------------------------------------------- summary dict
def sample_metrics(samples: Any, reference: Any, n_projections: int = 256, seed: int = 0,
                   exact_max: int = SAMPLE_METRICS_EXACT_MAX) -> Dict[str, float]:
    """The metrics the CLI writes to ``metrics.json``, as plain floats.

    Keys: ``sliced_w2``, ``mmd`` (unbiased, bandwidths from the *reference* via
    :func:`default_bandwidths`, so runs against one reference compare), ``energy``,
    ``nonfinite`` (number of sample rows with a NaN/inf; the metrics use the finite rows,
    and are NaN if there are none), and ``exact_w2`` when both sets have at most
    ``exact_max`` (2000) points; if their sizes differ, on the first ``min(n, m)`` points
    of each (i.i.d. sets, so a fair subsample).
    """
    xt, yt = _pair(samples, reference)
    if not bool(torch.isfinite(yt).all()):
        raise UserError("reference points contain non-finite values")
    finite = torch.isfinite(xt).all(dim=1)
    nonfinite = int((~finite).sum())
    xt = xt[finite]
    out: Dict[str, float] = {"nonfinite": float(nonfinite)}
    nan = float("nan")
    if xt.shape[0] < 2 or yt.shape[0] < 2:
        out.update(sliced_w2=nan, mmd=nan, energy=nan)
    else:
        out["sliced_w2"] = sliced_w2(xt, yt, n_projections=n_projections, seed=seed)
        out["mmd"] = mmd(xt, yt, bandwidths=default_bandwidths(yt))
        out["energy"] = energy_distance(xt, yt)
    if 0 < xt.shape[0] <= exact_max and yt.shape[0] <= exact_max:
        k = min(xt.shape[0], yt.shape[0])
        out["exact_w2"] = exact_w2(xt[:k], yt[:k])
    return out


# -------------------------------------------------------------- mode weights
def mode_weights(samples: Any, centers: Any) -> Tensor:
    """Fraction of ``samples [n, d]`` whose nearest centre (Euclidean) is each of ``centers [K, d]``.

    Returns float64 ``[K]``.  Fractions are over all ``n`` samples; a sample with a
    non-finite coordinate counts towards no centre, so the sum is the finite fraction.
    Ties go to the lowest index.
    """
    xt, ct = _pair(samples, centers)
    k = ct.shape[0]
    finite = torch.isfinite(xt).all(dim=1)
    counts = torch.zeros(k, dtype=torch.float64, device=xt.device)
    rows = max(1, _block(xt.device) // k)
    xf = xt[finite]
    for start in range(0, xf.shape[0], rows):
        nearest = _cdist(xf[start:start + rows], ct).argmin(dim=1)
        counts += torch.bincount(nearest, minlength=k).to(torch.float64)
    return counts / xt.shape[0]
