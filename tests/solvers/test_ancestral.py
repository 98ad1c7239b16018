"""The stochastic samplers for Gaussian kernels (solvers/ancestral.py): the ancestral step and
the Brownian pair against closed forms, eta = 0 against the deterministic solvers and their
convergence orders, the exact law of the samplers on Gaussian data (every sampler is affine
in the prior draw and the noise there, so its output law is computed exactly from impulse
responses) and the samples against it, batch independence, NFE at the target, the two-mode
mixture through ``physgen toy``, and the refusal of non-Gaussian kernels."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import solvers
from physgen.cli.main import main
from physgen.data import GaussianMixture, two_mode_mixture
from physgen.errors import UserError
from physgen.metrics import mode_weights
from physgen.noise import SeededNoise
from physgen.processes import make_process
from physgen.sampling import sample
from solvers.ancestral import ancestral_step, brownian_pair_weight
from toy_fields import CountingDenoiser

F64 = torch.float64
NAMES = ("euler-ancestral", "dpm2-ancestral", "dpmpp-sde", "dpmpp-2m-sde", "dpmpp-3m-sde")
VARIANTS = [(n, {}) for n in NAMES] + [("dpmpp-2m-sde", {"solver_type": "heun"})]
IDS = [n + ("-heun" if o else "") for n, o in VARIANTS]
MU, C = 0.7, 0.5  # the single Gaussian N(MU, C²) of the closed-form tests


class GaussianDenoiser:
    """The exact denoiser of N(MU, C²) data under x = y + σ ε: D = MU + C²/(C² + σ²)(x - MU)."""

    def __init__(self):
        self.calls = 0

    def denoise(self, x, s):
        self.calls += 1
        s = s.reshape(-1, *[1] * (x.dim() - 1))
        return MU + C**2 / (C**2 + s**2) * (x - MU)

    def __call__(self, x, s):
        return (x - self.denoise(x, s)) / s.reshape(-1, *[1] * (x.dim() - 1))


def forbidden_noise(step, like):
    raise AssertionError(f"noise drawn at eta = 0 (index {step})")


def noise_draws(name: str, steps: int) -> int:
    return 2 * steps if name == "dpmpp-sde" else steps


def exact_law(name: str, opts: dict, target, schedule, prior_var: float) -> tuple[float, float]:
    """``(|mean - MU|, variance)`` of the output law of ``name`` for prior draws N(MU, prior_var)
    on 1-D data whose denoiser is affine with D(MU, σ) = MU, from impulse responses: row 0
    starts at MU + 1 without noise, row 1 at MU without noise (it must stay at MU), row
    k + 2 at MU with a unit impulse in noise index k only."""
    m = noise_draws(name, len(schedule) - 1)
    x0 = torch.full((m + 2, 1), MU, dtype=F64)
    x0[0] += 1.0

    def impulses(k, like):
        out = torch.zeros_like(like)
        out[k + 2] = 1.0
        return out

    y = solvers.solve(target, x0, schedule, method=name, noise=impulses, **opts).x[:, 0] - MU
    return float(y[1].abs()), float(y[0] ** 2 * prior_var + (y[2:] ** 2).sum())


# ----------------------------------------------------------------------------- the ancestral step
@settings(max_examples=60)
@given(st.floats(0.01, 100.0), st.floats(0.001, 0.999), st.floats(0.0, 4.0))
def test_ancestral_step_keeps_the_noise_level_and_is_ddpms_posterior_at_eta_one(sigma, frac, eta):
    sigma_next = frac * sigma
    down, up = ancestral_step(sigma, sigma_next, eta)
    assert down**2 + up**2 == pytest.approx(sigma_next**2, rel=1e-12)
    assert 0.0 <= up <= sigma_next and 0.0 <= down <= sigma_next
    assert ancestral_step(sigma, sigma_next, 0.0) == (sigma_next, 0.0)
    # eta = 1: the Gaussian q(x_σ' | x_σ, y) of x_σ' = y + σ' ε1, x_σ = x_σ' + √(σ² - σ'²) ε2, by the Schur complement
    down1, up1 = ancestral_step(sigma, sigma_next, 1.0)
    cov = torch.tensor([[sigma_next**2, sigma_next**2], [sigma_next**2, sigma**2]], dtype=F64)  # (x_σ', x_σ) given y
    gain = cov[0, 1] / cov[1, 1]
    assert down1 / sigma == pytest.approx(float(gain), rel=1e-9)  # mean y + (σ_down/σ)(x_σ - y)
    assert up1**2 == pytest.approx(float(cov[0, 0] - gain * cov[1, 0]), rel=1e-9, abs=1e-300)
    assert ancestral_step(sigma, 0.0, eta) == (0.0, 0.0)


# ----------------------------------------------------------------------------- eta = 0
@pytest.fixture(scope="module")
def two_mode_edm():
    p = make_process("edm", sigma_min=0.002, sigma_max=20.0)
    f = p.analytic_field(two_mode_mixture())
    noise = SeededNoise(0, range(300))
    return p, f, p.sample_prior((300, 2), noise=noise, dtype=F64), p.grid(12)


def test_eta_zero_is_the_deterministic_solver_and_draws_no_noise(two_mode_edm):
    p, f, x0, s = two_mode_edm
    run = lambda name, **o: sample(p, f, x0, s, name, **o)  # noqa: E731
    assert torch.equal(run("dpm2-ancestral", eta=0.0, noise=forbidden_noise).x, run("dpm2").x)  # the same step rule
    assert torch.allclose(run("euler-ancestral", eta=0.0, noise=forbidden_noise).x, run("euler").x, atol=1e-12, rtol=0)
    assert torch.allclose(run("dpmpp-2m-sde", eta=0.0, noise=forbidden_noise).x, run("dpmpp-2m").x, atol=1e-12, rtol=0)
    assert torch.allclose(run("dpmpp-3m-sde", eta=0.0, noise=forbidden_noise).x, run("dpmpp-3m").x, atol=1e-12, rtol=0)
    for name in ("dpmpp-sde", "dpmpp-3m-sde"):
        a, b = run(name, eta=0.0, noise=forbidden_noise).x, run(name, eta=0.0, noise=forbidden_noise).x
        assert torch.equal(a, b)


@pytest.mark.parametrize("r", [0.5, 0.3])
def test_dpmpp_sde_at_eta_zero_is_dpm_solver_pp_2s(two_mode_edm, r):
    """DPM-Solver++(2S), arXiv 2211.01095 Alg. 1 with α = 1 and the intermediate λ_i + r h, written out here."""
    p, f, x0, s = two_mode_edm
    flow = p.flow(f)
    x = x0.clone()
    sig = s.tolist()
    for i in range(len(sig) - 2):
        lam, lam_next = -math.log(sig[i]), -math.log(sig[i + 1])
        h = lam_next - lam
        sm = math.exp(-(lam + r * h))
        d = flow.denoise(x, torch.full((x.shape[0],), sig[i], dtype=F64))
        u = (sm / sig[i]) * x - math.expm1(-r * h) * d
        d2 = flow.denoise(u, torch.full((x.shape[0],), sm, dtype=F64))
        x = (sig[i + 1] / sig[i]) * x - math.expm1(-h) * ((1 - 1 / (2 * r)) * d + 1 / (2 * r) * d2)
    x = flow.denoise(x, torch.full((x.shape[0],), sig[-2], dtype=F64))
    got = sample(p, f, x0, s, "dpmpp-sde", eta=0.0, r=r, noise=forbidden_noise).x
    assert torch.allclose(got, x, atol=1e-12, rtol=0)


@pytest.mark.parametrize("name,opts", VARIANTS, ids=IDS)
def test_eta_zero_convergence_order_on_the_gaussian_pf_ode(name, opts):
    """x(σ) = MU + (x0 - MU) √((C² + σ²)/(C² + σ0²)): the fitted order over K = 64, 128, 256 on EDM's grid."""
    x0 = torch.linspace(-20, 20, 41, dtype=F64).reshape(-1, 1)
    errs = []
    for k in (64, 128, 256):
        s = solvers.edm_schedule(k + 1, 0.01, 10.0, append_zero=False)
        exact = MU + (x0 - MU) * math.sqrt((C**2 + float(s[-1]) ** 2) / (C**2 + float(s[0]) ** 2))
        x = solvers.solve(GaussianDenoiser(), x0, s, method=name, eta=0.0, noise=forbidden_noise, **opts).x
        errs.append(float((x - exact).abs().max()))
    orders = [math.log2(errs[i] / errs[i + 1]) for i in range(2)]
    p = solvers.get_solver(name).order  # the row's order: that of its deterministic member (eta = 0)
    assert all(p - 0.25 < o < p + 0.35 for o in orders), (errs, orders)


def by_the_equations(name, opts, flow, x, sig, noise):
    """Each sampler's docstring equations, written out plainly (no lerp, no precomputed weights)."""
    eta, s_noise, r = opts.get("eta", 1.0), opts.get("s_noise", 1.0), opts.get("r", 0.5)
    at = lambda v: torch.full((x.shape[0],), v, dtype=F64)  # noqa: E731
    hist = []
    for i in range(len(sig) - 2):
        si, st = sig[i], sig[i + 1]
        d = flow.denoise(x, at(si))
        h = math.log(si / st)
        if name == "euler-ancestral":
            down, up = ancestral_step(si, st, eta)
            x = x + (down - si) * (x - d) / si + s_noise * up * noise(i, x)
        elif name == "dpm2-ancestral":
            down, up = ancestral_step(si, st, eta)
            if down == 0.0:  # σ_up clamped to σ_{i+1}: denoise, then all the noise (k-diffusion adds none here)
                x = d + s_noise * up * noise(i, x)
                continue
            sm = math.sqrt(si * down)
            u = x + (sm - si) * (x - d) / si
            x = x + (down - si) * (u - flow.denoise(u, at(sm))) / sm + s_noise * up * noise(i, x)
        elif name == "dpmpp-sde":
            sm = si ** (1 - r) * st**r
            (d1, u1), (d2, u2) = ancestral_step(si, sm, eta), ancestral_step(si, st, eta)
            w = (si - sm) / (si - st)
            z1 = noise(2 * i, x)
            z2 = math.sqrt(w) * z1 + math.sqrt(1 - w) * noise(2 * i + 1, x)
            x2 = d + (d1 / si) * (x - d) + s_noise * u1 * z1
            dd = (1 - 1 / (2 * r)) * d + 1 / (2 * r) * flow.denoise(x2, at(sm))
            x = dd + (d2 / si) * (x - dd) + s_noise * u2 * z2
        else:
            big = (1 + eta) * h
            phi2 = 1 - (1 - math.exp(-big)) / big
            new = math.exp(-big) * x + (1 - math.exp(-big)) * d
            if name == "dpmpp-2m-sde" and hist:
                rr = math.log(sig[i - 1] / si) / h
                c = phi2 / rr if opts.get("solver_type") == "heun" else (1 - math.exp(-big)) / (2 * rr)
                new = new + c * (d - hist[0])
            if name == "dpmpp-3m-sde" and len(hist) == 1:
                new = new + phi2 * (d - hist[0]) / (math.log(sig[i - 1] / si) / h)
            if name == "dpmpp-3m-sde" and len(hist) == 2:
                r0, r1 = math.log(sig[i - 1] / si) / h, math.log(sig[i - 2] / sig[i - 1]) / h
                d10, d11 = (d - hist[0]) / r0, (hist[0] - hist[1]) / r1
                dd1, dd2 = d10 + (d10 - d11) * r0 / (r0 + r1), (d10 - d11) / (r0 + r1)
                new = new + phi2 * dd1 - 2 * (phi2 / big - 0.5) * dd2  # the exact weight, -2 φ_3
            x = new + s_noise * st * math.sqrt(1 - math.exp(-2 * eta * h)) * noise(i, x)
            hist = [d] + hist[:1]
    return flow.denoise(x, at(sig[-2]))


@pytest.mark.parametrize("opts", [{}, {"eta": 0.5, "s_noise": 0.8}, {"eta": 1.5, "r": 0.3}], ids=["default", "eta0.5", "eta1.5"])
@pytest.mark.parametrize("name,extra", VARIANTS, ids=IDS)
def test_each_sampler_is_its_equations(two_mode_edm, name, extra, opts):
    p, f, x0, s = two_mode_edm
    opts = {k: v for k, v in {**opts, **extra}.items() if solvers.get_solver(name).option(k) is not None}
    noise = SeededNoise(4, range(x0.shape[0]))
    want = by_the_equations(name, opts, p.flow(f), x0, s.tolist(), noise)
    assert torch.allclose(sample(p, f, x0, s, name, noise=noise, **opts).x, want, atol=1e-10, rtol=0)


# ----------------------------------------------------------------------------- the law on Gaussian data
@pytest.mark.parametrize("eta", [1.0, 0.5])
@pytest.mark.parametrize("name,opts", VARIANTS, ids=IDS)
def test_exact_output_law_on_a_gaussian_converges_to_the_data_law(name, opts, eta):
    """Prior N(MU, C² + σ_max²) (the marginal at σ_max): the output mean is MU exactly and the
    output variance tends to C² at the order of the sampler (h for euler-ancestral, h² else)."""
    errs = []
    # 160 and 320 steps: at 20-80 the variance error of dpmpp-3m-sde changes sign (-0.064, 7e-4, 1e-3), pre-asymptotic
    for k in (160, 320):
        s = solvers.edm_schedule(k, 0.002, 20.0)  # k points and a final 0: k steps
        offset, var = exact_law(name, {"eta": eta, **opts}, GaussianDenoiser(), s, C**2 + 20.0**2)
        assert offset < 1e-12
        errs.append(var / C**2 - 1.0)
    p = solvers.get_solver(name).weak_order  # the row's weak order
    assert math.log2(abs(errs[0] / errs[1])) > p - 0.4, errs
    assert abs(errs[1]) < (0.15 if p == 1 else 0.02), errs


@pytest.mark.slow
@pytest.mark.parametrize("name,opts", VARIANTS, ids=IDS)
def test_samples_have_the_exact_law_on_a_gaussian(name, opts):
    """Samples via physgen.sampling.sample with the analytic field of N(μ, c² I): mean μ and
    the exact output variance (itself within 2% of c² here, 15% for euler-ancestral) within 4 SE."""
    mu, c, n, k = torch.tensor([MU, -1.5], dtype=F64), C, 20_000, 80
    p = make_process("edm", sigma_min=0.002, sigma_max=20.0, prior_mean=mu.tolist())
    f = p.analytic_field(GaussianMixture(mu.reshape(1, 2), torch.tensor([c])))
    noise = SeededNoise(3, range(n))
    x0 = p.sample_prior((n, 2), noise=noise, dtype=F64)
    s = p.grid(k)
    x = sample(p, f, x0, s, name, noise=noise, **opts).x
    _, var = exact_law(name, opts, GaussianDenoiser(), s, 20.0**2)  # the same affine law per coordinate (MU is immaterial)
    assert abs(var / c**2 - 1) < (0.15 if solvers.get_solver(name).weak_order == 1 else 0.02)
    se_mean, se_var = math.sqrt(var / n), var * math.sqrt(2.0 / (n - 1))
    assert torch.all((x.mean(0) - mu).abs() < 4 * se_mean), (x.mean(0), mu)
    assert torch.all((x.var(0) - var).abs() < 4 * se_var), (x.var(0), var)


@pytest.mark.parametrize("eta", [1.0, 0.5, 3.0])
@pytest.mark.parametrize("name,opts", VARIANTS, ids=IDS)
def test_a_point_mass_keeps_every_marginal(name, opts, eta):
    """Data = one point (D ≡ MU): every state along the path is N(MU, σ_j²) exactly in law, for any
    eta (3.0 clamps σ_up to σ_{j+1} on some steps: the state denoises, then takes all its noise)."""
    class PointMass:
        def denoise(self, x, s):
            return torch.full_like(x, MU)

    n, s = 20_000, solvers.edm_schedule(9, 0.05, 10.0)
    noise = SeededNoise(5, range(n))
    x0 = MU + float(s[0]) * noise.randn((n, 1), dtype=F64)
    traj = solvers.solve(PointMass(), x0, s, method=name, eta=eta, noise=noise, return_trajectory=True, **opts).stats.trajectory
    for j in range(1, len(s) - 1):
        sd = float(s[j])
        assert abs(float(traj[j].mean()) - MU) < 4.5 * sd / math.sqrt(n), j
        assert abs(float(traj[j].var()) / sd**2 - 1) < 4.5 * math.sqrt(2.0 / n), (j, float(traj[j].var()), sd**2)
    assert torch.all(traj[-1] == MU)


@pytest.mark.parametrize("sigma,sigma_next,r", [(2.0, 0.5, 0.5), (10.0, 9.0, 0.3), (1.0, 0.01, 0.5)])
def test_dpmpp_sde_noise_pair_has_the_brownian_covariance(sigma, sigma_next, r):
    """One step with D ≡ 0 from x = 0: the state at the intermediate evaluation is u_1 z_1 and
    the result u_2 z_2; (z_1, z_2) must be standard normals with correlation
    √((σ - σ_s)/(σ - σ_next)), the normalised Brownian increments over [σ_s, σ] and [σ_next, σ]."""
    seen = []

    class Zero:
        def denoise(self, x, s):
            seen.append(x.clone())
            return torch.zeros_like(x)

    n = 40_000
    sm = math.exp((1 - r) * math.log(sigma) + r * math.log(sigma_next))
    out = solvers.solve(Zero(), torch.zeros(n, 1, dtype=F64), [sigma, sigma_next], method="dpmpp-sde", r=r,
                        noise=SeededNoise(11, range(n))).x
    z = torch.cat([seen[1] / ancestral_step(sigma, sm)[1], out / ancestral_step(sigma, sigma_next)[1]], 1)
    cov = torch.cov(z.T)
    rho = math.sqrt((sigma - sm) / (sigma - sigma_next))
    assert rho == pytest.approx(math.sqrt(brownian_pair_weight(sigma, sm, sigma_next)))
    se = math.sqrt(2.0 / n)
    assert abs(float(cov[0, 0]) - 1) < 4 * se and abs(float(cov[1, 1]) - 1) < 4 * se
    assert abs(float(cov[0, 1]) - rho) < 4 * (1 - rho**2 + 1e-3) / math.sqrt(n), (float(cov[0, 1]), rho)


# ----------------------------------------------------------------------------- batch, NFE
@pytest.mark.parametrize("name", NAMES)
def test_a_sample_does_not_depend_on_its_batch(name):
    p = make_process("ve", sigma_max=10.0)
    f = p.analytic_field(two_mode_mixture())
    s = p.grid(12)

    def draw(indices):
        noise = SeededNoise(7, indices)
        x0 = p.sample_prior((len(indices), 2), noise=noise, dtype=F64)
        return sample(p, f, x0, s, name, noise=noise).x

    full = draw(range(0, 1200))
    assert torch.allclose(draw(range(1000, 1200)), full[1000:1200], atol=1e-12, rtol=0)
    picked = torch.tensor([5, 1100, 3, 1028])
    assert torch.allclose(draw(picked), full[picked], atol=1e-12, rtol=0)
    assert torch.allclose(draw([1100]), full[1100:1101], atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_nfe_per_step_is_counted_at_the_target(name):
    proc = make_process("edm", sigma_max=10.0)
    field = proc.analytic_field(two_mode_mixture())
    counting = CountingDenoiser(field)
    k, per = 10, solvers.get_solver(name).nfe
    x0 = proc.sample_prior((64, 2), generator=torch.Generator().manual_seed(0))
    sol = sample(proc, counting, x0, proc.grid(k), name, noise=SeededNoise(0, range(64)))
    assert sol.stats.nfe == counting.calls == per * (k - 1) + 1  # the last step to 0 is one denoising evaluation
    target = GaussianDenoiser()
    sol = solvers.solve(target, torch.zeros(8, 1), [4.0, 2.0, 1.0, 0.5], method=name, generator=torch.Generator().manual_seed(0))
    assert sol.stats.nfe == target.calls == 3 * per


def test_dpm2_ancestral_with_a_full_resampling_step_costs_one_evaluation_there():
    # eta = 10 (its bound): σ_up = σ_next on every step, so σ_down = 0 and each step is one denoising evaluation
    target = GaussianDenoiser()
    sol = solvers.solve(target, torch.zeros(8, 1), [4.0, 2.0, 1.0], method="dpm2-ancestral", eta=10.0,
                        generator=torch.Generator().manual_seed(0))
    assert sol.stats.nfe == target.calls == 2


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("option,value", [("eta", -0.1), ("s_noise", -1.0), ("r", 0.0), ("r", 1.5), ("solver_type", "euler"),
                                          ("eta", float("nan"))])
def test_bad_options_are_one_clear_error(two_mode_edm, option, value):
    p, f, x0, s = two_mode_edm
    takes = [n for n in NAMES if solvers.get_solver(n).option(option) is not None]
    assert takes
    for name in takes:
        with pytest.raises(UserError, match=f"solver '{name}': option {option}"):
            sample(p, f, x0, s, name, **{option: value})


@pytest.mark.parametrize("name", NAMES)
def test_an_increasing_schedule_is_refused(name):
    with pytest.raises(ValueError, match="needs a decreasing schedule"):
        solvers.solve(GaussianDenoiser(), torch.zeros(4, 1), [0.5, 1.0, 2.0], method=name, generator=torch.Generator())


# ----------------------------------------------------------------------------- CLI and processes
@pytest.mark.parametrize("process,fragment", [
    (["--process", "pfgmpp", "--D", "8"], "needs a Gaussian perturbation kernel"),
    (["--process", "yukawa", "--m", "1"], "needs a Gaussian perturbation kernel"),
    (["--process", "pfgm"], "needs the denoiser form"),
])
@pytest.mark.parametrize("name", NAMES)
def test_non_gaussian_kernels_are_refused_with_one_line(tmp_path, capsys, process, fragment, name):
    rc = main(["toy", *process, "--solver", name, "--n-data", "50", "--n-samples", "20", "--steps", "2", "--device", "cpu",
               "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert f"solver '{name}' {fragment}" in lines[0], lines[0]


def test_list_solvers_shows_each_with_its_needs_order_and_nfe(capsys):
    assert main(["toy", "--list-solvers", "--process", "pfgmpp", "--D", "8"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    for name in NAMES:
        spec = solvers.get_solver(name)
        assert spec.needs == ("denoiser", "gaussian") and spec.stochastic
        for part in ("denoiser + gaussian", spec.order_text, spec.nfe_text, "no: needs gaussian"):
            assert part in rows[name], (name, part)
    assert main(["toy", "--list-solvers", "--process", "edm"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert all("yes" in rows[n] for n in NAMES)


@pytest.mark.parametrize("process,kw", [("vp", {}), ("pfgmpp", {"D": float("inf"), "sigma_max": 20.0})], ids=["vp", "pfgmpp-inf"])
def test_gaussian_processes_beyond_edm_sample_the_mixture(process, kw):
    """VP through its σ form (on a grid smooth in λ: see solvers/ancestral.py, Grids) and PFGM++ at D = inf."""
    mix = two_mode_mixture()
    p = make_process(process, prior_mean=[1.2, 0.0], **kw)
    f = p.analytic_field(mix)
    n = 2000
    noise = SeededNoise(1, range(n))
    x0 = p.sample_prior((n, 2), noise=noise)
    s = p.grid(40, "log-uniform")
    for name in NAMES:
        x = sample(p, f, x0, s, name, noise=noise).x
        assert abs(float(mode_weights(x, mix.means)[0]) - 0.2) < 0.03, name
        left = x[x[:, 0] < 0]
        assert abs(float(left.std(0).mean()) - 0.3) < 0.03, name


@pytest.mark.slow
@pytest.mark.parametrize("field", ["analytic", "exact"])
@pytest.mark.parametrize("name", NAMES)
def test_physgen_toy_samples_the_two_mode_mixture(tmp_path, name, field):
    steps = 100 if name == "euler-ancestral" else 40  # first order: more steps for the same bias
    out = tmp_path / "run"
    assert main(["toy", "--dataset", "two_mode", "--field", field, "--solver", name, "--steps", str(steps), "--n-data", "1000",
                 "--n-samples", "2000", "--seed", "0", "--device", "cpu", "--out", str(out)]) == 0
    x = torch.from_numpy(np.load(out / "samples.npy")).double()
    assert abs(float(mode_weights(x, two_mode_mixture().means)[0]) - 0.2) < 0.03
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["nfe"] == solvers.get_solver(name).nfe * (steps - 1) + 1


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name,opts", VARIANTS, ids=IDS)
def test_cuda_matches_cpu_with_the_same_noise(name, opts):
    s = solvers.edm_schedule(10, 0.01, 10.0)
    g = torch.Generator().manual_seed(0)
    x0 = 10.0 * torch.randn(64, 2, generator=g)
    table = torch.randn(noise_draws(name, 10), 64, 2, generator=g)
    results = []
    for device in ("cpu", "cuda"):
        draws = table.to(device)
        noise = lambda k, like: draws[k]  # noqa: E731
        results.append(solvers.solve(GaussianDenoiser(), x0.to(device), s, method=name, noise=noise, **opts).x.cpu())
    torch.testing.assert_close(results[1], results[0], rtol=1e-4, atol=1e-4)
