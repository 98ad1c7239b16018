"""Tests for the top-level ``solvers`` package: orders, NFE, adaptivity, agreement with
torchdiffeq, schedules, Euler-Maruyama, shapes, dtypes and the registry."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import solvers
from solvers import (
    SolverStats,
    edm_schedule,
    log_uniform_schedule,
    make_schedule,
    uniform_schedule,
    ve_time_schedule,
    vp_time_schedule,
)
from toy_fields import GaussianPF as GaussianDenoiserFlow  # the VE flow of N(mu, c²) data in closed form, c per sample

# ---------------------------------------------------------------------------------------
# Test flows with known solutions


def _bcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.view((-1,) + (1,) * (x.dim() - 1))


class CosFlow:
    """``dx/ds = -x s cos(s)`` (not of denoiser form): ``x(s) = x0 exp(F(s0) - F(s))``,
    ``F(s) = s sin s + cos s``."""

    def __call__(self, x, s):
        s = _bcast(s, x)
        return -x * s * torch.cos(s)

    @staticmethod
    def exact(x0, s0: float, s1: float):
        F = lambda s: s * math.sin(s) + math.cos(s)
        return x0 * math.exp(F(s0) - F(s1))


class Counting:
    """Own NFE counter; also checks that ``s`` is ``[B]`` and never 0."""

    def __init__(self, flow):
        self.flow, self.calls = flow, 0
        if hasattr(flow, "denoise"):
            self.denoise = self._denoise

    def _check(self, x, s):
        assert s.shape == (x.shape[0],), s.shape
        assert s.dtype == x.dtype and s.device == x.device
        assert bool((s != 0).all()), "a solver evaluated the flow at s = 0"

    def __call__(self, x, s):
        self._check(x, s)
        self.calls += 1
        return self.flow(x, s)

    def _denoise(self, x, s):
        self._check(x, s)
        self.calls += 1
        return self.flow.denoise(x, s)


def _x0(b=3, d=2, seed=0, scale=10.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, d, generator=g, dtype=dtype) * scale


ODE_SOLVERS = [n for n, spec in solvers.SOLVERS.items() if not spec.stochastic and not n.startswith("torchdiffeq:")]
FIXED_STEP = ["euler", "midpoint", "heun", "rk3", "rk4", "rk4-38", "lms", "dpm2", "dpmpp-2m"]


def _slope(ns, errs):
    return -np.polyfit(np.log(ns), np.log(errs), 1)[0]


# ---------------------------------------------------------------------------------------
# Convergence orders

GAUSS_ORDERS = [  # (method, options, expected order): the rows' orders, and those options set
    *((name, {}, solvers.get_solver(name).order) for name in ("euler", "heun", "rk3", "rk4", "rk4-38", "dpm2", "dpmpp-2m")),
    ("lms", {"order": 1}, 1.0),
    ("lms", {"order": 2}, 2.0),
]


@pytest.mark.parametrize("method,opts,order", GAUSS_ORDERS, ids=lambda v: str(v))
def test_order_gaussian_denoiser_flow(method, opts, order):
    flow = GaussianDenoiserFlow(0.5, [0.5, 1.0, 2.0])
    x0 = _x0()
    exact = flow.exact(x0, 10.0, 0.1)
    ns = [32, 64, 128, 256]
    errs = [
        (solvers.solve(flow, x0, log_uniform_schedule(n + 1, 0.1, 10.0), method=method, **opts).x - exact).abs().max().item()
        for n in ns
    ]
    assert abs(_slope(ns, errs) - order) < 0.3, (errs, _slope(ns, errs))


def test_midpoint_is_at_least_second_order_on_gaussian_flow():
    # midpoint is super-convergent (order 3) on this particular ODE; only >= 2 is promised
    flow, x0 = GaussianDenoiserFlow(0.5, [0.5, 1.0, 2.0]), _x0()
    exact = flow.exact(x0, 10.0, 0.1)
    ns = [32, 64, 128, 256]
    errs = [(solvers.midpoint(flow, x0, log_uniform_schedule(n + 1, 0.1, 10.0)).x - exact).abs().max().item() for n in ns]
    assert _slope(ns, errs) > 1.7


COS_ORDERS = [  # a flow that is not linear in x: every Runge-Kutta row has exactly its order
    *((name, {}, solvers.get_solver(name).order) for name in ("euler", "midpoint", "heun", "rk3", "rk4", "rk4-38", "torchdiffeq:euler",
                                                               "torchdiffeq:midpoint", "torchdiffeq:heun2", "torchdiffeq:heun3",
                                                               "torchdiffeq:rk4")),
    ("lms", {"order": 2}, 2.0),
    ("lms", {"order": 3, "warmup": "rk4"}, 3.0),
    ("lms", {"order": 4, "warmup": "rk4"}, 4.0),
]


@pytest.mark.parametrize("method,opts,order", COS_ORDERS, ids=lambda v: str(v))
def test_order_non_denoiser_ode(method, opts, order):
    x0 = _x0(scale=1.0)
    exact = CosFlow.exact(x0, 3.0, 0.1)
    ns = [16, 32, 64, 128]
    errs = [
        (solvers.solve(CosFlow(), x0, uniform_schedule(n + 1, 0.1, 3.0), method=method, **opts).x - exact).abs().max().item()
        for n in ns
    ]
    assert abs(_slope(ns, errs) - order) < 0.3, (errs, _slope(ns, errs))


def test_lms_lower_order_warmup_caps_global_order():
    # k-diffusion's ramp-up starts with an Euler step whose O(h^2) error is never damped
    x0 = _x0(scale=1.0)
    exact = CosFlow.exact(x0, 3.0, 0.1)
    ns = [32, 64, 128, 256]
    errs = [(solvers.lms(CosFlow(), x0, uniform_schedule(n + 1, 0.1, 3.0), order=4).x - exact).abs().max().item() for n in ns]
    assert _slope(ns, errs) < 3.0


def test_adams_bashforth_coefficients_uniform_grid():
    # classic AB coefficients on a uniform grid of step h
    h = 0.1
    nodes = [0.3, 0.2, 0.1, 0.0]
    c = solvers.adams_bashforth_coefficients(nodes[:2], 0.3, 0.4)
    np.testing.assert_allclose(np.array(c) / h, [3 / 2, -1 / 2], atol=1e-12)
    c = solvers.adams_bashforth_coefficients(nodes[:3], 0.3, 0.4)
    np.testing.assert_allclose(np.array(c) / h, [23 / 12, -16 / 12, 5 / 12], atol=1e-12)
    c = solvers.adams_bashforth_coefficients(nodes, 0.3, 0.4)
    np.testing.assert_allclose(np.array(c) / h, [55 / 24, -59 / 24, 37 / 24, -9 / 24], atol=1e-12)


def test_last_step_to_zero_is_denoiser_output():
    flow = GaussianDenoiserFlow(0.5, 1.0)
    x0 = _x0()
    sched = edm_schedule(6, 0.5, 10.0)
    for method in [m for m in FIXED_STEP if m != "lms"] + ["dopri5", "torchdiffeq:rk4"]:
        traj = solvers.solve(flow, x0, sched, method=method, return_trajectory=True).stats.trajectory
        assert traj.shape == (len(sched),) + x0.shape
        expect = flow.denoise(traj[-2], torch.full((3,), float(sched[-2]), dtype=torch.float64))
        torch.testing.assert_close(traj[-1], expect, rtol=1e-12, atol=1e-12, msg=method)


def test_lms_last_step_is_k_diffusions_adams_bashforth_step():
    """k-diffusion's sample_lms integrates the Lagrange polynomial of the newest derivatives
    down to sigma = 0 (it never evaluates the flow there); so does ours, unlike the other solvers."""
    flow = GaussianDenoiserFlow(0.5, 1.0)
    x0 = _x0()
    s = edm_schedule(6, 0.5, 10.0).tolist()
    traj = solvers.lms(flow, x0, s, return_trajectory=True).stats.trajectory
    d = [flow(traj[i], torch.full((3,), s[i], dtype=torch.float64)) for i in range(len(s) - 1)]
    nodes = s[-2::-1][:4]
    c = solvers.adams_bashforth_coefficients(nodes, s[-2], 0.0)
    expect = traj[-2] + sum(cj * dj for cj, dj in zip(c, d[::-1][:4]))
    torch.testing.assert_close(traj[-1], expect, rtol=1e-12, atol=1e-12)
    denoised = flow.denoise(traj[-2], torch.full((3,), s[-2], dtype=torch.float64))
    assert float((traj[-1] - denoised).abs().max()) > 1e-6


# ---------------------------------------------------------------------------------------
# NFE


@pytest.mark.parametrize("method", ODE_SOLVERS + ["torchdiffeq:dopri5", "torchdiffeq:rk4", "torchdiffeq:euler"])
@pytest.mark.parametrize("zero", [True, False])
def test_nfe_counted_at_the_field(method, zero):
    flow = Counting(GaussianDenoiserFlow(0.5, 1.0))
    K = 7
    sched = edm_schedule(K, 0.1, 10.0, append_zero=True) if zero else edm_schedule(K + 1, 0.1, 10.0, append_zero=False)
    sol = solvers.solve(flow, _x0(), sched, method=method)
    assert sol.stats.nfe == flow.calls
    spec = solvers.get_solver(method)
    if not spec.adaptive and spec.grid == "steps":  # the row's NFE per step, and 1 for a last step to 0
        per = spec.nfe
        assert sol.stats.nfe == (per * (K - 1) + 1 if zero else per * K)
        assert sol.stats.steps == K and sol.stats.accepted == K * 3 and sol.stats.rejected == 0


def test_heun_edm_nfe():
    flow = Counting(GaussianDenoiserFlow())
    for K in (1, 2, 18):
        sol = solvers.heun(flow, _x0(), edm_schedule(K, 0.002, 80.0))
        assert sol.stats.nfe == 2 * K - 1


def test_lms_rk4_warmup_nfe():
    flow = Counting(CosFlow())
    sol = solvers.lms(flow, _x0(), uniform_schedule(11, 0.1, 3.0), order=4, warmup="rk4")
    assert sol.stats.nfe == flow.calls == 10 + 3 * 3


# ---------------------------------------------------------------------------------------
# dopri5


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(log_tol=st.floats(-8.0, -6.0), seed=st.integers(0, 2**16))
def test_dopri5_meets_tolerance(log_tol, seed):
    # Local error control bounds the *global* error only loosely.  Above tol ~ 1e-6 this ODE
    # defeats it: x is nearly linear in s at large s, so the step grows 10x per step and a
    # giant step across the bend near s ~ c can pass the embedded estimate; global errors
    # then reach 10-1000x tol -- exactly as scipy's RK45 does (see the test below that
    # matches it sample by sample), so it is the method, not this implementation.
    tol = 10.0 ** log_tol
    g = torch.Generator().manual_seed(seed)
    B = 16
    c = torch.exp(torch.empty(B, dtype=torch.float64).uniform_(math.log(0.3), math.log(3.0), generator=g))
    flow = GaussianDenoiserFlow(0.5, c)
    x0 = torch.randn(B, 2, generator=g, dtype=torch.float64) * 10
    sol = solvers.dopri5(flow, x0, [10.0, 0.05], rtol=tol, atol=tol)
    exact = flow.exact(x0, 10.0, 0.05)
    err = ((sol.x - exact).abs() / (tol + tol * exact.abs())).max().item()
    assert err < 10.0, err


def test_dopri5_per_sample_step_control():
    # c = 100: x barely moves (easy); c = 0.3: sharp bend inside the interval (hard)
    flow = Counting(GaussianDenoiserFlow(0.5, [100.0, 0.3, 100.0, 0.3]))
    x0 = _x0(4)
    sol = solvers.dopri5(flow, x0, [10.0, 0.1], rtol=1e-7, atol=1e-7)
    acc = sol.stats.extra["accepted_per_sample"]
    assert acc[0] < acc[1] and acc[2] < acc[3]
    assert sol.stats.accepted == int(acc.sum())
    assert sol.stats.rejected == int(sol.stats.extra["rejected_per_sample"].sum())
    assert sol.stats.nfe == flow.calls
    torch.testing.assert_close(sol.x, flow.flow.exact(x0, 10.0, 0.1), rtol=1e-5, atol=1e-5)


def test_dopri5_sample_does_not_depend_on_its_batch():
    flow = GaussianDenoiserFlow(0.5, [0.3, 1.0, 3.0, 100.0])
    x0 = _x0(4)
    full = solvers.dopri5(flow, x0, [10.0, 0.1], rtol=1e-6, atol=1e-6)
    for i in range(4):
        one = solvers.dopri5(GaussianDenoiserFlow(0.5, [flow.c[i].item()]), x0[i : i + 1], [10.0, 0.1], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(one.x[0], full.x[i], rtol=1e-12, atol=1e-12)
        assert one.stats.accepted == int(full.stats.extra["accepted_per_sample"][i])


def test_dopri5_agrees_with_torchdiffeq_at_tight_tolerance():
    flow = GaussianDenoiserFlow(0.5, [0.5, 1.0, 2.0])
    x0 = _x0()
    ours = solvers.dopri5(flow, x0, [10.0, 0.1], rtol=1e-10, atol=1e-10)
    theirs = solvers.solve(flow, x0, [10.0, 0.1], method="torchdiffeq:dopri5", rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ours.x, theirs.x, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(ours.x, flow.exact(x0, 10.0, 0.1), rtol=1e-8, atol=1e-8)


def test_dopri5_trajectory_hits_schedule_points():
    flow = GaussianDenoiserFlow(0.5, [0.5, 2.0])
    x0 = _x0(2)
    sched = log_uniform_schedule(5, 0.1, 10.0)
    sol = solvers.dopri5(flow, x0, sched, rtol=1e-8, atol=1e-8, return_trajectory=True)
    traj = sol.stats.trajectory
    assert traj.shape == (5, 2, 2)
    for k, s in enumerate(sched.tolist()):
        torch.testing.assert_close(traj[k], flow.exact(x0, 10.0, s), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(traj[-1], sol.x)


def test_dopri5_max_steps_error_names_count():
    flow = GaussianDenoiserFlow(0.5, 0.3)
    with pytest.raises(RuntimeError, match="max_steps=3"):
        solvers.dopri5(flow, _x0(), [10.0, 0.1], rtol=1e-10, atol=1e-10, max_steps=3)


def test_dopri5_float32_and_increasing_schedule():
    flow = GaussianDenoiserFlow(0.5, 1.0)
    x0 = _x0(dtype=torch.float32)
    sol = solvers.dopri5(flow, x0, [0.1, 10.0], rtol=1e-5, atol=1e-5)
    assert sol.x.dtype == torch.float32
    torch.testing.assert_close(sol.x, flow.exact(x0, 0.1, 10.0), rtol=1e-3, atol=1e-3)


# ---------------------------------------------------------------------------------------
# torchdiffeq agreement on a fixed grid


@pytest.mark.parametrize("ours,theirs", [("euler", "euler"), ("midpoint", "midpoint"), ("heun", "heun2"), ("rk4-38", "rk4")])
def test_torchdiffeq_fixed_grid_equals_ours(ours, theirs):
    flow = GaussianDenoiserFlow(0.5, [0.5, 1.0, 2.0])
    x0 = _x0()
    sched = edm_schedule(9, 0.05, 10.0)
    a = solvers.solve(flow, x0, sched, method=ours, return_trajectory=True)
    b = solvers.solve(flow, x0, sched, method="torchdiffeq:" + theirs, return_trajectory=True)
    torch.testing.assert_close(a.stats.trajectory, b.stats.trajectory, rtol=1e-13, atol=1e-13)
    assert a.stats.nfe == b.stats.nfe


def test_torchdiffeq_unknown_method():
    with pytest.raises(ValueError, match="unknown solver 'torchdiffeq:nope'"):
        solvers.solve(CosFlow(), _x0(), [1.0, 0.5], method="torchdiffeq:nope")
    with pytest.raises(ValueError, match="valid: dopri8"):
        solvers.torchdiffeq_solver(CosFlow(), _x0(), [1.0, 0.5], method="nope")


# ---------------------------------------------------------------------------------------
# Schedules


def test_edm_schedule_matches_formula():
    s = edm_schedule(18, 0.002, 80.0)
    assert s.dtype == torch.float64 and s.device.type == "cpu" and len(s) == 19
    assert s[0] == 80.0 and s[17] == 0.002 and s[-1] == 0.0
    i = torch.arange(18, dtype=torch.float64)
    ref = (80.0 ** (1 / 7) + i / 17 * (0.002 ** (1 / 7) - 80.0 ** (1 / 7))) ** 7
    torch.testing.assert_close(s[:-1], ref, rtol=1e-12, atol=0)
    assert bool((s[1:] < s[:-1]).all())
    torch.testing.assert_close(edm_schedule(10, 1.0, 5.0, rho=1.0), uniform_schedule(10, 1.0, 5.0, append_zero=True))
    assert edm_schedule(1, 0.1, 2.0).tolist() == [2.0, 0.0]


@pytest.mark.parametrize("name", list(solvers.SCHEDULES))
def test_schedules_endpoints_and_monotone(name):
    s = make_schedule(name, 12, 0.01, 1.0)
    assert s.dtype == torch.float64 and s.device.type == "cpu"
    assert s[0] == 1.0
    pos = s[s > 0]
    assert pos[-1] == 0.01 and len(pos) == 12
    assert bool((s[1:] < s[:-1]).all())
    solvers.as_schedule(s)


def test_schedule_shapes():
    torch.testing.assert_close(log_uniform_schedule(3, 0.1, 10.0), torch.tensor([10.0, 1.0, 0.1], dtype=torch.float64))
    torch.testing.assert_close(vp_time_schedule(5), torch.linspace(1.0, 1e-3, 5, dtype=torch.float64))
    torch.testing.assert_close(ve_time_schedule(4, 0.01, 10.0), log_uniform_schedule(4, 0.01, 10.0))


@pytest.mark.parametrize(
    "call,needle",
    [
        (lambda: edm_schedule(0, 0.1, 1.0), "steps=0"),
        (lambda: uniform_schedule(-3, 0.1, 1.0), "steps=-3"),
        (lambda: edm_schedule(5, 2.0, 1.0), "s_min=2.0"),
        (lambda: uniform_schedule(5, 1.0, 1.0), "s_min=1.0"),
        (lambda: edm_schedule(5, -0.5, 1.0), "s_min=-0.5"),
        (lambda: log_uniform_schedule(5, 0.0, 1.0), "s_min=0.0"),
        (lambda: vp_time_schedule(5, t_eps=2.0), "t_eps=2.0"),
        (lambda: ve_time_schedule(5, 0.0, 1.0), "sigma_min=0.0"),
        (lambda: edm_schedule(5, 0.1, 1.0, rho=0.0), "rho must be >= 0.1, got 0.0"),
        (lambda: make_schedule("cosine", 5, 0.1, 1.0), "'cosine'"),
    ],
)
def test_schedule_validation_names_the_value(call, needle):
    with pytest.raises(ValueError, match=needle.replace(".", r"\.").replace("(", r"\(")):
        call()


# ---------------------------------------------------------------------------------------
# Euler-Maruyama


class GaussianVESDE:
    """Reverse VE SDE (``g(s)^2 = d(s^2)/ds = 2s``) for data ``N(mu, c^2)``: the marginal at
    ``s`` is ``N(mu, c^2 + s^2)``; drift per unit ``ds`` is ``-g^2 score = 2s (x-mu)/(c^2+s^2)``."""

    def __init__(self, mu=1.0, c=0.5):
        self.mu, self.c = mu, c

    def drift(self, x, s):
        s = _bcast(s, x)
        return 2 * s * (x - self.mu) / (self.c**2 + s**2)

    def diffusion(self, s):
        return torch.sqrt(2 * s)


def test_euler_maruyama_marginal():
    sde, B = GaussianVESDE(), 20000
    g = torch.Generator().manual_seed(0)
    s0, s1 = 3.0, 0.3
    x0 = sde.mu + math.sqrt(sde.c**2 + s0**2) * torch.randn(B, 1, generator=g, dtype=torch.float64)
    sol = solvers.euler_maruyama(sde, x0, uniform_schedule(301, s1, s0), generator=g)
    var = sde.c**2 + s1**2
    assert abs(sol.x.mean().item() - sde.mu) < 4 * math.sqrt(var / B)
    assert abs(sol.x.var().item() / var - 1) < 0.05
    assert sol.stats.nfe == 300 and sol.stats.steps == 300


def test_euler_maruyama_noise_fn_is_deterministic_and_skips_last_step_to_zero():
    sde = GaussianVESDE()
    calls = []

    def noise(step, like):
        calls.append(step)
        g = torch.Generator().manual_seed(1000 + step)
        return torch.randn(like.shape, generator=g, dtype=like.dtype)

    x0 = _x0(8, 3)
    sched = edm_schedule(5, 0.1, 10.0)
    a = solvers.euler_maruyama(sde, x0, sched, noise=noise)
    assert calls == [0, 1, 2, 3]
    b = solvers.euler_maruyama(sde, x0, sched, noise=noise)
    assert torch.equal(a.x, b.x)
    # by hand
    x, s = x0, sched.tolist()
    for i in range(5):
        sb = torch.full((8,), s[i], dtype=torch.float64)
        dt = s[i + 1] - s[i]
        x = x + sde.drift(x, sb) * dt
        if i < 4:
            x = x + math.sqrt(2 * s[i]) * math.sqrt(-dt) * noise(i, x)
    torch.testing.assert_close(a.x, x, rtol=1e-12, atol=1e-12)


def test_euler_maruyama_generator_reproducible():
    sde, x0, sched = GaussianVESDE(), _x0(4), uniform_schedule(10, 0.1, 2.0)
    a = solvers.solve(sde, x0, sched, method="euler-maruyama", generator=torch.Generator().manual_seed(3))
    b = solvers.solve(sde, x0, sched, method="euler-maruyama", generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.x, b.x)


# ---------------------------------------------------------------------------------------
# Shapes, dtypes, trajectories


@pytest.mark.parametrize("method", ODE_SOLVERS + ["torchdiffeq:rk4", "torchdiffeq:dopri5", "euler-maruyama"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_image_batch_shapes(method, dtype):
    x0 = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0), dtype=dtype)
    sched = edm_schedule(5, 0.05, 5.0)
    if method == "euler-maruyama":
        flow = GaussianVESDE(0.0, 0.5)
        opts = {"generator": torch.Generator().manual_seed(0)}
    else:
        flow = Counting(GaussianDenoiserFlow(0.1, [0.5, 1.0, 2.0, 4.0]))
        opts = {}
    sol = solvers.solve(flow, x0, sched, method=method, return_trajectory=True, **opts)
    assert sol.x.shape == x0.shape and sol.x.dtype == dtype
    assert bool(torch.isfinite(sol.x).all())
    own = solvers.get_solver(method).grid == "ends"  # dpm-fast: the trajectory is on its own points
    assert sol.stats.trajectory.shape == (len(sol.stats.extra["grid"]) if own else len(sched),) + x0.shape
    torch.testing.assert_close(sol.stats.trajectory[0], x0)
    torch.testing.assert_close(sol.stats.trajectory[-1], sol.x)
    assert isinstance(sol.stats, SolverStats)
    if method != "euler-maruyama":
        assert sol.stats.nfe == flow.calls
        if method in ("heun", "rk4", "dopri5", "dpm2"):  # accuracy, not only shape
            ref = solvers.dopri5(flow.flow, x0.double(), sched, rtol=1e-9, atol=1e-9).x
            tol = 0.2 if method != "dopri5" else 1e-3
            assert (sol.x.double() - ref).abs().max().item() < tol


def test_input_is_not_modified():
    x0 = _x0()
    keep = x0.clone()
    for method in ODE_SOLVERS:
        solvers.solve(GaussianDenoiserFlow(), x0, edm_schedule(4, 0.1, 5.0), method=method)
        assert torch.equal(x0, keep), method


def test_gradients_flow_through_fixed_step_solvers():
    x0 = _x0().requires_grad_(True)
    for method in FIXED_STEP:
        sol = solvers.solve(GaussianDenoiserFlow(0.5, 1.0), x0, edm_schedule(4, 0.1, 5.0), method=method)
        (gx,) = torch.autograd.grad(sol.x.sum(), x0)
        assert bool(torch.isfinite(gx).all()), method


# ---------------------------------------------------------------------------------------
# Registry and errors


def test_registry_names_and_errors():
    names = solvers.solver_names()
    for n in ["euler", "midpoint", "heun", "rk3", "rk4", "lms", "dpm2", "dpmpp-2m", "dopri5", "torchdiffeq:dopri5"]:
        assert n in names
    with pytest.raises(ValueError) as e:
        solvers.solve(CosFlow(), _x0(), [1.0, 0.5], method="hune")
    msg = str(e.value)
    assert msg.startswith("unknown solver 'hune'; valid: ") and "heun" in msg and "\n" not in msg
    get = solvers.get_solver
    assert get("euler-maruyama").stochastic and not get("heun").stochastic
    assert not get("torchdiffeq:rk4").stochastic and not get("torchdiffeq:rk4").adaptive and get("torchdiffeq:dopri5").adaptive
    assert get("dpm2").needs == ("denoiser",) and get("euler").needs == ("flow",)
    with pytest.raises(ValueError, match="unknown solver"):
        get("nope")


def test_register_solver_extends_registry():
    @solvers.spec.takes("test-sde-sampler")
    def mine(flow, x, schedule, **kw):
        return solvers.euler(flow, x, schedule, **kw)

    try:
        solvers.register_solver(solvers.Spec("test-sde-sampler", mine, ("flow",), 1, 1, "a test", stochastic=True))
        assert solvers.get_solver("test-sde-sampler").stochastic
        assert "test-sde-sampler" in solvers.solver_names()
        assert solvers.solve(CosFlow(), _x0(), [1.0, 0.5], method="test-sde-sampler").stats.nfe == 1
        with pytest.raises(solvers.OptionError, match="has no option 'snr'; it takes: check_every, return_trajectory"):
            solvers.solve(CosFlow(), _x0(), [1.0, 0.5], method="test-sde-sampler", snr=0.1)
        with pytest.raises(ValueError, match="already registered"):
            solvers.register_solver(solvers.get_solver("test-sde-sampler"))
    finally:
        solvers.SOLVERS.pop("test-sde-sampler", None)


@pytest.mark.parametrize("method", ["dpm2", "dpmpp-2m"])
def test_dpm_needs_denoiser(method):
    with pytest.raises(TypeError, match="denoise"):
        solvers.solve(CosFlow(), _x0(), [1.0, 0.5], method=method)


def test_bad_schedules_and_inputs():
    with pytest.raises(ValueError, match="monotone"):
        solvers.heun(CosFlow(), _x0(), [1.0, 0.5, 0.7])
    with pytest.raises(ValueError, match="at least 2"):
        solvers.heun(CosFlow(), _x0(), [1.0])
    with pytest.raises(ValueError, match="order"):
        solvers.lms(CosFlow(), _x0(), [1.0, 0.5], order=5)
    with pytest.raises(ValueError, match="positive scales"):
        solvers.dpmpp_2m(GaussianDenoiserFlow(), _x0(), [1.0, -0.5, -1.0])


# ---------------------------------------------------------------------------------------
# CUDA: no host-device sync inside fixed-step loops


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("method", FIXED_STEP)
def test_cuda_fixed_step_solvers_never_sync(method):
    flow = GaussianDenoiserFlow(0.5, 1.0)
    x0 = torch.randn(64, 2, device="cuda")
    sched = edm_schedule(10, 0.01, 10.0)
    solvers.solve(flow, x0, sched, method=method)  # warm-up (lazy init may sync)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        sol = solvers.solve(flow, x0, sched, method=method)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    ref = solvers.solve(flow, x0.cpu(), sched, method=method)
    torch.testing.assert_close(sol.x.cpu(), ref.x, rtol=1e-4, atol=1e-4)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_dopri5_matches_cpu():
    flow = GaussianDenoiserFlow(0.5, [0.3, 1.0, 3.0, 100.0])
    x0 = _x0(4)
    cpu = solvers.dopri5(flow, x0, [10.0, 0.1], rtol=1e-7, atol=1e-7)
    gpu = solvers.dopri5(flow, x0.cuda(), [10.0, 0.1], rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(gpu.x.cpu(), cpu.x, rtol=1e-9, atol=1e-9)
    assert torch.equal(gpu.stats.extra["accepted_per_sample"], cpu.stats.extra["accepted_per_sample"])


@pytest.mark.parametrize("tol", [1e-6, 1e-8])
def test_dopri5_each_sample_matches_scipy_rk45(tol):
    # per-sample control = running scipy's RK45 (same tableau, norm, controller, first step) per sample
    from scipy.integrate import solve_ivp

    c = [0.3, 0.7, 1.5, 3.0, 100.0]
    flow = GaussianDenoiserFlow(0.5, c)
    x0 = _x0(len(c))
    sol = solvers.dopri5(flow, x0, [10.0, 0.1], rtol=tol, atol=tol)
    for i, ci in enumerate(c):
        one = GaussianDenoiserFlow(0.5, [ci])
        fun = lambda s, y: one(torch.from_numpy(y)[None], torch.tensor([s], dtype=torch.float64))[0].numpy()
        ref = solve_ivp(fun, (10.0, 0.1), x0[i].numpy(), method="RK45", rtol=tol, atol=tol)
        np.testing.assert_allclose(sol.x[i].numpy(), ref.y[:, -1], rtol=1e-10, atol=1e-10)
        assert int(sol.stats.extra["accepted_per_sample"][i]) == ref.t.size - 1
