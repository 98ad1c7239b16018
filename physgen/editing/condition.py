"""Observing coordinates of a toy point: ``physgen toy --condition x0=1.5 --condition-method M``.

A :class:`Condition` fixes the values ``v`` of some coordinates ``O`` of the data (``x_O = v``)
and names the method that samples the others, ``x_U ~ p(x_U | x_O = v)``:

* ``smc``: twisted SMC (:func:`physgen.editing.smc_condition`, TDS arXiv 2306.17775): the
  ``n`` samples are the ``n`` particles of one population, resampled at the end, so it is
  asymptotically exact in ``n`` (processes with a Gaussian transition; refused elsewhere);
* ``blend`` / ``repaint``: known-region replacement (:func:`physgen.editing.inpaint`, RePaint
  arXiv 2201.09865 with ``jump_length`` / ``jump_n_sample``; blend has no jumps), biased;
* ``sdedit``: SDEdit (arXiv 2108.01073) at ``strength`` from the point with the observed
  coordinates at their values and the unobserved ones at the data's mean.  SDEdit edits an
  input, it does not sample a conditional: only its observed coordinates come from the
  condition, and at strength 1 it is unconditional sampling.  The experiment
  (``physgen experiment editing``) measures every method's bias.

Every method returns the full points with the observed coordinates at their values.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor

from solvers.base import Solution

from ..config import parse_float, parse_int
from ..errors import UserError, unknown_name
from .masks import check_strength, known_part, with_known
from .replacement import inpaint
from .sdedit import sdedit
from .smc import smc_condition

__all__ = ["Condition", "CONDITION_METHODS", "parse_observation", "sample_conditioned"]

CONDITION_METHODS = ("smc", "repaint", "blend", "sdedit")
MAX_OBSERVED_VALUE = 1e6
"""Largest ``|value|`` of an observed coordinate: the fields square distances in float32, which
overflow past about 1e19; 1e6 is far outside any toy data set (their spread is a few units)."""
DEFAULT_STRENGTH = 0.5  # sdedit: half the grid
DEFAULT_JUMPS = 3  # repaint: jump_length and jump_n_sample, the edit command's defaults
_OBSERVATION = re.compile(r"^x(\d+)=(.*)$")


def parse_observation(text, name: str = "--condition") -> tuple[int, float]:
    """``"x0=1.5"`` as ``(0, 1.5)``: the coordinate index and its finite value."""
    match = _OBSERVATION.match(str(text).strip())
    if match is None:
        raise UserError(f"{name} expects xI=VALUE (a coordinate index I from 0 and a number, e.g. x0=1.5), got {text!r}")
    index = parse_int(match.group(1), f"{name} coordinate x{match.group(1)}", 0, 1_000_000)
    value = parse_float(match.group(2), f"{name} x{index}", -MAX_OBSERVED_VALUE, MAX_OBSERVED_VALUE,
                        why="observed values past 1e6 lie far outside any toy data and overflow the fields' float32 distances")
    return index, value


@dataclass(frozen=True)
class Condition:
    """Observed coordinates ``((index, value), ...)`` and the method that samples the rest."""

    observed: tuple
    method: str = "smc"
    strength: Optional[float] = None  # sdedit only (default DEFAULT_STRENGTH)
    jump_length: Optional[int] = None  # repaint only (default DEFAULT_JUMPS)
    jump_n_sample: Optional[int] = None  # repaint only (default DEFAULT_JUMPS)

    def __post_init__(self):
        if self.method not in CONDITION_METHODS:
            raise unknown_name("condition method", self.method, CONDITION_METHODS)
        pairs = tuple(parse_observation(f"x{i}={v}") for i, v in self.observed)
        if not pairs:
            raise UserError("--condition needs at least one observed coordinate xI=VALUE")
        indices = [i for i, _ in pairs]
        if len(set(indices)) != len(indices):
            twice = next(i for i in indices if indices.count(i) > 1)
            raise UserError(f"--condition observes x{twice} twice; give each coordinate once")
        object.__setattr__(self, "observed", tuple(sorted(pairs)))
        for flag, value, method in (("--strength", self.strength, "sdedit"), ("--jump-length", self.jump_length, "repaint"),
                                    ("--jump-n-sample", self.jump_n_sample, "repaint")):
            if value is not None and self.method != method:
                raise UserError(f"{flag} applies to --condition-method {method}, not {self.method}")
        if self.strength is not None:
            check_strength(self.strength)
        for name in ("jump_length", "jump_n_sample"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, parse_int(value, f"--{name.replace('_', '-')}", 1, 1000))

    @classmethod
    def parse(cls, texts: Sequence[str], **options) -> "Condition":
        return cls(tuple(parse_observation(t) for t in texts), **options)

    def describe(self) -> str:
        return ",".join(f"x{i}={v:g}" for i, v in self.observed)

    def check_dim(self, dim: int) -> None:
        """Refuse a coordinate the data do not have, or observing every coordinate."""
        for i, _ in self.observed:
            if i >= dim:
                raise UserError(f"--condition x{i}=...: the data have {dim} coordinates (x0..x{dim - 1})")
        if len(self.observed) >= dim:
            raise UserError(f"--condition observes all {dim} coordinates: there is nothing left to sample")

    def mask(self, dim: int) -> Tensor:
        """1 on the observed coordinates."""
        mask = torch.zeros(dim)
        mask[[i for i, _ in self.observed]] = 1.0
        return mask

    def known(self, n: int, fill: Tensor) -> Tensor:
        """``[n, dim]`` points at ``fill`` (one point) with the observed coordinates at their values."""
        x = fill.reshape(1, -1).repeat(n, 1).clone()
        for i, v in self.observed:
            x[:, i] = v
        return x


def sample_conditioned(process, field, condition: Condition, n: int, fill: Tensor, *, solver: str = "heun",
                       steps: Optional[int] = None, schedule: Optional[str] = None, seed: int = 0, label: Optional[Tensor] = None,
                       options: Optional[dict] = None) -> Solution:
    """``n`` points with ``x_O = v`` and ``x_U`` from ``condition.method`` (module docstring).

    ``fill`` (``[dim]``, the data's mean) is the unobserved part of SDEdit's input; ``solver``,
    ``steps``, ``schedule`` and ``options`` are the unconditional sampler's (SMC runs its own
    ancestral chain on ``steps`` points of ``schedule``).  The replacement methods start from
    the prior draw of ``SeededNoise(seed, range(n))``, the unconditional toy run's own (:func:`inpaint`'s).
    """
    condition.check_dim(fill.numel())
    known = condition.known(n, fill)
    mask = condition.mask(fill.numel())
    options = dict(options or {})
    if condition.method == "smc":
        return smc_condition(process, field, known, mask, steps=steps, schedule=schedule, seed=seed, label=label)
    if condition.method == "sdedit":
        strength = DEFAULT_STRENGTH if condition.strength is None else condition.strength
        sol = sdedit(process, field, known, strength=strength, method=solver, steps=steps, schedule=schedule, seed=seed,
                     label=label, **options)
        sol.x = with_known(sol.x, mask.bool(), known_part(known, mask.bool()))
        return sol
    jumps = {}
    if condition.method == "repaint":
        jumps = dict(jump_length=condition.jump_length or DEFAULT_JUMPS, jump_n_sample=condition.jump_n_sample or DEFAULT_JUMPS)
    return inpaint(process, field, known, mask, method=solver, steps=steps, schedule=schedule, seed=seed, label=label,
                   **jumps, **options)
