"""physgen.pretrained.from_denoiser / from_eps / from_v: a callable in each convention gives
the same denoiser on the process, checked on Gaussian data N(0, c² I), where every
prediction is closed-form: with x = a y + b ε, E[y|x] = a c² x/(a²c² + b²),
E[ε|x] = b x/(a²c² + b²), E[v|x] = (a E[ε|x] - b E[y|x]) for v = a ε - b y, and in EDM's
σ form (x̄ = y + σ n) D(x̄, σ) = c² x̄/(c² + σ²)."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st

import physgen.pretrained as P
from physgen.errors import UserError
from physgen.fields.kinds import expand_as_batch
from physgen.processes import EDM, PFGM, VE, VP
from physgen.sampling import sample

PROCESSES = {"vp": lambda: VP(), "vp-cosine": lambda: VP("cosine"), "edm": lambda: EDM(), "ve": lambda: VE(),
             "vp-discrete": lambda: VP("discrete", betas=torch.linspace(1e-4, 0.02, 200).tolist(), t_eps=1 / 200)}


def _posterior(process, c):
    def coef(s, x):
        a, b = (expand_as_batch(v, x) for v in process.coefficients(s))
        return a, b, a**2 * c**2 + b**2

    def y(x, s, label=None):
        a, b, v = coef(s, x)
        return a * c**2 * x / v

    def eps(x, s, label=None):
        a, b, v = coef(s, x)
        return b * x / v

    def vel(x, s, label=None):
        a, b, _ = coef(s, x)
        return a * eps(x, s) - b * y(x, s)

    def edm(xbar, sigma, label=None):
        return c**2 * xbar / (c**2 + expand_as_batch(sigma, xbar) ** 2)

    return y, eps, vel, edm


@settings(max_examples=25, deadline=None)
@given(name=st.sampled_from(sorted(PROCESSES)), c=st.floats(0.2, 3.0), u=st.floats(0.02, 0.98))
def test_every_convention_gives_the_posterior_mean(name, c, u):
    process = PROCESSES[name]()
    s = torch.full((3,), process.s_min + u * (process.s_max - process.s_min), dtype=torch.float64)
    x = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y, eps, vel, edm = _posterior(process, c)
    want = y(x, s)
    for field in (P.from_denoiser(edm, process), P.from_eps(eps, process), P.from_v(vel, process)):
        got = process.denoise(field, x, s)
        assert torch.allclose(got, want, rtol=1e-10, atol=1e-12), (name, field.convention)


def test_from_denoiser_samples_gaussian_data_with_the_right_spread():
    """The σ-form field of N(0, c² I) sampled with heun on EDM gives std c (the whole law, 2000 samples)."""
    process, c = EDM(sigma_max=40.0), 0.7
    field = P.from_denoiser(_posterior(process, c)[3], process)
    x0 = process.sample_prior((2000, 2), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    out = sample(process, field, x0, process.grid(40), "heun").x
    assert abs(float(out.std()) - c) < 0.03 and abs(float(out.mean())) < 0.03


def test_one_hot_labels_reach_the_callable_as_edm_rows():
    seen = []

    def fn(x, sigma, labels):
        seen.append(labels.clone())
        return x

    field = P.from_denoiser(fn, EDM(), num_classes=3, one_hot=True)
    field(torch.zeros(3, 2), torch.ones(3), torch.tensor([2, -1, 0]))
    assert torch.equal(seen[-1], torch.tensor([[0, 0, 1], [0, 0, 0], [1, 0, 0]], dtype=torch.float32))
    field(torch.zeros(2, 2), torch.ones(2))  # no label: EDM's all-zero rows
    assert torch.equal(seen[-1], torch.zeros(2, 3))


def test_conventions_that_need_a_gaussian_marginal_are_refused_elsewhere():
    with pytest.raises(UserError, match="Gaussian marginal"):
        P.from_eps(lambda x, s, l: x, PFGM())
    with pytest.raises(UserError, match="unconditional"):
        P.from_denoiser(lambda x, s, l: x, EDM())(torch.zeros(2, 2), torch.ones(2), torch.tensor([0, 1]))
