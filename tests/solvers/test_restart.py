"""Restart sampling (solvers/restart.py, arXiv 2306.14878): its NFE count, k = 0 is Heun (to
rounding), the forward jump is the exact Gaussian transition (a state with the marginal at t_min gets
the one at t_max), the restarts move the samples towards the target distribution (closed-form
two-mode mixture: spread and mode weights against Heun on the same main grid), it runs through
the dispatcher (EDM, VP's σ form), PFGM++ at finite D is refused with the reason, bad options
are one line."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import solvers
from physgen.cli.main import main
from physgen.data import load_toy
from physgen.errors import UserError
from physgen.noise import SeededNoise
from physgen.processes import make_process
from physgen.sampling import sample
from solvers.restart import restart_point
from toy_fields import UnitGaussianVE


@settings(max_examples=25, deadline=None)
@given(K=st.integers(2, 12), k=st.integers(0, 4), n=st.integers(1, 5), t_min=st.floats(0.01, 2.0))
def test_nfe_is_heuns_plus_two_per_restart_step(K, k, n, t_min):
    s = solvers.edm_schedule(K, 0.002, 20.0)
    r = restart_point(s.tolist(), t_min)
    sol = solvers.restart(UnitGaussianVE(), torch.randn(8, 2, dtype=torch.float64), s, restart_intervals=n, k=k, t_min=t_min,
                          t_max=max(25.0, 2 * t_min), generator=torch.Generator().manual_seed(0))
    assert sol.stats.nfe == 2 * K - 1 + (2 * k * n if r is not None else 0)
    assert sol.stats.extra["restarts"] == (k if r is not None else 0)


def test_without_restarts_it_is_heun_to_rounding():  # the same rule, written out (the table's heun combines in another order)
    s = solvers.edm_schedule(9, 0.002, 20.0)
    x0 = 20.0 * torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    heun = solvers.heun(UnitGaussianVE(), x0, s)
    rs = solvers.restart(UnitGaussianVE(), x0, s, restart_intervals=3, k=0, t_min=0.06, t_max=0.3, generator=torch.Generator())
    assert torch.allclose(rs.x, heun.x, rtol=1e-12, atol=1e-12) and rs.stats.nfe == heun.stats.nfe == 17


class _Exact:
    """N(0, I) data: the exact flow, whose solution from σ to σ' is x √((1+σ'²)/(1+σ²))."""

    def denoise(self, x, s):
        return x / (1 + s[:, None] ** 2)

    def __call__(self, x, s):
        return (x - self.denoise(x, s)) / s[:, None]


def test_the_jump_and_the_way_back_keep_the_marginal():
    """With a fine way back (near-exact ODE), k restarts from the marginal at σ_r must return the
    marginal at σ_r, N(0, (1 + σ_r²) I): the jump is the exact forward transition."""
    n, s = 20000, [2.0, 0.5, 0.0]
    x = torch.randn(n, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * math.sqrt(1 + 2.0**2)
    g = torch.Generator().manual_seed(3)
    sol = solvers.restart(_Exact(), x, s, restart_intervals=200, k=3, t_min=0.5, t_max=3.0, generator=g, return_trajectory=True)
    at_r = sol.stats.trajectory[1]
    var = at_r.var(0)
    assert torch.allclose(var, torch.full_like(var, 1 + 0.5**2), rtol=0.04), var  # 4 sigma of a 20000-draw variance is 4%
    assert abs(float(sol.x.var(0).mean()) - 1 / 1.25) < 0.03  # then the denoising step 0.5 -> 0: D = x/(1 + σ²), var 1/(1 + σ²)


@pytest.fixture(scope="module")
def two_mode():
    return load_toy("two_mode").mixture  # 0.2 N((-2,0), 0.3² I) + 0.8 N((2,0), 0.3² I)


@pytest.mark.parametrize("K", [6, 10])
def test_restarts_move_a_coarse_heun_towards_the_target(two_mode, K):
    p = make_process("edm", sigma_max=20.0)
    f = p.analytic_field(two_mode)
    n = 3000
    noise = SeededNoise(0, range(n))
    x0 = p.sample_prior((n, 2), noise=noise, dtype=torch.float64)
    g = p.grid(K)

    def spread_error(x):  # the right mode's per-axis std against the true 0.3
        return float((x[x[:, 0] > 0].std(0) - 0.3).abs().max())

    heun = sample(p, f, x0, g, "heun").x
    rs = sample(p, f, x0, g, "restart", noise=noise)
    assert rs.stats.nfe == 2 * K - 1 + 2 * 2 * 3
    assert spread_error(rs.x) < 0.6 * spread_error(heun)
    right = float((rs.x[:, 0] > 0).double().mean())
    assert abs(right - 0.8) < 4 * math.sqrt(0.16 / n)


def test_vp_through_its_sigma_form_and_pfgmpp_refused(two_mode):
    vp = make_process("vp")
    n = 2000
    noise = SeededNoise(0, range(n))
    x0 = vp.sample_prior((n, 2), noise=noise, dtype=torch.float64)
    f = vp.analytic_field(two_mode)
    heun_sigma = sample(vp, f, x0, vp.grid(10), "edm-sde", noise=noise, s_churn=0.0).x  # Heun in the σ form, as restart runs
    assert torch.allclose(sample(vp, f, x0, vp.grid(10), "restart", noise=noise, k=0).x, heun_sigma, rtol=1e-10, atol=1e-10)
    rs = sample(vp, f, x0, vp.grid(10), "restart", noise=noise)
    assert rs.stats.nfe == 20 + 12 and rs.stats.extra["restarts"] == 2 and torch.isfinite(rs.x).all()
    assert float((rs.x[:, 0] > 0).double().mean()) == pytest.approx(float((heun_sigma[:, 0] > 0).double().mean()), abs=0.03)
    pf = make_process("pfgmpp", D=128)
    with pytest.raises(UserError, match="restart.*needs a Gaussian perturbation kernel.*pfgmpp"):
        sample(pf, pf.exact_field(torch.zeros(3, 2)), pf.sample_prior((4, 2)), pf.grid(5), "restart")


def test_bad_options_are_refused():
    p = make_process("edm", sigma_max=20.0)
    f, x0 = UnitGaussianVE(), p.sample_prior((4, 2), noise=SeededNoise(0, range(4)))
    for opts, why in (({"k": -1}, "k"), ({"restart_intervals": 0}, "restart_intervals"), ({"t_min": 0.0}, "t_min"),
                      ({"t_max": "x"}, "t_max"), ({"s_noise": 3.0}, "s_noise")):
        with pytest.raises(UserError, match=why):
            sample(p, p.exact_field(torch.zeros(3, 2)), x0, p.grid(5), "restart", noise=SeededNoise(0, range(4)), **opts)
    with pytest.raises(ValueError, match="t_min < t_max"):
        solvers.restart(f, x0, p.grid(5), restart_intervals=2, k=1, t_min=1.0, t_max=0.5, generator=torch.Generator())
    with pytest.raises(ValueError, match="must exceed the restart point"):
        solvers.restart(f, x0, [20.0, 5.0, 0.0], restart_intervals=2, k=1, t_min=0.06, t_max=1.0, generator=torch.Generator())


def test_cli_lists_and_runs_restart(tmp_path, capsys):
    assert main(["toy", "--list-solvers", "--process", "edm"]) == 0
    assert any(line.startswith("restart ") for line in capsys.readouterr().out.splitlines())
    base = ["toy", "--process", "edm", "--sigma-max", "20", "--dataset", "two_mode", "--field", "analytic", "--n-samples", "64",
            "--solver", "restart", "--steps", "6"]
    assert main([*base, "--sampler-opt", "k=1", "--out", str(tmp_path / "o")]) == 0
    assert main([*base, "--sampler-opt", "t_max=0.01", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "t_max" in err[0]
