"""``--schedule file:SIGMAS.json`` (physgen/schedule_file.py): a user's own grid, read strictly and
validated entry by entry against the process (length K + 1, finite numbers, strictly decreasing,
the process's s_max first, its grid's end last: 0 for the denoiser form); every bad file is one
UserError naming the file and the bad entry, and one line with exit 2 through the commands."""
from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from physgen.cli.main import main
from physgen.errors import UserError
from physgen.processes import make_process
from physgen.sampling import grid

EDM = make_process("edm", sigma_max=20.0)
VE = make_process("ve")  # ends at its s_min, not at 0


def _write(tmp_path, value, name="sigmas.json"):
    path = tmp_path / name
    path.write_text(value if isinstance(value, str) else json.dumps(value))
    return path


def test_a_users_grid_is_used_as_given_on_both_kinds_of_process(tmp_path):
    own = [20, 5.0, 1.5, 0.3, 0.01, 0]
    g = grid(EDM, None, f"file:{_write(tmp_path, own)}")  # no --steps: the file's length decides K
    assert g.dtype == torch.float64 and g.tolist() == [float(v) for v in own]
    assert grid(EDM, 5, f"file:{_write(tmp_path, own)}").tolist() == g.tolist()
    ve_own = VE.grid(4).tolist()
    mid = [ve_own[0], ve_own[0] / 3, ve_own[0] / 30, ve_own[0] / 300, ve_own[-1]]
    assert grid(VE, 4, f"file:{_write(tmp_path, mid, 've.json')}").tolist() == mid


def test_ends_typed_with_fewer_digits_are_set_to_the_processs_exactly(tmp_path):
    s_max = VE.grid(3).tolist()[0]
    s_min = VE.grid(3).tolist()[-1]
    typed = [float(f"{s_max:.12g}"), s_max / 10, s_max / 100, float(f"{s_min:.12g}")]
    g = grid(VE, 3, f"file:{_write(tmp_path, typed)}")
    assert g[0] == s_max and g[-1] == s_min


@pytest.mark.parametrize("content, why", [
    ([20, 5, 5, 0.3, 0.01, 0], "entry 2 [(]5[)] is not below entry 1"),
    ([20, 5, 1, 0.3, 0.01, 0.001], "entry 5 is 0.001; the grid must end at 0"),
    ([19, 5, 1, 0.3, 0.01, 0], "entry 0 is 19; the grid must start at the process's s_max, 20.0"),
    ([20, 5, "1", 0.3, 0.01, 0], "entry 2 is '1', not a finite number"),
    ([20, 5, True, 0.3, 0.01, 0], "entry 2 is True, not a finite number"),
    ([20, 5, [1], 0.3, 0.01, 0], r"entry 2 is \[1\], not a finite number"),
    ([20, 5, None, 0.3, 0.01, 0], "entry 2 is None"),
    ([20, 1, 0], "holds 3 entries; want 6 scales for --steps 5"),
    ({"sigmas": [20, 0]}, "holds a JSON dict, not a list"),
    ("[20, NaN, 0]", "NaN"),
    ("[20, 1e400, 0]", "1e400"),
    ("[20, 5,", "invalid JSON"),
])
def test_a_bad_file_names_the_file_and_the_entry(tmp_path, content, why):
    path = _write(tmp_path, content)
    with pytest.raises(UserError, match=why) as err:
        grid(EDM, 5, f"file:{path}")
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_missing_file_and_an_empty_path(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        grid(EDM, 5, f"file:{tmp_path / 'nope.json'}")
    with pytest.raises(UserError, match="needs a path"):
        grid(EDM, 5, "file:")
    with pytest.raises(UserError, match="at least 2 scales"):
        grid(EDM, None, f"file:{_write(tmp_path, [20])}")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.one_of(st.floats(allow_nan=False, allow_infinity=False, min_value=-100, max_value=100), st.integers(-5, 30),
                                 st.text(max_size=3), st.booleans(), st.none()), min_size=0, max_size=8))
def test_any_list_is_a_valid_grid_or_one_line_naming_the_file(tmp_path, values):
    path = _write(tmp_path, values, "h.json")
    try:
        g = grid(EDM, None, f"file:{path}").tolist()
    except UserError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
        return
    assert len(g) == len(values) >= 2 and g[0] == 20.0 and g[-1] == 0.0
    assert all(a > b for a, b in zip(g, g[1:])) and all(math.isfinite(v) for v in g)


BASE = ["--process", "edm", "--sigma-max", "20", "--dataset", "8gaussians", "--field", "analytic", "--n-samples", "64"]


def test_a_bad_file_through_the_cli_is_one_line_exit_2(tmp_path, capsys):
    path = _write(tmp_path, [20, 4, 1, 0.1, 0])
    for cmd in (["toy"], ["compare-solvers", "--solvers", "euler"]):
        assert main([*cmd, *BASE, "--steps", "6", "--schedule", f"file:{path}", "--out", str(tmp_path / "bad")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(path) in err[0] and "want 7 scales for --steps 6" in err[0]


@pytest.mark.slow
def test_through_toy_and_compare_solvers(tmp_path):
    path = _write(tmp_path, [20, 4, 1, 0.1, 0])
    assert main(["toy", *BASE, "--solver", "euler", "--schedule", f"file:{path}", "--out", str(tmp_path / "toy")]) == 0
    metrics = json.loads((tmp_path / "toy" / "metrics.json").read_text())
    assert metrics["nfe"] == 4
    assert main(["compare-solvers", *BASE, "--solvers", "euler,ipndm", "--steps", "4", "--schedule", f"file:{path}",
                 "--out", str(tmp_path / "cmp")]) == 0
    settings = json.loads((tmp_path / "cmp" / "results.json").read_text())["settings"]
    assert settings["grids"] == {"4": [20.0, 4.0, 1.0, 0.1, 0.0]}  # both solvers ran on the user's grid
