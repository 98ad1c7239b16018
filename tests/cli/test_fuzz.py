"""Fuzzing the CLI in-process: every bad value of every typed flag, random bytes as every file
argument and random config tables give exit status 2 and one line naming the bad value (or its
flag, key or file) -- never a traceback, a hang or a silently accepted value.

``SAMPLER_CASES`` are bad sampler options (a solver given an option it does not take, or a
value out of its declared range), checked against the solver's row of the table.
"""
from __future__ import annotations

import json
import math
import tomllib
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from physgen.cli.main import main
from physgen.config import D_MAX, FLOAT32_MAX, FLOAT32_TINY, LIMIT_REASONS, MAX_BATCH, MAX_SAMPLES, MAX_STEPS, MAX_TRAIN_STEPS, SEED_MAX
from physgen.runtime import available_cpus

FAST = settings(deadline=timedelta(seconds=10), max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

TOY = ["toy", "--n-data", "40", "--n-samples", "8", "--steps", "2", "--device", "cpu"]
BASES = {
    "toy": TOY,
    "compare-solvers": ["compare-solvers", "--n-data", "40", "--n-samples", "8", "--solvers", "euler", "--steps", "2", "--device", "cpu"],
    "nll": ["nll", "--n", "8", "--n-data", "40", "--device", "cpu"],
    "train-classifier": ["train-classifier", "--steps", "2", "--n-data", "40", "--device", "cpu"],
    "train": ["train", "--dump-config", "{tmp}/c.toml"],
    "sample": ["sample", "--ckpt", "{tmp}/none.pt"],
    "eval": ["eval", "fid", "--samples", "digits", "--ref", "digits", "--inception", "{tmp}/w.pth"],
}
# (command, flag, kind, lo, hi): every typed flag with the range it accepts
INT, POS, PROB, FRAC, D = "int", "positive", "probability", "fraction", "D"
FLAGS = [
    ("toy", "--n-data", INT, 1, MAX_SAMPLES), ("toy", "--train-steps", INT, 1, MAX_TRAIN_STEPS), ("toy", "--batch", INT, 1, MAX_BATCH),
    ("toy", "--hidden", INT, 1, 65_536), ("toy", "--depth", INT, 1, 1000), ("toy", "--steps", INT, 1, MAX_STEPS),
    ("toy", "--n-samples", INT, 1, MAX_SAMPLES), ("toy", "--seed", INT, 0, SEED_MAX), ("toy", "--threads", INT, 0, available_cpus()),
    ("toy", "--label", INT, 0, MAX_SAMPLES), ("toy", "--lr", POS, 0, None), ("toy", "--rtol", POS, 0, None), ("toy", "--atol", POS, 0, None),
    ("toy", "--sigma-min", POS, 0, None), ("toy", "--sigma-max", POS, 0, None), ("toy", "--cond-drop", FRAC, 0, 1), ("toy", "--D", D, 1, D_MAX),
    ("compare-solvers", "--n-samples", INT, 1, MAX_SAMPLES), ("compare-solvers", "--ref-rtol", POS, 0, None),
    ("compare-solvers", "--solve-batch", INT, 1, MAX_BATCH), ("compare-solvers", "--D", D, 1, D_MAX),
    ("nll", "--n", INT, 1, MAX_SAMPLES), ("nll", "--batch", INT, 1, MAX_BATCH), ("nll", "--atol", POS, 0, None), ("nll", "--s-min", POS, 0, None),
    ("nll", "--dequantize", POS, 0, None), ("train-classifier", "--width", INT, 1, 65_536), ("train-classifier", "--resolution", INT, 1, 4096),
    ("train", "--steps", INT, 1, MAX_TRAIN_STEPS), ("train", "--batch", INT, 1, MAX_BATCH), ("train", "--lr", POS, 0, None),
    ("train", "--label-dropout", FRAC, 0, 1), ("train", "--ema-halflife", POS, 0, None), ("train", "--seed", INT, 0, SEED_MAX),
    ("train", "--sample-steps", INT, 1, MAX_STEPS), ("train", "--keep-checkpoints", INT, 1, MAX_TRAIN_STEPS), ("train", "--D", D, 1, D_MAX),
    ("sample", "--n", INT, 1, MAX_SAMPLES), ("sample", "--steps", INT, 1, MAX_STEPS), ("sample", "--batch", INT, 1, MAX_BATCH),
    ("sample", "--rtol", POS, 0, None), ("eval", "--batch", INT, 1, MAX_BATCH), ("eval", "--kid-subsets", INT, 1, MAX_SAMPLES),
]
assert LIMIT_REASONS  # the bounds quoted in the errors

_junk = st.from_regex(r"[a-zA-Z_][a-zA-Z_ ]{0,8}", fullmatch=True).filter(lambda t: t.strip().lower().lstrip("+-") not in ("inf", "infinity"))


def bad_values(kind: str, lo, hi):
    """Text values the flag must refuse."""
    if kind in (INT, D):
        below = st.integers(max_value=lo - 1).map(str)
        above = st.integers(min_value=hi + 1, max_value=10**40).map(lambda v: str(v) if v < 10**20 else f"{v:.3e}")
        fractional = st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: not x.is_integer()).map(repr)
        special = st.sampled_from(["nan", "1e400", "-1e400", "", " "] + ([] if kind == D else ["inf"]))
        return st.one_of(below, above, fractional, special, _junk)
    floats = st.floats(allow_nan=True, allow_infinity=True)
    if kind == POS:
        bad = floats.filter(lambda x: not (FLOAT32_TINY <= x <= FLOAT32_MAX))
    else:  # probabilities: [0, 1] (fractions [0, 1))
        bad = floats.filter(lambda x: not (0 <= x <= 1) or (kind == FRAC and x == 1) or (0 < x < FLOAT32_TINY) or math.isnan(x))
    return st.one_of(bad.map(repr), st.sampled_from(["1e400", "nan", "inf", "-inf"]), _junk)


def _one_line(capsys, argv, *needles):
    rc = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.strip() and not line.startswith("note:")]
    assert rc == 2, (argv, err)
    assert "Traceback" not in err and len(lines) == 1, err
    assert any(n in lines[0] for n in needles), (needles, lines[0])
    return lines[0]


@FAST
@given(st.data())
def test_every_bad_flag_value_is_one_line_naming_the_flag(tmp_path_factory, capsys, data):
    command, flag, kind, lo, hi = data.draw(st.sampled_from(FLAGS), label="flag")
    value = data.draw(bad_values(kind, lo, hi), label="value")
    tmp = tmp_path_factory.mktemp("f")
    base = [a.replace("{tmp}", str(tmp)) for a in BASES[command]]
    extra = ["--process", "pfgmpp"] if flag == "--D" and command != "train" else []
    out = ["--out", str(tmp / "o")] if command not in ("train", "eval") else []
    _one_line(capsys, base + extra + out + [f"{flag}={value}"], flag)
    assert not (tmp / "o").exists()  # refused before anything was written


FILE_ARGS = [
    ("toy --dataset", lambda f, t: [*TOY, "--dataset", f, "--out", t + "/o"], (".npy", ".npz", ".json")),
    ("nll --dataset", lambda f, t: ["nll", "--n", "8", "--n-data", "40", "--dataset", f, "--out", t + "/o"], (".npy", ".json")),
    ("nll --ckpt", lambda f, t: ["nll", "--ckpt", f, "--out", t + "/o"], (".pt",)),
    ("compare-solvers --ckpt", lambda f, t: [*BASES["compare-solvers"], "--ckpt", f, "--out", t + "/o"], (".pt",)),
    ("sample --ckpt", lambda f, t: ["sample", "--ckpt", f, "--out", t + "/o"], (".pt",)),
    ("train --resume", lambda f, t: ["train", "--resume", f], (".pt",)),
    ("toy --classifier-ckpt", lambda f, t: [*TOY, "--dataset", "8gaussians", "--label", "0", "--guidance", "classifier", "--classifier-ckpt", f,
                                            "--out", t + "/o"], (".pt",)),
    ("eval --inception", lambda f, t: ["eval", "fid", "--samples", "digits", "--ref", "digits", "--inception", f], (".pth",)),
    ("eval --ref", lambda f, t: ["eval", "fid", "--samples", "digits", "--ref", f, "--inception", f], (".npz",)),
    ("train --dataset", lambda f, t: ["train", "--dataset", "npz:" + f, "--steps", "1", "--out", t + "/o"], (".npz",)),
]


@FAST
@given(st.data())
def test_random_bytes_in_any_file_argument_are_one_line_naming_the_file(tmp_path_factory, capsys, data):
    name, argv_of, suffixes = data.draw(st.sampled_from(FILE_ARGS), label="route")
    suffix = data.draw(st.sampled_from(suffixes), label="suffix")
    prefix = data.draw(st.sampled_from([b"", b"PK\x03\x04", b"\x93NUMPY\x01\x00", b"PHYSGEN-CKPT\n", b"{", b"\x80\x02"]), label="prefix")
    raw = prefix + data.draw(st.binary(max_size=300), label="bytes")
    tmp = tmp_path_factory.mktemp("b")
    f = tmp / f"input{suffix}"
    f.write_bytes(raw)
    _one_line(capsys, argv_of(str(f), str(tmp)), str(f), "input")


KEYS = ["dataset", "resolution", "xflip", "cond", "label_dropout", "process", "D", "sigma_min", "sigma_max", "arch", "sample_every",
        "sample_n", "sample_steps", "sample_seed", "unet", "process_options", "train", "nope"]
TRAIN_KEYS = ["steps", "batch", "lr", "seed", "warmup_steps", "ema_halflife", "grad_clip", "micro_batch", "precision", "keep_checkpoints", "nope"]
json_values = st.recursive(st.none() | st.booleans() | st.integers(-10**25, 10**25) | st.floats(allow_nan=False, allow_infinity=False)
                           | st.sampled_from(["inf", "none", "edm", "pfgmpp", "tiny", "digits", "fp32", "x"]),
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(st.sampled_from(["a", "dropout", "rho"]), c, max_size=2), max_leaves=4)


def _equal(given_value, dumped):
    if given_value is None:  # TOML has no null: "none"
        return dumped is None or dumped == "none"
    if isinstance(given_value, float) and isinstance(dumped, (int, float)):
        return given_value == dumped
    if given_value == "inf":
        return dumped in ("inf", math.inf)
    if isinstance(given_value, str) and given_value.lower() == "none":
        return dumped is None or dumped == "none"
    if isinstance(given_value, dict) and isinstance(dumped, dict):
        return all(_equal(v, dumped.get(k)) for k, v in given_value.items())
    return given_value == dumped


@FAST
@given(top=st.dictionaries(st.sampled_from(KEYS), json_values, max_size=3), train=st.dictionaries(st.sampled_from(TRAIN_KEYS), json_values, max_size=3))
def test_config_tables_are_refused_naming_the_key_or_kept_exactly(tmp_path_factory, capsys, top, train):
    """A config is either one line naming a key, or resolved without changing any given value."""
    cfg = {**top, **({"train": train} if train and "train" not in top else {})}
    tmp = tmp_path_factory.mktemp("c")
    (tmp / "c.json").write_text(json.dumps(cfg))
    argv = ["train", "--config", str(tmp / "c.json"), "--dump-config", str(tmp / "out.toml")]
    rc = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if rc == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        table = cfg.get("train") if isinstance(cfg.get("train"), dict) else {}
        names = [k for k in cfg] + [f"train.{k}" for k in table] + ["c.json"]
        assert any(n in lines[0] for n in names), (cfg, lines[0])
        return
    assert rc == 0, err
    dumped = tomllib.loads((tmp / "out.toml").read_text())
    for key, value in cfg.items():
        if key == "train":
            assert all(_equal(v, dumped["train"][k]) for k, v in value.items()), (value, dumped["train"])
        else:
            assert _equal(value, dumped[key]), (key, value, dumped[key])


# The sampling core owns sampler options (the per-solver option table, issue 11): each of these
# is one line naming the option (and its flag).
SAMPLER_CASES = [
    ["--levels", "5"], ["--steps-per-level", "3"], ["--eps", "0.1"], ["--snr", "0.2"], ["--birth-death", "smc"],
    ["--sampler-opt", "nope=1"], ["--sampler-opt", "levels=abc", "--process", "ncsn", "--solver", "ald"],
    ["--sampler-opt", "eps=-1", "--process", "ncsn", "--solver", "ald"], ["--sampler-opt", "snr=1e400", "--solver", "pc"],
]


@pytest.mark.parametrize("extra", SAMPLER_CASES)
def test_sampler_options_a_solver_does_not_take_are_one_line(tmp_path, capsys, extra):
    _one_line(capsys, [*TOY, *extra, "--out", str(tmp_path / "o")], extra[0], extra[1].split("=")[0])
