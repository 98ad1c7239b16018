"""Runge-Kutta rows (solvers/runge_kutta.py): midpoint's promised order, Heun's NFE on EDM's grid."""
from __future__ import annotations


import solvers
from solvers import edm_schedule, log_uniform_schedule
from measured_orders import slope as _slope
from solver_flows import Counting, x0_batch as _x0
from toy_fields import GaussianPF as GaussianDenoiserFlow  # the VE flow of N(mu, c²) data in closed form, c per sample


def test_midpoint_is_at_least_second_order_on_gaussian_flow():
    # midpoint is super-convergent (order 3) on this particular ODE; only >= 2 is promised
    flow, x0 = GaussianDenoiserFlow(0.5, [0.5, 1.0, 2.0]), _x0()
    exact = flow.exact(x0, 10.0, 0.1)
    ns = [32, 64, 128, 256]
    errs = [(solvers.midpoint(flow, x0, log_uniform_schedule(n + 1, 0.1, 10.0)).x - exact).abs().max().item() for n in ns]
    assert _slope(ns, errs) > 1.7


def test_heun_edm_nfe():
    flow = Counting(GaussianDenoiserFlow())
    for K in (1, 2, 18):
        sol = solvers.heun(flow, _x0(), edm_schedule(K, 0.002, 80.0))
        assert sol.stats.nfe == 2 * K - 1
