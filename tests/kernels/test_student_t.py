"""physgen.kernels.student_t: the PFGM++ kernel p(x | y) ∝ (‖x - y‖² + r²)^{-(N+D)/2}, r = σ √D
(arXiv 2302.04265, eq. 4), checked against its closed forms: the normalising constant (by
quadrature), the law of the radius R²/(R² + r²) ~ Beta(N/2, D/2), the second moment
r² N/(D - 2), the Gaussian limit D -> inf, and the typed D it is built from."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings, strategies as st
from scipy import stats

from physgen.config import ExtraDims, parse_D
from physgen.errors import UserError
from physgen.kernels import StudentTKernel


@settings(max_examples=12, deadline=None)
@given(D=st.integers(1, 64), sigma=st.floats(0.05, 20.0))
def test_log_prob_integrates_to_one_in_one_and_two_dimensions(D, sigma):
    """∫ p = 1, by quadrature on a log-spaced radius (the tails fall as R^{-(1+D)})."""
    kernel = StudentTKernel(D)
    r = sigma * math.sqrt(D)
    radii = torch.logspace(math.log10(r) - 8, math.log10(r) + 8, 40_001, dtype=torch.float64)
    s = torch.full((len(radii),), sigma, dtype=torch.float64)
    for n, shell in ((1, 2.0 * torch.ones_like(radii)), (2, 2 * math.pi * radii)):  # the sphere's area at R
        offsets = torch.zeros(len(radii), n, dtype=torch.float64)
        offsets[:, 0] = radii
        density = kernel.log_prob(offsets, s).exp() * shell
        assert float(torch.trapezoid(density, radii)) == pytest.approx(1.0, abs=2e-4), (n, D, sigma)


@pytest.mark.parametrize("n,D", [(2, 1), (3, 7), (784, 128)])
def test_draws_have_the_beta_radius_law_and_the_closed_form_second_moment(n, D):
    """R²/(R² + r²) ~ Beta(N/2, D/2) (App. B.2): a KS test on 4000 seeded draws, the whole law,
    and for D > 4 (finite fourth moment) the mean of ‖x - y‖² against r² N/(D - 2)."""
    kernel, sigma = StudentTKernel(D), 0.7
    offsets = kernel.sample_offsets((4000, n), torch.full((4000,), sigma), torch.Generator().manual_seed(D), dtype=torch.float64)
    r2 = sigma**2 * D
    sq = offsets.pow(2).sum(1)
    assert stats.kstest((sq / (sq + r2)).numpy(), stats.beta(n / 2, D / 2).cdf).pvalue > 1e-3
    if D > 4:
        mean, sd = r2 * n / (D - 2), float(sq.std()) / math.sqrt(len(sq))
        assert abs(float(sq.mean()) - mean) < 4 * sd


@settings(max_examples=20, deadline=None)
@given(D=st.integers(1, 10_000), n=st.integers(1, 16), sigma=st.floats(0.01, 50.0))
def test_log_profile_is_log_prob_up_to_a_constant_per_query(D, n, sigma):
    """The exact fields weight points by the log-profile: it must differ from the normalised
    log-density only by a term that does not depend on the offset."""
    kernel = StudentTKernel(D).bind(n)
    offsets = torch.randn(64, n, generator=torch.Generator().manual_seed(n), dtype=torch.float64) * sigma * 3
    s = torch.full((64,), sigma, dtype=torch.float64)
    gap = kernel.log_prob(offsets, s) - kernel.log_profile(offsets.pow(2).sum(1), s)
    assert float(gap.max() - gap.min()) <= 1e-9 * max(1.0, float(gap.abs().max()))


def test_large_D_tends_to_the_gaussian_profile():
    """D -> inf at fixed σ: -(N+D)/2 log(1 + d²/r²) -> -d²/(2σ²) (Prop. 4.1), error O(1/D)."""
    sq, s = torch.linspace(0, 9, 50, dtype=torch.float64), torch.tensor(1.5, dtype=torch.float64)
    gauss = -sq / (2 * s * s)
    errors = [float((StudentTKernel(D).bind(3).log_profile(sq, s) - gauss).abs().max()) for D in (10**3, 10**5, 10**7)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-5
    assert errors[0] / errors[1] == pytest.approx(100, rel=0.05)  # first order in 1/D


def test_the_kernel_keeps_the_typed_D_it_is_given():
    """A parsed D (config.ExtraDims) is kept as it is, through bind too; a caller's int is parsed
    once; inf is the Gaussian kernel's, not this one's."""
    D = parse_D("128")
    kernel = StudentTKernel(D)
    assert kernel.D is D and kernel.bind(5).D is D and kernel.config() == {"D": 128} and repr(kernel) == "StudentTKernel(D=128)"
    assert isinstance(StudentTKernel(4).D, ExtraDims) and StudentTKernel(4).D == 4
    with pytest.raises(UserError, match="finite D"):
        StudentTKernel(parse_D("inf"))
    with pytest.raises(UserError, match="positive integer or inf"):
        StudentTKernel(0)
