"""``physgen experiment flows`` (physgen/experiments/flows.py) on a tiny budget: the table's rows
and numbers, the markdown and the figures, through the command line."""
from __future__ import annotations

import json
import math

import pytest

from one_line import one_line
from physgen.cli.main import main
from physgen.experiments.flows import SOLVERS

TINY = ["experiment", "flows", "--datasets", "two_mode", "--methods", "edm", "rectified-flow", "2-rectified", "--nfe", "1", "8",
        "--train-steps", "30", "--n-samples", "200", "--n-data", "300"]


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    out = tmp_path_factory.mktemp("flows")
    assert main([*TINY, "--out", str(out)]) == 0
    return out, json.loads((out / "flows.json").read_text())


def test_rows_cover_each_method_and_field_with_numbers_within_their_budgets(table):
    out, t = table
    rows = {(r["method"], r["field"]): r for r in t["rows"]}
    assert set(rows) == {("edm", "analytic"), ("edm", "mlp"), ("rectified-flow", "analytic"), ("rectified-flow", "mlp"), ("2-rectified", "mlp")}
    for r in t["rows"]:
        assert r["solver"] in SOLVERS and math.isfinite(r["straightness"]) and r["straightness"] >= 0
        assert set(r["sliced_w2"]) == {"1", "8"} and all(v is not None and v > 0 for v in r["sliced_w2"].values())
        assert all(0 <= e <= 1 for e in r["mode_error"].values())
        for cell in r["cells"].values():  # every solver at every budget: measured within it, or skipped with the reason
            assert cell.get("nfe", 0) <= cell["nfe_budget"] and ("sliced_w2" in cell or cell["skipped"])
            if "mode_weights" in cell:
                assert len(cell["mode_weights"]) == 2 and sum(cell["mode_weights"]) == pytest.approx(1.0)
        best = [r["cells"][f"{r['solver']}@8"]["sliced_w2"]]  # the row's solver is the best at the one budget >= 2
        assert best[0] == min(r["cells"][f"{s}@8"].get("sliced_w2", math.inf) for s in SOLVERS)
    exact = rows[("edm", "analytic")]
    assert exact["sliced_w2"]["8"] < exact["sliced_w2"]["1"]  # more NFE, closer to the data
    assert rows[("2-rectified", "mlp")]["straightness"] < rows[("rectified-flow", "mlp")]["straightness"]


def test_markdown_and_figures(table):
    out, t = table
    lines = (out / "flows.md").read_text().splitlines()
    assert len(lines) == 2 + len(t["rows"]) and lines[0].startswith("| data | method | field | solver | straightness | W2 @1 | W2 @8")
    assert any(line.startswith("| two_mode | 2-rectified | mlp |") for line in lines)
    for name in ("w2_vs_nfe.png", "modes_vs_nfe.png", "trajectories.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "runs" / "two_mode-2-rectified" / "metrics.json").is_file()  # the reflow's own run


@pytest.mark.parametrize("extra, needle", [(["--datasets", "nope"], "nope"), (["--methods", "nope"], "nope"),
                                          (["--methods", "2-rectified"], "rectified-flow"), (["--nfe", "0"], "--nfe")])
def test_bad_names_are_one_line(tmp_path, capsys, extra, needle):
    one_line(capsys, ["experiment", "flows", "--out", str(tmp_path / "o"), *extra], needle)
