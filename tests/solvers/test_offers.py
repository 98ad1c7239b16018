"""solvers.offers: every need is defined once (NEED_TABLE: the table's words, the methods a
target must have, refused by name otherwise), and a coordinate change is the offer's own
(VP's σ form maps prior draws and the grid to the solver and back, exactly)."""
import pytest
import torch

import solvers
from solvers import spec
from solvers._loop import require
from solvers.base import DenoiserFormError, Solution, SolverStats
from solvers.offers import NEED_TABLE, CoordinateChange

from physgen.processes import make_process


def test_spec_needs_are_the_tables_words_and_every_row_uses_them():
    assert spec.NEEDS == {name: need.words for name, need in NEED_TABLE.items()}
    for row in solvers.SOLVERS.values():
        assert set(row.needs) <= set(NEED_TABLE), row.name


@pytest.mark.parametrize("need", [n for n, v in NEED_TABLE.items() if v.methods])
def test_a_target_without_the_methods_is_refused_by_name(need):
    class Nothing:
        pass
    err = DenoiserFormError if need == "denoiser" else TypeError
    with pytest.raises(err) as e:
        require(Nothing(), need, "probe")
    assert "Nothing" in str(e.value)


def test_a_bare_callable_serves_as_a_score_but_not_as_a_transition():
    require(lambda x, s: -x, "score", "probe")
    with pytest.raises(TypeError, match="transition"):
        require(lambda x, s: -x, "transition", "probe")


def test_vp_sigma_form_round_trips_states_grid_and_trajectory():
    process = make_process("vp")
    offer = process.offers(lambda x, s, label=None: torch.zeros_like(x))["denoiser"]
    assert isinstance(offer, CoordinateChange)
    t = torch.tensor([1.0, 0.5, 0.1, 1e-3], dtype=torch.float64)
    x = torch.randn(5, 2, dtype=torch.float64)
    xbar, sigma = offer.to_solver(x, t)
    a, b = process.coefficients(t)
    assert torch.allclose(sigma, b / a, rtol=1e-12) and torch.allclose(xbar, x / a[0], rtol=1e-12)
    trajectory = torch.stack([xbar * (1 + k) for k in range(4)])
    back = offer.from_solver(Solution(xbar.clone(), SolverStats(trajectory=trajectory.clone())), t)
    assert torch.allclose(back.x, xbar * a[-1], rtol=1e-12)
    assert torch.allclose(back.stats.trajectory, trajectory * a.reshape(-1, 1, 1), rtol=1e-9)
