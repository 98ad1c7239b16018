"""Checks shared by every editing method: the known values, the mask, the strength.

A *mask* has one entry per data coordinate of one sample (or broadcasts to it over leading
axes of size 1, e.g. ``[1, H, W]`` for ``[C, H, W]`` images): ``1`` where the value is
known (kept), ``0`` where it is generated.  Every bad input is a :class:`UserError` naming
the value.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor

from ..errors import UserError

__all__ = ["check_known", "check_mask", "check_strength", "known_part", "with_known"]


def check_known(known, data_shape: Optional[Sequence[int]] = None, what: str = "input") -> Tensor:
    """``known`` as a finite floating tensor ``[B, *data]``; ``data_shape`` (when given) is the
    shape one sample must have (the field's data: size and channels)."""
    if not isinstance(known, Tensor):
        raise UserError(f"the {what} must be a tensor [B, *data], got {type(known).__name__}")
    if known.dim() < 2 or known.shape[0] == 0 or known[0].numel() == 0:
        raise UserError(f"the {what} must be a non-empty batch [B, *data], got shape {tuple(known.shape)}")
    if not known.is_floating_point():
        raise UserError(f"the {what} must hold floating-point values, got dtype {known.dtype}")
    if data_shape is not None and tuple(known.shape[1:]) != tuple(data_shape):
        raise UserError(f"the {what} has samples of shape {tuple(known.shape[1:])}, the model's data have shape {tuple(data_shape)} "
                        f"(size and channels must match)")
    if not bool(torch.isfinite(known).all()):
        raise UserError(f"the {what} holds NaN or Inf values ({int((~torch.isfinite(known)).sum())} of {known.numel()})")
    return known


def check_mask(mask, data_shape: Sequence[int]) -> Tensor:
    """The mask as a bool tensor of one sample's shape (``True`` = known); refused when its
    shape does not broadcast to ``data_shape``, when it is not binary, or when it keeps all
    or none of the coordinates (nothing to generate / nothing to condition on)."""
    data_shape = tuple(int(v) for v in data_shape)
    if not isinstance(mask, Tensor):
        mask = torch.as_tensor(mask)
    shape = tuple(mask.shape)
    try:
        fits = mask.dim() == len(data_shape) and torch.broadcast_shapes(shape, data_shape) == torch.Size(data_shape)
    except RuntimeError:
        fits = False
    if not fits:
        raise UserError(f"mask of shape {shape} does not fit one sample of shape {data_shape} (same number of axes, each equal or 1)")
    values = mask.double()
    if not bool(((values == 0) | (values == 1)).all()):
        bad = values[(values != 0) & (values != 1)].flatten()[0].item()
        raise UserError(f"mask must be binary (1 = known, 0 = generate), got the value {bad:g}")
    kept = values.expand(data_shape).bool()
    if bool(kept.all()):
        raise UserError("mask keeps every coordinate (all known): there is nothing to generate")
    if not bool(kept.any()):
        raise UserError("mask keeps no coordinate (all unknown): that is unconditional sampling, not editing")
    return kept


def check_strength(strength) -> float:
    """``strength`` as a float in ``[0, 1]`` (the fraction of the grid SDEdit runs)."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not math.isfinite(strength) or not 0 <= strength <= 1:
        raise UserError(f"--strength must be a number in [0, 1] (the fraction of the schedule to run), got {strength!r}")
    return float(strength)


def known_part(x: Tensor, mask: Tensor) -> Tensor:
    """The known coordinates of every sample, ``[B, m]`` (``mask``: one sample's shape, bool)."""
    return x.reshape(x.shape[0], -1)[:, mask.flatten().to(x.device)]


def with_known(x: Tensor, mask: Tensor, values: Tensor) -> Tensor:
    """``x`` with its known coordinates set to ``values [B, m]`` (a new tensor)."""
    flat = x.reshape(x.shape[0], -1).clone()
    flat[:, mask.flatten().to(x.device)] = values.to(flat.dtype)
    return flat.reshape(x.shape)
