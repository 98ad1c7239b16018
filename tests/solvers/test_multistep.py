"""Linear multistep (solvers/multistep.py): LMS's warm-up and its order, the Adams-Bashforth coefficients,
k-diffusion's last LMS step, the RK4 warm-up's NFE."""
from __future__ import annotations

import numpy as np
import torch

import solvers
from solvers import edm_schedule, uniform_schedule
from measured_orders import slope as _slope
from solver_flows import CosFlow, Counting, x0_batch as _x0
from toy_fields import GaussianPF as GaussianDenoiserFlow  # the VE flow of N(mu, c²) data in closed form, c per sample


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


def test_lms_rk4_warmup_nfe():
    flow = Counting(CosFlow())
    sol = solvers.lms(flow, _x0(), uniform_schedule(11, 0.1, 3.0), order=4, warmup="rk4")
    assert sol.stats.nfe == flow.calls == 10 + 3 * 3
