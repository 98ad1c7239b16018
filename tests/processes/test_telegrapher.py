"""The telegrapher (Kac-flow) process: exact field vs closed forms and the continuity equation,
the loss's targets, the diffusion limit (VE), mixture recovery, solvers, training, the CLI."""
from __future__ import annotations

import math

import pytest
import torch

from physgen.cli.main import main
from physgen.errors import UserError
from physgen.kernels.kac import kac_flux, kac_log_density, kac_velocity
from physgen.noise import SeededNoise
from physgen.processes import make_process
from physgen.processes.telegrapher import Telegrapher
from physgen.sampling import sample

F64 = torch.float64


def two_mode_points(n_left: int, n_right: int, seed: int = 0) -> torch.Tensor:
    """0.2 N((-2,0), 0.3²) + 0.8 N((2,0), 0.3²) as a point set with exactly n_left on the left."""
    g = torch.Generator().manual_seed(seed)
    left = torch.tensor([-2.0, 0.0]) + 0.3 * torch.randn(n_left, 2, generator=g)
    right = torch.tensor([2.0, 0.0]) + 0.3 * torch.randn(n_right, 2, generator=g)
    return torch.cat([left, right])


def left_fraction(a, c, points, n, steps, solver="dpmpp-2m", seed=0):
    p = make_process("telegrapher", a=a, c=c, prior_mean=points.mean(0).tolist())
    x0 = p.sample_prior((n, 2), noise=SeededNoise(seed, range(n)))
    with torch.no_grad():
        sol = sample(p, p.exact_field(points), x0, p.grid(steps), solver)
    assert torch.isfinite(sol.x).all()
    return float((sol.x[:, 0] < 0).double().mean())


def test_registered_config_schedule_and_prior():
    p = make_process("telegrapher", a=2.0, c=0.5, sigma_max=6.0, prior_mean=[1.0, -1.0])
    assert isinstance(p, Telegrapher) and p.ends_at_zero and p.capabilities() == {"flow", "denoiser"}
    assert make_process("telegrapher", **p.config()).config() == p.config()
    sch = p.grid(10)
    assert sch[0] == 6.0 and sch[-1] == 0.0 and bool((sch[1:] < sch[:-1]).all())
    # the prior is the Kac law at t_max around prior_mean: mean, per-coordinate std σ_max
    x = p.sample_prior((40_000, 2), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(x.double().mean(0), torch.tensor([1.0, -1.0], dtype=F64), atol=4 * 6 / 200)
    assert torch.allclose(x.double().std(0), torch.full((2,), 6.0, dtype=F64), rtol=0.02)
    assert float((x - torch.tensor([1.0, -1.0])).abs().max()) <= 0.5 * p.t_max * (1 + 1e-6)  # inside the light cone c t_max
    pg = make_process("telegrapher", a=2.0, c=0.5, sigma_max=6.0, prior="gaussian")
    xg = pg.sample_prior((40_000, 2), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(xg.double().std(0), torch.full((2,), 6.0, dtype=F64), rtol=0.02)


@pytest.mark.parametrize("kwargs,match", [
    ({"a": -1.0}, "a must be a positive"), ({"c": 0.0}, "c must be a positive"), ({"prior": "nope"}, "unknown telegrapher prior"),
    ({"sigma_min": 2.0, "sigma_max": 1.0}, "sigma_min"), ({"prior_mean": ["x"]}, "prior_mean"), ({"atom_band": -1.0}, "atom_band"),
])
def test_user_errors(kwargs, match):
    with pytest.raises(UserError, match=match):
        make_process("telegrapher", **kwargs)


def test_exact_field_of_one_point_is_the_conditional_velocity():
    """One point: the posterior is trivial, so v_i = u(x_i − y_i, t) coordinate by coordinate (atoms: ±c)."""
    a, c = 1.5, 2.0
    p = make_process("telegrapher", a=a, c=c)
    y = torch.tensor([[0.3, -0.2]], dtype=F64)
    f = p.exact_field(y)
    t = torch.full((6,), 0.7, dtype=F64)
    ct = c * 0.7
    x = y + torch.tensor([[0.1, -0.5], [0.9, 0.2], [-1.3, 1.0], [ct, 0.4], [-ct, ct], [0.0, 1.39]], dtype=F64)
    v = f.time_velocity(x, t)
    ref = kac_velocity(x - y, t[:, None], a, c)
    assert torch.allclose(v, ref, rtol=1e-10, atol=1e-12)
    assert torch.allclose(v[3, 0], torch.tensor(c, dtype=F64)) and torch.allclose(v[4], torch.tensor([-c, c], dtype=F64))
    # in the process scale: dx/dσ = v / σ'(t) at σ = σ(t)
    sigma = p.kernel.sigma(t)
    assert torch.allclose(f(x, sigma), v / p.kernel.sigma_rate(t)[:, None], rtol=1e-8)


def test_exact_field_satisfies_the_continuity_equation_of_the_mixture():
    """∂_t q + ∇·(q v) = 0 with q = (1/P) Σ_j Π_i p(x_i − y_ji) (finite differences, away from the cones)."""
    a, c = 1.2, 1.0
    g = torch.Generator().manual_seed(0)
    pts = 0.4 * torch.randn(7, 2, generator=g, dtype=F64)
    f = make_process("telegrapher", a=a, c=c).exact_field(pts)
    x = 0.3 * torch.randn(12, 2, generator=g, dtype=F64)
    t0 = 2.0

    def q(xx, t):
        d = xx[:, None, :] - pts[None]
        return kac_log_density(d, torch.tensor(t, dtype=F64), a, c).sum(2).exp().mean(1)

    def flux(xx, t):
        return q(xx, t)[:, None] * f.time_velocity(xx, torch.full((xx.shape[0],), t, dtype=F64))

    h = 1e-4
    dq = (q(x, t0 + h) - q(x, t0 - h)) / (2 * h)
    div = sum((flux(x + h * e, t0)[:, i] - flux(x - h * e, t0)[:, i]) / (2 * h) for i, e in enumerate(torch.eye(2, dtype=F64)))
    assert float(((dq + div).abs() / (dq.abs() + div.abs())).max()) < 1e-5
    # and the per-pair flux is the closed form j = p u
    d = x[:1] - pts[:1]
    tt = torch.tensor(t0, dtype=F64)
    assert torch.allclose(kac_flux(d, tt, a, c), kac_log_density(d, tt, a, c).exp() * kac_velocity(d, tt, a, c))


def test_exact_field_streaming_and_labels():
    g = torch.Generator().manual_seed(1)
    pts = torch.randn(300, 2, generator=g, dtype=F64)
    labels = (pts[:, 0] > 0).long()
    p = make_process("telegrapher", a=3.0, c=2.0)
    x = 2 * torch.randn(50, 2, generator=g, dtype=F64)
    s = torch.rand(50, generator=g, dtype=F64) * 3 + 0.05
    whole = p.exact_field(pts)(x, s)
    from physgen.processes.telegrapher import TelegrapherExactField

    chunked = TelegrapherExactField(pts, p.kernel, chunk_elems=64)(x, s)
    assert torch.allclose(whole, chunked, rtol=1e-10, atol=1e-12)
    cond = TelegrapherExactField(pts, p.kernel, point_labels=labels)
    assert torch.allclose(cond(x, s, torch.ones(50, dtype=torch.long)), p.exact_field(pts[labels == 1])(x, s), rtol=1e-10, atol=1e-12)
    assert torch.allclose(cond(x, s, torch.full((50,), 2, dtype=torch.long)), whole, rtol=1e-10, atol=1e-12)  # null label


def test_loss_of_the_exact_field_of_one_point_vanishes():
    """For one data point the marginal velocity is the conditional one, atoms included: zero regression loss.
    (Checks the loss's targets, their dx/dσ units and the atom mask against the exact field.)"""
    p = make_process("telegrapher", a=0.8, c=1.3, sigma_data=0.7)
    y = torch.tensor([[0.5, -1.0]], dtype=F64).expand(4000, 2).contiguous()
    f = p.exact_field(y[:1])
    loss = p.loss(f, y, generator=torch.Generator().manual_seed(0))
    assert float(loss.max()) < 1e-16
    zero = lambda x, s, label=None: torch.zeros_like(x)  # noqa: E731
    zero.kind = "velocity"
    assert float(p.loss(zero, y, generator=torch.Generator().manual_seed(0)).mean()) > 0.1


def test_exact_velocity_tends_to_ve_in_the_diffusion_limit():
    """a -> ∞ with c²/a = 1: v(x, t) -> (x − D_VE(x, σ))/(2t), σ² = c²t/a (VE's PF-ODE in the same time)."""
    g = torch.Generator().manual_seed(2)
    pts = torch.randn(40, 2, generator=g, dtype=F64)
    t = 0.6
    x = pts[torch.randint(0, 40, (200,), generator=g)] + math.sqrt(t) * torch.randn(200, 2, generator=g, dtype=F64)
    ve = make_process("ve", sigma_min=0.01, sigma_max=10.0).exact_field(pts)
    ref = (x - ve(x, torch.full((200,), math.sqrt(t), dtype=F64))) / (2 * t)
    errs = []
    for a in (2.0, 20.0, 200.0):
        v = make_process("telegrapher", a=a, c=math.sqrt(a)).exact_field(pts).time_velocity(x, torch.full((200,), t, dtype=F64))
        errs.append(float((v - ref).norm() / ref.norm()))
    assert errs[1] < 0.4 * errs[0] and errs[2] < 0.4 * errs[1] and errs[2] < 0.02, errs


@pytest.mark.parametrize("solver", ["euler", "heun", "midpoint", "rk4", "lms", "dpm2", "dpmpp-2m", "dopri5"])
def test_every_ode_solver_integrates_the_exact_flow(solver):
    pts = two_mode_points(4, 16)
    p = make_process("telegrapher", a=5.0, c=2.0, sigma_max=8.0, prior_mean=pts.mean(0).tolist())
    x0 = p.sample_prior((200, 2), generator=torch.Generator().manual_seed(0))
    opts = {"rtol": 1e-3, "atol": 1e-3} if solver == "dopri5" else {}
    with torch.no_grad():
        sol = sample(p, p.exact_field(pts), x0, p.grid(24), solver, **opts)
    dist = torch.cdist(sol.x, pts).min(1).values
    assert torch.isfinite(sol.x).all() and float(dist.median()) < 0.05, (solver, float(dist.median()))


def test_stochastic_samplers_are_refused_in_one_line():
    assert main(["toy", "--process", "telegrapher", "--field", "exact", "--solver", "euler-maruyama", "--n-data", "50",
                 "--n-samples", "20", "--steps", "4", "--out", "/tmp/never"]) == 2


def test_mixture_recovery_small():
    """A point set with exactly 20% on the left; diffusive regime at the data scale (a = 10, c = 3)."""
    left = left_fraction(10.0, 3.0, two_mode_points(40, 160), n=1000, steps=18)
    assert abs(left - 0.2) < 0.035, left


@pytest.mark.slow
@pytest.mark.parametrize("a,c,steps", [(10.0, 3.0, 18), (1.0, 1.0, 30)])
def test_mixture_recovery_two_mode(a, c, steps):
    """The issue's criterion: 4000 samples, an exact field of ``two_mode`` points (2000: its Bessel terms cost 30x a Gaussian pair), within 0.02."""
    from physgen.data import load_toy

    data = load_toy("two_mode").sample(2000, torch.Generator().manual_seed(0))
    target = float((data[:, 0] < 0).double().mean())
    left = left_fraction(a, c, data, n=4000, steps=steps)
    assert abs(left - 0.2) < 0.02 and abs(left - target) < 0.02, (left, target)


def test_neural_field_trains_and_samples(tmp_path):
    """`physgen toy --process telegrapher --a A --c C --field mlp` trains (loss falls) and samples."""
    from physgen.data import load_toy
    from physgen.nets.mlp import MLP
    from physgen.training import TrainConfig, train

    data = load_toy("two_mode").sample(4000, torch.Generator().manual_seed(0))
    p = make_process("telegrapher", a=4.0, c=2.0, sigma_max=6.0, sigma_data=float(data.std()), prior_mean=data.mean(0).tolist())
    field = p.precondition(MLP(2, hidden=64, depth=2))
    assert field.kind == "velocity"

    def batch(n, g):
        return data[torch.randint(0, data.shape[0], (n,), generator=g)], None

    res = train(p, field, batch, TrainConfig(steps=300, batch=256, lr=3e-3, seed=0, log_every=100))
    first, last = sum(res.losses[:30]) / 30, sum(res.losses[-30:]) / 30
    assert last < 0.7 * first, (first, last)
    x0 = p.sample_prior((1000, 2), noise=SeededNoise(0, range(1000)))
    with torch.no_grad():
        x = sample(p, res.ema, x0, p.grid(18), "heun").x
    left = float((x[:, 0] < 0).double().mean())
    assert torch.isfinite(x).all() and 0.05 < left < 0.4, left
    # the CLI path, both fields
    for fld in ("exact", "mlp"):
        out = tmp_path / fld
        args = ["toy", "--process", "telegrapher", "--a", "4", "--c", "2", "--field", fld, "--dataset", "two_mode", "--n-data", "300",
                "--n-samples", "200", "--steps", "8", "--train-steps", "40", "--batch", "128", "--out", str(out)]
        assert main(args) == 0
        assert (out / "samples.npy").exists()


@pytest.mark.slow
def test_experiment_quick_writes_outputs(tmp_path):
    out = tmp_path / "tg"
    assert main(["experiment", "telegrapher", "--out", str(out), "--quick"]) == 0
    from physgen.experiments.telegrapher import OUTPUTS

    for name in OUTPUTS:  # what the run folder guards is what the run writes
        assert (out / name).stat().st_size > 0, name
    assert set(OUTPUTS) == {p.name for p in out.iterdir()} - {".physgen.lock"}
    summary = (out / "summary.md").read_text()
    assert "Ladder of a" in summary and "Prior mismatch" in summary and "| edm |" in summary
    assert main(["experiment", "telegrapher", "--out", str(out), "--a-values", "0,1"]) == 2  # one-line error


def test_the_toy_default_flip_rate_puts_the_data_in_the_diffusive_regime():
    """``a = 10 c/σ_d`` when --a is not given (the mean free path a tenth of the data's std);
    a given --a (or process option) wins, and a given c scales it."""
    from physgen.data import load_toy
    from physgen.processes import data_defaults
    from physgen.processes.gaussian import data_scales

    data = load_toy("two_mode").sample(3000, torch.Generator().manual_seed(0))
    sd = data_scales(data)["std"]
    assert data_defaults("telegrapher", data, {})["a"] == pytest.approx(10.0 / sd)
    assert data_defaults("telegrapher", data, {"c": 2.0})["a"] == pytest.approx(20.0 / sd)
    assert data_defaults("telegrapher", data, {"a": 1.0})["a"] == 1.0
