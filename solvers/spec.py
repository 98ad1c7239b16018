"""How a solver is described in the table: what it needs, its order, its cost, its options.

Every entry of :data:`solvers.SOLVERS` is a :class:`Spec`.  The dispatcher
(:func:`solvers.solve`, and :func:`physgen.sampling.sample` above it) reads only the spec:
it checks that the object it was given offers what the solver *needs*, parses the options
against the solver's own :class:`Option` list (one clear error naming the option and what
the solver takes), and calls ``spec.fn(target, x, schedule, **options)``.  Adding a solver
is one function and one row.

Needs (the first entry names the object the solver is handed; the rest are capabilities
the dispatcher checks against what a process offers) are defined once, with their
protocols, in :data:`solvers.offers.NEED_TABLE`; :data:`NEEDS` is their words.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from .offers import NEED_TABLE

__all__ = ["Option", "Spec", "NEEDS", "OptionError", "LOOP_OPTIONS", "STOCHASTIC_OPTIONS", "takes", "parse_options", "tolerance"]

NEEDS = {name: need.words for name, need in NEED_TABLE.items()}
"""What a solver can need, in words (``--list-solvers`` and error messages use these)."""

MAX_INT_OPTION = 10**7  # no solver option counts more than this (steps, orders, levels)
FLOAT32_MAX, FLOAT32_TINY = 3.4028234663852886e38, 1.1754943508222875e-38  # the samples are float32: a float option must fit it


class OptionError(ValueError):
    """A solver option that the solver does not take, or a value of the wrong type or range
    (``option``: its name)."""

    def __init__(self, message: str, option: Optional[str] = None):
        super().__init__(message)
        self.option = option


@dataclass(frozen=True)
class Option:
    """One keyword option of a solver: its type, default, bounds and meaning.

    ``kind`` is ``bool``, ``int``, ``float`` or ``str``; ``lo``/``hi`` are inclusive bounds
    (``lo_open``: ``> lo``) and ``why`` their reason (said when a value is refused);
    ``choices`` restricts a string; ``none_ok`` admits ``None``; ``inf_ok`` admits ``inf``
    for a float.  :meth:`parse` returns the typed value or raises :class:`OptionError`
    naming the solver, the option and the value.
    """

    name: str
    kind: type
    default: Any
    help: str
    lo: Optional[float] = None
    hi: Optional[float] = None
    lo_open: bool = False
    choices: Optional[tuple] = None
    none_ok: bool = False
    inf_ok: bool = False
    why: str = ""

    def parse(self, value: Any, owner: str) -> Any:
        where = f"{owner}: option {self.name}"
        because = f" ({self.why})" if self.why else ""
        if value is None:
            if self.none_ok:
                return None
            raise OptionError(f"{where} cannot be none", self.name)
        if self.kind is bool:
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
            if not isinstance(value, bool):
                raise OptionError(f"{where} must be true or false, got {value!r}", self.name)
            return value
        if self.kind is str:
            if not isinstance(value, str):
                raise OptionError(f"{where} must be a string, got {value!r}", self.name)
            if self.choices is not None and value not in self.choices:
                raise OptionError(f"{where} must be one of {', '.join(map(str, self.choices))}; got {value!r}", self.name)
            return value
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise OptionError(f"{where} must be a number, got {value!r}", self.name) from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise OptionError(f"{where} must be a number, got {value!r}", self.name)
        if self.kind is int:
            if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
                raise OptionError(f"{where} must be an integer, got {value!r}", self.name)
            value = int(value)
            hi = MAX_INT_OPTION if self.hi is None else self.hi
            if value > hi:
                raise OptionError(f"{where} must be at most {int(hi)}, got {value!r}{because}", self.name)
            if value < -MAX_INT_OPTION:
                raise OptionError(f"{where} must be at least {-MAX_INT_OPTION}, got {value!r}", self.name)
        else:
            value = float(value)
            if math.isnan(value) or (math.isinf(value) and not self.inf_ok):
                raise OptionError(f"{where} must be finite, got {value!r}", self.name)
            if self.hi is not None and value > self.hi:
                raise OptionError(f"{where} must be <= {self.hi:g}, got {value!r}{because}", self.name)
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            raise OptionError(f"{where} must be {'>' if self.lo_open else '>='} {self.lo:g}, got {value!r}{because}", self.name)
        if self.kind is float and math.isfinite(value) and (abs(value) > FLOAT32_MAX or 0 < abs(value) < FLOAT32_TINY):
            raise OptionError(f"{where} must fit float32, the samples' precision (0 or |x| in [{FLOAT32_TINY:.3g}, "
                              f"{FLOAT32_MAX:.3g}]), got {value!r}", self.name)
        return value

    def describe(self) -> str:
        default = "none" if self.default is None else self.default
        return f"{self.name}={default} ({self.help})"


def tolerance(name: str, default: Optional[float], help: str, none_ok: bool = False) -> Option:
    """An adaptive solver's ``rtol`` or ``atol``: in ``[0, 1]``.  Below, the solver itself refuses
    a pair that is under its dtype's resolution (:func:`solvers._loop.check_tolerances`)."""
    return Option(name, float, default, help, lo=0.0, hi=1.0, none_ok=none_ok,
                  why="a tolerance above 1 accepts a step whose error is larger than the state (rtol) or than data of unit "
                      "scale (atol): the result is then not the ODE's solution")


CHECK_EVERY = Option("check_every", int, 0, "read the divergence flag every N steps (0: never inside the loop; no device sync)", lo=0)
LOOP_OPTIONS = (Option("return_trajectory", bool, False, "return every state [K+1, B, ...]"), CHECK_EVERY)
"""Options every fixed-step solver takes (handled once, by :func:`solvers._loop.run_steps`)."""
STOCHASTIC_OPTIONS = (
    Option("return_trajectory", bool, False, "return every state [K+1, B, ...]"),
    Option("check_every", int, 10, "read the divergence flag every N steps (one device sync each)", lo=1),
)
"""The same for stochastic samplers, which watch for divergence by default."""


@dataclass(frozen=True)
class Spec:
    """A row of the solver table.

    ``fn(target, x, schedule, **options) -> Solution``; ``needs`` as in the module
    docstring; ``reference`` the paper; ``grid``: ``"steps"`` (the process's integration
    grid), ``"levels"`` (the process's Langevin levels, followed by 0 for the final denoising
    step) or ``"ends"`` (the solver takes the process's grid of ``K`` steps as a budget and
    lays its own steps between the grid's ends: its trajectory is on its own points,
    ``stats.extra["grid"]``).  ``options`` default to the ones the function declared with
    :func:`takes`.

    The claims are numbers, each with an optional note (``--list-solvers`` prints both; the
    tests measure the numbers):

    ``order``
        the global order of accuracy at the default options: the error falls as ``h^order``
        on the closed-form Gaussian probability-flow ODE from σ = 80 (tests/measured_orders.py,
        which fits it for every deterministic row; adaptive rows: the order of the solution
        they propagate).  ``None`` where there is no deterministic order (Langevin, the
        score-SDE and DDPM samplers); a stochastic row that has a deterministic member
        (``eta=0``, ``s_churn=0``, births without births) gives that member's order.  An order is a lower bound there: the flow is linear in ``x``,
        and some methods do better on it (midpoint: 3).  ``order_note`` says where it changes
        (other options, a warm-up's term below some error).
    ``weak_order``
        a stochastic row's weak order (of the output law on Gaussian data, measured by
        tests/test_ancestral.py), where one is measured.
    ``nfe``
        network evaluations per step (per *attempted* step for adaptive rows), counted at the
        field by the tests; ``None`` where it is no fixed number per step (``nfe_note`` says
        what it is).
    """

    name: str
    fn: Callable
    needs: tuple
    order: Optional[float]
    nfe: Optional[float]
    reference: str
    adaptive: bool = False
    stochastic: bool = False
    options: tuple = ()
    grid: str = "steps"
    order_note: str = ""
    nfe_note: str = ""
    weak_order: Optional[float] = None

    def __post_init__(self):
        if not self.options:
            object.__setattr__(self, "options", tuple(getattr(self.fn, "options", ())))
        bad = [n for n in self.needs if n not in NEEDS]
        if bad or not self.needs:
            raise ValueError(f"solver {self.name!r}: unknown needs {bad or '(none)'}; valid: {', '.join(NEEDS)}")
        names = [o.name for o in self.options]
        if len(set(names)) != len(names):
            raise ValueError(f"solver {self.name!r}: an option is declared twice: {names}")
        for what in ("order", "nfe", "weak_order"):
            value = getattr(self, what)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf):
                raise ValueError(f"solver {self.name!r}: {what} must be a positive number or None, got {value!r}")

    @property
    def order_text(self) -> str:
        """The order as ``--list-solvers`` prints it: the number (``-`` for none), then its note
        and the weak order."""
        notes = [self.order_note] if self.order_note else []
        if self.weak_order is not None:
            notes.append(f"weak {self.weak_order:g}")
        return _with_notes(self.order, notes)

    @property
    def nfe_text(self) -> str:
        """NFE per step as ``--list-solvers`` prints it: the number (``-`` where it varies), then its note."""
        return _with_notes(self.nfe, [self.nfe_note] if self.nfe_note else [])

    @property
    def target(self) -> str:
        """The need that names the object the solver is handed."""
        return self.needs[0]

    def option(self, name: str) -> Optional[Option]:
        return next((o for o in self.options if o.name == name), None)

    def check_options(self, given: dict) -> dict:
        """The given options typed (no defaults filled in); :class:`OptionError` on a name the solver does not take."""
        known = {o.name for o in self.options}
        parsed = parse_options(self.options, {k: v for k, v in given.items() if k in known or k not in NOISE_KEYS},
                               f"solver {self.name!r}", passthrough=NOISE_KEYS)
        return {k: parsed[k] for k in given if k in parsed}


def _with_notes(value: Optional[float], notes: list) -> str:
    text = "-" if value is None else f"{value:g}"
    return f"{text} ({'; '.join(notes)})" if notes else text


def parse_options(opts: Sequence[Option], given: dict, owner: str, passthrough: Sequence[str] = ()) -> dict:
    """Every option of ``opts`` typed (the default where not given), plus the ``passthrough``
    keys as they are; :class:`OptionError` naming a key ``owner`` does not take."""
    known = {o.name: o for o in opts}
    unknown = sorted(k for k in given if k not in known and k not in passthrough)
    if unknown:
        takes = ", ".join(sorted(known)) or "no options"
        raise OptionError(f"{owner} has no option {unknown[0]!r}; it takes: {takes}", unknown[0])
    out = {k: v for k, v in given.items() if k in passthrough}
    for name, o in known.items():
        out[name] = o.parse(given[name], owner) if name in given else o.default
    return out


NOISE_KEYS = ("noise", "generator")


def takes(name: str, *opts: Option, base: Sequence[Option] = LOOP_OPTIONS, passthrough: Sequence[str] = ()):
    """Declare a solver's options in one place: the decorated ``fn(target, x, schedule, **options)``
    receives every option typed and defaulted, and carries them as ``fn.options`` for its
    table row.  ``passthrough`` keys (the noise of stochastic samplers) are not typed."""
    declared = tuple(opts) + tuple(base)

    def deco(fn):
        @functools.wraps(fn)
        def solver(target, x, schedule, **given):
            return fn(target, x, schedule, **parse_options(declared, given, f"solver {name!r}", passthrough))

        solver.options = declared
        solver.solver_name = name
        return solver

    return deco
