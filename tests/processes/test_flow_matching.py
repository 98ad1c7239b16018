"""Flow matching on affine paths (physgen/processes/flow_matching.py): the paths' closed forms,
the exact field through the sigma form against EDM's, the velocity loss's minimiser, the
velocity preconditioning, the offers and the likelihood through the PF-ODE."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from affine_paths import assert_derivatives_match

from physgen.data import ncsn_mixture
from physgen.errors import UserError
from physgen.fields.analytic import GaussianMixtureField
from physgen.fields.neural import NeuralField, VelocityPreconditioning
from physgen.likelihood import log_likelihood
from physgen.processes import EDM, SigmaForm, data_defaults, make_process, process_from_record
from physgen.processes.flow_matching import FMVP, FMCosine, RectifiedFlow

PATHS = [RectifiedFlow(), FMCosine(), FMVP(), FMVP(beta_schedule="cosine")]
IDS = ["rectified-flow", "fm-cosine", "fm-vp", "fm-vp-cosine"]


@pytest.mark.parametrize("process", PATHS, ids=IDS)
@settings(max_examples=30, deadline=None)
@given(t=st.floats(0.01, 0.98))
def test_derivatives_are_those_of_the_coefficients(process, t):
    assert_derivatives_match(process, t)


@pytest.mark.parametrize("process", PATHS, ids=IDS)
@settings(max_examples=30, deadline=None)
@given(t=st.floats(0.002, 0.99))
def test_sigma_form_maps_invert_the_equivalent_sigma(process, t):
    tt = torch.tensor([t], dtype=torch.float64)
    sigma = process.equivalent_sigma(tt)
    assert float(process.t_of_sigma(sigma)) == pytest.approx(t, rel=1e-9, abs=1e-12)
    assert float(process.signal_of_sigma(sigma)) == pytest.approx(float(process.coefficients(tt)[0]), rel=1e-9)


@pytest.mark.parametrize("process", PATHS, ids=IDS)
def test_forward_sde_keeps_the_path_marginal_variance(process):
    """``d(b²)/dt = 2 f b² + g²`` and ``da/dt = f a``: the forward SDE has the path's marginals."""
    t = torch.linspace(0.02, 0.95, 20, dtype=torch.float64)
    a, b = process.coefficients(t)
    da, db = process.derivatives(t)
    f, g2 = process.drift_coefficient(t), process.diffusion_squared(t)
    assert torch.allclose(da, f * a, rtol=1e-10)
    assert torch.allclose(2 * b * db, 2 * f * b**2 + g2, rtol=1e-10, atol=1e-12)
    assert bool((g2 > 0).all())


def test_rectified_flow_exact_field_through_sigma_form_is_edms_exact_field():
    """The same posterior mean: RF's denoiser in EDM's variables ``x̄ = x/(1-t)``, ``σ = t/(1-t)``
    equals EDM's exact denoiser at ``(x̄, σ)``, and its velocity is ``(x - D)/t``."""
    g = torch.Generator().manual_seed(0)
    points = torch.randn(300, 2, generator=g, dtype=torch.float64) * 2
    rf = RectifiedFlow()
    form = SigmaForm(rf, rf.exact_field(points))
    edm_field = EDM().exact_field(points)
    sigma = torch.exp(torch.empty(500, dtype=torch.float64).uniform_(math.log(0.01), math.log(500.0), generator=g))
    xbar = points[torch.randint(0, 300, (500,), generator=g)] + sigma[:, None] * torch.randn(500, 2, generator=g, dtype=torch.float64)
    assert torch.allclose(form.denoise(xbar, sigma), edm_field(xbar, sigma), atol=1e-6, rtol=0)
    t = rf.t_of_sigma(sigma)
    x = (1 - t)[:, None] * xbar
    u = rf.velocity(rf.exact_field(points), x, t)
    assert torch.allclose(u, (x - edm_field(xbar, sigma)) / t[:, None], atol=1e-6, rtol=0)


@pytest.mark.parametrize("process", PATHS, ids=IDS)
def test_velocity_loss_of_a_single_point_vanishes_at_its_exact_field(process):
    """For one data point the conditional velocity is the marginal one: the loss's minimiser
    (the exact field) has zero loss, and any other field a positive one."""
    y = torch.tensor([[1.5, -0.5]], dtype=torch.float64).expand(256, 2)
    exact = process.exact_field(y[:1])
    loss = process.loss(exact, y, generator=torch.Generator().manual_seed(1))
    assert float(loss.max()) < 1e-12
    other = process.exact_field(y[:1] + 0.1)
    assert float(process.loss(other, y, generator=torch.Generator().manual_seed(1)).mean()) > 1e-3


class Zero(torch.nn.Module):
    def forward(self, x, c_noise, label=None):
        return torch.zeros_like(x)


@pytest.mark.parametrize("process", PATHS, ids=IDS)
def test_velocity_preconditioning_skip_is_the_gaussian_optimum_and_out_its_residual(process):
    """With ``F = 0`` the preconditioned field is ``c_skip x``, the exact velocity of data
    ``N(0, σ_d² I)``; the loss of that field is ``c_out²`` (the residual variance) on average."""
    sd = 0.7
    field = process.precondition(Zero(), sigma_data=sd)
    assert isinstance(field, NeuralField) and field.kind == "velocity"
    mix = type("Mix", (), {"means": torch.zeros(1, 2), "stds": torch.tensor([sd]), "weights": torch.ones(1)})()
    g = torch.Generator().manual_seed(3)
    t = torch.full((4000,), 0.4, dtype=torch.float64)
    x = torch.randn(4000, 2, generator=g, dtype=torch.float64)
    exact_u = process.velocity(GaussianMixtureField(mix, process.coefficients), x, t)
    assert torch.allclose(field(x, t), exact_u, atol=1e-10)
    y = torch.randn(20000, 2, generator=g, dtype=torch.float64) * sd
    a, b, da, db = process.path(torch.tensor([0.4], dtype=torch.float64))
    c_out2 = float(sd**2 * (da * b - a * db) ** 2 / (a**2 * sd**2 + b**2))
    z = torch.randn(20000, 2, generator=g, dtype=torch.float64)
    loss = process.regression(field, y, z, torch.full((20000,), 0.4, dtype=torch.float64))
    assert float(loss.mean()) == pytest.approx(c_out2, rel=0.03)


def test_a_velocity_field_and_its_denoiser_give_the_same_offers():
    """The denoiser form and the score of a velocity network are its conversions on the path."""
    rf = RectifiedFlow()
    points = torch.randn(50, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    exact = rf.exact_field(points)

    class AsVelocity:
        kind = "velocity"

        def __call__(self, x, s, label=None):
            return rf.velocity(exact, x, s)

    x = torch.randn(64, 2, dtype=torch.float64)
    t = torch.full((64,), 0.3, dtype=torch.float64)
    assert torch.allclose(rf.denoise(AsVelocity(), x, t), exact(x, t), atol=1e-10)
    assert torch.allclose(rf.score(AsVelocity(), x, t), ((1 - t)[:, None] * exact(x, t) - x) / (t**2)[:, None], atol=1e-8)
    assert set(rf.offers(exact)) == {"flow", "denoiser", "sde", "transition", "score"} == set(rf.capabilities()) - {"gaussian"}


@pytest.mark.parametrize("name", ["rectified-flow", "fm-cosine", "fm-vp"])
def test_registered_and_rebuilt_from_their_record(name):
    p = make_process(name, t_eps=0.01)
    again = process_from_record({"name": name, **p.config()}, "ckpt.pt")
    assert type(again) is type(p) and again.config() == p.config()


@pytest.mark.parametrize("options, word", [({"t_max": 1.0}, "t_max"), ({"t_eps": 0.5, "t_max": 0.4}, "t_eps"),
                                           ({"coupling": "nope"}, "coupling"), ({"t_eps": float("nan")}, "t_eps")])
def test_bad_options_are_one_line_user_errors(options, word):
    with pytest.raises(UserError, match=word):
        make_process("rectified-flow", **options)


@pytest.mark.parametrize("name", ["rectified-flow", "fm-cosine"])
def test_nll_through_the_pf_ode_matches_the_analytic_log_density(name):
    mix = ncsn_mixture()  # 0.8 N((5,5), I) + 0.2 N((-5,-5), I)
    x = mix.sample(100, torch.Generator().manual_seed(0))
    p = make_process(name, t_eps=1e-4)
    f = p.analytic_field(mix)
    truth = f.log_prob(x.double(), torch.full((x.shape[0],), p.s_min, dtype=torch.float64))
    exact_prior = lambda xe: f.log_prob(xe, torch.full((xe.shape[0],), p.s_max, dtype=torch.float64))  # noqa: E731
    tight = log_likelihood(p, f, x, prior=exact_prior, rtol=1e-6, atol=1e-6)
    assert float((tight.logp - truth).abs().max()) < 2e-3
    res = log_likelihood(p, f, x)  # with the process's own prior
    assert abs(res.nll - float(-truth.mean())) / 2 < 0.02


@pytest.mark.parametrize("name", ["rectified-flow", "fm-cosine", "fm-vp", "interpolant"])
def test_toy_defaults_centre_the_prior_and_scale_the_preconditioning_on_the_data(name):
    data = torch.randn(500, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 3 + 1
    filled = data_defaults(name, data, {})
    assert filled["sigma_data"] == pytest.approx(float(data.std()), rel=1e-9)
    assert filled["prior_mean"] == pytest.approx(data.mean(0).tolist())
    p = make_process(name, **filled)
    assert p.precondition(Zero()).preconditioning.sigma_data == filled["sigma_data"]
    assert data_defaults(name, data, {"sigma_data": 2.0})["sigma_data"] == 2.0
