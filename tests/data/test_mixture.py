"""GaussianMixture: validation, moments, density, score, JSON format."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings, strategies as st
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from physgen.data import GaussianMixture, ncsn_mixture, two_mode_mixture
from physgen.errors import UserError

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@st.composite
def mixtures(draw, max_k=4, max_n=3, min_std=0.1, max_std=2.0, mean_range=5.0):
    k = draw(st.integers(1, max_k))
    n = draw(st.integers(1, max_n))
    coord = st.floats(-mean_range, mean_range, allow_nan=False, allow_infinity=False)
    means = draw(st.lists(st.lists(coord, min_size=n, max_size=n), min_size=k, max_size=k))
    stds = draw(st.lists(st.floats(min_std, max_std), min_size=k, max_size=k))
    weights = draw(st.lists(st.floats(0.0, 1.0), min_size=k, max_size=k))
    assume(sum(weights) > 1e-3)
    return GaussianMixture(torch.tensor(means, dtype=F64), torch.tensor(stds, dtype=F64),
                           torch.tensor(weights, dtype=F64))


# ----------------------------------------------------------------- validation
def test_construction_normalises_and_converts():
    mix = GaussianMixture([[0.0, 0.0], [1.0, 1.0]], [1, 2], [1, 3])
    assert mix.means.dtype == F64 and mix.stds.dtype == F64 and mix.weights.dtype == F64
    assert torch.allclose(mix.weights, torch.tensor([0.25, 0.75], dtype=F64))
    assert mix.dim == 2 and mix.num_components == 2
    eq = GaussianMixture([[0.0], [1.0], [2.0]], [1.0, 1.0, 1.0])
    assert torch.allclose(eq.weights, torch.full((3,), 1 / 3, dtype=F64))


@pytest.mark.parametrize("means,stds,weights,match", [
    ([[0.0, 0.0]], [1.0, 1.0], None, r"stds.*K=1.*\(2,\)"),
    ([[0.0, 0.0], [1.0, 1.0]], [1.0, 1.0], [1.0], r"weights.*K=2"),
    ([0.0, 1.0], [1.0, 1.0], None, r"means.*\[K, N\]"),
    ([[0.0, 0.0]], [0.0], None, r"stds must be finite and > 0, got 0\.0"),
    ([[0.0, 0.0]], [-0.5], None, r"stds.*-0\.5"),
    ([[0.0, 0.0], [1.0, 1.0]], [1.0, 1.0], [0.5, -0.25], r"weights must be finite and >= 0, got -0\.25"),
    ([[0.0, 0.0], [1.0, 1.0]], [1.0, 1.0], [0.0, 0.0], r"weights must not all be zero"),
    ([[0.0, float("nan")]], [1.0], None, r"means must be finite"),
    ([[0.0, 0.0]], [float("inf")], None, r"stds"),
])
def test_construction_rejects(means, stds, weights, match):
    with pytest.raises(UserError, match=match):
        GaussianMixture(means, stds, weights)


def test_named_mixtures():
    a = two_mode_mixture()
    assert a.means.tolist() == [[-2.0, 0.0], [2.0, 0.0]]
    assert torch.allclose(a.stds, torch.tensor([0.3, 0.3], dtype=F64))
    assert torch.allclose(a.weights, torch.tensor([0.2, 0.8], dtype=F64))
    b = ncsn_mixture()
    assert b.means.tolist() == [[5.0, 5.0], [-5.0, -5.0]] and b.stds.tolist() == [1.0, 1.0]
    assert torch.allclose(b.weights, torch.tensor([0.8, 0.2], dtype=F64))


# ------------------------------------------------------------------ sampling
@settings(max_examples=25, deadline=None, derandomize=True)
@given(mix=mixtures())
def test_sample_moments_match_analytic(mix):
    n = 20000
    x, y = mix.sample(n, gen(0), dtype=F64, return_labels=True)
    w, m, s = mix.weights, mix.means, mix.stds
    mu = w @ m
    cov = (w * s ** 2).sum() * torch.eye(mix.dim, dtype=F64) + (w[:, None, None] * m[:, :, None] * m[:, None, :]).sum(0) \
        - mu[:, None] * mu[None, :]
    # mean: 6 standard errors (from the analytic variance)
    se = torch.sqrt(torch.diagonal(cov) / n)
    assert ((x.mean(0) - mu).abs() <= 6 * se + 1e-9).all()
    # covariance: each entry is the mean of z = (x_i - mu_i)(x_j - mu_j); 6 standard errors of z
    d = x - mu
    z = d[:, :, None] * d[:, None, :]
    assert ((z.mean(0) - cov).abs() <= 6 * z.std(0) / math.sqrt(n) + 1e-9).all()
    # labels follow the weights
    counts = torch.bincount(y, minlength=mix.num_components).double()
    assert ((counts - n * w).abs() <= 6 * torch.sqrt(n * w * (1 - w)) + 1e-9).all()
    assert (counts[w == 0] == 0).all()


def test_sample_reproducible_device_dtype_and_labels():
    mix = two_mode_mixture()
    x = mix.sample(100, gen(0))
    assert x.shape == (100, 2) and x.dtype == torch.float32
    assert torch.equal(x, mix.sample(100, gen(0)))
    assert not torch.equal(x, mix.sample(100, gen(1)))
    x64, y = mix.sample(100, gen(0), device="cpu", dtype=F64, return_labels=True)
    assert torch.equal(x64.float(), x) and y.dtype == torch.long
    # each point sits near its labelled component
    assert ((x64 - mix.means[y]).norm(dim=1) < 6 * 0.3).all()
    assert mix.sample(0, gen(0)).shape == (0, 2)


# ------------------------------------------------------------------- density
@settings(max_examples=15, deadline=None, derandomize=True)
@given(mix=mixtures(max_n=1, min_std=0.2, mean_range=3.0))
def test_log_prob_integrates_to_one_1d(mix):
    grid = torch.linspace(-15, 15, 30001, dtype=F64)
    p = mix.log_prob(grid[:, None]).exp()
    assert abs(float(torch.trapezoid(p, grid)) - 1) < 1e-6


@settings(max_examples=5, deadline=None, derandomize=True)
@given(mix=mixtures(max_k=3, max_n=2, min_std=0.3, max_std=1.0, mean_range=2.0))
def test_log_prob_integrates_to_one_2d(mix):
    assume(mix.dim == 2)
    t = torch.linspace(-8, 8, 641, dtype=F64)
    xx, yy = torch.meshgrid(t, t, indexing="ij")
    p = mix.log_prob(torch.stack([xx.ravel(), yy.ravel()], -1)).exp().reshape(641, 641)
    assert abs(float(torch.trapezoid(torch.trapezoid(p, t), t)) - 1) < 1e-4


@settings(max_examples=20, deadline=None)
@given(mix=mixtures())
def test_log_prob_matches_scipy(mix):
    x = mix.sample(50, gen(1), dtype=F64) * 1.5
    terms = [math.log(float(w)) + np.atleast_1d(
                 multivariate_normal(m.numpy(), float(s) ** 2 * np.eye(mix.dim)).logpdf(x.numpy()))
             for w, m, s in zip(mix.weights, mix.means, mix.stds) if w > 0]
    ref = logsumexp(np.stack(terms), axis=0)
    assert np.allclose(mix.log_prob(x).numpy(), ref, rtol=1e-9, atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(mix=mixtures(), seed=st.integers(0, 1000))
def test_score_is_gradient_of_log_prob(mix, seed):
    x = (mix.sample(40, gen(seed), dtype=F64) + torch.randn(40, mix.dim, generator=gen(seed + 1), dtype=F64))
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(mix.log_prob(x).sum(), x)
    assert torch.allclose(mix.score(x.detach()), grad, rtol=1e-8, atol=1e-8)


def test_log_prob_and_score_stable_far_from_the_modes():
    mix = two_mode_mixture()
    x = torch.tensor([[1e3, 0.0], [-1e3, 5e2], [0.0, 0.0]], dtype=F64)
    lp, sc = mix.log_prob(x), mix.score(x)
    assert torch.isfinite(lp).all() and torch.isfinite(sc).all()
    # far to the right only the right component matters: score = (m_right - x)/s^2
    assert torch.allclose(sc[0], (mix.means[1] - x[0]) / 0.09)
    assert torch.allclose(mix.responsibilities(x).sum(1), torch.ones(3, dtype=F64))


def test_log_prob_rejects_wrong_dimension():
    with pytest.raises(UserError, match=r"\[B, 2\]"):
        two_mode_mixture().log_prob(torch.zeros(3, 3))


@settings(max_examples=10, deadline=None, derandomize=True)
@given(mix=mixtures(max_k=3, max_n=2), sigma=st.floats(0.0, 3.0), alpha=st.floats(0.1, 2.0))
def test_perturbed_is_the_law_of_alpha_y_plus_sigma_eps(mix, sigma, alpha):
    n = 20000
    y = mix.sample(n, gen(0), dtype=F64)
    x = alpha * y + sigma * torch.randn(n, mix.dim, generator=gen(1), dtype=F64)
    pm = mix.perturbed(sigma, alpha)
    assert torch.allclose(pm.stds, torch.sqrt(alpha ** 2 * mix.stds ** 2 + sigma ** 2))
    # the Monte Carlo average log-density under the right law beats a wrong one
    wrong = mix.perturbed(sigma + 0.5, alpha)
    assert float(pm.log_prob(x).mean()) > float(wrong.log_prob(x).mean())
    mu = pm.weights @ pm.means
    assert ((x.mean(0) - mu).abs() < 6 * x.std(0) / math.sqrt(n) + 1e-9).all()


# ---------------------------------------------------------------------- JSON
@settings(max_examples=10, deadline=None)
@given(mix=mixtures())
def test_json_round_trip(mix, tmp_path_factory):
    path = tmp_path_factory.mktemp("mix") / "m.json"
    mix.to_json(path)
    back = GaussianMixture.from_json(path)
    assert torch.equal(mix.means, back.means) and torch.equal(mix.stds, back.stds)
    # weights are renormalised on load: equal up to rounding
    assert torch.allclose(mix.weights, back.weights, rtol=1e-14, atol=0)


def test_json_weights_optional_and_normalised(tmp_path):
    p = tmp_path / "m.json"
    p.write_text(json.dumps({"means": [[0, 0], [1, 1]], "stds": [1, 1], "weights": [2, 6]}))
    assert GaussianMixture.from_json(p).weights.tolist() == [0.25, 0.75]
    p.write_text(json.dumps({"means": [[0, 0], [1, 1]], "stds": [1, 1]}))
    assert GaussianMixture.from_json(p).weights.tolist() == [0.5, 0.5]


@pytest.mark.parametrize("obj,match", [
    ({"stds": [1.0]}, r"missing key 'means'"),
    ({"means": [[0.0, 0.0]]}, r"missing key 'stds'"),
    ({"means": [[0.0, 0.0]], "stds": [1.0], "wieghts": [1.0]}, r"unknown key 'wieghts'"),
    ({"means": [0.0, 0.0], "stds": [1.0, 1.0]}, r"key 'means'.*\[K, N\]"),
    ({"means": [[0.0, 0.0], [1.0]], "stds": [1.0, 1.0]}, r"key 'means'"),
    ({"means": [["a", 0.0]], "stds": [1.0]}, r"key 'means'.*numbers"),
    ({"means": [[0.0, 0.0]], "stds": [1.0, 2.0]}, r"key 'stds' has 2 entries but 'means' has 1"),
    ({"means": [[0.0, 0.0]], "stds": 1.0}, r"key 'stds'"),
    ({"means": [[0.0, 0.0]], "stds": [1.0], "weights": [1.0, 1.0]}, r"key 'weights' has 2"),
    ({"means": [[0.0, 0.0], [1, 1]], "stds": [1.0, -1.0]}, r"stds.*-1\.0"),
    ({"means": [[0.0, 0.0], [1, 1]], "stds": [1.0, 1.0], "weights": [1.0, -2.0]}, r"weights.*-2\.0"),
    ({"means": [[0.0, 0.0], [1, 1]], "stds": [1.0, 1.0], "weights": [0, 0]}, r"weights must not all be zero"),
    ([1, 2, 3], r"expected a JSON object"),
])
def test_bad_json_names_the_key_and_the_path(tmp_path, obj, match):
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(obj))
    with pytest.raises(UserError, match=match) as info:
        GaussianMixture.from_json(p)
    assert str(p) in str(info.value)


def test_unreadable_json(tmp_path):
    p = tmp_path / "broken.json"
    p.write_text("{means: ")
    with pytest.raises(UserError, match="invalid JSON") as info:
        GaussianMixture.from_json(p)
    assert str(p) in str(info.value)
    with pytest.raises(UserError, match="does not exist"):
        GaussianMixture.from_json(tmp_path / "missing.json")
