"""Noisy linear observations of a toy point: ``physgen toy --observe-A A --observe-y Y --observe-noise σ``.

A :class:`LinearObservation` is the measurement model ``y = A x + n``, ``n ~ N(0, σ_y² I_m)``,
with ``A`` an ``m x N`` matrix acting on the ``N`` coordinates of a point, and the measured
``y``.  The posterior ``p(x | y) ∝ p(x) N(y; A x, σ_y² I)`` is sampled by twisted SMC
(:func:`physgen.editing.smc_observe`, TDS arXiv 2306.17775): asymptotically exact in the
number of particles, for every process with a Gaussian transition (refused elsewhere with the
reason).  For a Gaussian-mixture data set the posterior is a Gaussian mixture in closed form
(:func:`physgen.editing.conditional.linear_posterior`), the yardstick of the toy run's metrics.

Matrices and vectors are written inline: rows separated by ``;`` and entries by ``,``
(``"1,-1"`` is the one-row ``A`` that measures ``x0 - x1``; ``"1,0;0,1"`` both coordinates),
or as JSON (``"[[1, -1]]"``, ``"[0.5]"``).  Every entry is a finite number of magnitude at
most :data:`MAX_ENTRY`, ``A`` has at most :data:`MAX_ROWS` rows, ``y`` one value per row of
``A``, and ``σ_y > 0`` (a noiseless observation makes the posterior singular: use
``--condition`` to fix coordinates exactly).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from solvers.base import Solution

from ..config import parse_float
from ..errors import UserError
from .smc import smc_observe

__all__ = ["LinearObservation", "parse_matrix", "sample_observed", "MAX_ROWS", "MAX_ENTRY"]

MAX_ROWS = 64
"""Most rows of ``A``: a toy point has a few coordinates, and each row is one measurement."""
MAX_ENTRY = 1e6
"""Largest ``|entry|`` of ``A`` and ``y`` (as ``--condition``'s values): the twist squares
``y - A D(x)`` in float32, and toy data spread over a few units."""
WHY = "entries past 1e6 lie far outside any toy data and overflow the twist's float32 squares"


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a finite number")


def parse_matrix(text, name: str) -> list:
    """Rows of numbers from ``"1,-1;0,1"`` or JSON ``"[[1, -1], [0, 1]]"`` (a flat list or one
    number is one row); UserError naming ``name`` and the text unless every row is a non-empty
    list of finite numbers of the same length."""
    if isinstance(text, (list, tuple)):  # rows given from Python
        value = [list(r) if isinstance(r, (list, tuple)) else r for r in text]
    else:
        raw = str(text).strip()
        try:
            if raw.startswith("["):
                value = json.loads(raw, parse_constant=_reject_constant)
            else:
                value = [row.split(",") for row in raw.split(";")]
        except (ValueError, RecursionError) as exc:
            raise UserError(f"{name} expects rows of numbers ('1,-1;0,1' or JSON [[1, -1], [0, 1]]), got {text!r} ({exc})") from None
    if not isinstance(value, list):  # one number: one row of one
        value = [value]
    rows = value if value and all(isinstance(r, list) for r in value) else [value]
    if any(not r for r in rows) or len({len(r) for r in rows}) != 1:
        raise UserError(f"{name} expects non-empty rows of one length ('1,-1;0,1' or JSON [[1, -1], [0, 1]]), got {text!r}")
    out = []
    for row in rows:
        cells = []
        for cell in row:
            if isinstance(cell, (bool, list, dict)) or cell is None:
                raise UserError(f"{name} entries must be numbers, got {cell!r} in {text!r}")
            cells.append(parse_float(str(cell).strip(), f"{name} {text!r}: entry", -MAX_ENTRY, MAX_ENTRY, why=WHY))
        out.append(cells)
    return out


@dataclass(frozen=True)
class LinearObservation:
    """``y = A x + n``, ``n ~ N(0, noise_std² I)``: ``A`` and ``y`` as tuples of rows and values."""

    A: tuple
    y: tuple
    noise_std: float

    def __post_init__(self):
        rows = parse_matrix(self.A, "--observe-A")
        if len(rows) > MAX_ROWS:
            raise UserError(f"--observe-A has {len(rows)} rows; at most {MAX_ROWS} (one per measurement of a toy point)")
        values = [v for row in parse_matrix(self.y, "--observe-y") for v in row]
        if len(values) != len(rows):
            raise UserError(f"--observe-y has {len(values)} value(s) but --observe-A has {len(rows)} row(s): one measured value per row")
        noise = parse_float(self.noise_std, "--observe-noise", 0.0, MAX_ENTRY, lo_open=True,
                            why="the observation noise σ_y must be > 0 (fix coordinates exactly with --condition)")
        object.__setattr__(self, "A", tuple(tuple(r) for r in rows))
        object.__setattr__(self, "y", tuple(values))
        object.__setattr__(self, "noise_std", noise)

    @classmethod
    def from_flags(cls, A: Optional[str], y: Optional[str], noise_std) -> Optional["LinearObservation"]:
        """The observation of the three flags, ``None`` when none is given; one missing is refused."""
        given = {"--observe-A": A, "--observe-y": y, "--observe-noise": noise_std}
        if all(v is None for v in given.values()):
            return None
        missing = [k for k, v in given.items() if v is None]
        if missing:
            raise UserError(f"{', '.join(missing)} missing: a noisy linear observation needs --observe-A, --observe-y and --observe-noise")
        return cls(A, y, noise_std)

    def matrix(self) -> Tensor:
        return torch.tensor(self.A, dtype=torch.float64)

    def values(self) -> Tensor:
        return torch.tensor(self.y, dtype=torch.float64)

    def check_dim(self, dim: int) -> None:
        if len(self.A[0]) != dim:
            raise UserError(f"--observe-A has {len(self.A[0])} column(s) but the data have {dim} coordinates: A acts on the whole point")

    def record(self) -> dict:
        return {"A": [list(r) for r in self.A], "y": list(self.y), "noise_std": self.noise_std}


def sample_observed(process, field, observation: LinearObservation, n: int, dim: int, *, steps: Optional[int] = None,
                    schedule: Optional[str] = None, seed: int = 0, label: Optional[Tensor] = None, device=None) -> Solution:
    """``n`` particles of one population targeting ``p(x | y)`` (:func:`smc_observe` on ``steps``
    points of ``schedule``), resampled at the end."""
    observation.check_dim(dim)
    y = observation.values().float().to(device).reshape(1, -1).repeat(n, 1)
    return smc_observe(process, field, y, observation.matrix().float().to(device), (dim,), noise_std=observation.noise_std,
                       steps=steps, schedule=schedule, seed=seed, label=label)
