"""What a process offers the solvers: each *need* defined once, with its protocol, and the
offer types that carry more than a callable (a coordinate change, a row to run through).

A solver's row (:class:`solvers.spec.Spec`) names its needs; the first is the object the
solver is handed, the rest are capabilities.  :data:`NEED_TABLE` is the one definition of
every need: its words (``--list-solvers``, error messages), its protocol
(:mod:`solvers.base`, and :class:`Score` / :class:`BirthsOffer` below) and the methods a target
must have for it (checked by :func:`solvers._loop.require`).  ``NEEDS`` in
:mod:`solvers.spec` is this table's words, nothing more.

Two offer types say what a plain object cannot:

* :class:`CoordinateChange`: the offer is integrated in coordinates of its own (VP's σ form:
  ``x̄ = x/a``, ``σ = b/a``); it maps the prior draws and the grid *to* the solver and the
  result (and its trajectory) back *from* it.  The dispatcher calls the two methods of the
  type; it never probes an offer for attributes.
* :class:`Delegating`: the offer is integrated by one row of the table (:attr:`runs`),
  which also serves other rows' names (:attr:`serves`) with options of its own.  Yukawa's
  births flow (:class:`BirthsOffer`): ``--solver heun`` steps the births sampler with
  Heun, in the process's mode.  The solver names live here, with the offer, not in the
  dispatcher.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Optional, Protocol, runtime_checkable

from torch import Tensor

from .base import SDE, DenoiserFlow, Flow, GaussianTransition, Solution

__all__ = ["Need", "NEED_TABLE", "Score", "CoordinateChange", "Delegating", "BirthsOffer", "BIRTH_MODES", "BIRTH_STEPS"]


@runtime_checkable
class Score(Protocol):
    """``score(x, s) = ∇ log p_s(x)``, optionally with ``marginal(s) -> (a, b)`` (the noise
    std ``b`` sets Langevin step sizes; without it ``b`` is the level, as for VE).  A bare
    callable ``score(x, s)`` is accepted as a score target too."""

    def score(self, x: Tensor, s: Tensor) -> Tensor: ...


@dataclass(frozen=True)
class Need:
    """One need of the solver table: ``words`` (what ``--list-solvers`` and errors say),
    ``protocol`` (the type of the object handed over; ``None`` for a capability that is no
    object) and ``methods`` (what a target must have: ``"__call__"`` for a callable;
    ``callable_ok``: a bare callable also serves, as for a score function)."""

    name: str
    words: str
    protocol: Optional[type]
    methods: tuple = ()
    callable_ok: bool = False

    def missing(self, target) -> list[str]:
        """The methods ``target`` lacks for this need (``[]`` when it meets it)."""
        if self.callable_ok and callable(target):
            return []
        return [m for m in self.methods if not (callable(target) if m == "__call__" else callable(getattr(target, m, None)))]


class CoordinateChange(ABC):
    """An offer integrated in coordinates of its own.

    ``to_solver(x, schedule) -> (x', schedule')`` maps the prior draws and the process's grid
    to the solver's; ``from_solver(solution, schedule) -> solution`` maps the result back
    (its final state and, where recorded, its trajectory, on the points the solver recorded
    it at: the grid's, or its own in ``stats.extra["grid"]``)."""

    @abstractmethod
    def to_solver(self, x: Tensor, schedule: Tensor) -> tuple[Tensor, Tensor]: ...

    @abstractmethod
    def from_solver(self, solution: Solution, schedule: Tensor) -> Solution: ...


class Delegating(ABC):
    """An offer that the row :attr:`runs` integrates, and that serves the rows named in
    :attr:`serves` through it: ``solver_options(method, given)`` are the options ``runs``
    takes for ``--solver method`` (a ``ValueError`` when ``given`` contradicts them)."""

    runs: str
    serves: tuple = ()

    @abstractmethod
    def solver_options(self, method: str, given: dict) -> dict: ...


BIRTH_MODES = ("smc", "weights", "off")
"""How the births sampler treats the death rate (:mod:`solvers.births`)."""
BIRTH_STEPS = ("heun", "euler")
"""The step rules of the births sampler for ``x`` (its ``method`` option)."""


class BirthsOffer(Delegating):
    """A births flow ``joint(x, s) -> (v, κ)``: a flow ``dx/ds = v`` with a per-particle death
    rate ``κ`` (``[B]``) from one evaluation (GenPhys, arXiv 2304.02637), with ``rate_offset``,
    the constant that keeps the log-weights small (the births sampler also takes a bare
    callable), sampled in ``mode``: the ``births`` row
    runs it, and ``--solver heun`` / ``euler`` step the births sampler with that rule (its
    log-weights by the trapezoid rule).  A ``mode`` option that disagrees with the offer's
    is refused: the sampler runs in the process's mode."""

    runs = "births"
    serves = BIRTH_STEPS
    mode: str = "smc"
    rate_offset: float = 0.0

    def solver_options(self, method: str, given: dict) -> dict:
        if given.get("mode", self.mode) != self.mode:
            raise ValueError(f"--sampler-opt mode={given['mode']} disagrees with the process's --birth-death {self.mode}: "
                             f"the births sampler runs in the process's mode (give --birth-death only)")
        return {"mode": self.mode} if method == self.runs else {"method": method, "mode": self.mode}

    @abstractmethod
    def __call__(self, x: Tensor, s: Tensor) -> tuple[Tensor, Tensor]: ...


NEED_TABLE: dict[str, Need] = {need.name: need for need in (
    Need("flow", "dx/ds = v(x, s)", Flow, ("__call__",)),
    Need("denoiser", "the denoiser form dx/dσ = (x - D(x, σ))/σ with denoise(x, σ)", DenoiserFlow, ("denoise",)),
    Need("sde", "a reverse-time SDE (drift, diffusion)", SDE, ("drift", "diffusion")),
    Need("transition", "the exact Gaussian transition x_s = r x_s' + G z with the score", GaussianTransition,
         ("score", "marginal", "transition")),
    Need("score", "the score ∇log p_s(x) with the marginal noise std", Score, ("score",), callable_ok=True),
    Need("gaussian", "a Gaussian perturbation kernel (noise injection keeps the marginals)", None),
    Need("births", "a flow with a death rate κ (births and deaths)", BirthsOffer, ("__call__",)),
)}
"""Every need, defined once (the module docstring)."""
