"""VP with DDPM's discrete betas (physgen.processes.discrete_vp): exact at the trained steps,
a continuous VP in between (log ᾱ linear in t, β(t) piecewise constant), σ -> t inverted,
and the process rebuilds from its config."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st

from physgen.errors import UserError
from physgen.processes import VP, make_process

T = 50


def _betas(kind: str) -> list:
    if kind == "linear":
        return torch.linspace(1e-4, 0.2, T, dtype=torch.float64).tolist()
    return (torch.rand(T, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.3 + 1e-3).tolist()


@pytest.mark.parametrize("kind", ["linear", "random"])
def test_marginals_are_ddpms_at_the_trained_steps(kind):
    betas = _betas(kind)
    vp = VP("discrete", betas=betas, t_eps=1 / T)
    alpha_bar = torch.cumprod(1 - torch.tensor(betas, dtype=torch.float64), 0)
    t = (torch.arange(T, dtype=torch.float64) + 1) / T
    a, b = vp.coefficients(t)
    assert torch.allclose(a**2, alpha_bar, rtol=1e-12) and torch.allclose(b**2, 1 - alpha_bar, rtol=1e-9)
    assert torch.allclose(vp.discrete.timestep(t), torch.arange(T, dtype=torch.float64))


@pytest.mark.parametrize("kind", ["linear", "random"])
def test_beta_integrates_to_minus_log_alpha_bar(kind):
    """-log a(t)² = ∫₀ᵗ β, by the midpoint rule on a fine grid (β is piecewise constant)."""
    vp = VP("discrete", betas=_betas(kind), t_eps=1 / T)
    n = T * 40
    mids = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    integral = torch.cumsum(vp.beta(mids), 0) / n
    ends = (torch.arange(n, dtype=torch.float64) + 1) / n
    assert torch.allclose(integral, -2 * vp._log_alpha(ends), rtol=1e-9, atol=1e-12)


@settings(max_examples=50, deadline=None)
@given(u=st.floats(0.0, 1.0))
def test_t_of_sigma_inverts_sigma_of_t(u):
    vp = VP("discrete", betas=_betas("random"), t_eps=1 / T)
    t = torch.tensor([u], dtype=torch.float64)
    sigma = vp.equivalent_sigma(t)
    assert float((vp.t_of_sigma(sigma) - t).abs().max()) < 1e-9


def test_config_rebuilds_the_process():
    vp = VP("discrete", betas=_betas("linear"), t_eps=1 / T)
    again = make_process("vp", **vp.config())
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    assert torch.equal(again.coefficients(t)[0], vp.coefficients(t)[0])


@pytest.mark.parametrize("kw, expect", [
    (dict(beta_schedule="discrete"), "betas"),
    (dict(beta_schedule="linear", betas=[0.1, 0.2]), "betas"),
    (dict(beta_schedule="discrete", betas=[0.1]), "2..100000"),
    (dict(beta_schedule="discrete", betas=[0.1, 1.0]), r"\(0, 1\)"),
    (dict(beta_schedule="discrete", betas=[0.1, "x"]), "list of numbers"),
])
def test_bad_betas_are_one_line(kw, expect):
    with pytest.raises(UserError, match=expect):
        VP(**kw)
