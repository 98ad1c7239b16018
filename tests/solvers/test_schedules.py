"""Schedules (solvers/schedules.py): EDM's formula, end points and monotonicity of every named schedule, the time
grids, and errors naming the value."""
from __future__ import annotations

import pytest
import torch

import solvers
from solvers import edm_schedule, log_uniform_schedule, make_schedule, uniform_schedule, ve_time_schedule, vp_time_schedule


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
