"""Helpers shared by the solvers (private)."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from .base import DenoiserFormError, CountedFlow, SolverStats


def host_values(values: Sequence[float], dtype: torch.dtype, device: torch.device) -> Tensor:
    """Host floats as a 1-D tensor on ``device`` (rounded once from float64 to ``dtype``).

    On CUDA the copy goes through pinned memory with ``non_blocking`` so it does not stall
    the host (no sync)."""
    col = torch.tensor(list(values), dtype=torch.float64).to(dtype=dtype)
    if torch.device(device).type == "cuda":
        return col.pin_memory().to(device, non_blocking=True)
    return col.to(device)


def scale_table(values: Sequence[float], x: Tensor) -> list[Tensor]:
    """All scales a fixed-step solve will hand to the flow, as ``[B]`` tensors.

    One host-to-device copy of the ``n`` values before the step loop; entry ``i`` is a
    broadcast view (``col[i].expand(B)``: shaped ``[B]``, stride 0, no memory per sample),
    so the loop neither allocates scale tensors nor syncs, whatever the batch size.  A flow
    must not write into ``s`` (it would raise, as for any expanded tensor).
    """
    col = host_values(values, x.dtype, x.device)
    B = x.shape[0]
    return [col[i].expand(B) for i in range(len(values))]


def combine(x: Tensor, ks: Sequence[Tensor], coeffs: Sequence[float], h: float) -> Tensor:
    """``x + h * sum_j coeffs[j] * ks[j]`` with one kernel per nonzero coefficient.

    Never writes into ``x`` or any ``ks[j]``: the first term allocates the result, the rest
    accumulate into it in place.
    """
    out: Optional[Tensor] = None
    for k, a in zip(ks, coeffs):
        if a == 0.0:
            continue
        if out is None:
            out = torch.add(x, k, alpha=a * h)
        else:
            out.add_(k, alpha=a * h)
    return x if out is None else out


def check_batch(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(f"{name}: x must be shaped [B, ...] with B >= 1, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: x must be floating point, got {x.dtype}")


def require_denoiser(f: CountedFlow, name: str) -> None:
    if not f.has_denoiser:
        raise DenoiserFormError(
            f"{name} needs a flow of the denoiser form dx/ds = (x - D(x, s))/s exposing "
            f"denoise(x, s); {type(f.flow).__name__} has no denoise method"
        )


def fixed_stats(nfe: int, steps: int, batch: int, trajectory: Optional[list]) -> SolverStats:
    return SolverStats(
        nfe=nfe,
        steps=steps,
        accepted=steps * batch,
        rejected=0,
        trajectory=torch.stack(trajectory) if trajectory is not None else None,
    )
