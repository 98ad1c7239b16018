"""Exact fields of a finite point set: the posterior mean under any radial kernel.

For the empirical distribution of points ``{y_i}`` and a forward kernel
``p_s(x | y) = k_s(‖x - a(s) y‖²)`` the ideal denoiser is the posterior mean

    D*(x, s) = Σ_i w_i y_i / Σ_i w_i,      log w_i = log k_s(‖x - a y_i‖²)

(DESIGN.md §3).  Gaussian: ``log k = -d²/(2b²)``; PFGM++: ``-(N+D)/2 · log(d² + r²)``;
Yukawa: the NIG log-density.  Only the radial *log-profile* differs, so one function
serves every process.

Squared distances come from one matrix product, ``‖x‖² - 2a x·y + a²‖y‖²``, and the
weights from a log-sum-exp over blocks of ``chunk_elems`` pairs: all points at once for a
block of query rows while at least ``ONE_BLOCK_MIN_ROWS`` rows fit, else a streaming
log-sum-exp over column blocks of the points.  Memory is bounded by ``chunk_elems``
whatever the number of queries and points (100k × 100k runs in well under 4 GiB).
Relative weights are floored at ``tiny / eps`` (:func:`flush_floor`) so that no
exponential or product runs on subnormal numbers, which on a CPU costs about 100x.  With ``labels`` the posterior is restricted to the points of the
requested class, which is the exact conditional field.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor

from .labels import check_label

__all__ = ["posterior_mean", "ExactField", "LogProfile", "GaussianProfile", "flush_floor"]

LogProfile = Callable[[Tensor, Tensor], Tensor]
"""``log_profile(sqdist [Q, P], s [Q, 1]) -> log weights [Q, P]`` (constants in y may be dropped)."""

DEFAULT_CHUNK_ELEMS = 1 << 21  # pair entries per block: 8 MiB per float32 temporary, near cache size
ONE_BLOCK_MIN_ROWS = 4  # fewer query rows per block than this turn the GEMMs into slow GEMVs: stream instead
STREAM_ROWS = 32  # query rows per block when the points are streamed in column blocks
SUM_BY_GEMM_MAX_DIMS = 16  # up to this many dims per point, Σw and Σw·y come from one GEMM


def flush_floor(dtype: torch.dtype) -> float:
    """The log-weight floor ``log(tiny / eps)`` below which a relative weight is raised to ``tiny / eps``.

    ``torch.exp`` on a CPU takes a slow path (about 100x) for arguments whose result would
    be subnormal or zero (below ``log(tiny)``, about -87 in float32), and products with
    subnormal weights are slow again in the GEMM that follows.  Relative weights
    ``exp(logw - max) <= 1`` are therefore evaluated as ``exp(max(logw - max, floor))``:
    each raised weight adds at most ``tiny / eps`` relative to the largest weight (1), so
    over ``P`` points the result moves by at most ``P tiny / eps``, below ``eps`` by a
    factor ``eps² / (P tiny)`` (about 1e23 / P in float32, 1e276 / P in float64: float
    rounding, not a change of result).  Weights of points excluded by a label are set to
    exactly 0 after the exponential.  (float16 has too little range for this bound; exact
    fields are meant for float32 / float64.)
    """
    info = torch.finfo(dtype)
    return math.log(info.tiny) - math.log(info.eps)


class GaussianProfile:
    """``log w = -‖x - a y‖² / (2 b²)``: the Gaussian log-profile, with a fast path.

    Dropping the row constant ``-‖x‖²/(2b²)`` leaves ``(a/b²) x·y - (a²/(2b²)) ‖y‖²``, which is one
    matrix product of augmented vectors ``[a x / b², -a²/(2b²)] · [y, ‖y‖²]``: the logits come
    out of a single GEMM with no elementwise pass over the ``[Q, P]`` block.
    """

    def __init__(self, coefficients: Callable[[Tensor], tuple[Tensor, Tensor]]):
        self.coefficients = coefficients

    def __call__(self, sqdist: Tensor, s: Tensor) -> Tensor:
        _, b = self.coefficients(s)
        return -0.5 * sqdist / b**2

    def augment(self, x: Tensor, s: Tensor) -> Tensor:
        a, b = (t.to(x.dtype)[:, None] for t in self.coefficients(s))
        prec = 1.0 / b**2
        return torch.cat([x * (a * prec), -0.5 * a**2 * prec], dim=1)


def posterior_mean(
    x: Tensor,
    points: Tensor,
    s: Tensor,
    log_profile: LogProfile,
    *,
    alpha: Optional[Tensor] = None,
    point_labels: Optional[Tensor] = None,
    label: Optional[Tensor] = None,
    pair_value: Optional[Callable[[Tensor, Tensor], Tensor]] = None,
    chunk_elems: int = DEFAULT_CHUNK_ELEMS,
) -> Tensor | tuple[Tensor, Tensor]:
    """``E[y | x, s]`` for queries ``x [Q, ...]`` over ``points [P, ...]`` (same trailing shape).

    ``alpha [Q]`` scales the points (VP's ``a(s)``; ignored by a :class:`GaussianProfile`,
    which carries its own); ``pair_value(sqdist, s)`` returns a per-pair quantity whose
    posterior mean is returned as well (e.g. Yukawa's death rate).  Blocks of
    ``chunk_elems`` pairs are processed at a time (a streaming log-sum-exp across point
    blocks), so memory stays bounded and each block stays in cache.
    """
    q = x.shape[0]
    xf = x.reshape(q, -1)
    yf = points.reshape(points.shape[0], -1).to(xf.dtype)
    if xf.shape[1] != yf.shape[1]:
        raise ValueError(f"queries have {xf.shape[1]} dims but points have {yf.shape[1]}")
    if label is not None and point_labels is None:
        raise ValueError("a label was given but this exact field has no point labels")
    blocks = _Blocks(xf, yf, s.to(xf.dtype), log_profile, alpha, point_labels, label, pair_value, chunk_elems)
    mean = torch.empty_like(xf)
    extra = torch.empty(q, dtype=xf.dtype, device=xf.device) if pair_value is not None else None
    for r0 in range(0, q, blocks.rows):
        r1 = r0 + blocks.rows
        mean[r0:r1], row_extra = blocks.rows_mean(r0)
        if extra is not None:
            extra[r0:r1] = row_extra.squeeze(1)
    if label is not None and not bool(torch.isfinite(mean).all()):
        raise ValueError("a requested label has no points in this exact field")
    mean = mean.reshape(x.shape)
    return (mean, extra) if extra is not None else mean


class _Blocks:
    """The operands of :func:`posterior_mean`, prepared once, and its steps on one block of
    ``rows`` queries against ``cols`` points: the log-weights, the weights, their sums, and
    the streaming log-sum-exp over a row's blocks."""

    def __init__(self, xf: Tensor, yf: Tensor, s: Tensor, log_profile: LogProfile, alpha: Optional[Tensor],
                 point_labels: Optional[Tensor], label: Optional[Tensor], pair_value, chunk_elems: int):
        q, p = xf.shape[0], yf.shape[0]
        self.xf, self.yf, self.s, self.log_profile, self.p = xf, yf, s, log_profile, p
        self.point_labels, self.label, self.pair_value = point_labels, label, pair_value
        self.y_sq = (yf * yf).sum(1)
        self.fast = isinstance(log_profile, GaussianProfile) and pair_value is None
        if self.fast:
            self.x_aug = log_profile.augment(xf, s)
            self.y_aug = torch.cat([yf, self.y_sq[:, None]], dim=1)
        self.a = torch.ones(q, dtype=xf.dtype, device=xf.device) if alpha is None else alpha.to(xf.dtype)
        self.floor = flush_floor(xf.dtype)
        # Block shape: every point in one block while that leaves >= ONE_BLOCK_MIN_ROWS query
        # rows (no running rescale at all); else STREAM_ROWS rows against column blocks.
        if chunk_elems // max(p, 1) >= ONE_BLOCK_MIN_ROWS:
            self.rows, self.cols = max(1, min(q, chunk_elems // p)), p
        else:
            self.rows = max(1, min(q, STREAM_ROWS))
            self.cols = max(1, min(p, chunk_elems // self.rows))
        # With few dims, sum and mean come out of one GEMM against [y, 1] (one pass over the
        # weights less); with many, the extra copy of the points would cost more than it saves.
        self.y_one = torch.cat([yf, torch.ones_like(yf[:, :1])], dim=1) if yf.shape[1] <= SUM_BY_GEMM_MAX_DIMS else None

    def block(self, r0: int, c0: int) -> tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
        """Log-weights, the label match mask and (when needed) squared distances of a block."""
        r1, c1 = r0 + self.rows, c0 + self.cols
        if self.fast:
            logw, sq = self.x_aug[r0:r1] @ self.y_aug[c0:c1].T, None
        else:
            xr, ar = self.xf[r0:r1], self.a[r0:r1, None]
            # ‖x - a y‖² = ‖x‖² - 2a x·y + a²‖y‖², clamped: rounding can make it slightly negative
            sq = (xr * xr).sum(1, keepdim=True) - 2.0 * ar * (xr @ self.yf[c0:c1].T)
            sq = sq.add_(ar**2 * self.y_sq[c0:c1]).clamp_min_(0.0)
            logw = self.log_profile(sq, self.s[r0:r1, None])
        match = None
        if self.label is not None:  # a negative (null) label keeps every point: an unconditional row
            lab = self.label[r0:r1, None]
            match = (self.point_labels[c0:c1][None, :] == lab) | (lab < 0)
            logw = logw.masked_fill(~match, -torch.inf)
        return logw, match, sq

    def weights(self, logw: Tensor, match: Optional[Tensor], shift: Tensor) -> Tensor:
        """``exp(max(logw - shift, floor))``, zero off the label's points (see :func:`flush_floor`).

        In place on ``logw`` (a fresh block), unless autograd tracks it (the likelihood
        differentiates the field) or ``pair_value`` still needs the squared distances and the
        profile handed them back as they were."""
        if logw.requires_grad or self.pair_value is not None:
            w = torch.exp(torch.clamp(logw, min=shift + self.floor) - shift)
            return w if match is None else w.masked_fill(~match, 0.0)
        w = torch.clamp_(logw, min=shift + self.floor).sub_(shift).exp_()
        return w if match is None else w.masked_fill_(~match, 0.0)

    def weighted(self, w: Tensor, c0: int) -> tuple[Tensor, Tensor]:
        """``(Σ_j w_j, Σ_j w_j y_j)`` over the block's points."""
        if self.y_one is None:
            return w.sum(1, keepdim=True), w @ self.yf[c0 : c0 + self.cols]
        both = w @ self.y_one[c0 : c0 + self.cols]
        return both[:, -1:], both[:, :-1]

    def rows_mean(self, r0: int) -> tuple[Tensor, Optional[Tensor]]:
        """The posterior means of rows ``r0:r0+rows`` (and of ``pair_value``), streaming the
        log-sum-exp across the point blocks: each block's sums are rescaled to the running maximum."""
        xf, floor, r1 = self.xf, self.floor, r0 + self.rows
        run_max = torch.full((min(self.rows, xf.shape[0] - r0), 1), -torch.inf, dtype=xf.dtype, device=xf.device)
        run_sum = torch.zeros_like(run_max)
        run_mean = torch.zeros_like(xf[r0:r1])
        run_extra = torch.zeros_like(run_max) if self.pair_value is not None else None
        for c0 in range(0, self.p, self.cols):
            logw, match, sq = self.block(r0, c0)
            new_max = torch.maximum(run_max, logw.amax(1, keepdim=True))
            safe_max = torch.where(torch.isfinite(new_max), new_max, torch.zeros_like(new_max))
            w = self.weights(logw, match, safe_max)
            block_sum, block_mean = self.weighted(w, c0)
            block_extra = (w * self.pair_value(sq, self.s[r0:r1, None])).sum(1, keepdim=True) if run_extra is not None else None
            if self.cols >= self.p:  # the only block: nothing to rescale
                run_sum, run_mean, run_extra = block_sum, block_mean, block_extra
            else:
                rescale = torch.exp(torch.clamp(run_max - safe_max, min=floor))
                run_sum = run_sum * rescale + block_sum
                run_mean = run_mean * rescale + block_mean
                if run_extra is not None:
                    run_extra = run_extra * rescale + block_extra
            run_max = new_max
        return run_mean / run_sum, None if run_extra is None else run_extra / run_sum


class ExactField:
    """The exact denoiser of a finite point set under a process's kernel (kind ``denoiser``).

    ``log_profile`` and ``alpha`` come from the process (``process.exact_field(points)``
    builds this); ``point_labels`` make it conditional: ``field(x, s, label)`` is the
    posterior over the points of class ``label[i]`` only.
    """

    kind = "denoiser"

    def __init__(
        self,
        points: Tensor,
        log_profile: LogProfile,
        *,
        alpha: Optional[Callable[[Tensor], Tensor]] = None,
        point_labels: Optional[Tensor] = None,
        chunk_elems: int = DEFAULT_CHUNK_ELEMS,
    ):
        if points.ndim < 2 or points.shape[0] == 0:
            raise ValueError(f"points must be a non-empty [P, ...] tensor, got shape {tuple(points.shape)}")
        if point_labels is not None and point_labels.shape != points.shape[:1]:
            raise ValueError(f"point_labels must be shaped [{points.shape[0]}], got {tuple(point_labels.shape)}")
        self.points = points
        self.log_profile = log_profile
        self.alpha = alpha
        self.point_labels = point_labels
        self.chunk_elems = chunk_elems

    @property
    def num_classes(self) -> Optional[int]:
        return None if self.point_labels is None else int(self.point_labels.max()) + 1

    def __call__(self, x: Tensor, s: Tensor, label: Optional[Tensor] = None) -> Tensor:
        points = self.points.to(device=x.device, dtype=x.dtype)
        labels = None if self.point_labels is None else self.point_labels.to(x.device)
        k = self.num_classes
        label = check_label(label, k, x.shape[0], device=x.device, what="this exact field")
        if label is not None:  # null entries (= k) keep every point
            label = torch.where(label == k, torch.full_like(label, -1), label)
        return posterior_mean(
            x,
            points,
            s,
            self.log_profile,
            alpha=None if self.alpha is None else self.alpha(s),
            point_labels=labels,
            label=label,
            chunk_elems=self.chunk_elems,
        )
