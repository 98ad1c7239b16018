"""The bad-input audit's cases for issue 24's surfaces, by class of input.

* ``schedule file``: ``--schedule file:PATH`` with a file that is missing, not JSON, not a
  list, of the wrong length, with a string / bool / null / NaN / overflowing entry, not
  decreasing, or with the wrong ends; through toy, compare-solvers and sample's flags;
* ``schedule gits``: ``--schedule gits:KEY=VALUE`` with unknown keys, non-integers, values
  out of range, a key twice;
* ``schedule legit``: a valid file and gits on an analytic field (exit 0 with samples);
* ``restart``: its options (``k``, ``restart_intervals``, ``t_min``, ``t_max``, ``s_noise``) of the
  wrong type or out of range, ``t_max`` below the restart point, PFGM++ at finite D (no Gaussian
  kernel), and the defaults (legit);
* ``afs``: ``--sampler-opt afs=`` not a bool, on a solver with two calls per step, on PFGM++ at finite D;
* ``fitted``: ``--solver fitted:BASE`` with an unknown or empty BASE, a BASE with more than one call per
  step or stochastic or adaptive, a torchdiffeq row, coefficients given by hand, a bad option of
  BASE, BASE's needs unmet (a flow-only process), and a legit run (toy, compare-solvers).

:func:`cases` returns ``(area, argv, needles, keywords)`` tuples for :class:`audit_cli.Case`
(``{W}`` is the case's folder).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

__all__ = ["cases"]

TOY = ["toy", "--process", "edm", "--sigma-max", "20", "--dataset", "8gaussians", "--field", "analytic", "--n-samples", "32"]
CMP = ["compare-solvers", "--process", "edm", "--sigma-max", "20", "--dataset", "8gaussians", "--field", "analytic",
       "--n-samples", "32", "--solvers", "euler"]


def _file(text: str, name: str = "s.json") -> Callable[[Path], None]:
    def setup(w: Path) -> None:
        (w / name).write_text(text)
    return setup


BAD_FILES = [  # (content, a needle the one line must hold besides the file's name)
    ("[20, 4, 1, 0.1, 0", "invalid JSON"),
    ('{"sigmas": [20, 0]}', "dict"),
    ("[20, 1, 0]", "want 5 scales"),
    ('[20, 4, "1", 0.1, 0]', "entry 2"),
    ("[20, 4, true, 0.1, 0]", "entry 2"),
    ("[20, 4, null, 0.1, 0]", "entry 2"),
    ("[20, 4, NaN, 0.1, 0]", "NaN"),
    ("[20, 4, 1e999, 0.1, 0]", "1e999"),
    ("[20, 4, 4, 0.1, 0]", "entry 2"),
    ("[21, 4, 1, 0.1, 0]", "entry 0"),
    ("[20, 4, 1, 0.1, 0.01]", "entry 4"),
]


def cases() -> list[tuple]:
    out = []
    for cmd in (TOY, CMP):
        for text, needle in BAD_FILES:
            out.append(("schedule file", cmd + ["--steps", "4", "--schedule", "file:s.json", "--out", "{W}/o"], ("s.json", needle),
                        dict(setup=_file(text))))
        out.append(("schedule file", cmd + ["--schedule", "file:missing.json", "--out", "{W}/o"], ("missing.json",), {}))
        out.append(("schedule file", cmd + ["--schedule", "file:", "--out", "{W}/o"], ("file:",), {}))
    for bad, needle in (("gits:n_pilot=1", "n_pilot"), ("gits:fine=-3", "fine"), ("gits:fine=1e3", "fine"), ("gits:rho=2", "rho=2"),
                        ("gits:fine=10,fine=20", "twice"), ("gits:fine=99999", "fine")):
        out.append(("schedule gits", TOY + ["--steps", "4", "--schedule", bad, "--out", "{W}/o"], (needle,), {}))
    out.append(("schedule legit", TOY + ["--steps", "4", "--schedule", "file:s.json", "--out", "{W}/o"], ("s.json",),
                dict(setup=_file("[20, 4, 1, 0.1, 0]"), legit=True, check=lambda w: (w / "o" / "samples.npy").exists())))
    out.append(("schedule legit", TOY + ["--steps", "4", "--schedule", "gits:n_pilot=64,fine=40", "--out", "{W}/o"], ("gits",),
                dict(legit=True, check=lambda w: (w / "o" / "samples.npy").exists())))
    rs = TOY + ["--solver", "restart", "--steps", "6", "--out", "{W}/o"]
    for opt, needle in (("k=-1", "k"), ("k=1.5", "k"), ("restart_intervals=0", "restart_intervals"), ("t_min=0", "t_min"),
                        ("t_max=x", "t_max"), ("t_max=0.01", "t_max"), ("t_min=1,t_max=0.5", "t_min"), ("s_noise=5", "s_noise"),
                        ("t_min=nan", "t_min"), ("t_max=inf", "t_max")):
        out.append(("restart", rs + [a for kv in opt.split(",") for a in ("--sampler-opt", kv)], (needle,), {}))
    out.append(("restart", ["toy", "--process", "pfgmpp", "--D", "128", "--dataset", "8gaussians", "--field", "exact", "--n-samples", "32",
                            "--solver", "restart", "--steps", "6", "--out", "{W}/o"], ("Gaussian",), {}))
    out.append(("restart", rs, ("restart",), dict(legit=True, check=lambda w: (w / "o" / "samples.npy").exists())))
    ip = TOY + ["--solver", "ipndm", "--steps", "6", "--out", "{W}/o"]
    for argv, needle in ((ip + ["--sampler-opt", "afs=maybe"], "afs"), (ip + ["--sampler-opt", "afs=2"], "afs"),
                         (ip + ["--solver", "heun", "--sampler-opt", "afs=true"], "heun"),
                         (ip + ["--process", "pfgmpp", "--D", "128", "--field", "exact", "--sampler-opt", "afs=true"], "Gaussian")):
        out.append(("afs", argv, (needle,), {}))
    fit = TOY[:-1] + ["16", "--steps", "3", "--out", "{W}/o"]
    for solver, needle in (("fitted:nope", "fitted:nope"), ("fitted:", "fitted:"), ("fitted:heun", "heun"), ("fitted:restart", "restart"),
                           ("fitted:dopri5", "dopri5"), ("fitted:torchdiffeq:euler", "torchdiffeq:euler"), ("fitted:fitted:euler", "fitted:fitted"),
                           ("FITTED:euler", "FITTED:euler")):
        out.append(("fitted", fit + ["--solver", solver], (needle,), {}))
    out.append(("fitted", fit + ["--solver", "fitted:euler", "--sampler-opt", "coefficients=1"], ("coefficients",), {}))
    out.append(("fitted", fit + ["--solver", "fitted:ipndm", "--sampler-opt", "order=9"], ("order",), {}))
    out.append(("fitted", ["toy", "--process", "pfgm", "--dataset", "8gaussians", "--field", "exact", "--n-samples", "16", "--steps", "3",
                           "--solver", "fitted:dpmpp-2m", "--out", "{W}/o"], ("fitted:dpmpp-2m", "denoiser"), {}))
    out.append(("fitted", fit + ["--solver", "fitted:euler"], ("fitted:euler",),
                dict(legit=True, check=lambda w: (w / "o" / "samples.npy").exists())))
    out.append(("fitted", CMP[:-1] + ["euler,fitted:dpmpp-2m", "--steps", "3", "--out", "{W}/o"], ("fitted:dpmpp-2m",),
                dict(legit=True, check=lambda w: (w / "o" / "results.json").exists())))
    return out
