"""Exact and analytic fields against brute force and against each other."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from physgen.data import GaussianMixture, two_mode_mixture
from physgen.fields.exact import posterior_mean
from physgen.processes import EDM, VE, VP


def brute_force_denoiser(x, points, a, b):
    out = torch.empty_like(x)
    for q in range(x.shape[0]):
        logw = torch.tensor([-((x[q] - a[q] * y) ** 2).sum() / (2 * b[q] ** 2) for y in points], dtype=torch.float64)
        w = torch.softmax(logw, 0)
        out[q] = (w[:, None] * points).sum(0)
    return out


@settings(max_examples=20)
@given(
    p=st.integers(1, 30),
    q=st.integers(1, 12),
    n=st.integers(1, 5),
    s=st.floats(0.05, 20.0),
    seed=st.integers(0, 1000),
    name=st.sampled_from(["edm", "ve", "vp"]),
    chunk=st.sampled_from([7, 64, 1 << 22]),
)
def test_exact_field_equals_brute_force(p, q, n, s, seed, name, chunk):
    g = torch.Generator().manual_seed(seed)
    points = torch.randn(p, n, generator=g, dtype=torch.float64) * 2
    x = torch.randn(q, n, generator=g, dtype=torch.float64) * 3
    proc = {"edm": EDM(), "ve": VE(), "vp": VP()}[name]
    if name == "vp":
        s = min(max(s / 20.0, proc.s_min), proc.s_max)
    sv = torch.full((q,), s, dtype=torch.float64)
    field = proc.exact_field(points)
    field.chunk_elems = chunk  # force several row/column blocks through the streaming log-sum-exp
    a, b = proc.coefficients(sv)
    assert torch.allclose(field(x, sv), brute_force_denoiser(x, points, a, b), atol=1e-9, rtol=1e-7)


def test_exact_field_is_conditional_with_labels():
    points = torch.tensor([[-1.0, 0.0], [1.0, 0.0], [3.0, 0.0]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 1])
    field = EDM().exact_field(points, labels)
    x = torch.zeros(2, 2, dtype=torch.float64)
    s = torch.full((2,), 0.01, dtype=torch.float64)
    d = field(x, s, torch.tensor([0, 1]))
    assert torch.allclose(d, torch.tensor([[-1.0, 0.0], [1.0, 0.0]], dtype=torch.float64))


def test_posterior_mean_pair_value_is_a_posterior_expectation():
    g = torch.Generator().manual_seed(0)
    points, x = torch.randn(20, 2, generator=g, dtype=torch.float64), torch.randn(5, 2, generator=g, dtype=torch.float64)
    s = torch.full((5,), 0.7, dtype=torch.float64)
    prof = lambda sq, s: -0.5 * sq / s**2
    _, extra = posterior_mean(x, points, s, prof, pair_value=lambda sq, s: sq)
    w = torch.softmax(-0.5 * torch.cdist(x, points) ** 2 / 0.49, 1)
    assert torch.allclose(extra, (w * torch.cdist(x, points) ** 2).sum(1), atol=1e-10)


@pytest.mark.parametrize("proc", [EDM(), VP()], ids=["edm", "vp"])
def test_analytic_mixture_field_is_the_infinite_sample_limit_of_the_exact_field(proc):
    mix = two_mode_mixture()
    g = torch.Generator().manual_seed(0)
    points = mix.sample(200_000, g, dtype=torch.float64)
    x = torch.randn(50, 2, generator=g, dtype=torch.float64) * 2
    s = torch.full((50,), 1.0 if isinstance(proc, EDM) else 0.3, dtype=torch.float64)
    exact = proc.exact_field(points)(x, s)
    analytic = proc.analytic_field(mix)(x, s)
    assert float((exact - analytic).abs().max()) < 0.03


@settings(max_examples=20)
@given(s=st.floats(0.05, 10.0), seed=st.integers(0, 100), k=st.integers(1, 4))
def test_analytic_score_is_the_gradient_of_the_analytic_log_density(s, seed, k):
    g = torch.Generator().manual_seed(seed)
    mix = GaussianMixture(torch.randn(k, 2, generator=g) * 2, torch.rand(k, generator=g) + 0.2, torch.rand(k, generator=g) + 0.1)
    field = EDM().analytic_field(mix)
    x = (torch.randn(8, 2, generator=g, dtype=torch.float64) * 3).requires_grad_(True)
    sv = torch.full((8,), s, dtype=torch.float64)
    (grad,) = torch.autograd.grad(field.log_prob(x, sv).sum(), x)
    assert torch.allclose(field.score(x.detach(), sv), grad, atol=1e-8)
    # Tweedie: D = x + s^2 score
    assert torch.allclose(field(x.detach(), sv), x.detach() + s**2 * grad, atol=1e-8)


def test_analytic_log_density_at_small_scale_is_the_data_density():
    mix = two_mode_mixture()
    x = torch.tensor([[2.0, 0.1], [-2.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    field = EDM().analytic_field(mix)
    assert torch.allclose(field.log_prob(x, torch.full((3,), 1e-6, dtype=torch.float64)), mix.log_prob(x), atol=1e-6)
