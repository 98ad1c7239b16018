"""The bad-input audit's cases for flow matching (issue 22), by class of input.

* ``flow names``: ``--coupling`` not a coupling; ``--coupling`` on a process without one;
* ``flow values``: ``--sinkhorn-eps`` not a number, not finite, <= 0, out of range, or given
  without ``--coupling sinkhorn``; process options ``t_max >= 1`` and ``t_eps >= t_max``; the
  interpolant's ``gamma``, ``path``, ``epsilon`` and ``gamma_scale`` out of their sets or ranges;
* ``flow solvers``: a score sampler on a flow trained with a coupled (non-Gaussian) path;
  ``ddpm`` (the path's own transition) on an interpolant with a chosen ``ε``;
* ``flow legit``: each coupling on ``toy`` and ``train`` (right = exit 0 with outputs).

:func:`cases` returns ``(area, argv, needles, keywords)`` tuples for :class:`audit_cli.Case`.
"""
from __future__ import annotations

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
    return rows
