"""Configuration values: one codec for ``inf``, one parser for ``D``, dataclasses <-> TOML/JSON,
typed and bounded scalar parsers for the command line, and ``KEY=VALUE`` options.

Every value a user types or writes in a file passes through one of these, so that a bad one
is one :class:`~physgen.errors.UserError` naming the flag or key and the value:

* **inf**: JSON has no infinity, so ``inf`` is written as the string ``"inf"``
  (:func:`jsonable`) and read back from ``"inf"``/``"infinity"``/``"+inf"`` (any case) or a
  float ``inf`` (:func:`decode_inf`).  A *number* that overflows (``1e400``) is an error,
  never a silent ``inf``.
* **D** (PFGM++ extra dimensions, arXiv 2302.04265): :func:`parse_D`, a positive integer up
  to ``2^53`` or ``inf``, as the typed :class:`ExtraDims` that travels to the kernel unparsed.
* **dataclasses**: :func:`config_from_dict` checks every key against the dataclass's fields
  and every value against the field's annotated type (``Optional``, ``bool``, ``int``,
  ``float``, ``str``, tables, lists, nested dataclasses as tables), naming ``table.key``;
  :func:`load_config_file` / :func:`dump_config_file` read and write TOML or JSON.
* **scalars**: :func:`parse_int`, :func:`parse_float`, :func:`parse_probability`,
  :func:`parse_steps`, :func:`parse_seed` check a value from anywhere (flag, JSON, config); :func:`arg` turns one
  into an ``argparse`` ``type=`` (the message then follows ``argument --flag:``).
  Floats must fit float32 (tensors are float32): ``--sigma-max 1e308`` is refused.
* **options**: :func:`parse_key_values` (``--process-opt KEY=VALUE``, JSON values) and
  :func:`check_options`, which checks names and types against a callable's signature.
"""
from __future__ import annotations

import argparse
import collections.abc as abc
import dataclasses
import inspect
import json
import math
import re
import tomllib
import typing
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from .errors import UserError
from .io import atomic_write, jsonable, write_json

__all__ = ["INF_STRINGS", "decode_inf", "jsonable", "ExtraDims", "parse_D", "D_MAX", "config_from_dict", "config_to_dict", "load_config_file",
           "read_json", "dump_config_file", "toml_text", "parse_int", "parse_float", "parse_probability", "parse_steps", "parse_seed",
           "parse_optional", "arg", "parse_key_values", "check_options", "FLOAT32_MAX", "FLOAT32_TINY", "INT64_MAX", "SEED_MAX",
           "MAX_STEPS", "MAX_TRAIN_STEPS", "MAX_SAMPLES", "MAX_BATCH", "MAX_WIDTH", "MAX_DEPTH", "MAX_RESOLUTION", "MAX_LEVELS", "MAX_LR", "TOLERANCE_RANGE",
           "LIMIT_REASONS"]

INF_STRINGS = ("inf", "+inf", "infinity", "+infinity")
NONE_STRINGS = ("none", "null")
FLOAT32_MAX = float(np.finfo(np.float32).max)  # 3.4e38: larger values become inf in a tensor
FLOAT32_TINY = float(np.finfo(np.float32).tiny)  # 1.2e-38: smaller positive values lose precision, then become 0
INT64_MAX = 2**63 - 1
D_MAX = 2**53  # beyond this D is not an exact float64 and D/2 rounds; use inf for the limit

# Upper bounds on sizes, each with the reason it is there (quoted in the error).
SEED_MAX = 2**62  # seeds are offset by small constants for held-out sets and must stay a 64-bit generator seed
MAX_STEPS = 100_000  # a step is at least one field evaluation; past this an adaptive solver (dopri5) is the tool
MAX_TRAIN_STEPS = 100_000_000  # the loss history keeps one number per step
MAX_SAMPLES = 10_000_000  # samples (and their trajectories) are held in memory at once
MAX_BATCH = 1_000_000  # one forward pass holds the whole batch
MAX_WIDTH = 65_536  # network widths: the weights are width^2 numbers
MAX_DEPTH = 1_000
MAX_RESOLUTION = 4096
MAX_LEVELS = 100_000  # annealed Langevin: levels x steps per level network evaluations
MAX_LR = 1.0  # Adam moves every weight by about lr per step
TOLERANCE_RANGE = (10 * 2.0**-52, 1.0)  # an ODE solver's rtol/atol: float64's resolution .. the state's own size

LIMIT_REASONS = {
    "seed": "a 64-bit generator seed, with room for the held-out offsets",
    "steps": "each step is at least one field evaluation; above that use an adaptive solver such as dopri5",
    "train_steps": "the loss history keeps one number per step",
    "samples": "samples are held in memory at once",
    "batch": "one forward pass holds the whole batch",
    "width": "the weights grow as width^2",
    "depth": "one block per unit of depth",
    "resolution": "images are held in memory at this size",
    "levels": "each level costs its steps in field evaluations",
    "lr": "Adam moves every weight by about lr per step, and the networks' weights are of order 0.1: at 1 a step replaces them",
    "tolerance": "an adaptive solver's error per step relative to the state (rtol) or to unit-scale data (atol): above 1 it "
                 "accepts any step, and below 10x float64's resolution no floating-point solve can meet it",
}


class _Bad(Exception):
    """A value's problem, without the name of where it came from (added by the caller)."""


# --------------------------------------------------------------------------- inf and D


def decode_inf(value: Any) -> Any:
    """``"inf"``-like strings (any case) -> ``math.inf``, ``"-inf"`` -> ``-math.inf``; other values as they are."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in INF_STRINGS:
            return math.inf
        if text in ("-inf", "-infinity"):
            return -math.inf
    return value


class ExtraDims(float):
    """PFGM++'s ``D`` (arXiv 2302.04265, eq. 4): the number of augmented dimensions, a positive
    integer up to ``2^53`` or ``inf`` (the ``D -> ∞`` limit, EDM's Gaussian kernel).

    Made only by :func:`parse_D`, where the value enters (the ``--D`` flag's type, a config
    file's or a checkpoint record's ``D``, a Python caller's argument), and handed down as it is
    (``make_process`` -> ``PFGMpp`` -> ``StudentTKernel``): a value of this type is never parsed
    again.  A float, so that it enters the kernel's formulas (``r = σ √D``, ``D/2``) and the test
    ``D == math.inf`` as the number it is; it prints as that number (``128``, ``inf``) and is
    written to JSON as :attr:`number` (:func:`physgen.io.jsonable`)."""

    __slots__ = ()

    @property
    def number(self) -> Union[int, float]:
        """``D`` as a plain number: an ``int``, or ``math.inf``."""
        return math.inf if self == math.inf else int(self)

    def json_value(self) -> Union[int, float]:
        return self.number

    def __repr__(self) -> str:
        return str(self.number)

    __str__ = __repr__


def parse_D(value: Any, name: str = "D") -> ExtraDims:
    """The one parser of PFGM++'s ``D``: a positive integer (``int``, integral float, or text such
    as ``"128"``, ``"1e3"``) up to ``2^53``, or ``inf`` (text or float) for the Gaussian limit, as
    an :class:`ExtraDims`.  An :class:`ExtraDims` was parsed where it entered and is returned as it is."""
    if isinstance(value, ExtraDims):
        return value
    return ExtraDims(_read_D(value, name))


def _read_D(value: Any, name: str) -> Union[int, float]:
    if decode_inf(value) == math.inf:
        return math.inf
    try:
        return _int(value, 1, D_MAX, "larger D are not exact in float64; write inf for the D -> infinity limit")
    except _Bad as bad:
        text = str(bad)
        if "overflows" in text:
            raise UserError(f"{name} {text}; write inf for the D -> infinity limit") from None
        if "(larger D" in text:
            raise UserError(f"{name} {text}") from None
        raise UserError(f"{name} must be a positive integer or inf, got {_show(value)}") from None


# --------------------------------------------------------------------------- scalars


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str, np.integer, np.floating)):
        raise _Bad(f"got {_show(value)}, not a number")
    try:
        return float(value)
    except (ValueError, OverflowError):
        raise _Bad(f"got {_show(value)}, not a number") from None


def _is_inf_literal(value: Any) -> bool:
    """``inf`` itself (a float, or the text ``inf``/``infinity``), as opposed to ``1e400``."""
    return isinstance(value, (float, np.floating)) or (isinstance(value, str) and value.strip().lower().lstrip("+-") in ("inf", "infinity"))


def _int(value: Any, lo: int, hi: int, why: Optional[str]) -> int:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        out = int(value)
    else:
        if isinstance(value, str):
            try:
                out = int(value.strip())
            except ValueError:
                out = None
        else:
            out = None
        if out is None:
            try:
                x = _number(value)
            except _Bad:
                raise _Bad(f"got {_show(value)}, not an integer") from None
            if math.isinf(x) and not _is_inf_literal(value):
                raise _Bad(f"got {_show(value)}, which overflows")
            if not math.isfinite(x) or not x.is_integer():
                raise _Bad(f"got {_show(value)}, not an integer")
            out = int(x)
    if abs(out) > INT64_MAX and hi >= INT64_MAX:
        raise _Bad(f"got {_show(value)}, which overflows a 64-bit integer")
    if out < lo:
        raise _Bad(f"must be >= {lo}, got {_show(value)}")
    if out > hi:
        raise _Bad(f"must be <= {hi}{f' ({why})' if why else ''}, got {_show(value)}")
    return out


def _float(value: Any, lo: Optional[float], hi: Optional[float], lo_open: bool, hi_open: bool, allow_inf: bool, why: Optional[str] = None) -> float:
    x = _number(value)
    if math.isnan(x):
        raise _Bad(f"got {_show(value)}, not a number")
    if math.isinf(x) and not allow_inf:
        raise _Bad(f"must be finite, got {_show(value)}" if _is_inf_literal(value) else f"got {_show(value)}, which overflows")
    if math.isfinite(x) and abs(x) > FLOAT32_MAX:
        raise _Bad(f"got {_show(value)}, which overflows float32 (|x| <= {FLOAT32_MAX:.3g})")
    if x != 0 and math.isfinite(x) and abs(x) < FLOAT32_TINY:
        raise _Bad(f"got {_show(value)}, which underflows float32 (|x| >= {FLOAT32_TINY:.3g} or 0)")
    because = f" ({why})" if why else ""
    if lo is not None and (x < lo or (lo_open and x == lo)):
        raise _Bad(f"must be {'>' if lo_open else '>='} {lo:g}{because}, got {_show(value)}")
    if hi is not None and (x > hi or (hi_open and x == hi)):
        raise _Bad(f"must be {'<' if hi_open else '<='} {hi:g}{because}, got {_show(value)}")
    return x


def parse_int(value: Any, name: str, lo: int = 1, hi: int = INT64_MAX, why: Optional[str] = None) -> int:
    """An integer in ``[lo, hi]`` from an int, an integral float (JSON's ``1e3``) or text
    (``"1000"``, ``"1e3"``); ``why`` says why ``hi`` is the bound (quoted in the error)."""
    try:
        return _int(value, lo, hi, why)
    except _Bad as bad:
        raise UserError(f"{name} {bad}") from None


def parse_float(value: Any, name: str, lo: Optional[float] = None, hi: Optional[float] = None, *, lo_open: bool = False,
                hi_open: bool = False, allow_inf: bool = False, why: Optional[str] = None) -> float:
    """A float in the given range that a float32 tensor can hold (no overflow to inf, no
    underflow of a non-zero value to 0); NaN always and infinity unless ``allow_inf`` refused;
    ``why`` says why the range is what it is (quoted in the error).
    ``parse_float(v, "--lr", 0, MAX_LR, lo_open=True, why=LIMIT_REASONS["lr"])`` is a learning rate."""
    try:
        return _float(value, lo, hi, lo_open, hi_open, allow_inf, why)
    except _Bad as bad:
        raise UserError(f"{name} {bad}") from None


def parse_probability(value: Any, name: str, *, hi_open: bool = False) -> float:
    """A probability in ``[0, 1]`` (``[0, 1)`` with ``hi_open``)."""
    return parse_float(value, name, 0.0, 1.0, hi_open=hi_open)


def parse_steps(value: Any, name: str = "--steps") -> int:
    """A number of integration steps (or noise levels) in ``[1, MAX_STEPS]``: the one check of a step
    count, made where it enters (the ``--steps`` flag's type, a config file, :func:`physgen.sampling.grid`
    for a Python caller) and nowhere below."""
    return parse_int(value, name, 1, MAX_STEPS, LIMIT_REASONS["steps"])


def parse_seed(value: Any, name: str = "seed") -> int:
    """A seed: an integer in ``[0, 2^62]``."""
    return parse_int(value, name, 0, SEED_MAX, LIMIT_REASONS["seed"])


def parse_optional(parse: Callable[..., Any]) -> Callable[..., Any]:
    """``parse`` that also takes ``none``/``null``/``off`` (any case) or ``None`` as ``None``."""

    def optional(value: Any, *args: Any, **kwargs: Any) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() in (*NONE_STRINGS, "off")):
            return None
        return parse(value, *args, **kwargs)

    optional.__name__ = f"optional_{getattr(parse, '__name__', 'value')}"
    return optional


def arg(parse: Callable[..., Any], *args: Any, **kwargs: Any) -> Callable[[str], Any]:
    """An ``argparse`` ``type=`` from a parser above: ``type=arg(parse_int, 1, MAX_STEPS, LIMIT_REASONS["steps"])``.

    The parser's error becomes argparse's one line ``argument --steps: must be in [1, 1000000]
    (each step is at least one field evaluation), got '1e12'`` (exit status 2).
    """

    def parse_arg(text: str) -> Any:
        try:
            return parse(text, "", *args, **kwargs)
        except UserError as exc:
            raise argparse.ArgumentTypeError(str(exc).strip()) from None

    parse_arg.__name__ = getattr(parse, "__name__", "value").replace("parse_", "")
    return parse_arg


# --------------------------------------------------------------------------- KEY=VALUE options

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _json_value(text: str, where: str) -> Any:
    """JSON when it parses (numbers, true/false, null, lists, objects), else the text itself."""
    try:
        value = json.loads(text, parse_float=_file_float, parse_int=_file_int)
    except _Bad as bad:
        raise UserError(f"{where}: {bad}") from None
    except (json.JSONDecodeError, RecursionError):
        return text
    return _check_json(value, where)


def _check_json(value: Any, where: str) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{where}: {value!r} is not a finite number (write \"inf\" for infinity where it is allowed)")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > INT64_MAX:
        raise UserError(f"{where}: {value} overflows a 64-bit integer")
    if isinstance(value, list):
        return [_check_json(v, where) for v in value]
    if isinstance(value, dict):
        return {k: _check_json(v, f"{where}.{k}") for k, v in value.items()}
    return value


def parse_key_values(items: Iterable[str], flag: str) -> dict:
    """``KEY=VALUE`` pairs as a dict: ``-`` in keys becomes ``_``; a VALUE that is JSON is
    parsed (``1e-3``, ``true``, ``[1, 2]``, ``null``), any other VALUE stays text.  Keys must
    be identifiers and appear once; JSON numbers must be finite and fit 64 bits."""
    opts: dict = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not _KEY.match(key):
            raise UserError(f"{flag} expects KEY=VALUE with KEY a name, got {item!r}")
        if key in opts:
            raise UserError(f"{flag} {key} is given twice")
        opts[key] = _json_value(value, f"{flag} {key}")
    return opts


def _expected(annotation: Any, default: Any) -> Any:
    """The type a keyword expects: its annotation, else the type of its default."""
    if annotation is not inspect.Parameter.empty and not isinstance(annotation, str):
        return annotation
    if default is inspect.Parameter.empty or default is None:
        return Any
    if isinstance(default, bool):
        return bool
    if isinstance(default, float):
        return float
    if isinstance(default, int):
        return int
    if isinstance(default, str):
        return str
    if isinstance(default, (tuple, list)):
        return Sequence[Any]
    return Any


def check_options(fn: Callable[..., Any], options: Mapping[str, Any], where: str, *, skip: Sequence[str] = ("self",),
                  custom: Optional[Mapping[str, Callable[[Any, str], Any]]] = None) -> dict:
    """``options`` checked against ``fn``'s keywords: unknown names list the valid ones, values
    are coerced to the annotated type (or the type of the default; ``None`` stays ``None``,
    meaning "default") with errors naming ``where KEY``; ``custom`` maps a keyword to its own
    parser ``parse(value, name)`` (e.g. ``{"D": parse_D}``).  Returns the coerced options."""
    params = {k: p for k, p in inspect.signature(fn).parameters.items() if k not in skip and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable forward references: fall back to the defaults' types
        hints = {}
    out = {}
    for key, value in options.items():
        if key not in params:
            raise UserError(f"{where} has no option {key!r} (unknown {where.split()[0]} option); it takes: {', '.join(params) or 'none'}")
        if value is None:
            out[key] = None
            continue
        if custom and key in custom:
            out[key] = custom[key](value, f"{where} {key}")
            continue
        expected = _expected(hints.get(key, params[key].annotation), params[key].default)
        out[key] = _coerce(expected, value, f"{where} {key}")
    return out


# --------------------------------------------------------------------------- typed coercion


def _coerce(tp: Any, value: Any, key: str, label: str = "{}") -> Any:
    """``value`` as type ``tp``; errors name ``label.format(key)`` (nested keys: ``key.sub``, ``key[i]``)."""
    name = label.format(key)
    origin, targs = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is object:
        return _check_json(value, name) if isinstance(value, (int, float, list, dict)) else value
    if origin is Union:
        if value is None or (isinstance(value, str) and value.strip().lower() in NONE_STRINGS and type(None) in targs):
            if type(None) in targs:
                return None
            raise UserError(f"{name} cannot be none")
        options = [t for t in targs if t is not type(None)]
        errors = []
        for option in options:
            try:
                return _coerce(option, value, key, label)
            except UserError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        raise UserError(f"{name} must be {' or '.join(_type_name(t) for t in options)}, got {_show(value)}")
    if value is None:
        raise UserError(f"{name} cannot be none")
    if tp is ExtraDims:
        return parse_D(value, name)
    if dataclasses.is_dataclass(tp):
        return config_from_dict(tp, value, where=name) if isinstance(value, dict) else _type_error(name, tp, value)
    if tp is bool:
        return value if isinstance(value, bool) else _type_error(name, tp, value)
    if tp is int:
        if isinstance(value, (str, bool)) or not isinstance(value, (int, float, np.integer, np.floating)):
            _type_error(name, tp, value)
        return parse_int(value, name, -INT64_MAX - 1, INT64_MAX)
    if tp is float:
        if isinstance(value, str) and decode_inf(value) == value or isinstance(value, bool) or not isinstance(value, (int, float, str, np.number)):
            _type_error(name, tp, value)
        return parse_float(decode_inf(value), name, allow_inf=True)
    if tp is str:
        return value if isinstance(value, str) else _type_error(name, tp, value)
    if tp is dict or origin in (dict, abc.Mapping, abc.MutableMapping):
        if not isinstance(value, dict):
            _type_error(name, tp, value)
        inner = targs[1] if len(targs) == 2 else Any
        return {k: _coerce(inner, v, f"{key}.{k}", label) for k, v in value.items()}
    if tp in (list, tuple) or origin in (list, tuple) or _is_abc_sequence(origin):
        if not isinstance(value, (list, tuple)):
            _type_error(name, tp, value)
        homogeneous = len(targs) == 1 or (len(targs) == 2 and targs[1] is Ellipsis)
        inner = targs[0] if homogeneous else Any
        items = [_coerce(inner, v, f"{key}[{i}]", label) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple or tp is tuple else items
    return value  # types this codec does not know are passed through to the receiver's own checks


def _is_abc_sequence(origin: Any) -> bool:
    return origin in (abc.Sequence, abc.MutableSequence, abc.Iterable, abc.Collection)


def _type_name(tp: Any) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a table"}
    if tp in names:
        return names[tp]
    origin = typing.get_origin(tp)
    if origin in (dict, abc.Mapping, abc.MutableMapping) or tp is dict:
        return "a table"
    if origin in (list, tuple) or _is_abc_sequence(origin):
        return "a list"
    if dataclasses.is_dataclass(tp):
        return "a table"
    return getattr(tp, "__name__", str(tp))


def _type_error(name: str, tp: Any, value: Any) -> Any:
    raise UserError(f"{name} must be {_type_name(tp)}, got {_show(value)}")


# --------------------------------------------------------------------------- dataclasses <-> files


def _nested_fields(cls: type) -> dict:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if dataclasses.is_dataclass(hints[f.name])}


def config_from_dict(cls: type, d: Any, where: str = "config", *, prefix: str = "") -> Any:
    """An instance of dataclass ``cls`` from a (parsed file's) dict.

    Unknown keys raise a :class:`UserError` naming the key and listing the valid ones (with a
    hint when the key belongs in a nested table); values are coerced to the fields' annotated
    types (errors name ``prefix.key``).  A nested dataclass field is a table whose absent keys
    keep that field's *default instance*'s values (so ``[train] batch = 64`` changes only the
    batch of the default training settings).  A field whose metadata has ``"parse"`` is parsed
    by it (``parse(value, name)``) instead.  Absent keys keep the defaults; the dataclass's
    own ``__post_init__`` then checks ranges.
    """
    if not isinstance(d, dict):
        raise UserError(f"{where}{': ' + prefix.rstrip('.') if prefix else ''} must be a table of settings, got {_show(d)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    nested = _nested_fields(cls)
    bad = sorted(set(d) - set(fields))
    if bad:
        home = next((n for n, t in nested.items() if bad[0] in {f.name for f in dataclasses.fields(t)}), None)
        hint = f" ({bad[0]!r} belongs in the [{prefix}{home}] table)" if home else ""
        raise UserError(f"unknown config key {prefix + bad[0]!r} in {where}{hint}; valid keys: {', '.join(sorted(fields))}")
    kwargs = {}
    for name, value in d.items():
        key = prefix + name
        if name in nested:
            f = fields[name]
            base = f.default_factory() if f.default_factory is not dataclasses.MISSING else nested[name]()
            table = {**config_to_dict(base, encode=False), **(value if isinstance(value, dict) else _type_error(f"config key {key!r}", dict, value))}
            kwargs[name] = config_from_dict(nested[name], table, where, prefix=key + ".")
        elif "parse" in fields[name].metadata:  # a field with its own parser (e.g. D: parse_D)
            kwargs[name] = fields[name].metadata["parse"](value, f"config key {key!r}")
        else:
            kwargs[name] = _coerce(hints[name], value, key, "config key '{}'")
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a dataclass without defaults for some fields
        raise UserError(f"{where}: {exc}") from None


def config_to_dict(obj: Any, *, encode: bool = True) -> dict:
    """``dataclasses.asdict(obj)``, with infinities as ``"inf"`` when ``encode`` (JSON-able)."""
    d = dataclasses.asdict(obj)
    return jsonable(d) if encode else d


def read_json(path: Any, what: str = "JSON file") -> Any:
    """The JSON value in ``path``, read strictly: numbers that overflow (``1e400``), ``NaN``
    and ``Infinity`` literals and integers beyond 64 bits are refused; every failure (missing,
    unreadable, invalid, absurdly nested) is one UserError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {str(path)!r} does not exist")
    try:
        return json.loads(path.read_text(), parse_float=_file_float, parse_constant=_file_constant, parse_int=_file_int)
    except _Bad as bad:
        raise UserError(f"{what} {str(path)!r}: {bad}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{what} {str(path)!r}: cannot read: {exc}") from None
    except (json.JSONDecodeError, RecursionError, ValueError) as exc:
        raise UserError(f"{what} {str(path)!r}: invalid JSON: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def load_config_file(path: Any, what: str = "config file") -> dict:
    """The dict in a ``.toml`` or ``.json`` file (UserError naming the file when unreadable)."""
    path = Path(path)
    if path.suffix.lower() not in (".toml", ".json"):
        raise UserError(f"{what} {str(path)!r} must end in .toml or .json")
    if not path.is_file():
        raise UserError(f"{what} {str(path)!r} does not exist")
    if path.suffix.lower() == ".json":
        data = read_json(path, what)
    else:
        try:
            data = tomllib.loads(path.read_text(), parse_float=_file_float)
        except _Bad as bad:
            raise UserError(f"{what} {str(path)!r}: {bad}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError, ValueError) as exc:
            raise UserError(f"cannot parse {what} {str(path)!r}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise UserError(f"{what} {str(path)!r} must hold a table/object of settings")
    return data


def _file_float(text: str) -> float:
    """A float literal of a config file: NaN refused, and a literal that overflows to inf
    (``1e400``) refused, so that only ``inf`` itself means infinity."""
    x = float(text)
    bare = text.strip().lower().lstrip("+-")
    if math.isnan(x):
        raise _Bad(f"{text} is not a number")
    if math.isinf(x) and bare not in ("inf", "infinity"):
        raise _Bad(f"{text} overflows (write inf for infinity where it is allowed)")
    return x


def _file_constant(text: str) -> float:
    """``Infinity``, ``-Infinity`` and ``NaN``: Python's JSON extensions, refused in files.
    Every JSON file physgen writes goes through :func:`physgen.io.jsonable` (infinity as
    ``"inf"``); only ``physgen toy`` before the codec wrote ``"D": Infinity`` into its
    ``config.json``, a record no command reads back."""
    hint = " (write \"inf\" where infinity is allowed)" if "inf" in text.lower() else ""
    raise _Bad(f"{text} is not JSON{hint}")


def _file_int(text: str) -> int:
    if len(text.lstrip("+-")) > 19 and abs(int(text)) > INT64_MAX:
        raise _Bad(f"{text} overflows a 64-bit integer")
    return int(text)


def _toml_value(v: Any, key: str) -> str:
    if v is None:
        return '"none"'
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):  # a TOML basic string: JSON's escapes, raw non-ASCII (TOML has no surrogate pairs), DEL escaped
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x, key) for x in v) + "]"
    raise UserError(f"cannot write {key} = {v!r} to TOML")


def toml_text(d: Mapping[str, Any], prefix: str = "") -> str:
    """TOML for a dict of scalars, lists and (nested) tables; ``None`` is written ``"none"``
    (TOML has no null; :func:`config_from_dict` reads it back as ``None``)."""
    lines = [f"{k} = {_toml_value(v, prefix + k)}" for k, v in d.items() if not isinstance(v, dict)]
    for k, v in d.items():
        if isinstance(v, dict):
            name = f"{prefix}{k}"
            lines += ["", f"[{name}]", toml_text(v, name + ".")]
    return "\n".join(lines)


def dump_config_file(d: Mapping[str, Any], path: Any, what: str = "config file") -> Path:
    """Write ``d`` as TOML or JSON (by suffix), atomically."""
    path = Path(path)
    if path.suffix.lower() == ".toml":
        with atomic_write(path, "w") as f:
            f.write(toml_text(dict(d)) + "\n")
    elif path.suffix.lower() == ".json":
        write_json(path, dict(d))
    else:
        raise UserError(f"{what} {str(path)!r} must end in .toml or .json")
    return path
