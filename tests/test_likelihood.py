"""Exact likelihood by the probability-flow ODE: analytic agreement, divergence estimators,
PFGM++'s limit, and the ``physgen nll`` command."""
from __future__ import annotations

import importlib.util
import json
import math

import pytest
import torch

from physgen.cli.main import main
from physgen.data import ncsn_mixture
from physgen.errors import UserError
from physgen.likelihood import exact_divergence, hutchinson_divergence, log_likelihood, prior_log_prob, rademacher
from physgen.noise import SeededNoise
from physgen.processes import make_process

HAS_PFGMPP = importlib.util.find_spec("physgen.processes.pfgmpp") is not None


@pytest.fixture(scope="module")
def mog():
    mix = ncsn_mixture()  # 0.8 N((5,5), I) + 0.2 N((-5,-5), I)
    return mix, mix.sample(200, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name, opts", [
    ("ve", {"sigma_min": 1e-3, "sigma_max": 100.0}),
    ("edm", {"sigma_min": 1e-3, "sigma_max": 100.0}),
    ("ncsn", {"sigma_min": 1e-3, "sigma_max": 100.0}),
    ("vp", {"t_eps": 1e-5}),
])
def test_nll_of_a_mixture_matches_its_analytic_log_density(mog, name, opts):
    mix, x = mog
    p = make_process(name, **opts)
    f = p.analytic_field(mix)
    res = log_likelihood(p, f, x)
    truth = f.log_prob(x.double(), torch.full((x.shape[0],), p.s_min, dtype=torch.float64))
    assert res.divergence == "exact" and res.dim == 2 and res.n == 200 and res.nfe > 0
    assert abs(res.nll - float(-truth.mean())) / 2 < 0.02  # nats per dimension, with the approximate prior
    assert float((res.logp - truth).abs().max()) < 0.2
    # with the exact p_{s_max} as prior only the ODE error is left
    exact_prior = lambda xe: f.log_prob(xe, torch.full((xe.shape[0],), p.s_max, dtype=torch.float64))  # noqa: E731
    tight = log_likelihood(p, f, x, prior=exact_prior, rtol=1e-6, atol=1e-6)
    assert float((tight.logp - truth).abs().max()) < 2e-3
    # and s_min -> 0 approaches the clean data density
    assert float((truth - mix.log_prob(x.double())).abs().max()) < 1e-3


def test_exact_divergence_is_the_jacobian_trace(mog):
    mix, _ = mog
    p = make_process("edm", sigma_max=50.0)
    f = p.analytic_field(mix)
    x = torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 4
    s = torch.full((5,), 2.5, dtype=torch.float64)
    v, div = exact_divergence(lambda xx, ss: p.velocity(f, xx, ss), x, s)
    for i in range(5):
        jac = torch.autograd.functional.jacobian(lambda xi: p.velocity(f, xi[None], s[:1])[0], x[i])
        assert float(div[i]) == pytest.approx(float(torch.trace(jac)), rel=1e-10, abs=1e-12)
    torch.testing.assert_close(v, p.velocity(f, x, s))


def test_hutchinson_is_unbiased(mog):
    mix, _ = mog
    p = make_process("ve", sigma_max=50.0)
    f = p.analytic_field(mix)
    fn = lambda xx, ss: p.velocity(f, xx, ss)  # noqa: E731
    x = torch.tensor([[1.0, -2.0], [4.0, 4.5], [-3.0, -6.0]], dtype=torch.float64)
    s = torch.tensor([1.5, 0.7, 3.0], dtype=torch.float64)
    _, exact = exact_divergence(fn, x, s)
    reps = 4000  # many probes per point, all in one batch
    xr, sr = x.repeat(reps, 1), s.repeat(reps)
    probe = rademacher(xr.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert set(probe.unique().tolist()) == {-1.0, 1.0}
    _, est = hutchinson_divergence(fn, xr, sr, probe)
    est = est.reshape(reps, 3)
    mean, se = est.mean(0), est.std(0) / math.sqrt(reps)
    assert bool(((mean - exact).abs() < 4 * se + 1e-9).all()), (mean, exact, se)


def test_hutchinson_nll_agrees_with_the_exact_one(mog):
    mix, x = mog
    p = make_process("ve", sigma_min=1e-3, sigma_max=100.0)
    f = p.analytic_field(mix)
    exact = log_likelihood(p, f, x)
    noise = SeededNoise(5, range(x.shape[0]))
    hutch = log_likelihood(p, f, x, divergence="hutchinson", noise=noise)
    assert hutch.divergence == "hutchinson"
    diff = hutch.logp - exact.logp
    assert abs(float(diff.mean())) < 4 * float(diff.std()) / math.sqrt(x.shape[0]) + 1e-3
    # a sample's estimate does not depend on its batch (per-sample probes)
    part = log_likelihood(p, f, x[50:80], divergence="hutchinson", noise=noise.subset(slice(50, 80)))
    torch.testing.assert_close(part.logp, hutch.logp[50:80], rtol=0, atol=1e-4)


def test_dequantisation_adds_n_log_one_over_width(mog):
    mix, x = mog
    p = make_process("ve", sigma_min=1e-3, sigma_max=100.0)
    f = p.analytic_field(mix)
    w = 1e-3
    res = log_likelihood(p, f, x, dequantize=w, noise=SeededNoise(0, range(x.shape[0])))
    plain = log_likelihood(p, f, x)
    assert res.dequantize_nats == pytest.approx(2 * math.log(1 / w))
    assert res.nll - plain.nll == pytest.approx(2 * math.log(1 / w), abs=0.01)


def test_prior_densities_are_the_samplers_priors():
    x = torch.randn(4, 3, dtype=torch.float64)
    ve = make_process("ve", sigma_max=7.0)
    expected = torch.distributions.Normal(0.0, 7.0).log_prob(x).sum(1)
    torch.testing.assert_close(prior_log_prob(ve, x), expected)
    vp = make_process("vp")  # the kernel at t_max around 0: N(0, b(t_max)² I), b(1)² = 1 - a(1)² = 1 - 4.4e-5
    b = float(vp.coefficients(torch.tensor([1.0], dtype=torch.float64))[1])
    torch.testing.assert_close(prior_log_prob(vp, x), torch.distributions.Normal(0.0, b).log_prob(x).sum(1))
    x0 = vp.sample_prior((40_000, 3), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert float(x0.std()) == pytest.approx(b, rel=0.01)  # what the sampler draws
    with pytest.raises(UserError, match="divergence"):
        log_likelihood(ve, ve.exact_field(torch.zeros(2, 3)), x, divergence="nope")


@pytest.mark.skipif(not HAS_PFGMPP, reason="physgen.processes.pfgmpp is not in this checkout")
def test_pfgmpp_nll_is_finite_and_approaches_diffusion_as_d_grows():
    g = torch.Generator().manual_seed(0)
    points = torch.randn(300, 2, generator=g, dtype=torch.float64)  # a Gaussian, as a finite set
    x = torch.randn(60, 2, generator=g, dtype=torch.float64)
    kw = dict(sigma_min=0.2, sigma_max=40.0)
    edm = make_process("edm", **kw)
    ref = log_likelihood(edm, edm.exact_field(points), x, rtol=1e-6, atol=1e-6)
    gaps = []
    for D in (4, 64, 4096):
        p = make_process("pfgmpp", D=D, **kw)
        res = log_likelihood(p, p.exact_field(points), x, rtol=1e-6, atol=1e-6)
        assert bool(torch.isfinite(res.logp).all())
        # the prior is the normalised Student-t kernel around 0 at r_max = σ_max √D
        s_max = torch.full((x.shape[0],), 40.0, dtype=torch.float64)
        torch.testing.assert_close(prior_log_prob(p, x), p.kernel.log_prob(x, s_max))
        gaps.append(abs(res.nll - ref.nll))
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 0.02, gaps


# ----------------------------------------------------------------------------- CLI
@pytest.fixture
def mog_json(tmp_path):
    path = tmp_path / "mog.json"
    path.write_text(json.dumps({"means": [[5, 5], [-5, -5]], "stds": [1, 1], "weights": [0.8, 0.2]}))
    return path


KEYS = {"nll_nats", "nll_std_err", "bits_per_dim", "bits_per_dim_std_err", "n", "dim", "nfe", "divergence", "s_min", "s_max",
        "process", "dataset", "field", "analytic_nll_nats", "data_nll_nats", "wall_s"}


@pytest.mark.parametrize("flag", [None, "--exact-divergence", "--hutchinson"])
def test_nll_command_writes_nll_json(tmp_path, mog_json, flag, capsys):
    out = tmp_path / "nll"
    argv = ["nll", "--process", "ve", "--sigma-min", "1e-3", "--dataset", str(mog_json), "--n", "120", "--batch", "50",
            "--device", "cpu", "--out", str(out)] + ([flag] if flag else [])
    assert main(argv) == 0
    data = json.loads((out / "nll.json").read_text())
    assert KEYS <= set(data)
    assert data["n"] == 120 and data["dim"] == 2 and data["field"] == "analytic"
    assert data["divergence"] == ("hutchinson" if flag == "--hutchinson" else "exact")
    assert data["bits_per_dim"] == pytest.approx(data["nll_nats"] / (2 * math.log(2)))
    assert abs(data["nll_nats"] - data["analytic_nll_nats"]) < 0.04 + 3 * data["nll_std_err"] * (flag == "--hutchinson")
    assert "nats" in capsys.readouterr().out


def test_nll_command_reads_a_training_checkpoint(tmp_path):
    from physgen.data import load_toy
    from physgen.nets.mlp import MLP
    from physgen.training import TrainConfig, train

    data = load_toy("moons").sample(1000, torch.Generator().manual_seed(0))
    p = make_process("ncsn", sigma_min=0.01, sigma_max=4.0)
    field = p.precondition(MLP(2, hidden=32, depth=1))

    def batch(n, g):
        return data[torch.randint(0, data.shape[0], (n,), generator=g)], None

    run = tmp_path / "run"
    result = train(p, field, batch, TrainConfig(steps=30, batch=64, log_every=30), out_dir=run, log_stream=open("/dev/null", "w"))
    out = tmp_path / "nll"
    assert main(["nll", "--ckpt", str(run), "--dataset", "moons", "--n", "40", "--device", "cpu", "--out", str(out)]) == 0
    got = json.loads((out / "nll.json").read_text())
    assert got["process"]["name"] == "ncsn" and got["field"] == "mlp" and got["ckpt"].endswith(".pt")
    # the same number as the in-memory EMA field on the same points
    x = load_toy("moons").sample(40, torch.Generator().manual_seed(0 + 1_000_003))
    direct = log_likelihood(p, result.ema.eval(), x)
    assert got["nll_nats"] == pytest.approx(direct.nll, abs=1e-4)
    with pytest.raises(UserError, match="disagrees"):
        main_raise(["nll", "--ckpt", str(run), "--process", "edm", "--dataset", "moons", "--out", str(tmp_path / "nll2")])


def main_raise(argv):
    from physgen.cli.main import build_parser

    args = build_parser().parse_args(argv)
    return args.func(args)


def test_nll_command_one_line_errors(tmp_path, capsys):
    assert main(["nll", "--ckpt", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["nll", "--dataset", "moons", "--field", "analytic", "--out", str(tmp_path / "o")]) == 2
    assert "mixture" in capsys.readouterr().err
