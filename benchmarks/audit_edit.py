"""The bad-input audit's cases for ``physgen edit`` (issue 23), by class of input.

* ``edit values``: ``--strength``, ``--jump-length``, ``--jump-n-sample``, ``--particles``,
  ``--steps``, ``--method``, ``--solver`` at values of the wrong type or out of range;
* ``edit files``: the input and the mask missing, empty, not PNG, damaged, of the wrong size
  or channels, and masks that are grey, all white (nothing to generate) or all black;
* ``edit outputs``: ``--out`` under a file, another run's outputs there;
* ``edit legit``: every method on a clean input and mask (right = the outputs, or one line);
* ``toy condition``: ``physgen toy --condition xI=VALUE`` with a malformed, non-numeric,
  non-finite or huge value, a coordinate the data lack, a coordinate twice, every coordinate,
  the methods' own flags with another method or without ``--condition``, SMC with a solver it
  does not use, guidance on top; ``toy condition legit``: every method (right = the samples
  with the observed coordinate at its value);
* ``toy observe``: ``physgen toy --observe-A A --observe-y Y --observe-noise σ`` with a matrix of
  the wrong shape for the data, malformed or non-finite entries, rows of unequal length, too
  many rows, a ``y`` of the wrong length, a noise that is negative, zero or not finite, a flag
  missing, and with ``--condition``, another ``--condition-method``, a solver or guidance;
  ``toy observe legit``: inline and JSON forms (right = the samples and the recorded observation).

:func:`cases` returns ``(area, argv, needles, keywords)`` tuples for :class:`audit_cli.Case`
(``{IMG}`` is the audit's trained 8x8 grey image run, ``{W}`` the case's folder).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

__all__ = ["cases"]


def _png(name: str, maker) -> Callable[[Path], None]:
    def setup(w: Path) -> None:
        import numpy as np
        from PIL import Image

        path = w / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(maker(np), dtype=np.uint8)).save(path)
    return setup


def _both(*setups) -> Callable[[Path], None]:
    def setup(w: Path) -> None:
        for s in setups:
            s(w)
    return setup


def _half(np):
    m = np.zeros((8, 8))
    m[:4] = 255
    return m


GOOD = _both(_png("in/a.png", lambda np: np.full((8, 8), 100)), _png("m.png", _half))
EDIT = ["edit", "--ckpt", "{IMG}", "--steps", "2", "--device", "cpu", "--out", "{W}/o"]


def _edited(w: Path) -> bool:
    return (w / "o" / "000000.png").exists() and (w / "o" / "edit.json").exists() and (w / "o" / "figure.png").exists()


def cases() -> list[tuple]:
    io = ["--input", "{W}/in", "--mask", "{W}/m.png"]
    out: list[tuple] = []
    values = {"--strength": ["1.5", "-0.1", "nan", "abc", "inf"], "--jump-length": ["0", "-3", "abc", "1e9"],
              "--jump-n-sample": ["0", "2.5"], "--particles": ["0", "100000", "x"], "--steps": ["0", "1e12", "abc"],
              "--method": ["nope", ""], "--seed": ["-1", "abc"]}
    for flag, bad in values.items():
        for v in bad:
            out.append(("edit values", EDIT + io + [flag, v], (flag, v) if v else (flag,), {"setup": GOOD}))
    out.append(("edit values", EDIT + io + ["--solver", "nope"], ("nope",), {"setup": GOOD}))
    out.append(("edit values", EDIT + io + ["--method", "sdedit", "--solver", "nope"], ("nope",), {"setup": GOOD}))
    files = [(["--input", "{W}/missing.png", "--mask", "{W}/m.png"], ("missing.png",), GOOD),
             (["--input", "{W}/empty", "--mask", "{W}/m.png"], ("empty",), _both(GOOD, lambda w: (w / "empty").mkdir())),
             (["--input", "{W}/t.png", "--mask", "{W}/m.png"], ("t.png",), _both(GOOD, lambda w: (w / "t.png").write_text("not a png"))),
             (["--input", "{W}/a.txt", "--mask", "{W}/m.png"], ("a.txt",), _both(GOOD, lambda w: (w / "a.txt").write_text("x"))),
             (["--input", "{W}/big.png", "--mask", "{W}/m.png"], ("big.png", "9x9"), _both(GOOD, _png("big.png", lambda np: np.zeros((9, 9))))),
             (["--input", "{W}/rgb.png", "--mask", "{W}/m.png"], ("rgb.png", "channel"), _both(GOOD, _png("rgb.png", lambda np: np.zeros((8, 8, 3))))),
             (["--input", "{W}/in", "--mask", "{W}/nomask.png"], ("nomask.png",), GOOD),
             (["--input", "{W}/in"], ("--mask",), GOOD),
             (["--input", "{W}/in", "--mask", "{W}/g.png"], ("g.png", "128"), _both(GOOD, _png("g.png", lambda np: np.full((8, 8), 128)))),
             (["--input", "{W}/in", "--mask", "{W}/w.png"], ("all known",), _both(GOOD, _png("w.png", lambda np: np.full((8, 8), 255)))),
             (["--input", "{W}/in", "--mask", "{W}/b.png"], ("all unknown",), _both(GOOD, _png("b.png", lambda np: np.zeros((8, 8))))),
             (["--input", "{W}/in", "--mask", "{W}/mb.png"], ("mb.png", "9x9"), _both(GOOD, _png("mb.png", lambda np: np.zeros((9, 9))))),
             (["--input", "{W}/in", "--mask", "{W}/bad.png"], ("bad.png",), _both(GOOD, lambda w: (w / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n junk")))]
    for argv, needles, setup in files:
        out.append(("edit files", EDIT + argv, needles, {"setup": setup}))
    out.append(("edit files", ["edit", "--ckpt", "{W}/none.pt", *io, "--out", "{W}/o"], ("none.pt",), {"setup": GOOD}))
    out += [("edit outputs", EDIT[:-1] + ["{W}/FILE/sub", *io], ("FILE",), {"setup": _both(GOOD, lambda w: (w / "FILE").write_text("x"))}),
            ("edit outputs", EDIT + io, ("000000.png", "--overwrite"), {"setup": _both(GOOD, lambda w: ((w / "o").mkdir(), (w / "o" / "000000.png").write_bytes(b"x")))})]
    for method in ("blend", "repaint", "sdedit", "smc"):
        out.append(("edit legit", EDIT + io + ["--method", method, "--particles", "2"], (method,), {"setup": GOOD, "legit": True, "check": _edited}))
    return out + _toy_condition_cases() + _toy_observe_cases()


TOY = ["toy", "--n-data", "60", "--n-samples", "16", "--steps", "2", "--device", "cpu", "--out", "{W}/o"]


def _observed(w: Path) -> bool:
    import numpy as np

    x = np.load(w / "o" / "samples.npy")
    return x.shape == (16, 2) and bool(np.isfinite(x).all()) and bool((x[:, 0] == 0.5).all())


def _toy_condition_cases() -> list[tuple]:
    c = ["--condition"]
    rows = [(c + ["x2=1"], ("x2",)), (c + ["x0=abc"], ("abc",)), (c + ["x0=nan"], ("nan",)), (c + ["x0=-inf"], ("-inf",)),
            (c + ["x0=1e9"], ("1e9",)), (c + ["x0=1e400"], ("1e400",)), (c + ["y0=1"], ("y0=1",)), (c + ["x0"], ("x0",)),
            (c + [""], ("--condition",)), (c + ["x-1=2"], ("x-1=2",)), (c + ["x99999999999=1"], ("x99999999999",)),
            (c + ["x0=1", "--condition", "x0=2"], ("x0",)), (c + ["x0=1", "--condition", "x1=2"], ("all 2",)),
            (c + ["x0=1", "--condition-method", "nope"], ("nope",)), (c + ["x0=1", "--strength", "0.2"], ("--strength",)),
            (c + ["x0=1", "--condition-method", "sdedit", "--strength", "2"], ("--strength", "2")),
            (c + ["x0=1", "--condition-method", "repaint", "--jump-length", "0"], ("--jump-length", "0")),
            (c + ["x0=1", "--condition-method", "blend", "--jump-n-sample", "2"], ("--jump-n-sample",)),
            (c + ["x0=1", "--solver", "euler"], ("--solver",)), (c + ["x0=1", "--rtol", "1e-3"], ("--rtol",)),
            (["--strength", "0.5"], ("--strength",)), (["--jump-length", "2"], ("--jump-length",)),
            (["--condition-method", "blend"], ("--condition-method",)),
            (c + ["x0=1", "--guidance", "cfg", "--label", "0", "--dataset", "8gaussians"], ("--guidance",))]
    out = [("toy condition", TOY + argv, needles, {}) for argv, needles in rows]
    for method in ("smc", "blend", "repaint", "sdedit"):
        out.append(("toy condition legit", TOY + c + ["x0=0.5", "--condition-method", method], (method,),
                    {"legit": True, "check": _observed}))
    return out


OBSERVE = {"--observe-A": "1,-1", "--observe-y": "0.5", "--observe-noise": "0.3"}


def _observation_recorded(w: Path) -> bool:
    import json

    import numpy as np

    x = np.load(w / "o" / "samples.npy")
    record = json.loads((w / "o" / "metrics.json").read_text()).get("observation", {})
    return x.shape == (16, 2) and bool(np.isfinite(x).all()) and record.get("noise_std") == 0.3


def _toy_observe_cases() -> list[tuple]:
    def flags(**changes) -> list:
        given = {**OBSERVE, **{f"--observe-{k}": v for k, v in changes.items()}}
        return [f for k, v in given.items() if v is not None for f in (k, v)]

    rows = [(flags(A="1,-1,0"), ("--observe-A", "3 column")), (flags(A="1"), ("--observe-A", "1 column")),
            (flags(A="1,nan"), ("nan",)), (flags(A="1,inf"), ("inf",)), (flags(A="[[1, NaN]]"), ("NaN",)),
            (flags(A="1,1e400"), ("1e400",)), (flags(A="1,2e6"), ("2e6",)), (flags(A="a,b"), ("'a'",)), (flags(A=""), ("--observe-A",)),
            (flags(A="1,-1;1"), ("one length",)), (flags(A="[[1, -1], [2]]"), ("one length",)), (flags(A="[[[1]]]"), ("[1]",)),
            (flags(A="[true, 1]"), ("True",)), (flags(A=";".join(["1,0"] * 65), y=",".join(["0"] * 65)), ("65 rows",)),
            (flags(y="0.5,1"), ("--observe-y has 2",)), (flags(y="nan"), ("--observe-y", "nan")), (flags(y="1e9"), ("1e9",)),
            (flags(noise="-0.3"), ("--observe-noise", "-0.3")), (flags(noise="0"), ("--observe-noise", "0")),
            (flags(noise="inf"), ("--observe-noise", "inf")), (flags(noise="abc"), ("--observe-noise", "abc")),
            (flags(noise=None), ("--observe-noise", "missing")), (flags(A=None, y=None), ("--observe-A", "--observe-y", "missing")),
            (flags() + ["--condition", "x0=1"], ("--condition", "--observe-A")),
            (flags() + ["--condition-method", "repaint"], ("--observe-A", "repaint")), (flags() + ["--solver", "euler"], ("--solver",)),
            (flags() + ["--atol", "1e-3"], ("--atol",)), (flags() + ["--guidance", "cfg", "--label", "0", "--dataset", "8gaussians"], ("--guidance",))]
    out = [("toy observe", TOY + argv, needles, {}) for argv, needles in rows]
    for A in ("1,-1", "[[1, -1]]", "[1, -1]"):
        out.append(("toy observe legit", TOY + flags(A=A), ("observe",), {"legit": True, "check": _observation_recorded}))
    return out
