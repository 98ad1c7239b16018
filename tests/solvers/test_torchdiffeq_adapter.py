"""The torchdiffeq adapter (solvers/torchdiffeq_adapter.py): on a fixed grid its methods equal ours step for
step; unknown methods are one error."""
from __future__ import annotations

import pytest
import torch

import solvers
from solvers import edm_schedule
from solver_flows import CosFlow, x0_batch as _x0
from toy_fields import GaussianPF as GaussianDenoiserFlow  # the VE flow of N(mu, c²) data in closed form, c per sample


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
