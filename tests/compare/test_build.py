"""The problem compare-solvers solves, built by the library (physgen/compare/build.py): the same
problem as the command's, from the same options, and the command's bad values refused by name."""
from __future__ import annotations

import json

import pytest
import torch

from physgen.cli.main import main
from physgen.compare.build import ProblemConfig, build_problem, compare_solvers
from physgen.compare.problems import ToyProblem
from physgen.errors import UserError
from physgen.toy import ToyConfig

SMALL = dict(process="pfgmpp", process_options={"D": 8}, dataset="8gaussians", n_data=200, n_samples=40, seed=3, device="cpu")


def test_the_toy_problem_is_physgen_toys():
    """build_problem gives the ToyProblem of the same ToyConfig: the same process, start points and data."""
    built = build_problem(ProblemConfig(**SMALL))
    direct = ToyProblem.from_config(ToyConfig(field="exact", **SMALL))
    assert built.process.config() == direct.process.config() == {**direct.process.config(), "D": 8}
    assert torch.equal(built.x0, direct.x0)


def test_compare_solvers_is_the_commands_one_call(tmp_path, capsys):
    """The library call writes what the command writes, with the same rows (NFE counted at the field)."""
    lib = tmp_path / "lib"
    _, result, paths = compare_solvers(ProblemConfig(**SMALL, out=str(lib)), ["euler", "heun"], [4, 8], check_reference=False)
    assert {p.name for p in paths} >= {"results.csv", "results.json"}
    assert [(r.solver, r.steps, r.nfe) for r in result.rows] == [("euler", 4, 4), ("euler", 8, 8), ("heun", 4, 7), ("heun", 8, 15)]
    cli = tmp_path / "cli"
    assert main(["compare-solvers", "--process", "pfgmpp", "--D", "8", "--dataset", "8gaussians", "--n-data", "200",
                 "--n-samples", "40", "--seed", "3", "--device", "cpu", "--solvers", "euler,heun", "--steps", "4,8",
                 "--no-ref-check", "--out", str(cli)]) == 0
    rows = [json.loads((d / "results.json").read_text())["rows"] for d in (lib, cli)]
    assert [(r["solver"], r["nfe"], r["error_vs_reference"]) for r in rows[0]] == [(r["solver"], r["nfe"], r["error_vs_reference"]) for r in rows[1]]


@pytest.mark.parametrize("change, fragment", [({"n_samples": 0}, "--n-samples must be > 0"), ({"field": "magic"}, "field"),
                                              ({"solve_batch": 0}, "--solve-batch must be > 0")])
def test_bad_values_are_refused_by_their_flag(change, fragment):
    with pytest.raises(UserError, match=fragment):
        build_problem(ProblemConfig(**{**SMALL, **change}))
