"""physgen.random: exact generator-driven samplers (KS tests against scipy's laws)."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from scipy import stats

from physgen.errors import UserError
from physgen.random import beta, beta_prime, chi2, gamma, uniform_sphere

P_MIN = 1e-3  # KS threshold; every draw below is from a fixed seed, so the tests are deterministic


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@settings(max_examples=12, deadline=None, derandomize=True)
@given(a=st.sampled_from([0.02, 0.1, 0.5, 0.99, 1.0, 1.5, 2.5, 7.0, 64.0, 1536.0]), seed=st.integers(0, 2**31 - 1))
def test_gamma_ks(a, seed):
    x = gamma(a, (40_000,), gen(seed))
    assert x.dtype == torch.float64 and x.shape == (40_000,)
    assert bool((x > 0).all())
    assert stats.kstest(x.numpy(), stats.gamma(a).cdf).pvalue > P_MIN


def test_gamma_half_keeps_mass_near_zero():
    # Gamma(1/2): P(X < 1e-12) = P(chi2_1 < 2e-12) ~ 1.1e-6; float64 draws must reach there
    x = gamma(0.5, (2_000_000,), gen(3))
    frac = float((x < 1e-10).double().mean())
    expected = stats.gamma(0.5).cdf(1e-10)
    assert frac == pytest.approx(expected, rel=0.5)
    assert bool((x > 0).all())


def test_gamma_tensor_concentration_and_shape():
    a = torch.tensor([0.3, 1.0, 5.0]).repeat(20_000).reshape(20_000, 3)
    x = gamma(a, (20_000, 3), gen(1))
    assert x.shape == (20_000, 3)
    for j, aj in enumerate((0.3, 1.0, 5.0)):
        assert stats.kstest(x[:, j].numpy(), stats.gamma(aj).cdf).pvalue > P_MIN


@pytest.mark.parametrize("a", [0.5, 1.0, 2.0, 3.5])
def test_half_integer_fast_path_matches_rejection_path(a):
    """Scalar half-integer a uses χ²_{2a}/2; a tensor concentration goes through Marsaglia-Tsang (+ boost)."""
    fast = gamma(a, (40_000,), gen(21)).numpy()
    slow = gamma(torch.full((40_000,), a), (40_000,), gen(22)).numpy()
    assert stats.kstest(fast, stats.gamma(a).cdf).pvalue > P_MIN
    assert stats.kstest(slow, stats.gamma(a).cdf).pvalue > P_MIN


def test_reproducible_with_generator():
    assert torch.equal(gamma(0.5, (1000,), gen(7)), gamma(0.5, (1000,), gen(7)))
    assert not torch.equal(gamma(0.5, (1000,), gen(7)), gamma(0.5, (1000,), gen(8)))
    assert torch.equal(uniform_sphere((10, 3), gen(2)), uniform_sphere((10, 3), gen(2)))


@pytest.mark.parametrize("a,b", [(0.5, 0.5), (1.0, 0.5), (32.0, 0.5), (1.5, 64.0), (3.0, 2.0)])
def test_beta_and_beta_prime_ks(a, b):
    x = beta(a, b, (40_000,), gen(11))
    assert stats.kstest(x.numpy(), stats.beta(a, b).cdf).pvalue > P_MIN
    y = beta_prime(a, b, (40_000,), gen(12))
    assert stats.kstest(y.numpy(), stats.betaprime(a, b).cdf).pvalue > P_MIN


def test_beta_prime_no_cancellation_large_a():
    # Beta(N/2, 1/2) with N = 3072: 1 - b ~ 1e-4; the odds stay finite and exact in law
    y = beta_prime(1536.0, 0.5, (40_000,), gen(5))
    assert bool(torch.isfinite(y).all())
    assert stats.kstest(y.numpy(), stats.betaprime(1536.0, 0.5).cdf).pvalue > P_MIN


@pytest.mark.parametrize("df", [1, 3, 10])
def test_chi2_ks(df):
    x = chi2(df, (40_000,), gen(df))
    assert stats.kstest(x.numpy(), stats.chi2(df).cdf).pvalue > P_MIN


@pytest.mark.parametrize("n", [2, 3, 17])
def test_uniform_sphere(n):
    u = uniform_sphere((30_000, n), gen(n))
    assert torch.allclose(u.norm(dim=1), torch.ones(30_000), atol=1e-5)
    # projection on a fixed axis: (u.v + 1)/2 ~ Beta((n-1)/2, (n-1)/2)
    v = torch.randn(n, generator=gen(99))
    v = v / v.norm()
    proj = ((u @ v + 1) / 2).double().numpy()
    assert stats.kstest(proj, stats.beta((n - 1) / 2, (n - 1) / 2).cdf).pvalue > P_MIN


def test_uniform_sphere_image_shape():
    u = uniform_sphere((4, 3, 5, 5), gen(0))
    assert u.shape == (4, 3, 5, 5)
    assert torch.allclose(u.flatten(1).norm(dim=1), torch.ones(4), atol=1e-5)


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan])
def test_gamma_rejects_bad_concentration(bad):
    with pytest.raises(UserError, match="concentration"):
        gamma(bad, (3,), gen())
    with pytest.raises(UserError):
        gamma(torch.tensor([1.0, bad]), (2,), gen())


def test_empty_and_dtype():
    assert gamma(2.0, (0,), gen()).shape == (0,)
    assert gamma(2.0, (5,), gen(), dtype=torch.float32).dtype == torch.float32
    assert np.isfinite(chi2(2, (5,), gen()).numpy()).all()
