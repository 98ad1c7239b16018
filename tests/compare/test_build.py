"""The problem compare-solvers solves, built by the library (physgen/compare/build.py): the same
problem as the command's, from the same options, and the command's bad values refused by name."""
from __future__ import annotations

import json

import pytest
import torch

from physgen.cli.main import main
from physgen.compare import compare
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


FLOW_PATHS = ("rectified-flow", "fm-cosine", "fm-vp")


@pytest.mark.parametrize("process", FLOW_PATHS)
def test_flow_matching_paths_compare_on_exact_fields_and_converge(process):
    """compare-solvers' problem and comparison take the flow-matching paths (issue 22, item 4) with an exact
    field: flow and denoiser-form solvers (through the sigma form) run, count one NFE per step, and converge."""
    problem = build_problem(ProblemConfig(process=process, dataset="8gaussians", field="exact", n_data=64, n_samples=16, seed=3, device="cpu"))
    result = compare(problem, ["euler", "dpmpp-2m", "ipndm"], [4, 16], ref_rtol=1e-6, ref_atol=1e-6, check_reference=False)
    assert problem.process.name == process
    for name in ("euler", "dpmpp-2m", "ipndm"):
        coarse, fine = result.row(name, 4), result.row(name, 16)
        assert (coarse.nfe, fine.nfe) == (4, 16)
        assert fine.error_vs_reference < 0.7 * coarse.error_vs_reference, name  # Euler on fm-vp: 0.52 at these sizes


@pytest.mark.parametrize("process", FLOW_PATHS)
def test_flow_matching_paths_compare_on_a_trained_mlp_and_its_checkpoint(process, tmp_path):
    """With field mlp the path's velocity MLP is trained and checkpointed in the run folder; the problem of
    `--ckpt RUN` rebuilds the same process and field: the same start points give the same errors."""
    common = dict(process=process, dataset="moons", n_data=200, n_samples=8, seed=1, device="cpu")
    trained = build_problem(ProblemConfig(**common, field="mlp", train_steps=10, batch=64, hidden=32, depth=2, out=str(tmp_path)))
    loaded = build_problem(ProblemConfig(**common, ckpt=str(tmp_path)))
    assert loaded.process.name == process and loaded.process.config() == trained.process.config()
    assert torch.equal(loaded.x0, trained.x0)
    runs = [compare(p, ["euler", "ipndm"], [6], ref_rtol=1e-4, ref_atol=1e-4, check_reference=False) for p in (trained, loaded)]
    assert [(r.solver, r.nfe) for r in runs[1].rows] == [("euler", 6), ("ipndm", 6)]
    assert [r.error_vs_reference for r in runs[1].rows] == pytest.approx([r.error_vs_reference for r in runs[0].rows], rel=1e-6)
