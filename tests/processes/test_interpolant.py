"""Stochastic interpolants (physgen/processes/interpolant.py): the reduction to an affine
Gaussian path, the velocity as the three-term conditional expectation, and the SDE family
with a user-chosen diffusion coefficient."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from affine_paths import assert_derivatives_match

from physgen.errors import UserError
from physgen.processes import make_process, process_from_record
from physgen.processes.flow_matching import FMCosine, RectifiedFlow
from physgen.processes.interpolant import Interpolant
from physgen.sampling import sample

CASES = [Interpolant(), Interpolant(path="trig", gamma_scale=0.5), Interpolant(gamma="zero")]
IDS = ["linear-bridge", "trig-bridge", "linear-zero"]


@pytest.mark.parametrize("process", CASES, ids=IDS)
@settings(max_examples=25, deadline=None)
@given(t=st.floats(0.01, 0.98))
def test_derivatives_and_sigma_inverse(process, t):
    assert_derivatives_match(process, t)
    tt = torch.tensor([t], dtype=torch.float64)
    assert float(process.t_of_sigma(process.equivalent_sigma(tt))) == pytest.approx(t, rel=1e-8)


@pytest.mark.parametrize("zero, plain", [(Interpolant(gamma="zero"), RectifiedFlow()), (Interpolant(path="trig", gamma="zero"), FMCosine())])
def test_without_gamma_it_is_the_flow_matching_path(zero, plain):
    points = torch.randn(40, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = torch.randn(100, 2, dtype=torch.float64)
    t = torch.rand(100, dtype=torch.float64) * 0.9 + 0.05
    assert torch.allclose(zero.velocity(zero.exact_field(points), x, t), plain.velocity(plain.exact_field(points), x, t), atol=1e-10)


@pytest.mark.parametrize("process", CASES[:2], ids=IDS[:2])
def test_velocity_is_the_conditional_mean_of_the_three_term_target(process):
    """For one data point ``y``, ``E‖u*(x_t) - (α' y + β' z + γ' w)‖²`` is the residual variance
    of ``β' z + γ' w`` given ``β z + γ w``: ``d (β'² + γ'² - (ββ' + γγ')²/(β² + γ²))``; a
    velocity that were not the conditional mean would exceed it."""
    g = torch.Generator().manual_seed(2)
    n, t = 40000, 0.3
    y = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    al, be, g2, dal, dbe, ggd = (float(v) for v in process.terms(torch.tensor([t], dtype=torch.float64)))
    ga, dga = g2**0.5, ggd / g2**0.5
    z, w = torch.randn(n, 2, generator=g, dtype=torch.float64), torch.randn(n, 2, generator=g, dtype=torch.float64)
    x = al * y + be * z + ga * w
    u = process.velocity(process.exact_field(y), x, torch.full((n,), t, dtype=torch.float64))
    residual = float((u - (dal * y + dbe * z + dga * w)).pow(2).sum(1).mean())
    expected = 2 * (dbe**2 + dga**2 - (be * dbe + ga * dga) ** 2 / (be**2 + ga**2))
    assert residual == pytest.approx(expected, rel=0.03)


def test_sde_family_with_a_chosen_epsilon_keeps_the_marginals():
    """``dx = [v - ε ∇log ρ] dt + √(2ε) dW̄`` from the prior reaches a Gaussian ``N(m, c² I)``
    (its analytic field) for ε = 0.3 as for the path's own SDE; ε changes what is offered."""
    mix = type("Mix", (), {"means": torch.tensor([[1.0, -0.5]]), "stds": torch.tensor([0.4]), "weights": torch.ones(1)})()
    p = Interpolant(epsilon=0.3)
    assert "transition" not in p.capabilities() and "sde" in p.capabilities()
    field = p.analytic_field(mix)
    x0 = p.sample_prior((4000, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = sample(p, field, x0, p.grid(300, "uniform"), "euler-maruyama", noise=None).x
    assert torch.allclose(out.mean(0), torch.tensor([1.0, -0.5], dtype=torch.float64), atol=0.03)
    assert torch.allclose(out.std(0), torch.full((2,), 0.4, dtype=torch.float64), rtol=0.05)
    with pytest.raises(UserError, match="ddpm"):
        sample(p, field, x0[:4], p.grid(3), "ddpm")


def test_record_round_trip_and_bad_options():
    p = make_process("interpolant", path="trig", gamma_scale=2.0, epsilon=0.1)
    assert process_from_record({"name": "interpolant", **p.config()}, "x.pt").config() == p.config()
    for bad, word in (({"path": "nope"}, "path"), ({"gamma": "nope"}, "gamma"), ({"epsilon": -1.0}, "epsilon"),
                      ({"gamma_scale": float("inf")}, "gamma_scale")):
        with pytest.raises(UserError, match=word):
            make_process("interpolant", **bad)
