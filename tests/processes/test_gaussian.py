"""Diffusion family: kernels against analytic moments, SDE/ODE consistency, validation."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from physgen.errors import UserError
from physgen.fields.kinds import convert_gaussian
from physgen.processes import EDM, VE, VP, make_process


@settings(max_examples=25)
@given(sigma=st.floats(0.01, 50.0), n=st.integers(1, 16), name=st.sampled_from(["ve", "edm"]))
def test_perturb_moments_sigma_processes(sigma, n, name):
    proc = make_process(name)
    g = torch.Generator().manual_seed(0)
    y = torch.randn(1, n, generator=g, dtype=torch.float64).expand(20000, n).contiguous()
    s = torch.full((20000,), sigma, dtype=torch.float64)
    x = proc.perturb(y, s, generator=g)
    se = sigma / math.sqrt(20000)
    assert torch.allclose(x.mean(0), y[0], atol=5 * se)
    var = x.var(0) / sigma**2
    assert torch.all((var - 1).abs() < 0.06)


@settings(max_examples=25)
@given(t=st.floats(1e-3, 1.0), n=st.integers(1, 8), schedule=st.sampled_from(["linear", "cosine"]))
def test_perturb_moments_vp(t, n, schedule):
    proc = VP(beta_schedule=schedule)
    t = min(t, proc.s_max)
    g = torch.Generator().manual_seed(1)
    y = torch.randn(1, n, generator=g, dtype=torch.float64).expand(20000, n).contiguous()
    s = torch.full((20000,), t, dtype=torch.float64)
    a, b = proc.coefficients(s[:1])
    x = proc.perturb(y, s, generator=g)
    assert torch.allclose(x.mean(0), a * y[0], atol=5 * float(b) / math.sqrt(20000) + 1e-12)
    assert torch.all((x.var(0) / b**2 - 1).abs() < 0.06)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_vp_beta_is_minus_derivative_of_log_alpha_squared(schedule):
    proc = VP(beta_schedule=schedule)
    t = torch.linspace(0.01, 0.99, 50, dtype=torch.float64, requires_grad=True)
    log_a2 = 2 * proc._log_alpha(t)
    (grad,) = torch.autograd.grad(log_a2.sum(), t)
    assert torch.allclose(-grad, proc.beta(t.detach()), rtol=1e-6)
    # marginal variance is preserved: a^2 + b^2 = 1
    a, b = proc.coefficients(t.detach())
    assert torch.allclose(a**2 + b**2, torch.ones_like(a))


@pytest.mark.parametrize("proc", [EDM(), VE(), VP()], ids=["edm", "ve", "vp"])
def test_ode_velocity_is_sde_drift_minus_half_g2_score(proc):
    """The probability-flow ODE and the reverse SDE share f and g (score SDE, eq. 13)."""
    from physgen.data import two_mode_mixture

    field = proc.analytic_field(two_mode_mixture())
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 2, generator=g, dtype=torch.float64) * 2
    s = torch.full((64,), 0.5 * (proc.s_min + proc.s_max) if isinstance(proc, VP) else 1.3, dtype=torch.float64)
    sde = proc.sde(field)
    score = proc.score(field, x, s)
    g2 = proc.diffusion_squared(s)[:, None]
    v = proc.velocity(field, x, s)
    assert torch.allclose(sde.drift(x, s) + 0.5 * g2 * score, v, atol=1e-10)


@given(a=st.floats(0.05, 1.0), b=st.floats(0.01, 10.0))
def test_kind_converters_round_trip(a, b):
    g = torch.Generator().manual_seed(0)
    x, d = torch.randn(2, 5, 3, generator=g, dtype=torch.float64)
    av, bv = torch.full((5,), a, dtype=torch.float64), torch.full((5,), b, dtype=torch.float64)
    for kind in ("score", "eps"):
        out = convert_gaussian(d, "denoiser", kind, x, av, bv)
        assert torch.allclose(convert_gaussian(out, kind, "denoiser", x, av, bv), d, atol=1e-9)
    score = convert_gaussian(d, "denoiser", "score", x, av, bv)
    assert torch.allclose(convert_gaussian(score, "score", "eps", x, av, bv), convert_gaussian(d, "denoiser", "eps", x, av, bv), atol=1e-9)


def test_edm_loss_weight_normalises_the_ideal_error():
    """λ(σ) · E‖D* - y‖² → 1 per dim as σ → ∞ for unit-std data (EDM's effective weight)."""
    proc = EDM(sigma_data=1.0)
    sigma = torch.tensor([1e3])
    # for Gaussian data N(0, 1): D* = x/(1+σ²), error var = σ²/(1+σ²)
    err = sigma**2 / (1 + sigma**2)
    assert torch.allclose(proc.loss_weight(sigma) * err, torch.ones(1), rtol=1e-3)


@pytest.mark.parametrize(
    "name,opts,fragment",
    [
        ("edm", {"sigma_min": 1.0, "sigma_max": 0.5}, "sigma_min=1.0 must be < sigma_max=0.5"),
        ("ve", {"sigma_min": -1.0}, "sigma_min must be > 0"),
        ("vp", {"beta_schedule": "quadratic"}, "unknown VP beta schedule 'quadratic'"),
        ("vp", {"beta_min": 30.0}, "beta_min"),
        ("edm", {"D": 4}, "has no option 'D'"),
        ("nope", {}, "unknown process 'nope'; valid:"),
    ],
)
def test_bad_process_options_name_the_value(name, opts, fragment):
    with pytest.raises(UserError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        make_process(name, **opts)


def test_prior_moments():
    g = torch.Generator().manual_seed(0)
    x = EDM(sigma_max=7.0).sample_prior((40000, 3), generator=g)
    assert abs(float(x.std()) - 7.0) < 0.1 and abs(float(x.mean())) < 0.1
    x = VP().sample_prior((40000, 3), generator=g)
    assert abs(float(x.std()) - 1.0) < 0.02
