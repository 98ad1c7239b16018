"""The Yukawa process: scales, prior, errors, and sampling with transport, births and a network."""
from __future__ import annotations

import io

import pytest
import torch

from physgen.errors import UserError
from physgen.metrics import mode_weights
from physgen.processes import make_process
from physgen.processes.yukawa import Yukawa, YukawaNeuralField
from physgen.sampling import sample

CENTERS = torch.tensor([[-2.0, 0.0], [2.0, 0.0]])


def two_mode_points(n_left: int = 40, n_right: int = 160, seed: int = 0) -> torch.Tensor:
    """The 0.2/0.8 two-mode mixture of GENPHYS.md as a point set with exactly 20% on the left."""
    g = torch.Generator().manual_seed(seed)
    left = torch.tensor([-2.0, 0.0]) + 0.3 * torch.randn(n_left, 2, generator=g)
    right = torch.tensor([2.0, 0.0]) + 0.3 * torch.randn(n_right, 2, generator=g)
    return torch.cat([left, right])


def test_registered_and_config_round_trip():
    p = make_process("yukawa", m=0.5, sigma_max=7.0, prior_mean=[1.0, 0.0])
    assert isinstance(p, Yukawa) and p.name == "yukawa"
    q = make_process("yukawa", **p.config())
    assert q.config() == p.config()


@pytest.mark.parametrize("m", [1e-3, 0.1, 1.0, 30.0])
def test_scale_map_and_schedule(m):
    p = Yukawa(m=m, sigma_min=0.01, sigma_max=20.0)
    sig = torch.logspace(-3, 2, 50, dtype=torch.float64)
    assert torch.allclose(p.sigma_of_scale(p.z_of_sigma(sig)), sig, rtol=1e-10)
    # σ(z) = z/√(1+mz): √(z/m) when mz ≫ 1, z when mz ≪ 1
    z = torch.tensor([1e-6 / m, 1e6 / m], dtype=torch.float64)
    s = p.sigma_of_scale(z)
    assert float(s[0] / z[0]) == pytest.approx(1.0, rel=1e-5)
    assert float(s[1] / torch.sqrt(z[1] / m)) == pytest.approx(1.0, rel=1e-5)
    sched = p.grid(12)
    assert sched.dtype == torch.float64 and sched[-1] == 0 and float(sched[0]) == pytest.approx(p.s_max)
    assert bool((sched[1:] < sched[:-1]).all())
    zs = p.sample_scales(5000, generator=torch.Generator().manual_seed(0))
    assert float(torch.log(p.sigma_of_scale(zs.double())).mean()) == pytest.approx(p.p_mean, abs=0.06)


def test_prior_is_the_kernel_around_prior_mean():
    p = Yukawa(m=2.0, sigma_max=3.0, prior_mean=[1.5, -0.5])
    x = p.sample_prior((20000, 2), generator=torch.Generator().manual_seed(0)).double()
    assert torch.allclose(x.mean(0), torch.tensor([1.5, -0.5], dtype=torch.float64), atol=0.1)
    assert float(x.var(0).mean()) == pytest.approx(p.s_max / p.m, rel=0.1)  # per-dimension variance z/m


def test_user_errors():
    with pytest.raises(UserError, match="m=0"):
        Yukawa(m=0.0)
    with pytest.raises(UserError, match="objective"):
        Yukawa(objective="nope")
    with pytest.raises(UserError, match="prior_mean"):
        Yukawa(prior_mean=["a"])
    p = Yukawa(m=1.0, sigma_max=5.0)
    pts = two_mode_points(2, 8)
    f = p.exact_field(pts)
    x0 = p.sample_prior((16, 2), generator=torch.Generator().manual_seed(0))
    sched = p.grid(4)
    with pytest.raises(UserError, match="option birth_death must be one of transport, smc, weights, off; got 'nope'"):
        sample(p, f, x0, sched, "heun", birth_death="nope")
    with pytest.raises(UserError, match="solver .rk4. needs .*solvers that run here: births, heun, euler"):
        sample(p, f, x0, sched, "rk4", birth_death="smc")
    with pytest.raises(UserError, match="needs a reverse-time SDE"):
        sample(p, f, x0, sched, "euler-maruyama", birth_death="transport")
    with pytest.raises(UserError, match="solver 'births' has no option 'bogus'; it takes: ess_threshold"):
        sample(p, f, x0, sched, "heun", birth_death="smc", bogus=1)
    with pytest.raises(UserError, match="solver 'heun' has no option 'ess_threshold'"):  # births options need a births mode
        sample(p, f, x0, sched, "heun", birth_death="transport", ess_threshold=0.3)
    net_field = Yukawa(m=1.0, objective="transport").precondition(_mlp())
    with pytest.raises(UserError, match="no rate head"):
        sample(p, net_field, x0, sched, "heun", birth_death="smc")
    den = Yukawa(m=1.0, objective="denoiser").precondition(_mlp())
    with pytest.raises(UserError, match="no transport head"):
        sample(p, den, x0, sched, "heun", birth_death="transport")


@pytest.mark.parametrize("m", [0.1, 1.0, 10.0])
def test_transport_with_exact_field_samples_the_weighted_mixture(m):
    """GENPHYS.md's claim: the birth-free transport flow follows Yukawa's normalised marginals,
    so from the data-independent NIG prior it recovers the 0.2/0.8 weights for every m."""
    pts = two_mode_points()
    p = Yukawa(m=m, sigma_min=0.01, sigma_max=20.0, prior_mean=pts.mean(0).tolist())
    x0 = p.sample_prior((1500, 2), generator=torch.Generator().manual_seed(1))
    sol = sample(p, p.exact_field(pts), x0, p.grid(25), "heun", birth_death="transport")
    left = float(mode_weights(sol.x, CENTERS)[0])
    assert abs(left - 0.2) < 0.03, left
    assert sol.stats.nfe == 2 * 25 - 1 and sol.stats.extra["birth_death"] == "transport"


def test_smc_births_reduce_the_flow_only_bias_where_ess_is_healthy():
    """Small m z_max (= 1): from the exact normalised marginal at z_max, the physical flow alone
    is biased, importance weights with SMC resampling undo it (GENPHYS.md, 1-D check)."""
    pts = two_mode_points()
    m, z_max, n = 0.1, 10.0, 2000
    p = Yukawa(m=m)
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, pts.shape[0], (n,), generator=g)
    x0 = pts[idx] + p.kernel.sample_offsets((n, 2), torch.full((n,), z_max), g)
    from solvers.schedules import edm_schedule

    sched = edm_schedule(30, 0.01, z_max)
    f = p.exact_field(pts)
    off = float(mode_weights(sample(p, f, x0, sched, "heun", birth_death="off").x, CENTERS)[0])
    smc = sample(p, f, x0, sched, "heun", birth_death="smc", seed=0)
    left = float(mode_weights(smc.x, CENTERS)[0])
    assert abs(off - 0.2) > 0.035  # the flow alone loses left mass
    assert abs(left - 0.2) < abs(off - 0.2) - 0.02
    assert abs(left - 0.2) < 0.025
    assert smc.stats.extra["ess_min"] > 0.3
    assert len(smc.stats.extra["ess"]) == len(sched) - 2  # one per positive-scale step


def test_weight_degeneracy_is_reported():
    """Data-mean prior, m = 0.1, z_max = 40: the importance weights degenerate and the sampler
    reports it (the slow test below reproduces GENPHYS.md's ESS/n = 0.0008)."""
    pts = two_mode_points()
    p = Yukawa(m=0.1, sigma_min=0.01, sigma_max=17.9, prior_mean=pts.mean(0).tolist())
    assert p.s_max == pytest.approx(40.0, abs=0.1)
    x0 = p.sample_prior((1000, 2), generator=torch.Generator().manual_seed(2))
    sol = sample(p, p.exact_field(pts), x0, p.grid(20), "heun", birth_death="weights")
    assert sol.stats.extra["ess_final"] < 0.3
    assert float(mode_weights(sol.x, CENTERS)[0]) < 0.12  # still far from 0.2


@pytest.mark.slow
def test_genphys_2d_table_is_reproduced():
    """GENPHYS.md, "Measured here in 2D": m = 0.1, z_max = 40, 2000 particles, exact fields of
    the two-mode mixture, data-mean NIG prior: flow only 0.049, weights 0.042, ESS/n 0.0008."""
    from physgen.data import two_mode_mixture

    data = two_mode_mixture().sample(1000, torch.Generator().manual_seed(0))
    p = Yukawa(m=0.1, sigma_min=0.002, sigma_max=17.8885, prior_mean=data.mean(0).tolist())
    f = p.exact_field(data)
    x0 = p.sample_prior((2000, 2), generator=torch.Generator().manual_seed(1))
    sched = p.grid(40)
    off = float(mode_weights(sample(p, f, x0, sched, "heun", birth_death="off").x, CENTERS)[0])
    w = sample(p, f, x0, sched, "heun", birth_death="weights")
    assert off == pytest.approx(0.049, abs=0.015)
    assert float(mode_weights(w.x, CENTERS)[0]) == pytest.approx(0.042, abs=0.015)
    assert w.stats.extra["ess_final"] < 0.005


def test_flow_only_at_small_m_is_pfgm():
    """m → 0: Yukawa's physical flow is PFGM's (Cauchy-posterior) flow, step for step."""
    from physgen.fields.exact import posterior_mean
    from solvers import heun

    pts = two_mode_points(10, 40)
    p = Yukawa(m=1e-6, sigma_min=0.01, sigma_max=20.0)
    x0 = p.sample_prior((300, 2), generator=torch.Generator().manual_seed(3)).double()
    sched = p.grid(15)
    yuk = sample(p, p.exact_field(pts.double()), x0, sched, "heun", birth_death="off").x

    class PoissonFlow:
        def __call__(self, x, z):
            d = posterior_mean(x, pts.double(), z, lambda sq, s: -1.5 * torch.log(sq + s * s))
            return (x - d) / z[:, None]

    pfgm = heun(PoissonFlow(), x0, sched).x
    assert torch.allclose(yuk, pfgm, atol=1e-3)


def _mlp(hidden: int = 32, out_dim=None):
    from physgen.nets.mlp import MLP

    return MLP(2, hidden=hidden, depth=2, embed_dim=16, out_dim=out_dim)


def test_neural_field_heads_and_network_width():
    for objective, width in (("both", 5), ("births", 3), ("transport", 2), ("denoiser", 2)):
        p = Yukawa(m=1.0, objective=objective)
        net = _mlp(out_dim=p.network_out_dim(2))
        layer = net.out[1]
        field = p.precondition(net)
        assert net.out[1] is layer  # the network is wrapped, never rewired
        assert isinstance(field, YukawaNeuralField) and net.out_dim == width == p.network_out_dim(2)
        x = torch.randn(7, 2)
        z = torch.rand(7) + 0.1
        out = field.outputs(x, z)
        assert set(out) == set({"both": ["denoiser", "transport", "rate"], "births": ["denoiser", "rate"], "transport": ["transport"], "denoiser": ["denoiser"]}[objective])
        if "rate" in out:  # a zero output layer gives κ = m (the kernel mean of the target)
            assert torch.allclose(out["rate"], torch.full((7,), 1.0))
        assert field(x, z).shape == x.shape
        assert field.kind == ("transport" if objective == "transport" else "denoiser")
    from physgen.nets.mlp import MLP

    with pytest.raises(UserError, match="out_dim=5"):
        Yukawa(m=1.0).precondition(MLP(2, hidden=8, depth=1, embed_dim=8, out_dim=4))
    with pytest.raises(UserError, match="needs a network with out_dim=5 .*got out_dim=2"):  # an x-shaped MLP is refused too
        Yukawa(m=1.0).precondition(_mlp())


def test_small_neural_training_lowers_loss_and_samples():
    """Yukawa trains (denoiser + rate + transport heads) and samples with transport and births."""
    from physgen.training import TrainConfig, train

    pts = two_mode_points()
    p = Yukawa(m=1.0, sigma_min=0.01, sigma_max=10.0, sigma_data=1.5, p_mean=0.0, p_std=1.5, prior_mean=pts.mean(0).tolist())
    field = p.precondition(_mlp(64, out_dim=p.network_out_dim(2)))

    def batch(n, g):
        return pts[torch.randint(0, pts.shape[0], (n,), generator=g)], None

    result = train(p, field, batch, TrainConfig(steps=200, batch=128, lr=3e-3, warmup_steps=20, log_every=50), log_stream=io.StringIO())
    first, last = sum(result.losses[:30]) / 30, sum(result.losses[-30:]) / 30
    assert last < 0.7 * first
    out_layer = result.ema.net.out[1]  # every head trained (rows: D x2, T x2, rate)
    assert bool((out_layer.weight.abs().sum(1) > 0).all())
    x = 2 * torch.randn(64, 2)
    kappa = result.ema.denoise_and_rate(x, torch.full((64,), 0.5))[1]
    assert float(kappa.std()) > 1e-3  # the rate head is not the constant it starts as
    x0 = p.sample_prior((300, 2), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for mode in ("transport", "smc", "off"):
            sol = sample(p, result.ema, x0, p.grid(10), "heun", birth_death=mode)
            assert sol.x.shape == x0.shape and bool(torch.isfinite(sol.x).all())
            assert float(mode_weights(sol.x, CENTERS).sum()) == pytest.approx(1.0)


@pytest.mark.slow
def test_neural_transport_recovers_mode_weights():
    """A longer MLP run: the learned transport flow gets the 0.2/0.8 weights roughly right."""
    from physgen.training import TrainConfig, train

    pts = two_mode_points(200, 800)
    p = Yukawa(m=1.0, sigma_min=0.01, sigma_max=10.0, sigma_data=1.5, p_mean=0.0, p_std=1.5, prior_mean=pts.mean(0).tolist(), objective="transport")
    field = p.precondition(_mlp(128))

    def batch(n, g):
        return pts[torch.randint(0, pts.shape[0], (n,), generator=g)], None

    result = train(p, field, batch, TrainConfig(steps=2500, batch=512, lr=2e-3, log_every=500), log_stream=io.StringIO())
    x0 = p.sample_prior((2000, 2), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        sol = sample(p, result.ema, x0, p.grid(25), "heun", birth_death="transport")
    assert abs(float(mode_weights(sol.x, CENTERS)[0]) - 0.2) < 0.06
