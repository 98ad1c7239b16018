"""A user's own grid: ``--schedule file:SIGMAS.json``.

The file holds one JSON list of ``K + 1`` numbers, the scales ``s_0 > s_1 > ... > s_K`` a
fixed-step solver integrates on (diffusers' ``sigmas=``, k-diffusion's hand-made sigma
lists; issue 24).  It is read strictly (:func:`physgen.config.read_json`: no ``NaN``, no
``Infinity``, nothing that runs code) and validated entry by entry, so that a bad file is one
line naming the file and the bad entry:

* a list of ``K + 1`` numbers (``K`` is ``--steps``; without ``--steps``, the file's own
  length minus one), every entry a finite number (not a string, a bool, a list);
* strictly decreasing;
* starting at the process's ``s_max`` (its own grid's first point) and ending where its grid
  ends: ``0`` for the denoiser-form processes (``ends_at_zero``: the last step is the
  denoising step, EDM's convention), the process's ``s_min`` for the others.  The ends are
  matched to a relative ``1e-9`` (a value typed with fewer digits than float64 prints) and
  then set exactly.

No interior point is constrained beyond that: the grid is the user's.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

from .config import parse_steps, read_json
from .errors import UserError
from .processes.base import Process

__all__ = ["FILE_PREFIX", "ENDS_RTOL", "is_file_schedule", "file_schedule"]

FILE_PREFIX = "file:"
ENDS_RTOL = 1e-9


def is_file_schedule(schedule: Optional[str]) -> bool:
    return isinstance(schedule, str) and schedule.startswith(FILE_PREFIX)


def _is_number(v) -> bool:
    return type(v) in (int, float) and math.isfinite(v)


def _close(a: float, b: float) -> bool:
    return a == b or abs(a - b) <= ENDS_RTOL * max(abs(a), abs(b))


def file_schedule(process: Process, schedule: str, steps: Optional[int] = None) -> Tensor:
    """The grid in the file of ``schedule`` (``"file:PATH"``), float64, validated against
    ``process`` and ``steps`` (the module docstring); :class:`UserError` naming the file and
    the bad entry otherwise."""
    path = Path(schedule[len(FILE_PREFIX):])
    if not str(path) or str(path) == ".":
        raise UserError("--schedule file:PATH needs a path to a JSON list of scales (file:sigmas.json)")
    where = f"--schedule file: {str(path)!r}"
    values = read_json(path, "--schedule file:")
    if not isinstance(values, list):
        raise UserError(f"{where}: holds a JSON {type(values).__name__}, not a list of scales")
    # --steps was checked by physgen.sampling.grid; without it the file's length is the step count, checked here
    K = steps if steps is not None else parse_steps(len(values) - 1, f"{where}: its number of steps") if len(values) > 1 else None
    if K is None or len(values) != K + 1:
        want = f"{K + 1} scales for --steps {K}" if K is not None else "at least 2 scales"
        raise UserError(f"{where}: holds {len(values)} entries; want {want} (a K-step grid has K + 1 points)")
    for i, v in enumerate(values):
        if not _is_number(v):
            raise UserError(f"{where}: entry {i} is {v!r}, not a finite number")
    for i, (a, b) in enumerate(zip(values, values[1:])):
        if not a > b:
            raise UserError(f"{where}: entry {i + 1} ({b!r}) is not below entry {i} ({a!r}); the scales must strictly decrease")
    own = process.grid(K).tolist()
    for i, want in ((0, own[0]), (K, own[-1])):
        if not _close(float(values[i]), want):
            end = "start at the process's s_max" if i == 0 else ("end at 0 (the denoising step)" if process.ends_at_zero
                                                                    else "end at the process's s_min")
            raise UserError(f"{where}: entry {i} is {values[i]!r}; the grid must {end}, {want!r}, for process {process.describe()}")
    grid = [float(v) for v in values]
    grid[0], grid[-1] = own[0], own[-1]
    if not all(a > b for a, b in zip(grid, grid[1:])):  # snapping an end onto the process's value merged it with its neighbour
        raise UserError(f"{where}: its ends, set to the process's {own[0]!r} ... {own[-1]!r}, no longer strictly decrease against their neighbours")
    return torch.tensor(grid, dtype=torch.float64)
