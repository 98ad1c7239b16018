"""``--schedule gits`` (physgen/gits_schedule.py, arXiv 2405.11326): the DP finds the cheapest
path (brute force over all paths), the Euler cost is the teacher's one-step error (zero on a
linear flow), the grid is valid with the process's ends, does not raise Euler's error against the
exact solution on a closed-form field, is cached and reused, and its keywords are checked."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from physgen import gits_schedule as gits_mod
from physgen.data import load_toy
from physgen.errors import UserError
from physgen.noise import SeededNoise
from physgen.optimal_schedule import CACHE_NAME
from physgen.processes import make_process
from physgen.sampling import grid, sample


@settings(max_examples=40, deadline=None)
@given(n=st.integers(3, 8), data=st.data())
def test_the_dp_path_is_the_brute_force_minimum(n, data):
    steps = data.draw(st.integers(1, n - 1))
    rng = np.random.default_rng(data.draw(st.integers(0, 10**6)))
    cost = np.triu(rng.random((n, n)), 1)
    cost[np.tril_indices(n)] = np.inf
    path = gits_mod.gits_path(cost, steps)
    best = min(sum(cost[a, b] for a, b in zip(p, p[1:])) for mid in itertools.combinations(range(1, n - 1), steps - 1)
               for p in [(0, *mid, n - 1)])
    assert path[0] == 0 and path[-1] == n - 1 and len(path) == steps + 1
    assert sum(cost[a, b] for a, b in zip(path, path[1:])) == pytest.approx(best, rel=1e-12)


def test_euler_costs_are_zero_on_a_straight_line_and_the_step_error_otherwise():
    s = [3.0, 2.0, 0.5, 0.0]
    x0 = torch.randn(5, 2, dtype=torch.float64)
    v = torch.randn(5, 2, dtype=torch.float64)
    traj = torch.stack([x0 + (si - 3.0) * v for si in s])
    cost = gits_mod.euler_costs(traj, v.expand(3, 5, 2), s)
    assert np.allclose(cost[np.triu_indices(4, 1)], 0.0, atol=1e-12) and np.isinf(cost[np.tril_indices(4)]).all()
    bent = traj.clone()
    bent[3] += 1.0  # every sample 1 off in each coordinate at the end: sqrt(2) away
    assert gits_mod.euler_costs(bent, v.expand(3, 5, 2), s)[0, 3] == pytest.approx(2 ** 0.5)


def _problem():
    p = make_process("edm", sigma_max=20.0)
    return p, p.analytic_field(load_toy("8gaussians").mixture)


def _held_out_error(p, field, g, method, n=256):
    x0 = p.sample_prior((n, 2), noise=SeededNoise(123, range(n)), dtype=torch.float64)
    span = torch.tensor([float(g[0]), p.grid(4).tolist()[-2], 0.0], dtype=torch.float64)
    ref = sample(p, field, x0, span, "dopri5", rtol=1e-10, atol=1e-10).x
    return float((sample(p, field, x0, g, method).x - ref).norm(dim=1).pow(2).mean().sqrt())


def test_the_gits_grid_is_valid_no_worse_for_euler_and_cached(tmp_path, monkeypatch):
    p, field = _problem()
    g = grid(p, 5, "gits:n_pilot=256", method="euler", dim=2, field=field, cache_dir=tmp_path)
    assert g.dtype == torch.float64 and len(g) == 6 and g[0] == 20.0 and g[-1] == 0.0 and bool((g[1:] < g[:-1]).all())
    assert g[-2] == p.grid(5)[-2]  # the process's own last step, s_min -> 0
    assert set(g.tolist()) <= set(p.grid(gits_mod.FINE).tolist())  # points of the fine grid
    # measured: 0.532 against the default grid's 0.543 (the process's own last step s_min -> 0 is kept, so
    # only 3 interior points move; a deterministic margin with the fixed pilot and held-out seeds)
    assert _held_out_error(p, field, g, "euler") < _held_out_error(p, field, p.grid(5), "euler")
    (entry,) = json.loads((tmp_path / CACHE_NAME).read_text()).values()
    assert entry["grid"] == g.tolist() and entry["schedule"] == "gits" and entry["steps"] == 5

    def no_teacher(*a, **k):
        raise AssertionError("solved although the grid is cached")

    monkeypatch.setattr(gits_mod, "_teacher", no_teacher)
    assert torch.equal(grid(p, 5, "gits:n_pilot=256", method="dpmpp-2m", dim=2, field=field, cache_dir=tmp_path), g)  # any solver
    with pytest.raises(AssertionError, match="solved"):
        grid(p, 6, "gits:n_pilot=256", dim=2, field=field, cache_dir=tmp_path)  # another K
    with pytest.raises(AssertionError, match="solved"):
        grid(p, 5, "gits:n_pilot=256", dim=2, field=p.analytic_field(load_toy("25gaussians").mixture), cache_dir=tmp_path)
    cache = json.loads((tmp_path / CACHE_NAME).read_text())
    for entry in cache.values():
        entry["grid"] = [20.0, 30.0, 1.0, 0.5, 0.1, 0.0]  # not decreasing: refitted, not trusted
    (tmp_path / CACHE_NAME).write_text(json.dumps(cache))
    with pytest.raises(AssertionError, match="solved"):
        grid(p, 5, "gits:n_pilot=256", dim=2, field=field, cache_dir=tmp_path)


def test_gits_on_a_process_that_ends_at_s_min():
    p = make_process("ve", sigma_max=20.0)
    field = p.analytic_field(load_toy("8gaussians").mixture)
    g = grid(p, 4, "gits:n_pilot=64,fine=30", dim=2, field=field)
    own = p.grid(4)
    assert len(g) == 5 and g[0] == own[0] and g[-1] == own[-1] and bool((g[1:] < g[:-1]).all())


@pytest.mark.parametrize("bad, why", [("gits:n_pilot=1", "n_pilot must be an integer in 2..1000000"), ("gits:fine=x", "fine must be"),
                                      ("gits:fine=3000", "fine must be an integer in 2..2000"), ("gits:rho=2", "takes n_pilot=N and fine=N"),
                                      ("gits:fine=10,fine=20", "given twice")])
def test_bad_gits_keywords(bad, why):
    p, field = _problem()
    with pytest.raises(UserError, match=why):
        grid(p, 5, bad, dim=2, field=field)


def test_gits_needs_a_field():
    with pytest.raises(UserError, match="gits is fitted to a field"):
        grid(make_process("edm"), 5, "gits")
