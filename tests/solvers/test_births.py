"""solvers.births: log-weights alongside the ODE, systematic resampling, ESS, modes (physics-agnostic)."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

import solvers
from solvers.births import BIRTH_MODES, births, effective_sample_size, systematic_resample

F64 = torch.float64


def test_effective_sample_size():
    assert float(effective_sample_size(torch.zeros(10, dtype=F64))) == pytest.approx(10.0)
    lw = torch.log(torch.tensor([1.0, 1.0, 2.0], dtype=F64))
    assert float(effective_sample_size(lw)) == pytest.approx(16.0 / 6.0)
    assert float(effective_sample_size(torch.tensor([0.0, -1e4], dtype=F64))) == pytest.approx(1.0)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 200), seed=st.integers(0, 2**16), u=st.floats(0.0, 0.999999))
def test_systematic_resample_counts_between_floor_and_ceil(n, seed, u):
    g = torch.Generator().manual_seed(seed)
    lw = 3.0 * torch.randn(n, generator=g, dtype=F64)
    idx = systematic_resample(lw, torch.tensor(u, dtype=F64))
    assert idx.shape == (n,) and int(idx.min()) >= 0 and int(idx.max()) < n
    counts = torch.bincount(idx, minlength=n).to(F64)
    expected = n * torch.softmax(lw, 0)
    assert bool((counts >= torch.floor(expected) - 1e-9).all() and (counts <= torch.ceil(expected) + 1e-9).all())


def test_mode_off_is_heun_on_the_flow():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=g, dtype=F64)
    sched = torch.tensor([2.0, 1.3, 0.7, 0.2], dtype=F64)

    def v(x, s):
        return torch.sin(x) * s[:, None]

    ref = solvers.heun(v, x, sched)
    out = births(lambda x, s: (v(x, s), torch.ones(x.shape[0], dtype=F64)), x, sched, mode="off")
    assert torch.allclose(out.x, ref.x, rtol=1e-12, atol=1e-14)
    assert out.stats.nfe == ref.stats.nfe == 6
    assert "ess" not in out.stats.extra


def test_final_step_to_zero_is_euler_and_never_evaluates_the_rate_at_zero():
    x = torch.ones(4, 1, dtype=F64)
    calls = []

    def joint(x, s):
        calls.append(float(s[0]))
        return x / s[:, None], 1.0 / s.double()  # the denoiser form with D = 0; κ ∝ 1/s diverges at 0

    sol = births(joint, x, [2.0, 1.0, 0.5, 0.0], mode="weights")
    assert 0.0 not in calls and calls[-1] == 0.5
    assert sol.stats.nfe == 2 * 2 + 1
    assert torch.allclose(sol.x, torch.zeros_like(x))  # Euler to 0: x <- x - s (x/s) = D = 0
    assert sol.stats.extra["ess_final"] == pytest.approx(1.0)


@pytest.mark.parametrize("mode", ["smc", "weights"])
def test_pure_birth_reweights_to_the_tilted_law(mode):
    """With v = 0 and κ(x) = b x over a z-range of length L, the weights are e^{b L x}: a
    standard normal becomes N(b L, 1) after resampling (derived: ∂_s p = −κ p backwards)."""
    g = torch.Generator().manual_seed(1)
    n = 20000
    x = torch.randn(n, 1, generator=g, dtype=F64)
    b, L = 0.25, 2.0
    sched = torch.linspace(3.0, 3.0 - L, 21, dtype=F64)
    sol = births(lambda x, s: (torch.zeros_like(x), b * x[:, 0]), x, sched, mode=mode, generator=torch.Generator().manual_seed(2))
    assert sol.x.shape == x.shape  # fixed batch
    assert float(sol.x.mean()) == pytest.approx(b * L, abs=0.04)
    assert float(sol.x.std()) == pytest.approx(1.0, abs=0.04)
    ess = sol.stats.extra["ess"]
    assert len(ess) == 20 and all(0 < e <= 1 for e in ess)
    assert sol.stats.nfe == 20 * 2  # heun: two evaluations per step, each giving (v, κ)
    if mode == "weights":
        assert sol.stats.extra["resamples"] == 0
        assert ess[-1] == pytest.approx(math.exp(-(b * L) ** 2), rel=0.05)  # ESS/n of log-normal weights
    else:
        assert sol.stats.extra["ess_min"] >= 0.5 - 0.05 or sol.stats.extra["resamples"] > 0


def test_smc_resamples_when_ess_is_low_and_keeps_batch():
    g = torch.Generator().manual_seed(3)
    n = 500
    x = torch.randn(n, 2, generator=g)
    sched = torch.linspace(5.0, 0.1, 30, dtype=F64)

    def joint(x, s):
        return -0.1 * x, 3.0 * x[:, 0].double()

    smc = births(joint, x, sched, mode="smc", ess_threshold=0.5, generator=torch.Generator().manual_seed(0), return_trajectory=True)
    w = births(joint, x, sched, mode="weights", generator=torch.Generator().manual_seed(0))
    assert smc.stats.extra["resamples"] > 0
    assert w.stats.extra["ess_final"] < 0.01  # weights alone degenerate; reported, not hidden
    assert smc.x.shape == x.shape and smc.x.dtype == x.dtype
    assert smc.stats.trajectory.shape == (30, n, 2)
    assert torch.equal(smc.stats.trajectory[-1], smc.x)
    # reproducible with the same generator seed
    again = births(joint, x, sched, mode="smc", generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.x, smc.x)


def test_rate_clip_reported_and_errors():
    x = torch.zeros(8, 1)

    def joint(x, s):
        return torch.zeros_like(x), torch.full((x.shape[0],), 100.0, dtype=F64)

    sol = births(joint, x, [1.0, 0.5], mode="weights", rate_clip=10.0)
    assert sol.stats.extra["rate_clipped"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="option mode must be one of smc, weights, off"):
        births(joint, x, [1.0, 0.5], mode="bogus")
    with pytest.raises(ValueError, match="heun"):
        births(joint, x, [1.0, 0.5], method="rk4")
    with pytest.raises(ValueError, match="decrease"):
        births(joint, x, [0.5, 1.0])
    with pytest.raises(TypeError, match="pair"):
        births(lambda x, s: x, x, [1.0, 0.5])
    assert set(BIRTH_MODES) == {"smc", "weights", "off"}


def test_nonfinite_weights_raise():
    x = torch.zeros(4, 1)

    def joint(x, s):
        return torch.zeros_like(x), torch.full((x.shape[0],), float("nan"), dtype=F64)

    with pytest.raises(FloatingPointError, match="log-weights"):
        births(joint, x, [1.0, 0.5], mode="smc")


def test_weights_without_final_resample_returns_normalised_log_weights():
    x = torch.linspace(-1, 1, 11, dtype=F64)[:, None]
    sol = births(lambda x, s: (torch.zeros_like(x), x[:, 0]), x, [1.0, 0.0 + 0.5], mode="weights", final_resample=False)
    lw = sol.stats.extra["log_weights"]
    assert torch.allclose(torch.logsumexp(lw, 0), torch.zeros((), dtype=F64))
    assert torch.allclose(lw - lw.max(), 0.5 * (x[:, 0] - 1.0))
    assert torch.equal(sol.x, x)
