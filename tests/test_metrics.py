"""Sample metrics: exact values on translations, brute force on tiny sets, chunking, the summary dict."""
from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from scipy.stats import energy_distance as scipy_energy

import physgen.metrics as M
from physgen.data import two_mode_mixture
from physgen.errors import UserError
from physgen.metrics import (energy_distance, exact_w2, mmd, mode_weights, projections, sample_metrics,
                             sliced_w2)

F64 = torch.float64


def randn(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


vectors = st.integers(1, 4).flatmap(
    lambda d: st.lists(st.floats(-3, 3, allow_nan=False), min_size=d, max_size=d))


# ------------------------------------------------------------------ sliced W2
def test_sliced_w2_of_a_set_with_itself_is_zero():
    x = randn(0, 300, 3)
    assert sliced_w2(x, x) == 0.0
    assert sliced_w2(x, x[torch.randperm(300, generator=torch.Generator().manual_seed(1))]) == 0.0


def test_projections_are_unit_deterministic_and_seeded():
    th = projections(5, 64, seed=3)
    assert th.shape == (64, 5) and th.dtype == F64
    assert torch.allclose(th.norm(dim=1), torch.ones(64, dtype=F64))
    assert torch.equal(th, projections(5, 64, seed=3)) and not torch.equal(th, projections(5, 64, seed=4))


@settings(max_examples=30, deadline=None)
@given(v=vectors, n=st.integers(1, 60), seed=st.integers(0, 100), p=st.integers(1, 64))
def test_sliced_w2_of_a_translate_is_the_mean_squared_projection(v, n, seed, p):
    v = torch.tensor(v, dtype=F64)
    x = randn(seed, n, len(v))
    theta = projections(len(v), p, seed)
    expected = math.sqrt(float(((theta @ v) ** 2).mean()))
    assert math.isclose(sliced_w2(x, x + v, n_projections=p, seed=seed), expected, rel_tol=1e-9, abs_tol=1e-9)


@pytest.mark.parametrize("d", [1, 2, 3, 8])
def test_sliced_w2_translate_expectation_is_norm_over_dim(d):
    v = randn(1, d) * 2
    x = randn(2, 50, d)
    p = 20000
    got = sliced_w2(x, x + v, n_projections=p) ** 2
    # (theta.v)^2 has mean |v|^2/d and variance |v|^4 2(d-1)/(d^2(d+2)) for theta uniform on the sphere
    mean = float(v @ v) / d
    sd = float(v @ v) * math.sqrt(2 * (d - 1) / (d * d * (d + 2)) / p)
    assert abs(got - mean) <= 6 * sd + 1e-12


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 7), m=st.integers(1, 7), d=st.integers(1, 3), seed=st.integers(0, 1000))
def test_sliced_w2_unequal_sizes_is_exact(n, m, d, seed):
    """Repeating each x point m times and each y point n times gives equal-size sets with the
    same empirical laws, where sorted pairing is the exact 1-D W2."""
    x, y = randn(seed, n, d), randn(seed + 1, m, d) + 0.5
    want = sliced_w2(x.repeat_interleave(m, 0), y.repeat_interleave(n, 0), n_projections=16, seed=seed)
    assert math.isclose(sliced_w2(x, y, n_projections=16, seed=seed), want, rel_tol=1e-9, abs_tol=1e-12)
    assert math.isclose(sliced_w2(y, x, n_projections=16, seed=seed), want, rel_tol=1e-9, abs_tol=1e-12)


def test_sliced_w2_one_dimension_matches_sorted_quantiles():
    x, y = randn(0, 100, 1), randn(1, 100, 1) * 2
    want = math.sqrt(float(((x.sort(0).values - y.sort(0).values) ** 2).mean()))
    # in 1-D every projection is +-1, so SW2 is the exact W2
    assert math.isclose(sliced_w2(x, y), want, rel_tol=1e-12)


def test_sliced_w2_seed_and_blocks(monkeypatch):
    x, y = randn(0, 200, 4), randn(1, 150, 4) + 0.3
    a = sliced_w2(x, y, seed=0)
    assert a == sliced_w2(x, y, seed=0) and a != sliced_w2(x, y, seed=1)
    monkeypatch.setattr(M, "_PROJ_BLOCK", 700)  # two projections per block
    assert math.isclose(sliced_w2(x, y, seed=0), a, rel_tol=1e-12)


# ------------------------------------------------------------------ exact W2
@settings(max_examples=30, deadline=None)
@given(v=vectors, n=st.integers(1, 40), seed=st.integers(0, 100))
def test_exact_w2_of_a_translate_is_the_norm(v, n, seed):
    v = torch.tensor(v, dtype=F64)
    x = randn(seed, n, len(v))
    assert math.isclose(exact_w2(x, x + v), float(v.norm()), rel_tol=1e-7, abs_tol=1e-7)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 6), d=st.integers(1, 3), seed=st.integers(0, 10000))
def test_exact_w2_equals_brute_force_over_permutations(n, d, seed):
    x, y = randn(seed, n, d), randn(seed + 1, n, d) * 1.5
    cost = ((x[:, None] - y[None]) ** 2).sum(-1)
    best = min(float(cost[range(n), list(p)].mean()) for p in itertools.permutations(range(n)))
    assert math.isclose(exact_w2(x, y), math.sqrt(best), rel_tol=1e-9, abs_tol=1e-12)


def test_exact_w2_limits():
    with pytest.raises(UserError, match="equal size, got 3 and 4"):
        exact_w2(torch.zeros(3, 2), torch.zeros(4, 2))
    with pytest.raises(UserError, match="limited to 5000 points"):
        exact_w2(torch.zeros(5001, 2), torch.zeros(5001, 2))
    with pytest.raises(UserError, match="differ in dimension"):
        exact_w2(torch.zeros(3, 2), torch.zeros(3, 3))


# ----------------------------------------------------------------------- MMD
def test_mmd_small_for_same_law_and_large_for_shifted():
    x, y = randn(0, 1000, 2), randn(1, 1000, 2)
    same = mmd(x, y)
    shifted = mmd(x, y + torch.tensor([1.0, 0.0], dtype=F64))
    assert abs(same) < 2e-3, same
    assert shifted > 0.05 and shifted > 25 * abs(same), (same, shifted)


def test_mmd_estimators():
    x = randn(0, 200, 2)
    bw = [0.5, 1.0]
    assert abs(mmd(x, x, bandwidths=bw, unbiased=False)) < 1e-12
    # unbiased: E[MMD_u^2] = 0 for equal laws; for x against itself it is sum_{i!=j} k / (n(n-1)) * 2 - 2 sum k / n^2
    y = randn(1, 300, 2) + 0.2
    k = lambda a, b: sum(torch.exp(-torch.cdist(a, b) ** 2 / (2 * h * h)) for h in bw)  # noqa: E731
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    n, m = 200, 300
    u = ((kxx.sum() - kxx.trace()) / (n * (n - 1)) + (kyy.sum() - kyy.trace()) / (m * (m - 1))
         - 2 * kxy.mean())
    v = kxx.mean() + kyy.mean() - 2 * kxy.mean()
    assert math.isclose(mmd(x, y, bandwidths=bw), float(u), rel_tol=1e-9)
    assert math.isclose(mmd(x, y, bandwidths=bw, unbiased=False), float(v), rel_tol=1e-9)


@settings(max_examples=20, deadline=None)
@given(bw=st.lists(st.floats(0.05, 10.0), min_size=1, max_size=5), seed=st.integers(0, 100))
def test_mmd_any_bandwidths_match_direct_formula(bw, seed):
    """Both the power-of-two fast path and the general path equal the direct sum."""
    x, y = randn(seed, 40, 2), randn(seed + 1, 30, 2) * 1.3
    k = lambda a, b: sum(torch.exp(-torch.cdist(a, b) ** 2 / (2 * h * h)) for h in bw)  # noqa: E731
    v = k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()
    assert math.isclose(mmd(x, y, bandwidths=bw, unbiased=False), float(v), rel_tol=1e-8, abs_tol=1e-12)
    pw = [bw[0] * 2.0 ** j for j in range(3)]
    v2 = sum(torch.exp(-torch.cdist(a, b) ** 2 / (2 * h * h)).mean() * s
             for h in pw for a, b, s in [(x, x, 1), (y, y, 1), (x, y, -2)])
    assert math.isclose(mmd(x, y, bandwidths=pw, unbiased=False), float(v2), rel_tol=1e-8, abs_tol=1e-12)


def test_mmd_default_bandwidths_follow_the_median_distance():
    z = randn(0, 500, 2)
    d = torch.cdist(z, z)
    med = float(d[torch.triu_indices(500, 500, 1).unbind()].median())
    assert np.allclose(M.default_bandwidths(z), [med * c for c in (0.25, 0.5, 1, 2, 4)])
    assert M.default_bandwidths(torch.zeros(5, 2)) == [0.25, 0.5, 1.0, 2.0, 4.0]
    # scale equivariance: scaling the data scales the bandwidths, so MMD is scale invariant
    x, y = randn(1, 100, 2), randn(2, 100, 2) + 0.5
    assert math.isclose(mmd(3 * x, 3 * y), mmd(x, y), rel_tol=1e-9)


def test_mmd_errors():
    with pytest.raises(UserError, match="bandwidths must be finite and > 0"):
        mmd(torch.zeros(3, 2), torch.ones(3, 2), bandwidths=[1.0, -1.0])
    with pytest.raises(UserError, match="at least 2 points"):
        mmd(torch.zeros(1, 2), torch.ones(3, 2))


# ---------------------------------------------------------- energy distance
@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 50), m=st.integers(1, 50), d=st.integers(1, 4), seed=st.integers(0, 1000),
       shift=st.floats(-2, 2))
def test_energy_distance_nonnegative(n, m, d, seed, shift):
    x, y = randn(seed, n, d), randn(seed + 1, m, d) + shift
    assert energy_distance(x, y) >= 0
    assert energy_distance(x, x) == 0.0
    assert math.isclose(energy_distance(x, y), energy_distance(y, x), rel_tol=1e-9, abs_tol=1e-12)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 60), m=st.integers(1, 60), seed=st.integers(0, 1000))
def test_energy_distance_matches_scipy_in_one_dimension(n, m, seed):
    x, y = randn(seed, n), randn(seed + 1, m) * 2 + 0.3
    assert math.isclose(energy_distance(x, y), scipy_energy(x.numpy(), y.numpy()) ** 2,
                        rel_tol=1e-8, abs_tol=1e-12)


def test_energy_distance_grows_with_shift():
    x, y = randn(0, 500, 2), randn(1, 500, 2)
    vals = [energy_distance(x, y + s) for s in (0.0, 0.5, 1.0, 2.0)]
    assert vals == sorted(vals) and vals[0] < 0.02 < vals[1]


# ------------------------------------------------------------------ chunking
def test_chunked_pair_sums_equal_unchunked(monkeypatch):
    x, y = randn(0, 257, 3), randn(1, 130, 3) + 0.4
    centres = randn(2, 7, 3)
    before = (mmd(x, y), energy_distance(x, y), mode_weights(x, centres))
    monkeypatch.setattr(M, "_PAIR_BLOCK", 100)  # blocks of < 1 row -> one row at a time
    after = (mmd(x, y), energy_distance(x, y), mode_weights(x, centres))
    assert math.isclose(before[0], after[0], rel_tol=1e-9)
    assert math.isclose(before[1], after[1], rel_tol=1e-9)
    assert torch.equal(before[2], after[2])


@pytest.mark.slow
def test_ten_thousand_by_ten_thousand(request):
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("slow tier: run with -m slow")
    x, y = randn(0, 10000, 2), randn(1, 10000, 2)
    out = sample_metrics(x, y)
    assert out["sliced_w2"] < 0.05 and abs(out["mmd"]) < 1e-3 and out["energy"] < 1e-2


# ------------------------------------------------------------- mode weights
def test_mode_weights_two_mode_mixture():
    mix = two_mode_mixture()
    x = mix.sample(20000, torch.Generator().manual_seed(0))
    w = mode_weights(x, mix.means)
    assert w.dtype == F64 and w.shape == (2,)
    assert math.isclose(float(w.sum()), 1.0)
    assert abs(float(w[0]) - 0.2) < 6 * math.sqrt(0.16 / 20000)


def test_mode_weights_exact_fractions_and_nonfinite_rows():
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.tensor([[0.1, 0.0], [9.0, 1.0], [1.0, 8.0], [0.0, 9.0], [float("nan"), 0.0], [0.2, 0.2]])
    w = mode_weights(x, centres)
    assert torch.allclose(w, torch.tensor([2, 1, 2], dtype=F64) / 6)
    assert math.isclose(float(w.sum()), 5 / 6)
    assert torch.allclose(mode_weights(np.asarray(x[:4]), np.asarray(centres)), torch.tensor([1, 1, 2], dtype=F64) / 4)


# -------------------------------------------------------------- summary dict
def test_sample_metrics_keys_and_json():
    x, y = randn(0, 500, 2), randn(1, 400, 2)
    out = sample_metrics(x, y)
    assert set(out) == {"sliced_w2", "mmd", "energy", "exact_w2", "nonfinite"}
    assert all(isinstance(v, float) and math.isfinite(v) for v in out.values())
    json.dumps(out)
    assert out["sliced_w2"] == sliced_w2(x, y)
    assert out["exact_w2"] == exact_w2(x[:400], y)
    assert out["mmd"] == mmd(x, y, bandwidths=M.default_bandwidths(y))
    big = sample_metrics(randn(2, 2001, 2), y)
    assert set(big) == {"sliced_w2", "mmd", "energy", "nonfinite"}


def test_sample_metrics_counts_and_drops_nonfinite_rows():
    x, y = randn(0, 100, 2), randn(1, 100, 2)
    bad = x.clone()
    bad[[3, 7]] = float("nan")
    bad[9, 1] = float("inf")
    out = sample_metrics(bad, y)
    keep = torch.ones(100, dtype=torch.bool)
    keep[[3, 7, 9]] = False
    assert out["nonfinite"] == 3.0
    assert out["sliced_w2"] == sliced_w2(x[keep], y)
    all_bad = sample_metrics(torch.full((10, 2), float("nan")), y)
    assert all_bad["nonfinite"] == 10.0 and math.isnan(all_bad["sliced_w2"]) and "exact_w2" not in all_bad
    with pytest.raises(UserError, match="reference"):
        sample_metrics(x, y.masked_fill(y > 2, float("nan")))


def test_metrics_accept_numpy_and_float32():
    x, y = randn(0, 60, 2), randn(1, 60, 2) + 1
    assert math.isclose(sliced_w2(x.numpy(), y.float().numpy()), sliced_w2(x, y), rel_tol=1e-6)
    assert math.isclose(exact_w2(x.float(), y.float()), exact_w2(x, y), rel_tol=1e-6)
