"""physgen.kernels.gaussian: N(x; y, s² I) (VE, EDM; PFGM++ at D = inf), against its closed forms:
seeded draws have the chi-square law of ‖x - y‖²/s² per row scale, the log-density is
normalised and equals torch's, and per_row broadcasts one scale per sample."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings, strategies as st
from scipy import stats

from physgen.kernels import GaussianKernel, per_row


@pytest.mark.parametrize("n", [1, 2, 16])
def test_draws_scaled_by_their_row_have_the_chi_square_law(n):
    """``‖x - y‖²/s_i² ~ χ²_N`` for every row's own scale (a KS test over 4000 seeded rows
    whose scales span four decades), and the coordinates have no correlation."""
    s = torch.logspace(-2, 2, 4000, dtype=torch.float64)
    offsets = GaussianKernel().sample_offsets((4000, n), s, torch.Generator().manual_seed(n), dtype=torch.float64)
    z = offsets / s[:, None]
    assert stats.kstest(z.pow(2).sum(1).numpy(), stats.chi2(n).cdf).pvalue > 1e-3
    if n > 1:
        corr = torch.corrcoef(z.T) - torch.eye(n, dtype=torch.float64)
        assert float(corr.abs().max()) < 4 / math.sqrt(4000) * 1.5


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 8), sigma=st.floats(1e-3, 1e3))
def test_log_prob_is_the_normalised_gaussian_and_the_profile_differs_by_a_constant(n, sigma):
    offsets = torch.randn(32, n, generator=torch.Generator().manual_seed(n), dtype=torch.float64) * sigma
    s = torch.full((32,), sigma, dtype=torch.float64)
    want = torch.distributions.Normal(torch.zeros((), dtype=torch.float64), s[0]).log_prob(offsets).sum(1)
    got = GaussianKernel().log_prob(offsets, s)
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-9)
    gap = got - GaussianKernel().log_profile(offsets.pow(2).sum(1), s)
    assert float(gap.max() - gap.min()) <= 1e-9 * max(1.0, float(gap.abs().max()))


def test_per_row_broadcasts_one_value_per_sample():
    x = torch.ones(3, 2, 4, 5)
    v = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    out = per_row(v, x) * x
    assert out.dtype == x.dtype and [float(out[i].unique()) for i in range(3)] == [1.0, 2.0, 3.0]
