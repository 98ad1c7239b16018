"""The bad-input audit's cases for flow matching (issue 22), by class of input.

* ``flow names``: ``--coupling`` not a coupling; ``--coupling`` on a process without one;
* ``flow values``: ``--sinkhorn-eps`` not a number, not finite, <= 0, out of range, or given
  without ``--coupling sinkhorn``; process options ``t_max >= 1`` and ``t_eps >= t_max``; the
  interpolant's ``gamma``, ``path``, ``epsilon`` and ``gamma_scale`` out of their sets or ranges;
* ``flow solvers``: a score sampler on a flow trained with a coupled (non-Gaussian) path;
  ``ddpm`` (the path's own transition) on an interpolant with a chosen ``ε``;
* ``flow legit``: each coupling on ``toy`` and ``train`` (right = exit 0 with outputs);
* ``reflow names/values/files/legit`` (``physgen reflow``): a solver that is unknown or
  stochastic, an ``--init`` not in its set, counts and rates out of range, a RUN that is
  missing, not a checkpoint or of a process that is no flow, ``--resume`` without a checkpoint
  or against ``--overwrite``, a damaged ``pairs.npy`` on resume; a legit tiny reflow;
* ``flows experiment``: ``experiment flows`` with an unknown dataset or method, 2-rectified
  without rectified-flow, budgets out of range; a legit tiny run.

:func:`cases` returns ``(area, argv, needles, keywords)`` tuples for :class:`audit_cli.Case`.
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np

__all__ = ["cases"]

TOY = ["toy", "--process", "rectified-flow", "--n-data", "60", "--n-samples", "16", "--steps", "2", "--device", "cpu",
       "--field", "mlp", "--train-steps", "2", "--batch", "16"]
TRAIN = ["train", "--process", "rectified-flow", "--dataset", "digits", "--resolution", "8", "--arch", "tiny", "--batch", "8",
         "--warmup-steps", "0", "--log-every", "1", "--sample-n", "2", "--sample-steps", "2", "--precision", "fp32", "--device", "cpu",
         "--steps", "1"]


def cases() -> list[tuple]:
    o = ["--out", "{W}/o"]
    rows = []
    for cmd in (TOY, TRAIN):
        rows += [("flow names", cmd + ["--coupling", "nope"] + o, ("nope",), {}),
                 ("flow values", cmd + ["--coupling", "sinkhorn", "--sinkhorn-eps", "x"] + o, ("'x'",), {}),
                 ("flow values", cmd + ["--coupling", "sinkhorn", "--sinkhorn-eps", "-1"] + o, ("-1",), {}),
                 ("flow values", cmd + ["--coupling", "sinkhorn", "--sinkhorn-eps", "inf"] + o, ("inf",), {}),
                 ("flow values", cmd + ["--coupling", "sinkhorn", "--sinkhorn-eps", "1e-9"] + o, ("1e-09", "sinkhorn_eps"), {}),
                 ("flow values", cmd + ["--coupling", "ot", "--sinkhorn-eps", "0.1"] + o, ("sinkhorn",), {})]
        rows += [("flow legit", cmd + ["--coupling", c] + o, (), {"legit": True, "owner": "i22-flow"}) for c in ("independent", "ot", "sinkhorn")]
    rows += [("flow names", ["toy", "--process", "edm", "--coupling", "ot", "--n-data", "60", "--out", "{W}/o"], ("coupling",), {}),
             ("flow values", TOY + ["--process-opt", "t_max=1.0"] + o, ("t_max",), {}),
             ("flow values", TOY + ["--process-opt", "t_eps=0.5", "--process-opt", "t_max=0.4"] + o, ("t_eps",), {}),
             ("flow solvers", TOY + ["--coupling", "ot", "--solver", "euler-maruyama"] + o, ("euler-maruyama",), {})]
    interpolant = TOY[:2] + ["interpolant"] + TOY[3:]
    rows += [("flow values", interpolant + ["--process-opt", f"{k}={v}"] + o, (k,), {})
             for k, v in (("gamma", '"nope"'), ("path", '"nope"'), ("epsilon", "-1"), ("gamma_scale", "1e9"))]
    rows += [("flow solvers", interpolant + ["--process-opt", "epsilon=0.5", "--solver", "ddpm"] + o, ("ddpm",), {}),
             ("flow legit", interpolant + ["--process-opt", "epsilon=0.5", "--solver", "euler-maruyama"] + o, (), {"legit": True, "owner": "i22-flow"})]
    return rows + reflow_cases() + experiment_cases()


def _quiet(argv: list) -> None:
    from physgen.cli.main import main  # the checkout under audit (benchmarks/audit_cli.py imports it after its path is set)

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(argv) == 0, argv


REFLOW = ["reflow", "--n-pairs", "32", "--train-steps", "2", "--n-eval", "16", "--straightness-steps", "2", "--device", "cpu"]


def _rf_run(w: Path) -> None:
    """``w/rf``: a tiny rectified-flow ``toy --field mlp`` run (reflow's RUN)."""
    _quiet([*TOY, "--out", str(w / "rf")])


def _rf_reflowed_with_bad_pairs(w: Path) -> None:
    """``w/rf2``: a reflow of ``w/rf`` whose ``pairs.npy`` was then cut to 7 pairs."""
    _rf_run(w)
    _quiet([*REFLOW, "--ckpt", str(w / "rf"), "--out", str(w / "rf2"), "--checkpoint-every", "1"])
    np.save(w / "rf2" / "pairs.npy", np.zeros((7, 2, 2), dtype=np.float32))


def reflow_cases() -> list[tuple]:
    """``physgen reflow``'s cases (module docstring)."""
    run = REFLOW + ["--ckpt", "{W}/rf", "--out", "{W}/o"]
    made = {"setup": _rf_run}
    rows = [("reflow names", run + ["--solver", "nope"], ("nope",), made),
            ("reflow names", run + ["--solver", "euler-maruyama"], ("euler-maruyama",), made),
            ("reflow names", run + ["--init", "nope"], ("nope",), made)]
    rows += [("reflow values", run + [flag, value], (value,), made) for flag, value in
             (("--n-pairs", "0"), ("--n-pairs", "1"), ("--n-pairs", "x"), ("--n-pairs", "1e12"), ("--train-steps", "0"), ("--lr", "inf"),
              ("--lr", "-1"), ("--n-eval", "1"), ("--straightness-steps", "0"), ("--checkpoint-every", "-1"), ("--seed", "-1"),
              ("--steps", "0"), ("--batch", "0"))]
    rows += [("reflow values", run + ["--resume", "--overwrite"], ("--resume",), made),
             ("reflow files", run + ["--resume"], ("--resume",), made),
             ("reflow files", REFLOW + ["--ckpt", "{W}/missing", "--out", "{W}/o"], ("missing",), {}),
             ("reflow files", REFLOW + ["--ckpt", "{W}/rf/config.json", "--out", "{W}/o"], ("config.json",), made),
             ("reflow files", REFLOW + ["--ckpt", "{TOYCKPT}", "--out", "{W}/o"], ("edm",), {}),
             ("reflow files", REFLOW + ["--ckpt", "{W}/rf", "--out", "{W}/rf2", "--train-steps", "3", "--resume"], ("pairs.npy",),
              {"setup": _rf_reflowed_with_bad_pairs}),
             ("reflow legit", run, (), {"legit": True, "owner": "i22-flow", "setup": _rf_run})]
    return rows


def experiment_cases() -> list[tuple]:
    """``physgen experiment flows``'s cases (module docstring)."""
    run = ["experiment", "flows", "--out", "{W}/o", "--datasets", "two_mode", "--methods", "edm", "--nfe", "1", "--train-steps", "2",
           "--n-samples", "16", "--n-data", "40"]
    rows = [("flows experiment", run + ["--datasets", "nope"], ("nope",), {}),
            ("flows experiment", run + ["--methods", "nope"], ("nope",), {}),
            ("flows experiment", run + ["--methods", "2-rectified"], ("rectified-flow",), {})]
    rows += [("flows experiment", run + [flag, value], (value,), {}) for flag, value in
             (("--nfe", "0"), ("--nfe", "x"), ("--train-steps", "0"), ("--n-samples", "1"), ("--n-data", "1e12"), ("--seed", "-1"))]
    rows += [("flows experiment", run, (), {"legit": True, "owner": "i22-flow"})]
    return rows
