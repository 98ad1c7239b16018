"""The ``solvers`` package's entry point and table (solvers/__init__.py): every row's order and NFE,
the last step to 0, shapes, dtypes, trajectories, gradients and the registry.  Each solver module's own
tests are in its file here (test_adaptive.py, test_multistep.py, test_schedules.py, ...)."""
from __future__ import annotations

import math

import pytest
import torch

import solvers
from solvers import SolverStats, edm_schedule, log_uniform_schedule, uniform_schedule
from measured_orders import slope as _slope
from solver_flows import CosFlow, Counting, GaussianVESDE, x0_batch as _x0
from toy_fields import GaussianPF as GaussianDenoiserFlow  # the VE flow of N(mu, c²) data in closed form, c per sample


ODE_SOLVERS = [n for n, spec in solvers.SOLVERS.items() if not spec.stochastic and not n.startswith("torchdiffeq:")]
FIXED_STEP = ["euler", "midpoint", "heun", "rk3", "rk4", "rk4-38", "lms", "dpm2", "dpmpp-2m"]


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


def test_last_step_to_zero_is_denoiser_output():
    flow = GaussianDenoiserFlow(0.5, 1.0)
    x0 = _x0()
    sched = edm_schedule(6, 0.5, 10.0)
    for method in [m for m in FIXED_STEP if m != "lms"] + ["dopri5", "torchdiffeq:rk4"]:
        traj = solvers.solve(flow, x0, sched, method=method, return_trajectory=True).stats.trajectory
        assert traj.shape == (len(sched),) + x0.shape
        expect = flow.denoise(traj[-2], torch.full((3,), float(sched[-2]), dtype=torch.float64))
        torch.testing.assert_close(traj[-1], expect, rtol=1e-12, atol=1e-12, msg=method)


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
    """The Gaussian flow is linear in x, so each fixed-step solver maps x0 to an affine ``k x0 + b`` with one
    slope k for every coordinate: autograd's gradient must be that k everywhere (a detached or in-place stage
    would break it), equal to the solver map's own finite difference, and near the exact flow's slope
    ``sqrt(c² / (c² + σ_max²))`` from σ = 5 to 0 (4 steps: within 30%; measured 0.14-0.24 for 0.196)."""
    x0 = _x0().requires_grad_(True)
    sched, exact = edm_schedule(4, 0.1, 5.0), 1 / math.sqrt(26.0)
    for method in FIXED_STEP:
        flow = GaussianDenoiserFlow(0.5, 1.0)
        sol = solvers.solve(flow, x0, sched, method=method)
        (gx,) = torch.autograd.grad(sol.x.sum(), x0)
        k = gx.flatten()[0].item()
        torch.testing.assert_close(gx, torch.full_like(gx, k), rtol=1e-12, atol=0, msg=method)
        moved = solvers.solve(flow, x0.detach() + 1e-3, sched, method=method).x
        torch.testing.assert_close((moved - sol.x.detach()) / 1e-3, gx, rtol=1e-8, atol=1e-8, msg=method)
        assert abs(k - exact) < 0.3 * exact, (method, k)


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


