"""Shared checks of affine paths ``x = a(t) y + b(t) ε`` (flow matching, interpolants)."""
from __future__ import annotations

import pytest
import torch


def assert_derivatives_match(process, t: float, h: float = 1e-6) -> None:
    """``derivatives(t) = (a', b')`` agree with central differences of ``coefficients``."""
    tt = torch.tensor([t], dtype=torch.float64)
    (a1, b1), (a0, b0) = process.coefficients(tt + h), process.coefficients(tt - h)
    da, db = process.derivatives(tt)
    assert float(da) == pytest.approx(float(a1 - a0) / (2 * h), rel=1e-5, abs=1e-7)
    assert float(db) == pytest.approx(float(b1 - b0) / (2 * h), rel=1e-5, abs=1e-7)
