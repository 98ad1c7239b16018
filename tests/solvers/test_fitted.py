"""``fitted:BASE`` rows (solvers/fitted.py): which rows exist, the rescaled evaluation's two
forms agree (flow and denoiser), neutral coefficients are BASE bit for bit, and coefficients
of the wrong length or non-finite are refused."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from toy_fields import UnitGaussianVE

import solvers
from solvers.fitted import coefficient_bounds, fittable, neutral, rescaled

FITTED = [n for n in solvers.SOLVERS if solvers.is_fitted(n)]


def test_the_rows_are_the_one_call_per_step_deterministic_ones():
    assert {"fitted:euler", "fitted:ipndm", "fitted:dpmpp-2m", "fitted:dpmpp-3m", "fitted:deis", "fitted:unipc-bh2", "fitted:lms"} <= set(FITTED)
    for name in ("heun", "dpm2", "dpmpp-2s", "restart", "dopri5", "dpm-fast", "edm-sde", "euler-ancestral", "torchdiffeq:euler"):
        assert "fitted:" + name not in solvers.SOLVERS and not fittable(solvers.get_solver(name))
    for name in FITTED:
        spec, base = solvers.get_solver(name), solvers.get_solver(name[len("fitted:"):])
        assert (spec.needs, spec.nfe, spec.options) == (base.needs, base.nfe, base.options) and base.name in spec.order_note


class _Gauss:
    """The exact denoiser of N(0, I) data, D(x, s) = x / (1 + s²) (floats in float64)."""

    def denoise(self, x, s):
        return x / (1 + s[:, None] ** 2)

    def __call__(self, x, s):
        return (x - self.denoise(x, s)) / s[:, None]


@settings(max_examples=25, deadline=None)
@given(c=st.floats(0.25, 4.0), tau=st.floats(-1.0, 1.0), s=st.floats(0.01, 50.0))
def test_flow_and_denoiser_forms_of_a_rescaled_evaluation_agree(c, tau, s):
    """ṽ = c v(x, s e^τ) and D̃ = x + c e^{-τ}(D(x, s e^τ) - x) are the same evaluation: ṽ = (x - D̃)/s."""
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sb = torch.full((5,), s, dtype=torch.float64)
    v = rescaled(_Gauss(), [[c, tau]])(x, sb)
    d = rescaled(_Gauss(), [[c, tau]]).denoise(x, sb)
    assert torch.allclose(v, (x - d) / s, rtol=1e-10, atol=1e-12)
    assert torch.allclose(v, c * _Gauss()(x, sb * math.exp(tau)), rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", FITTED)
def test_neutral_coefficients_are_the_base_bit_for_bit(name):
    x0 = torch.randn(64, 2, generator=torch.Generator().manual_seed(1)) * 5
    sched = solvers.edm_schedule(7, 0.01, 5.0)
    base = solvers.solve(UnitGaussianVE(), x0, sched, method=name[len("fitted:"):]).x
    for coefficients in (None, neutral(7)):
        assert torch.equal(solvers.solve(UnitGaussianVE(), x0, sched, method=name, coefficients=coefficients).x, base)
    moved = neutral(7)
    moved[2] = [1.1, 0.0]
    assert not torch.equal(solvers.solve(UnitGaussianVE(), x0, sched, method=name, coefficients=moved).x, base)


def test_bad_coefficients_are_refused():
    x0 = torch.zeros(4, 2)
    sched = solvers.edm_schedule(4, 0.01, 5.0)
    for bad, why in ((neutral(3), "4 pairs"), ([[1.0, 0.0]] * 3 + [[float("nan"), 0.0]], "finite"), ([[1.0]] * 4, "4 pairs"),
                     (torch.ones(3, 2), r"\[4, 2\]")):
        with pytest.raises(ValueError, match=why):
            solvers.solve(UnitGaussianVE(), x0, sched, method="fitted:ipndm", coefficients=bad)


def test_bounds_keep_every_level_at_or_below_the_first():
    s = [80.0, 10.0, 1.0, 0.01, 0.0]
    b = coefficient_bounds(s)
    assert len(b) == 8 and b[0] == (0.25, 4.0) and b[1] == (-1.0, 0.0)  # the first step is never shifted upwards
    assert b[3] == (-1.0, min(1.0, math.log(8.0))) and b[5][1] == 1.0
