"""Class labels for conditional fields: one validator shared by every field estimator.

A field answers ``field(x, s, label=None)``.  ``label`` selects the class to condition
on (Dhariwal & Nichol, arXiv 2105.05233; Ho & Salimans, arXiv 2207.12598):

* ``None``: unconditional (the whole data distribution);
* an integer class index ``0 <= k < K``, a Python/NumPy int or a 0-d integer tensor
  (the same class for the whole batch), or an integer tensor ``[B]`` (one per sample);
* the *null* label, unconditional for that sample: ``K`` (= ``num_classes``, the null row
  of the label embeddings of :class:`physgen.nets.mlp.MLP` and
  :class:`physgen.nets.unet.UNet`), ``-1`` (the U-Net's alias) or the string ``"null"``.
  Null entries may be mixed with class entries in one batch, which is how
  classifier-free guidance evaluates the conditional and unconditional fields in a
  single batched call.

:func:`check_label` validates once, in one place, for the exact, analytic and neural
fields: anything else (a float, a bool, a string other than ``"null"``, a value out of
range, a wrong shape) is a :class:`physgen.errors.UserError` naming the offending value.
The range check reads the values, which on a GPU costs a device sync; it is done for CPU
tensors (and Python values) always, and for device tensors only when ``check_values=True``.
"""
from __future__ import annotations

import numbers
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

from ..errors import UserError

__all__ = ["NULL", "check_label", "null_mask", "label_tensor", "drop_labels"]

NULL = "null"
"""The string spelling of the null (unconditional) label."""

_INT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def _describe(label: Any) -> str:
    if isinstance(label, Tensor):
        vals = label.flatten()[:8].tolist()
        more = " ..." if label.numel() > 8 else ""
        return f"{label.dtype} tensor of shape {list(label.shape)}, values {vals}{more}"
    return f"{label!r} ({type(label).__name__})"


def label_tensor(label: Any, batch: int, device=None) -> Tensor:
    """``label`` as a ``long [batch]`` tensor (``"null"`` spelled ``-1``); dtype and shape checked, values not."""
    if isinstance(label, str):
        if label.strip().lower() != NULL:
            raise UserError(f"label must be a class index or {NULL!r}, got {label!r}")
        return torch.full((batch,), -1, dtype=torch.long, device=device)
    if isinstance(label, (bool,)) or (isinstance(label, Tensor) and label.dtype == torch.bool):
        raise UserError(f"label must be an integer class index, got {_describe(label)}")
    if isinstance(label, Tensor):
        if label.dtype not in _INT_DTYPES:
            raise UserError(f"label must be an integer class index, got {_describe(label)}")
        t = label.to(device=device if device is not None else label.device, dtype=torch.long)
    elif isinstance(label, numbers.Integral):
        t = torch.tensor(int(label), dtype=torch.long, device=device)
    else:
        try:
            if isinstance(label, np.ndarray) and label.dtype.kind in "iu":
                t = torch.as_tensor(label, dtype=torch.long, device=device)
            else:
                raise TypeError
        except TypeError:
            raise UserError(f"label must be an integer class index, got {_describe(label)}") from None
    if t.ndim == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise UserError(f"label must be one class index or a tensor shaped [{batch}], got shape {list(t.shape)}")
    return t


def check_label(
    label: Any,
    num_classes: Optional[int],
    batch: int,
    *,
    device=None,
    check_values: Optional[bool] = None,
    what: str = "this field",
) -> Optional[Tensor]:
    """Validate ``label`` for a field with ``num_classes`` classes; ``long [batch]`` or ``None``.

    Returns ``None`` when the label is ``None`` or null for every sample (the unconditional
    field); otherwise a ``long [batch]`` tensor with entries in ``[0, num_classes]``, the
    value ``num_classes`` marking null (unconditional) samples.  ``num_classes`` of ``None``
    or 0 means the field is unconditional: a non-null label is then an error.
    """
    if label is None:
        return None
    k = int(num_classes or 0)
    t = label_tensor(label, batch, device)
    if check_values is None:
        check_values = t.device.type == "cpu"
    if k > 0:
        t = torch.where(t == -1, torch.full_like(t, k), t)  # -1 and "null": the null row K
    if k == 0:  # checked even on a device: a label for an unconditional field is a mistake
        bad = t != -1
        if bool(bad.any()):
            raise UserError(f"{what} is unconditional (no classes), but label {_values(t[bad])} was given")
        return None
    if not check_values:
        return t
    bad = (t < 0) | (t > k)
    if bool(bad.any()):
        raise UserError(
            f"label {_values(t[bad])} out of range: {what} has {k} classes, labels 0..{k - 1} "
            f"(or {k}, -1, {NULL!r} for the null label)"
        )
    if bool((t == k).all()):
        return None
    return t


def null_mask(label: Tensor, num_classes: int) -> Tensor:
    """``True`` where a checked label is the null label."""
    return label == int(num_classes)


def _values(t: Tensor) -> str:
    vals = sorted(set(t.flatten().tolist()))
    return str(vals[0]) if len(vals) == 1 else str(vals[:8])[:-1] + (", ...]" if len(vals) > 8 else "]")


def drop_labels(labels: Tensor, p: float, null_label: int, uniform: Tensor) -> Tensor:
    """Label dropout for classifier-free guidance (Ho & Salimans, arXiv 2207.12598): the labels
    with ``uniform < p`` replaced by the null class, so one network is also unconditional.
    ``uniform`` (``U[0, 1)``, one per label) is drawn by the caller from its own generator, so
    the mask is reproducible and rank-consistent."""
    return torch.where(uniform.to(labels.device) < p, torch.full_like(labels, int(null_label)), labels)
