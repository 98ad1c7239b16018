"""physgen.editing.observation: the ``--observe-A``/``--observe-y``/``--observe-noise`` values
(inline rows or JSON, every bad value one clear error) and sample_observed's contract."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from physgen.editing.conditional import linear_posterior
from physgen.editing.observation import MAX_ENTRY, MAX_ROWS, LinearObservation, parse_matrix, sample_observed
from physgen.errors import UserError

from editing_cases import MIXTURE, toy_process

ENTRY = st.floats(-MAX_ENTRY, MAX_ENTRY, allow_nan=False, width=32).filter(lambda v: v == 0 or abs(v) >= 1.2e-38)


@pytest.mark.parametrize("text,rows", [
    ("1,-1", [[1.0, -1.0]]), ("1,0;0,1", [[1.0, 0.0], [0.0, 1.0]]), (" 1 , -1 ", [[1.0, -1.0]]), ("[[1, -1]]", [[1.0, -1.0]]),
    ("[1, -1]", [[1.0, -1.0]]), ("0.5", [[0.5]]), ("[0.5]", [[0.5]]), ("[[1], [2]]", [[1.0], [2.0]]),
])
def test_the_inline_and_json_forms_read_the_same_rows(text, rows):
    assert parse_matrix(text, "--observe-A") == rows


@given(st.lists(st.lists(ENTRY, min_size=2, max_size=2), min_size=1, max_size=3))
def test_written_rows_read_back(rows):
    text = ";".join(",".join(repr(v) for v in row) for row in rows)
    assert parse_matrix(text, "--observe-A") == [[pytest.approx(v, rel=1e-12, abs=1e-30) for v in row] for row in rows]


@given(st.text(max_size=16))
@settings(max_examples=200)
def test_any_other_text_is_one_clear_error_or_finite_rows(text):
    try:
        rows = parse_matrix(text, "--observe-A")
    except UserError as exc:
        assert "\n" not in str(exc) and "--observe-A" in str(exc)
    else:
        assert rows and len({len(r) for r in rows}) == 1 and all(math.isfinite(v) and abs(v) <= MAX_ENTRY for r in rows for v in r)


@pytest.mark.parametrize("A,y,noise,needles", [
    ("1,-1", "0.5", 0.0, ("--observe-noise", "0")),
    ("1,-1", "0.5", -0.3, ("--observe-noise", "-0.3")),
    ("1,-1", "0.5", "nan", ("--observe-noise", "nan")),
    ("1,-1", "0.5", "inf", ("--observe-noise", "inf")),
    ("1,-1", "0.5,1", 0.3, ("--observe-y has 2", "1 row")),
    ("1,-1;1", "0.5,1", 0.3, ("one length",)),
    ("1,nan", "0.5", 0.3, ("--observe-A", "nan")),
    ("[[1, Infinity]]", "0.5", 0.3, ("--observe-A", "Infinity")),
    ("1,-1", "1e9", 0.3, ("--observe-y", "1e9")),
    ("1,-1", "[true]", 0.3, ("--observe-y", "True")),
    (";".join(["1,0"] * (MAX_ROWS + 1)), ",".join(["0"] * (MAX_ROWS + 1)), 0.3, (f"{MAX_ROWS + 1} rows",)),
])
def test_bad_observations_are_refused_naming_the_value(A, y, noise, needles):
    with pytest.raises(UserError) as exc:
        LinearObservation(A, y, noise)
    for needle in needles:
        assert needle in str(exc.value), str(exc.value)


def test_the_three_flags_go_together():
    assert LinearObservation.from_flags(None, None, None) is None
    with pytest.raises(UserError, match="--observe-noise missing"):
        LinearObservation.from_flags("1,-1", "0.5", None)
    with pytest.raises(UserError, match="--observe-A, --observe-y missing"):
        LinearObservation.from_flags(None, None, "0.3")
    obs = LinearObservation.from_flags("1,-1", "0.5", "0.3")
    assert obs.record() == {"A": [[1.0, -1.0]], "y": [0.5], "noise_std": 0.3}
    with pytest.raises(UserError, match="1 column"):
        LinearObservation("1", "0", 0.3).check_dim(2)


def test_sample_observed_is_one_population_of_smc_particles():
    """n particles of p(x | y); a full observation of both coordinates at a small noise pins them."""
    process = toy_process("edm")
    field = process.analytic_field(MIXTURE)
    obs = LinearObservation("1,0;0,1", "1,1.5", 0.05)
    sol = sample_observed(process, field, obs, 256, 2, steps=40, seed=0)
    post = linear_posterior(MIXTURE, obs.matrix(), obs.values(), obs.noise_std)
    assert sol.x.shape == (256, 2) and sol.stats.extra["particles"] == [256] and sol.stats.nfe == 40
    assert torch.allclose(sol.x.double().mean(0), (post.weights[:, None] * post.means).sum(0), atol=0.02)
    with pytest.raises(UserError, match="3 coordinates"):
        sample_observed(process, field, obs, 8, 3)
