"""PFGM++ (arXiv 2302.04265): the Student-t kernel, its limits, exact fields, sampling, the CLI."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st
from scipy import integrate, special, stats

from physgen.config import ExtraDims
from physgen.data import two_mode_mixture
from physgen.errors import UserError
from physgen.metrics import mode_weights
from physgen.noise import SeededNoise
from physgen.kernels import GaussianKernel, StudentTKernel
from physgen.processes import EDM, make_process
from physgen.processes.pfgm import PFGM
from physgen.processes.pfgmpp import PFGMpp
from physgen.sampling import sample
from training_checks import held_out_loss_before_after

P_MIN = 1e-3


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def radial_cdf(R, N, D, r):
    """CDF of ‖x - y‖ under the kernel: R²/(R²+r²) ~ Beta(N/2, D/2)."""
    return special.betainc(N / 2, D / 2, R**2 / (R**2 + r**2))


# ------------------------------------------------------------------ the kernel's law
@settings(max_examples=15, deadline=None, derandomize=True)
@given(N=st.sampled_from([1, 2, 3, 8, 64, 3072]), D=st.sampled_from([1, 2, 3, 5, 16, 128, 2048]), sigma=st.floats(0.01, 50.0))
def test_radius_ks(N, D, sigma):
    n = 4000 if N < 1000 else 800
    s = torch.full((n,), sigma, dtype=torch.float64)
    off = StudentTKernel(D).sample_offsets((n, N), s, gen(N * 7 + D), dtype=torch.float64)
    R = off.norm(dim=1).numpy()
    r = sigma * math.sqrt(D)
    assert stats.kstest(R, lambda q: radial_cdf(q, N, D, r)).pvalue > P_MIN


@pytest.mark.parametrize("D", [1, 2, 3])
def test_radius_ks_small_D_not_truncated(D):
    # the official clip of b ~ Beta(N/2, D/2) to [1e-3, 1-1e-3] moves most draws at N = 3072, D <= 3
    N, n, sigma = 3072, 3000, 1.0
    off = StudentTKernel(D).sample_offsets((n, N), torch.ones(n), gen(D))
    sq = off.double().pow(2).sum(1)
    b = sq / (sq + D * sigma**2)
    assert stats.kstest(b.numpy(), stats.beta(N / 2, D / 2).cdf).pvalue > P_MIN
    assert float((b > 1 - 1e-3).double().mean()) > 0.5  # the mass the clip would have moved


@settings(max_examples=8, deadline=None, derandomize=True)
@given(N=st.sampled_from([1, 2, 10, 100]), D=st.sampled_from([6, 10, 50, 500]), sigma=st.floats(0.1, 10.0))
def test_second_moment(N, D, sigma):
    n = 200_000 if N <= 10 else 40_000
    off = StudentTKernel(D).sample_offsets((n, N), torch.full((n,), sigma, dtype=torch.float64), gen(N + D), dtype=torch.float64)
    sq = off.pow(2).sum(1)
    r2 = sigma**2 * D
    expected = r2 * N / (D - 2)
    a, b = N / 2, D / 2
    var_t = a * (a + b - 1) / ((b - 2) * (b - 1) ** 2)  # Var of the Beta-prime odds
    tol = 6 * r2 * math.sqrt(var_t / n)
    assert abs(float(sq.mean()) - expected) < tol


def test_second_moment_D3_heavy_tail():
    # D = 3: finite mean, infinite variance; the sample mean still converges (slowly)
    n, N, D = 1_000_000, 2, 3
    off = StudentTKernel(D).sample_offsets((n, N), torch.ones(n, dtype=torch.float64), gen(3), dtype=torch.float64)
    assert float(off.pow(2).sum(1).mean()) == pytest.approx(D * N / (D - 2), rel=0.15)


@pytest.mark.parametrize("N", [2, 5, 33])
def test_direction_uniform(N):
    n = 20_000
    off = StudentTKernel(4).sample_offsets((n, N), torch.ones(n), gen(N), dtype=torch.float64)
    u = off / off.norm(dim=1, keepdim=True)
    v = torch.randn(N, generator=gen(1000 + N), dtype=torch.float64)
    proj = ((u @ (v / v.norm()) + 1) / 2).numpy()
    assert stats.kstest(proj, stats.beta((N - 1) / 2, (N - 1) / 2).cdf).pvalue > P_MIN
    # independence of radius and direction: the projection law is the same for large and small radii
    big = off.norm(dim=1) > off.norm(dim=1).median()
    assert stats.ks_2samp(proj[big.numpy()], proj[~big.numpy()]).pvalue > P_MIN


@pytest.mark.parametrize("N,D,sigma", [(1, 1, 0.7), (1, 5, 2.0), (2, 1, 1.3), (2, 3, 0.5), (3, 4, 1.0), (3, 1, 0.2)])
def test_log_prob_normalised(N, D, sigma):
    k = StudentTKernel(D)
    s = torch.tensor([sigma], dtype=torch.float64)

    def density(R):  # p at radius R, along an axis
        x = torch.zeros(1, N, dtype=torch.float64)
        x[0, 0] = R
        return math.exp(float(k.log_prob(x, s)))

    area = 2 * math.pi ** (N / 2) / math.gamma(N / 2)  # surface of the unit sphere in R^N
    total, _ = integrate.quad(lambda R: area * R ** (N - 1) * density(R), 0, math.inf, limit=200)
    assert total == pytest.approx(1.0, abs=1e-6)


def test_log_prob_tends_to_gaussian():
    x = torch.randn(5, 3, generator=gen(4), dtype=torch.float64)
    s = torch.full((5,), 0.8, dtype=torch.float64)
    gauss = GaussianKernel().log_prob(x, s)
    errs = [float((StudentTKernel(D).log_prob(x, s) - gauss).abs().max()) for D in (10, 100, 1000, 100_000)]
    assert all(a > b for a, b in zip(errs, errs[1:]))
    assert errs[-1] < 1e-3


def test_prior_radial_law():
    N, n = 2, 6000
    p = PFGMpp(D=8, sigma_max=3.0)
    x = p.sample_prior((n, N), noise=SeededNoise(0, range(n)), dtype=torch.float64)
    assert stats.kstest(x.norm(dim=1).numpy(), lambda q: radial_cdf(q, N, 8, p.r_max)).pvalue > P_MIN
    assert p.r_max == pytest.approx(3.0 * math.sqrt(8))


# ------------------------------------------------------------------ exact fields and limits
def brute_denoiser(x, points, sigma, D):
    """Σ w_i y_i / Σ w_i with w_i = (‖x - y_i‖² + r²)^{-(N+D)/2}, one point at a time, float64."""
    N = points.shape[1]
    r2 = sigma**2 * D
    out = torch.empty_like(x)
    for q in range(x.shape[0]):
        num, den = torch.zeros(N, dtype=torch.float64), 0.0
        for y in points:
            w = float(((x[q] - y).pow(2).sum() + r2) ** (-(N + D) / 2))
            num += w * y
            den += w
        out[q] = num / den
    return out


@pytest.mark.parametrize("D", [1, 3, 20])
def test_exact_field_matches_brute_force(D):
    pts = torch.randn(30, 2, generator=gen(1), dtype=torch.float64)
    x = 2 * torch.randn(6, 2, generator=gen(2), dtype=torch.float64)
    for sigma in (0.3, 1.5):
        field = PFGMpp(D=D).exact_field(pts)
        got = field(x, torch.full((6,), sigma, dtype=torch.float64))
        assert torch.allclose(got, brute_denoiser(x, pts, sigma, D), atol=1e-10)


def test_exact_field_tends_to_gaussian_as_D_grows():
    pts = torch.randn(200, 2, generator=gen(3), dtype=torch.float64)
    x = 1.5 * torch.randn(100, 2, generator=gen(4), dtype=torch.float64)
    s = torch.full((100,), 0.5, dtype=torch.float64)
    gauss = EDM().exact_field(pts)(x, s)
    errs = [float((PFGMpp(D=D).exact_field(pts)(x, s) - gauss).abs().max()) for D in (4, 16, 128, 2048, 100_000)]
    assert all(a > b for a, b in zip(errs, errs[1:])), errs
    assert errs[-1] < 1e-3


def test_D1_matches_pfgm_field_directions():
    pts = torch.randn(40, 3, generator=gen(5), dtype=torch.float64)
    x = 2 * torch.randn(25, 3, generator=gen(6), dtype=torch.float64)
    sigma = torch.rand(25, generator=gen(7), dtype=torch.float64) * 3 + 0.05
    pp = PFGMpp(D=1)
    v_pp = pp.velocity(pp.exact_field(pts), x, sigma)  # dx/dσ at r = σ
    pz = PFGM(variable="z")
    v_z = pz.velocity(pz.exact_field(pts), x, sigma)  # dx/dz at z = r
    assert torch.allclose(v_pp, v_z, rtol=1e-10, atol=1e-12)
    pt = PFGM()  # t = ln z: dx/dt = z dx/dz, parallel
    v_t = pt.velocity(pt.exact_field(pts), x, sigma.log())
    cos = torch.nn.functional.cosine_similarity(v_t, v_pp, dim=1)
    assert torch.allclose(cos, torch.ones(25, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(v_t, sigma[:, None] * v_pp, rtol=1e-10)


# ------------------------------------------------------------------ D = inf is EDM
def test_D_inf_is_edm_bit_for_bit():
    pts = torch.randn(300, 2, generator=gen(8))
    a, b = PFGMpp(D=math.inf, sigma_max=5.0, sigma_data=0.7), EDM(sigma_max=5.0, sigma_data=0.7)
    assert isinstance(a.kernel, GaussianKernel) and "score" in a.capabilities() and "score" not in PFGMpp(D=4).capabilities()
    noise = SeededNoise(3, range(64))
    xa, xb = a.sample_prior((64, 2), noise=noise), b.sample_prior((64, 2), noise=noise)
    assert torch.equal(xa, xb)
    sa = sample(a, a.exact_field(pts), xa, a.grid(12), "heun").x
    sb = sample(b, b.exact_field(pts), xb, b.grid(12), "heun").x
    assert torch.equal(sa, sb)
    assert torch.equal(a.perturb(pts, torch.ones(300), generator=gen(1)), b.perturb(pts, torch.ones(300), generator=gen(1)))
    from physgen.nets.mlp import MLP

    torch.manual_seed(0)
    net = MLP(2, hidden=32, depth=1)
    la = a.loss(a.precondition(net), pts, generator=gen(2))
    lb = b.loss(b.precondition(net), pts, generator=gen(2))
    assert torch.equal(la, lb)


def test_finite_D_refuses_score_samplers():
    p = PFGMpp(D=16, sigma_max=3.0)
    field = p.exact_field(torch.randn(10, 2, generator=gen(0)))
    with pytest.raises(TypeError, match="no"):
        p.sde(field)
    with pytest.raises(UserError, match="analytic"):
        p.analytic_field(two_mode_mixture())


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize("bad", [0, -3, 2.5, "abc", math.nan, True, None, -math.inf])
def test_D_validation(bad):
    with pytest.raises(UserError, match="D must be a positive integer or inf"):
        PFGMpp(D=bad)


def test_D_accepted_forms():
    for given, want in ((4, 4), (4.0, 4), ("inf", math.inf), ("128", 128)):
        process = PFGMpp(D=given)
        assert isinstance(process.D, ExtraDims) and process.D == want and process.config()["D"] == want
        assert process.kernel.D is process.D if want != math.inf else isinstance(process.kernel, GaussianKernel)
    assert PFGMpp(D=math.inf).config()["D"] == math.inf
    assert make_process("pfgmpp", D=64).config()["D"] == 64
    with pytest.raises(UserError):
        StudentTKernel(math.inf)


# ------------------------------------------------------------------ sampling recovers the mixture
def _mixture_run(process, n_points=2000, n_samples=1500, steps=40):
    mix = two_mode_mixture()
    pts = mix.sample(n_points, gen(0)).float()
    x0 = process.sample_prior((n_samples, 2), noise=SeededNoise(1, range(n_samples)))
    x = sample(process, process.exact_field(pts), x0, process.grid(steps), "heun").x
    w = mode_weights(x, mix.means)
    left = x[:, 0] < 0
    stds = (x[left].std(0).mean(), x[~left].std(0).mean())
    return w, stds


def _check_mixture(w, stds):
    assert float(w[0]) == pytest.approx(0.2, abs=0.03)
    assert float(w[1]) == pytest.approx(0.8, abs=0.03)
    for s in stds:
        assert float(s) == pytest.approx(0.3, rel=0.2)


def test_mixture_recovered_D128_quick():
    w, stds = _mixture_run(PFGMpp(D=128, sigma_max=20.0, sigma_data=1.3), n_points=1000, n_samples=1000, steps=25)
    _check_mixture(w, stds)


@pytest.mark.slow
@pytest.mark.parametrize("D", [1, 4, 128, math.inf])
def test_mixture_recovered(D):
    _check_mixture(*_mixture_run(PFGMpp(D=D, sigma_max=40.0, sigma_data=1.3)))


# ------------------------------------------------------------------ training and the CLI
def test_neural_training_lowers_loss():
    from physgen.nets.mlp import MLP

    data = two_mode_mixture().sample(4000, gen(0)).float()
    p = PFGMpp(D=8, sigma_max=10.0, sigma_data=1.3)
    torch.manual_seed(0)
    field = p.precondition(MLP(2, hidden=64, depth=2))
    before, after = held_out_loss_before_after(p, field, data, steps=300, log_every=100)
    assert after < 0.7 * before, (before, after)


def test_toy_cli_writes_files(tmp_path, capsys):
    from physgen.cli.main import main

    out = tmp_path / "toy"
    rc = main(["toy", "--process", "pfgmpp", "--D", "128", "--field", "exact", "--n-data", "500", "--n-samples", "200",
               "--steps", "10", "--device", "cpu", "--out", str(out)])
    assert rc == 0
    for name in ("config.json", "samples.npy", "metrics.json", "samples.png", "trajectories.png"):
        assert (out / name).is_file(), name
    import json

    cfg = json.loads((out / "config.json").read_text())
    assert cfg["resolved_process"]["name"] == "pfgmpp" and cfg["resolved_process"]["D"] == 128


@pytest.mark.parametrize("argv", [["--D", "0"], ["--D", "-3"], ["--D", "2.5"], ["--D", "abc"], ["--process", "ve", "--D", "4"]])
def test_toy_cli_bad_D(argv, tmp_path, capsys):
    from physgen.cli.main import main

    args = ["toy", "--process", "pfgmpp", *argv, "--n-data", "50", "--n-samples", "10", "--steps", "3", "--out", str(tmp_path / "x")]
    # a later --process overrides the first (argparse keeps the last value)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error" in err
    assert ("D" in err) or ("'D'" in err)
    assert not (tmp_path / "x").exists()
