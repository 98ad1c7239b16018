"""Exact fields of a finite point set: the posterior mean under any radial kernel.

For the empirical distribution of points ``{y_i}`` and a forward kernel
``p_s(x | y) = k_s(‖x - a(s) y‖²)`` the ideal denoiser is the posterior mean

    D*(x, s) = Σ_i w_i y_i / Σ_i w_i,      log w_i = log k_s(‖x - a y_i‖²)

(DESIGN.md §3).  Gaussian: ``log k = -d²/(2b²)``; PFGM++: ``-(N+D)/2 · log(d² + r²)``;
Yukawa: the NIG log-density.  Only the radial *log-profile* differs, so one function
serves every process.

Squared distances come from one matrix product, ``‖x‖² - 2a x·y + a²‖y‖²``, and the
weights from a streaming log-sum-exp over chunks of the data: memory is bounded by
``chunk_elems`` whatever the number of queries and points (100k × 100k runs in well
under 4 GiB).  With ``labels`` the posterior is restricted to the points of the
requested class, which is the exact conditional field.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from .labels import check_label

__all__ = ["posterior_mean", "ExactField", "LogProfile"]

LogProfile = Callable[[Tensor, Tensor], Tensor]
"""``log_profile(sqdist [Q, P], s [Q, 1]) -> log weights [Q, P]`` (constants in y may be dropped)."""

DEFAULT_CHUNK_ELEMS = 1 << 22  # 4M pair entries per block: ~16 MiB per float32 temporary


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

    ``alpha [Q]`` scales the points (VP's ``a(s)``); ``pair_value(sqdist, s)`` returns a
    per-pair quantity whose posterior mean is returned as well (e.g. Yukawa's death rate).
    """
    q = x.shape[0]
    xf = x.reshape(q, -1)
    yf = points.reshape(points.shape[0], -1).to(xf.dtype)
    p = yf.shape[0]
    if xf.shape[1] != yf.shape[1]:
        raise ValueError(f"queries have {xf.shape[1]} dims but points have {yf.shape[1]}")
    if label is not None and point_labels is None:
        raise ValueError("a label was given but this exact field has no point labels")
    s = s.to(xf.dtype)
    a = torch.ones(q, dtype=xf.dtype, device=xf.device) if alpha is None else alpha.to(xf.dtype)

    y_sq = (yf * yf).sum(1)
    rows = max(1, min(q, chunk_elems // max(p, 1)))
    cols = max(1, min(p, chunk_elems // rows))
    mean = torch.empty_like(xf)
    extra = torch.empty(q, dtype=xf.dtype, device=xf.device) if pair_value is not None else None
    for r0 in range(0, q, rows):
        xr, sr, ar = xf[r0 : r0 + rows], s[r0 : r0 + rows, None], a[r0 : r0 + rows, None]
        x_sq = (xr * xr).sum(1, keepdim=True)
        run_max = torch.full((xr.shape[0], 1), -torch.inf, dtype=xf.dtype, device=xf.device)
        run_sum = torch.zeros_like(run_max)
        run_mean = torch.zeros_like(xr)
        run_extra = torch.zeros_like(run_max) if pair_value is not None else None
        for c0 in range(0, p, cols):
            yc = yf[c0 : c0 + cols]
            # ‖x - a y‖² = ‖x‖² - 2a x·y + a²‖y‖², clamped: rounding can make it slightly negative
            sq = torch.addmm(x_sq, xr, yc.T, alpha=-2.0) if alpha is None else x_sq - 2.0 * ar * (xr @ yc.T)
            sq = sq.add_(ar**2 * y_sq[c0 : c0 + cols]).clamp_min_(0.0)
            logw = log_profile(sq, sr)
            if label is not None:  # a negative label (null) keeps every point: unconditional row
                lab = label[r0 : r0 + rows, None]
                match = (point_labels[c0 : c0 + cols][None, :] == lab) | (lab < 0)
                logw = logw.masked_fill(~match, -torch.inf)
            new_max = torch.maximum(run_max, logw.max(1, keepdim=True).values)
            safe_max = torch.where(torch.isfinite(new_max), new_max, torch.zeros_like(new_max))
            rescale = torch.exp(run_max - safe_max)
            w = torch.exp(logw - safe_max)
            run_sum = run_sum * rescale + w.sum(1, keepdim=True)
            run_mean = run_mean * rescale + w @ yc
            if run_extra is not None:
                run_extra = run_extra * rescale + (w * pair_value(sq, sr)).sum(1, keepdim=True)
            run_max = new_max
        if bool(torch.any(run_sum == 0)):  # only possible when a label has no points
            raise ValueError("a requested label has no points in this exact field")
        mean[r0 : r0 + rows] = run_mean / run_sum
        if extra is not None:
            extra[r0 : r0 + rows] = (run_extra / run_sum).squeeze(1)
    mean = mean.reshape(x.shape)
    return (mean, extra) if extra is not None else mean


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
