"""Predictor-corrector, EDM's stochastic sampler and DDPM ancestral sampling, and their adapters."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import solvers
from physgen.data import load_toy
from physgen.errors import UserError
from physgen.metrics import mmd, mode_weights, sliced_w2
from physgen.noise import SeededNoise
from physgen.processes import GaussianSDE, make_process
from physgen.sampling import grid, sample
from toy_fields import UnitGaussianVE


@pytest.fixture(scope="module")
def two_mode():
    ds = load_toy("two_mode")  # 0.2 N((-2,0), 0.3² I) + 0.8 N((2,0), 0.3² I)
    return ds.mixture, ds.sample(2000, torch.Generator().manual_seed(0))


def _exact_start(process, mix, seed: int, n: int):
    """The mixture's exact field, per-sample seeded noise and ``n`` prior draws made with it."""
    noise = SeededNoise(seed, range(n))
    return process.analytic_field(mix), noise, process.sample_prior((n, 2), noise=noise)


# ----------------------------------------------------------------------------- EDM Alg. 2
@pytest.mark.parametrize("process_name", ["edm", "ve", "ncsn"])
def test_edm_sde_without_churn_is_exactly_heun(two_mode, process_name):
    mix, _ = two_mode
    p = make_process(process_name, sigma_min=0.002, sigma_max=20.0)
    f, noise, x0 = _exact_start(p, mix, 0, 300)
    schedule = solvers.edm_schedule(12, 0.002, 20.0)
    heun = solvers.heun(p.flow(f), x0, schedule)
    for kwargs in ({"s_churn": 0.0}, {"s_churn": 40.0, "s_min": 30.0, "s_max": 50.0}):  # no σ in [S_min, S_max]
        sde = solvers.edm_sde(p.flow(f), x0, schedule, noise=noise, **kwargs)
        assert torch.equal(sde.x, heun.x) and sde.stats.nfe == heun.stats.nfe == 2 * 12 - 1
    via = sample(p, f, x0, schedule, "edm-sde", noise=noise, s_churn=0.0)
    assert torch.equal(via.x, sample(p, f, x0, schedule, "heun").x)


def test_edm_sde_with_churn_samples_the_mixture(two_mode):
    mix, ref = two_mode
    p = make_process("edm", sigma_min=0.002, sigma_max=80.0)
    f, noise, x0 = _exact_start(p, mix, 1, 2000)
    sol = sample(p, f, x0, p.grid(64), "edm-sde", noise=noise)  # EDM's S_churn=40, S_min=0.05, S_max=50
    w = mode_weights(sol.x, mix.means)
    assert abs(float(w[1]) - 0.8) < 0.03
    assert mmd(sol.x, ref) < 5e-3  # the noise floor of two 2000-point sets is about ±2e-3 here
    major = sol.x[sol.x[:, 0] > 0]
    assert float(major.std(0).mean()) == pytest.approx(0.3, abs=0.025)  # the mode's own width
    assert sol.stats.nfe == 2 * 64 - 1
    # churn really happened: the result differs from Heun's
    assert not torch.allclose(sol.x, sample(p, f, x0, p.grid(64), "heun").x)


# ----------------------------------------------------------------------------- PC
def test_pc_matches_pf_ode_in_distribution(two_mode):
    mix, ref = two_mode
    p = make_process("ve", sigma_min=0.002, sigma_max=80.0)
    f, noise, x0 = _exact_start(p, mix, 3, 2000)
    ode = sample(p, f, x0, p.grid(50), "heun")
    pc = sample(p, f, x0, p.grid(200), "pc", noise=noise)
    assert pc.stats.nfe == 2 * 200  # one corrector + one predictor per step
    floor = sliced_w2(ref, load_toy("two_mode").sample(2000, torch.Generator().manual_seed(9)))
    assert sliced_w2(pc.x, ode.x) < 3 * floor
    assert abs(mmd(pc.x, ode.x)) < 3e-3
    assert float((mode_weights(pc.x, mix.means) - mode_weights(ode.x, mix.means)).abs().max()) < 0.02


def test_pc_corrector_follows_the_score_sde_rule():
    # one step; the predictor is neutralised (r = 1, G² = 0), so x_out = x + ε g + √(2ε) z
    g = torch.tensor([[1.0, 2.0], [0.5, -1.0], [3.0, 0.0]], dtype=torch.float64)

    class Neutral:
        def score(self, x, s):
            return g

        def drift(self, x, s):
            return torch.zeros_like(x)

        def diffusion(self, s):
            return torch.zeros_like(s)

        def marginal(self, s):
            return torch.ones_like(s), s

        def transition(self, s, s_next):
            return torch.ones_like(s), torch.zeros_like(s)

    z = torch.tensor([[0.3, -0.4], [1.0, 1.0], [-2.0, 0.5]], dtype=torch.float64)
    x = torch.zeros(3, 2, dtype=torch.float64)
    snr = 0.2
    for norms in ("sample", "batch"):
        out = solvers.pc(Neutral(), x, [2.0, 1.0], snr=snr, noise=lambda k, like: z, norms=norms, denoise_last=True)
        gn, zn = g.norm(dim=1, keepdim=True), z.norm(dim=1, keepdim=True)
        if norms == "batch":
            gn, zn = gn.mean(), zn.mean()
        eps = 2 * (snr * zn / gn) ** 2
        torch.testing.assert_close(out.x, x + eps * g + (2 * eps).sqrt() * z)


def test_reverse_diffusion_uses_the_exact_gaussian_transition():
    ve = make_process("ve", sigma_min=0.01, sigma_max=10.0)
    s, s_next = torch.tensor([3.0, 2.0], dtype=torch.float64), torch.tensor([1.0, 0.0], dtype=torch.float64)
    r, g2 = GaussianSDE(ve, ve.exact_field(torch.zeros(1, 2))).transition(s, s_next)
    torch.testing.assert_close(r, torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(g2, s**2 - s_next**2)
    vp = make_process("vp")
    t, t_next = torch.tensor([0.5], dtype=torch.float64), torch.tensor([0.49], dtype=torch.float64)
    r, g2 = GaussianSDE(vp, vp.exact_field(torch.zeros(1, 2))).transition(t, t_next)
    a1, _ = vp.coefficients(t)
    a0, _ = vp.coefficients(t_next)
    beta = 1 - (a1 / a0) ** 2  # the discrete DDPM β of this step
    torch.testing.assert_close(r, (1 - beta).sqrt())
    torch.testing.assert_close(g2, beta)


# ----------------------------------------------------------------------------- DDPM
def test_ddpm_betas_come_from_the_continuous_vp_schedule():
    """On VP's vp-time grid (uniform in t) of K steps the ancestral chain is DDPM's: β_j = 1 - a(τ_j)²/a(τ_{j+1})²,
    which for 1000 steps of the continuous linear β (0.1 .. 20) is DDPM's linear β from 1e-4 to 0.02."""
    vp = make_process("vp", t_eps=1e-3)
    tau = vp.grid(1000, "vp-time")
    assert len(tau) == 1001 and tau[0] == 1.0 and tau[-1] == pytest.approx(1e-3)
    view = GaussianSDE(vp, vp.exact_field(torch.zeros(1, 2)))
    r, g2 = view.transition(tau[:-1], tau[1:])
    betas = (1 - r**2).tolist()
    torch.testing.assert_close(g2, 1 - r**2)  # VP: G² = β
    dtau = float(tau[0] - tau[1])
    for j in (0, 500, 998):
        mid = 0.5 * (tau[j] + tau[j + 1])
        assert betas[j] == pytest.approx(-math.expm1(-float(vp.beta(mid)) * dtau), rel=1e-6)
    assert betas[0] == pytest.approx(0.02, rel=0.02) and 0.1 * dtau < betas[-1] < 0.15 * dtau


def test_ddpm_ancestral_recovers_the_mixture(two_mode):
    mix, ref = two_mode
    p = make_process("vp")
    f, noise, x0 = _exact_start(p, mix, 2, 2000)
    schedule = p.grid(200)
    for variance in ("beta", "beta_tilde"):
        sol = sample(p, f, x0, schedule, "ddpm", noise=noise, variance=variance)
        assert sol.stats.nfe == sol.stats.steps == 200  # --steps K: K transitions, K NFE
        assert abs(float(mode_weights(sol.x, mix.means)[1]) - 0.8) < 0.03
        assert mmd(sol.x, ref) < 5e-3


class _Chain:
    """A two-step DDPM chain: ᾱ = 0.5 at s = 2, 0.9 at s = 1, 1 at s = 0; the score of ε-prediction ``e``."""

    abar = {2.0: 0.5, 1.0: 0.9, 0.0: 1.0}

    def __init__(self, e, seen):
        self.e, self.seen = e, seen

    def marginal(self, s):
        a2 = torch.tensor([self.abar[float(v)] for v in s], dtype=torch.float64)
        return a2.sqrt(), (1 - a2).sqrt()

    def transition(self, s, s_next):
        (a1, b1), (a0, b0) = self.marginal(s), self.marginal(s_next)
        r = a1 / a0
        return r, b1**2 - r**2 * b0**2

    def score(self, x, s):
        self.seen.append(float(s[0]))
        return -self.e / self.marginal(s[:1])[1]

    def denoise(self, x, s):
        a, b = self.marginal(s[:1])
        return (x + b**2 * self.score(x, s)) / a


def test_ddpm_ancestral_step_is_algorithm_2():
    x = torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    e = torch.tensor([[0.2, 0.1]], dtype=torch.float64)
    z = torch.tensor([[0.7, -0.3]], dtype=torch.float64)
    seen = []
    out = solvers.ddpm_ancestral(_Chain(e, seen), x, [2.0, 1.0, 0.0], noise=lambda k, like: z)
    b2 = 1 - 0.5 / 0.9
    x1 = (x - b2 / math.sqrt(1 - 0.5) * e) / math.sqrt(1 - b2) + math.sqrt(b2) * z
    x0 = (x1 - 0.1 / math.sqrt(0.1) * e) / math.sqrt(0.9)  # DDPM's last step, z = 0: Tweedie's denoising step
    torch.testing.assert_close(out.x, x0)
    assert seen == [2.0, 1.0] and out.stats.nfe == 2


# ----------------------------------------------------------------------------- adapters
@pytest.mark.parametrize("solver", ["ald", "langevin", "pc", "edm-sde", "ddpm", "euler-maruyama"])
def test_samplers_refuse_a_process_without_a_score(solver):
    p = make_process("pfgmpp", D=128, sigma_max=5.0)
    f = p.exact_field(torch.randn(20, 2))
    with pytest.raises(UserError, match=rf"^solver '{solver}' needs .*; process 'pfgmpp' \(D=128\) does not offer it \(it offers: denoiser, flow"):
        sample(p, f, torch.zeros(4, 2), p.grid(5), solver)


def test_ancestral_and_churn_samplers_run_on_every_gaussian_process(two_mode):
    """ddpm is ancestral sampling on the exact Gaussian transition (any Gaussian process), and
    edm-sde runs on VP through its σ form x̄ = x/a, σ = b/a: both recover the mixture."""
    mix, _ = two_mode
    for p, method, steps in ((make_process("ve", sigma_max=20.0), "ddpm", 200), (make_process("vp"), "edm-sde", 64)):
        f, noise, x0 = _exact_start(p, mix, 5, 2000)
        sol = sample(p, f, x0, p.grid(steps), method, noise=noise)
        assert abs(float(mode_weights(sol.x, mix.means)[1]) - 0.8) < 0.03, (p.name, method)


def test_adapters_reject_wrong_options(two_mode):
    mix, _ = two_mode
    ve = make_process("ve")
    x0 = torch.zeros(4, 2)
    with pytest.raises(UserError, match="no option 'snr'"):
        sample(ve, ve.analytic_field(mix), x0, ve.grid(5), "ald", snr=0.1)
    with pytest.raises(UserError, match="predictor"):
        sample(ve, ve.analytic_field(mix), x0, ve.grid(5), "pc", predictor="ode")


def test_ald_on_score_processes_other_than_ncsn(two_mode):
    # levels geometric in the VE-equivalent b/a (VP: 152 .. 0.0105 mapped back to t), steps from b
    mix, ref = two_mode
    for name in ("ve", "vp"):
        p = make_process(name, **({"sigma_max": 20.0} if name == "ve" else {}))
        f, noise, x0 = _exact_start(p, mix, 4, 1000)
        levels = grid(p, method="ald", dim=2)
        assert float(levels[0]) == p.s_max and float(levels[-2]) == pytest.approx(p.s_min) and float(levels[-1]) == 0.0
        sol = sample(p, f, x0, levels, "ald", noise=noise, steps_per_level=40)
        assert sol.stats.nfe == sol.stats.extra["levels"] * 40 + 1 == (len(levels) - 1) * 40 + 1
        assert abs(float(mode_weights(sol.x, mix.means)[1]) - 0.8) < 0.05  # technique 4's ε lags a little in 2-D
        assert mmd(sol.x, ref) < 0.02


# ----------------------------------------------------------------------------- divergence
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(log_scale=st.floats(-1.0, 8.0), log_snr=st.floats(-2.0, 0.0), steps=st.integers(2, 40), seed=st.integers(0, 2**31 - 1),
       which=st.sampled_from(["pc", "pc-em", "edm-sde", "ddpm", "euler-maruyama"]))
def test_no_nonfinite_value_escapes_silently(log_scale, log_snr, steps, seed, which):
    scale = 10.0**log_scale  # a field this many times too strong can blow the state up
    x0 = torch.randn(6, 2, generator=torch.Generator().manual_seed(seed)) * 5
    g = torch.Generator().manual_seed(seed + 1)
    schedule = solvers.edm_schedule(steps, 0.01, 5.0)
    try:
        if which.startswith("pc"):
            sol = solvers.pc(UnitGaussianVE(scale), x0, schedule, snr=10.0**log_snr, generator=g, check_every=3,
                             predictor="euler-maruyama" if which == "pc-em" else "reverse-diffusion")
        elif which == "edm-sde":
            flow = lambda x, s: scale * x / s[:, None]  # noqa: E731
            flow.denoise = lambda x, s: x - scale * x  # noqa: E731
            sol = solvers.edm_sde(flow, x0, schedule, s_churn=10.0**(3 * log_snr + 4), generator=g, check_every=3)
        else:
            sol = solvers.solve(UnitGaussianVE(scale), x0, schedule, which, generator=g, check_every=3)
    except FloatingPointError as e:
        assert "step" in str(e) and "level" in str(e) or "s=" in str(e), str(e)
    else:
        assert bool(torch.isfinite(sol.x).all())


def test_stochastic_divergence_names_step_and_level():
    target = UnitGaussianVE(1.0, break_at=10)  # the reverse-diffusion predictor calls the score: call 10 is the predictor of step 4
    schedule = solvers.edm_schedule(10, 0.01, 5.0, append_zero=False)
    with pytest.raises(FloatingPointError, match=rf"step 4 of 9 \(predictor; level s={schedule[4]:.4g} -> {schedule[5]:.4g}\)"):
        solvers.pc(target, torch.randn(3, 2, generator=torch.Generator().manual_seed(1)), schedule,
                   generator=torch.Generator().manual_seed(0), check_every=5)
    assert target.calls == 10  # stopped at the check after step 4
