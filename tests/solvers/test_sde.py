"""Euler-Maruyama (solvers/sde.py): the marginal of a Gaussian VE SDE, a noise function by hand, reproducible
generators."""
from __future__ import annotations

import math

import torch

import solvers
from solvers import edm_schedule, uniform_schedule
from solver_flows import GaussianVESDE, x0_batch as _x0


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
