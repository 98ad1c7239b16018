"""physgen.config: the inf codec, parse_D, the bounded scalar parsers, KEY=VALUE options and the
dataclass <-> TOML/JSON codec."""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Union

import numpy as np
import pytest
from hypothesis import given, strategies as st

import physgen.config as config
from physgen.cli.flags import add_process_arguments, process_options
from physgen.config import (
    D_MAX, ExtraDims, FLOAT32_MAX, FLOAT32_TINY, INT64_MAX, arg, check_options, config_from_dict, config_to_dict, decode_inf, dump_config_file,
    jsonable, load_config_file, parse_D, parse_float, parse_int, parse_key_values, parse_optional, parse_probability, parse_seed,
)
from physgen.errors import UserError
from physgen.images.train import build_process, config_from_dict as image_config
from physgen.processes import make_process, process_from_record
from physgen.processes.pfgmpp import PFGMpp


# --------------------------------------------------------------------------- inf and D

@given(st.integers(1, D_MAX))
def test_parse_D_takes_every_positive_integer_in_every_spelling(n):
    assert parse_D(n) == n and parse_D(str(n)) == n
    if n < 2**53:
        assert parse_D(float(n)) == n


@pytest.mark.parametrize("text", ["inf", "INF", " Infinity ", "+inf", math.inf])
def test_parse_D_inf(text):
    assert parse_D(text) == math.inf


@pytest.mark.parametrize("bad", [0, -1, 2.5, "2.5", "abc", "", True, None, math.nan, -math.inf, "nan", [4], "-inf"])
def test_parse_D_refuses_nonsense_naming_the_flag(bad):
    with pytest.raises(UserError, match=r"^--D must be a positive integer or inf"):
        parse_D(bad, "--D")


def test_parse_D_overflow_and_size_are_named_not_silently_inf():
    with pytest.raises(UserError, match="--D got '1e400', which overflows; write inf"):
        parse_D("1e400", "--D")
    with pytest.raises(UserError, match=r"<= 9007199254740992 \(larger D are not exact"):
        parse_D(2**53 + 2, "--D")


def _count_D_reads(monkeypatch) -> list:
    """The values the body of parse_D reads (an ExtraDims passes without a read)."""
    reads, real = [], config._read_D
    monkeypatch.setattr(config, "_read_D", lambda value, name: reads.append(value) or real(value, name))
    return reads


@pytest.mark.parametrize("text,want", [("4", 4), ("inf", math.inf)])
def test_D_is_parsed_once_from_the_flag_to_the_kernel(monkeypatch, text, want):
    """``--D 4``: the flag's type reads it; make_process, PFGMpp and StudentTKernel take the
    ExtraDims it made as it is (the same object), so the text is read once on the whole path."""
    reads = _count_D_reads(monkeypatch)
    parser = argparse.ArgumentParser()
    add_process_arguments(parser)
    args = parser.parse_args(["--process", "pfgmpp", "--D", text])
    process = make_process(args.process, **process_options(args))
    assert reads == [text] and isinstance(args.D, ExtraDims) and process.D is args.D and process.D == want
    assert process.kernel.D is args.D if want != math.inf else process.kernel.gaussian
    assert process.config()["D"] == want and type(process.config()["D"]) is type(want)  # the plain number, for JSON


@pytest.mark.parametrize("source", ["record", "config file", "python"])
def test_D_is_parsed_once_from_a_file_or_a_caller(monkeypatch, source):
    """A checkpoint's process record, a train config (``"D": "inf"`` or ``128``) and a Python
    caller's ``PFGMpp(D=...)`` read D once, where it enters."""
    reads = _count_D_reads(monkeypatch)
    if source == "record":
        process = process_from_record({"name": "pfgmpp", "D": 128}, "ckpt.pt")
    elif source == "config file":
        process = build_process(image_config({"process": "pfgmpp", "D": 128}))
    else:
        process = PFGMpp(D=128)
    assert reads == [128] and process.D == 128 and process.kernel.D is process.D


@given(st.integers(1, D_MAX) | st.just(math.inf))
def test_extra_dims_prints_and_writes_as_its_number(n):
    D = parse_D(n)
    assert str(D) == f"{D}" == repr(D) == str(n) and D.number == n and type(D.number) is type(n)
    assert jsonable({"D": D}) == {"D": "inf" if n == math.inf else n} and parse_D(D) is D


@given(st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False) | st.text(max_size=5),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3), max_leaves=10))
def test_jsonable_output_is_strict_json_and_decodes_back(obj):
    text = json.dumps(jsonable(obj), allow_nan=False)  # no bare Infinity: strict JSON

    def decode(v):
        if isinstance(v, dict):
            return {k: decode(x) for k, x in v.items()}
        if isinstance(v, list):
            return [decode(x) for x in v]
        return decode_inf(v)

    def same(a, b):
        if isinstance(a, dict):
            return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        if isinstance(a, (list, tuple)):
            return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
        if isinstance(a, str) and decode_inf(a) != a:  # the text "inf" reads back as the number
            return b == decode_inf(a)
        return a == b

    assert same(obj, decode(json.loads(text)))


# --------------------------------------------------------------------------- scalars

@given(st.integers(-10**30, 10**30), st.integers(-1000, 1000), st.integers(0, 10**6))
def test_parse_int_accepts_exactly_the_range(v, lo, width):
    hi = lo + width
    for value in (v, str(v)):
        if lo <= v <= hi:
            assert parse_int(value, "--n", lo, hi) == v
        else:
            with pytest.raises(UserError, match=r"^--n must be (>=|<=)"):
                parse_int(value, "--n", lo, hi)


@pytest.mark.parametrize("bad,why", [("1e12", "<= 1000000 (why)"), ("abc", "not an integer"), ("2.5", "not an integer"), (True, "not an integer"),
                                     ("1e400", "overflows"), ("nan", "not an integer"), (None, "not an integer")])
def test_parse_int_messages(bad, why):
    with pytest.raises(UserError, match=f"^--steps .*{__import__('re').escape(why)}"):
        parse_int(bad, "--steps", 1, 10**6, "why")


def test_ints_that_overflow_64_bits_are_refused():
    with pytest.raises(UserError, match="overflows a 64-bit integer"):
        parse_int(1e23, "seed", -INT64_MAX - 1, INT64_MAX)
    with pytest.raises(UserError, match=r"seed must be <= 4611686018427387904"):
        parse_seed(1e23)
    assert parse_seed("12") == 12 and parse_seed(3.0) == 3


@given(st.floats(allow_nan=True, allow_infinity=True, width=64))
def test_parse_float_only_returns_what_a_float32_tensor_holds(x):
    try:
        y = parse_float(x, "--sigma-max", 0.0, lo_open=True)
    except UserError as exc:
        assert str(exc).startswith("--sigma-max ")
        assert not (0 < x <= FLOAT32_MAX and x >= FLOAT32_TINY)
        return
    assert y == x and FLOAT32_TINY <= y <= FLOAT32_MAX
    assert np.isfinite(np.float32(y)) and np.float32(y) > 0


@pytest.mark.parametrize("bad,frag", [("1e308", "overflows float32"), ("1e-50", "underflows float32"), ("inf", "must be finite"),
                                      ("nan", "not a number"), ("0", "must be > 0"), ("x", "not a number"), ("1e400", "overflows")])
def test_parse_float_messages(bad, frag):
    with pytest.raises(UserError, match=frag):
        parse_float(bad, "--atol", 0.0, lo_open=True)


def test_probability_and_optional():
    assert parse_probability("0", "p") == 0 and parse_probability(1, "p") == 1
    with pytest.raises(UserError, match="must be < 1"):
        parse_probability(1.0, "p", hi_open=True)
    with pytest.raises(UserError, match="must be >= 0"):
        parse_probability(-0.1, "p")
    opt = parse_optional(parse_float)
    assert opt("none", "x") is None and opt("OFF", "x") is None and opt(None, "x") is None and opt("2", "x") == 2.0


def test_arg_makes_one_line_argparse_errors():
    p = argparse.ArgumentParser(prog="t", exit_on_error=False)
    p.add_argument("--steps", type=arg(parse_int, 1, 100, "too many"))
    assert p.parse_args(["--steps", "1e2"]).steps == 100
    with pytest.raises(argparse.ArgumentError, match=r"argument --steps: must be <= 100 \(too many\), got '1e3'"):
        p.parse_args(["--steps", "1e3"])


# --------------------------------------------------------------------------- KEY=VALUE

@given(st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True),
                       st.integers(-10**9, 10**9) | st.floats(allow_nan=False, allow_infinity=False, width=32) | st.booleans()
                       | st.lists(st.integers(0, 9), max_size=3), max_size=4))
def test_key_values_round_trip_json(d):
    items = [f"{k}={json.dumps(v)}" for k, v in d.items()]
    assert parse_key_values(items, "--opt") == d


@pytest.mark.parametrize("item,frag", [("noequals", "expects KEY=VALUE"), ("=3", "expects KEY=VALUE"), ("1a=3", "expects KEY=VALUE"),
                                       ("x=1e400", "--opt x: 1e400 overflows"), ("x=NaN", "--opt x"),
                                       ("x=123456789012345678901234", "overflows a 64-bit integer")])
def test_key_values_refuse_bad_items(item, frag):
    with pytest.raises(UserError, match=frag):
        parse_key_values([item], "--opt")
    with pytest.raises(UserError, match="given twice"):
        parse_key_values(["a=1", "a=2"], "--opt")
    assert parse_key_values(["sigma-max=hello world"], "--opt") == {"sigma_max": "hello world"}


def _target(rho=7.0, steps: int = 3, name="x", sizes: Sequence[int] = (1, 2), D=128, extra=None):
    return rho, steps, name, sizes, D, extra


def test_check_options_checks_names_and_types_against_the_signature():
    got = check_options(_target, {"rho": 2, "steps": 4.0, "sizes": [3], "D": "inf", "extra": [1]}, "thing", custom={"D": parse_D})
    assert got == {"rho": 2.0, "steps": 4, "sizes": [3], "D": math.inf, "extra": [1]}
    for opts, frag in [({"nope": 1}, "thing has no option 'nope'.*it takes: rho, steps"), ({"rho": "abc"}, "thing rho must be a number, got 'abc'"),
                       ({"rho": [1]}, "thing rho must be a number"), ({"steps": 2.5}, "thing steps got 2.5, not an integer"),
                       ({"name": 3}, "thing name must be a string"), ({"sizes": "12"}, "thing sizes must be a list"),
                       ({"rho": 1e39}, "overflows float32")]:
        with pytest.raises(UserError, match=frag):
            check_options(_target, opts, "thing")


# --------------------------------------------------------------------------- dataclasses <-> files

@dataclass
class Inner:
    batch: int = 8
    lr: float = 1e-3
    clip: Optional[float] = None


@dataclass
class Outer:
    name: str = "a"
    D: Optional[Union[int, float]] = field(default=None, metadata={"parse": parse_optional(parse_D)})
    flag: bool = False
    table: Dict[str, float] = field(default_factory=dict)
    inner: Inner = field(default_factory=lambda: Inner(batch=64))


@given(name=st.text(max_size=8), D=st.none() | st.integers(1, 10**9) | st.just(math.inf), flag=st.booleans(),
       batch=st.integers(-10**12, 10**12), lr=st.floats(-1e30, 1e30).filter(lambda x: x == 0 or abs(x) >= FLOAT32_TINY), clip=st.none() | st.floats(0, 10).filter(lambda x: x == 0 or x >= FLOAT32_TINY),
       suffix=st.sampled_from([".toml", ".json"]))
def test_dataclass_round_trips_through_toml_and_json(tmp_path_factory, name, D, flag, batch, lr, clip, suffix):
    c = Outer(name=name, D=D, flag=flag, table={"a": 1.5}, inner=Inner(batch, lr, clip))
    path = dump_config_file(config_to_dict(c), tmp_path_factory.mktemp("cfg") / f"c{suffix}")
    assert config_from_dict(Outer, load_config_file(path), str(path)) == c


def test_config_keys_and_types_are_checked_naming_the_key():
    assert config_from_dict(Outer, {"inner": {"lr": 2}}).inner == Inner(batch=64, lr=2.0)  # absent keys: the default instance's
    cases = [({"nope": 1}, "unknown config key 'nope'"), ({"batch": 1}, r"'batch' belongs in the \[inner\] table"),
             ({"inner": {"batch": "many"}}, "'inner.batch' must be an integer, got 'many'"), ({"inner": {"batch": 1e23}}, "overflows a 64-bit"),
             ({"flag": "yes"}, "'flag' must be true or false"), ({"table": {"a": "x"}}, r"'table.a' must be a number"),
             ({"inner": 3}, "'inner' must be a table"), ({"D": 0}, "'D' must be a positive integer or inf"), ({"name": None}, "cannot be none")]
    for d, frag in cases:
        with pytest.raises(UserError, match=frag):
            config_from_dict(Outer, d)


@pytest.mark.parametrize("text,frag", [('{"D": 1e400}', "1e400 overflows"), ('{"D": NaN}', "NaN is not JSON"),
                                       ('{"D": Infinity}', 'Infinity is not JSON .write "inf"'), ('{"D": [-Infinity]}', "-Infinity is not JSON"), ("[1, 2]", "must hold a table"),
                                       ('{"a": ', "invalid JSON"), ('{"seed": 123456789012345678901234}', "overflows a 64-bit")])
def test_config_files_refuse_overflowing_literals(tmp_path, text, frag):
    path = tmp_path / "c.json"
    path.write_text(text)
    with pytest.raises(UserError, match=frag):
        load_config_file(path)
    toml = tmp_path / "c.toml"
    toml.write_text("D = 1e400\n")
    with pytest.raises(UserError, match="overflows"):
        load_config_file(toml)
    toml.write_text("D = inf\n")
    assert load_config_file(toml) == {"D": math.inf}
