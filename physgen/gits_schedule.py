"""``--schedule gits``: time steps chosen by dynamic programming over one teacher trajectory.

GITS (Chen et al., "A Geometric Perspective on Diffusion Models", arXiv 2405.11326):

1. A fine grid ``s_0 > s_1 > ... > s_N`` (the process's own schedule with ``N = fine``
   steps, 100 by default as in the paper's coarse-to-fine search) and one teacher trajectory
   on it: the float64 ``dopri5`` solution (tolerance 1e-9) of the pilot draws
   ``x_0 ~ prior`` (seed :data:`physgen.optimal_schedule.PILOT_SEED`), recorded at every fine
   point, ``x̄_i``, and the field's velocity there, ``v_i = dx/ds(x̄_i, s_i)``: ``N`` field
   calls on the pilot draws.
2. The cost of one coarse step from fine point ``i`` to ``j > i``: the Euler (DDIM) step
   taken from the teacher's state with the teacher's own velocity against the teacher's
   state at ``j``,

       c_ij = sqrt( mean_n ‖x̄_i + (s_j - s_i) v_i - x̄_j‖² )

   (the paper's local error of a one-step update along the teacher; no solver runs in the
   loop, every ``c_ij`` is arithmetic on cached tensors).
3. The ``K``-step grid is the path ``0 = i_0 < i_1 < ... < i_K = N`` minimising ``Σ c``,
   found exactly by dynamic programming (``O(K N²)``).  On a process that ends at 0 (the
   denoiser form) the last step is fixed as the process's own, ``s_min -> 0`` (the denoising
   step), so the grid has the same ends as the process's, like ``--schedule optimal``'s.  Left
   free, the DP ends its last positive step far above ``s_min`` (about σ = 1 on the toy
   mixtures, a cheap Euler cost to the teacher's end) and the samples are the posterior means
   at that σ: blurred (sliced W2 0.23 against the floor 0.15 on problem (a), measured).

The grid does not depend on the solver (GITS fits it for DDIM and uses it for iPNDM and
DPM-Solver too).  The cost is computed in the process's own coordinates ``x`` (for VP, not
in the σ form its solvers integrate in): a proxy of the local error, as in the paper.
Cost: one reference solve and ``N`` field calls on the pilot draws, against
``--schedule optimal``'s hundreds of solves.  Cached beside the optimal schedules
(``optimal_schedules.json``) under its own key (process, field fingerprint, K, pilot, fine
grid, version); an entry that is not a valid grid is refitted, never trusted.
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from .io import write_json
from .optimal_schedule import (N_PILOT, N_PILOT_LARGE, PILOT_SEED, REFERENCE_TOL, SMALL_DIM, _label_value, _read_cache,
                               cached_grid, field_fingerprint, pilot_draws, schedule_keywords)
from .processes.base import Process

__all__ = ["GITS", "FINE", "MAX_FINE", "gits_options", "gits_schedule", "gits_path", "euler_costs"]

GITS = "gits"
FINE = 100
MAX_FINE = 2000
VERSION = 2  # (2: the last step kept s_min -> 0) bump when the cost or the search changes, so old cache entries are refitted


def gits_options(spec: str) -> dict:
    """The keywords of ``gits[:n_pilot=N][,fine=M]`` (bounded integers); :class:`UserError` otherwise."""
    return schedule_keywords(spec, GITS, {"n_pilot": (2, 10**6), "fine": (2, MAX_FINE)})


def euler_costs(traj: Tensor, velocities: Tensor, s: Sequence[float]) -> np.ndarray:
    """``c[i, j]`` (``inf`` unless ``i < j``): the RMS over the batch of the Euler step from the
    teacher's state ``traj[i]`` with its velocity ``velocities[i]`` to ``s[j]``, against ``traj[j]``."""
    n = len(s)
    cost = np.full((n, n), np.inf)
    flat = traj.reshape(n, traj.shape[1], -1)
    vel = velocities.reshape(velocities.shape[0], traj.shape[1], -1)
    st = torch.as_tensor(list(s), dtype=flat.dtype, device=flat.device)
    for i in range(min(n - 1, vel.shape[0])):
        pred = flat[i] + (st[i + 1:] - st[i])[:, None, None] * vel[i]
        cost[i, i + 1:] = ((pred - flat[i + 1:]) ** 2).sum(-1).mean(-1).sqrt().cpu().numpy()
    return cost


def gits_path(cost: np.ndarray, steps: int, start: int = 0, end: Optional[int] = None) -> list[int]:
    """The indices ``start = i_0 < ... < i_steps = end`` minimising ``Σ cost[i_k, i_{k+1}]`` (exact DP)."""
    end = cost.shape[0] - 1 if end is None else end
    if not 1 <= steps <= end - start:
        raise ValueError(f"{steps} steps cannot be laid on fine points {start}..{end}")
    best = np.full((steps + 1, cost.shape[0]), np.inf)
    prev = np.zeros((steps + 1, cost.shape[0]), dtype=np.int64)
    best[0, start] = 0.0
    for k in range(1, steps + 1):
        total = best[k - 1][:, None] + cost  # [from, to]
        prev[k] = total.argmin(0)
        best[k] = total.min(0)
    path = [end]
    for k in range(steps, 0, -1):
        path.append(int(prev[k, path[-1]]))
    if path[-1] != start or not math.isfinite(best[steps, end]):
        raise ValueError("no finite path")
    return path[::-1]


def _teacher(process: Process, field, x0: Tensor, fine: Tensor, sample_fn: Callable, lab, modes: dict) -> tuple[Tensor, Tensor]:
    """The float64 teacher trajectory on the fine grid and the field's velocity at each of its positive points."""
    traj = sample_fn(process, field, x0, fine, "dopri5", label=lab, rtol=REFERENCE_TOL, atol=REFERENCE_TOL, return_trajectory=True,
                     **modes).stats.trajectory
    positive = [i for i, v in enumerate(fine.tolist()) if v > 0]
    vel = torch.stack([process.velocity(field, traj[i], torch.full((x0.shape[0],), float(fine[i]), dtype=torch.float64,
                                                                     device=x0.device), lab) for i in positive])
    return traj, vel


def _key(process: Process, field, K: int, label, shape, n_pilot: int, fine: int, modes: dict) -> str:
    key_fields = {"schedule": GITS, "version": VERSION, "process": process.name, "config": process.config(), "field": field_fingerprint(field),
                  "steps": K, "label": label, "shape": list(shape), "n_pilot": n_pilot, "pilot_seed": PILOT_SEED, "fine": fine,
                  "reference_tol": REFERENCE_TOL, "modes": modes}
    return hashlib.sha256(json.dumps(key_fields, sort_keys=True, default=str).encode()).hexdigest()


def gits_schedule(process: Process, field: Any, steps: Optional[int], *, sample_fn: Callable, shape: Sequence[int], options: Optional[dict] = None,
                  label=None, cache_dir=None, n_pilot: Optional[int] = None, fine: Optional[int] = None, log=None) -> Tensor:
    """The GITS grid of ``steps`` steps for ``(process, field)`` (float64, decreasing, the
    process's ends); see the module docstring.  ``options``: only the process's sampling modes
    are used (the teacher runs in them)."""
    K = process.default_steps if steps is None else steps  # checked by physgen.sampling.grid, the entry
    own = process.grid(K).tolist()
    if process.ends_at_zero and K == 1:
        return torch.tensor(own, dtype=torch.float64)  # one step: s_max -> 0, nothing to choose
    shape = tuple(int(v) for v in shape)
    n_pilot = n_pilot or (N_PILOT if math.prod(shape) <= SMALL_DIM else N_PILOT_LARGE)
    fine = max(fine or FINE, K + 1)
    modes = {k: v for k, v in (options or {}).items() if k in {o.name for o in process.sampling_options}}
    label_value = _label_value(label)
    key, log = _key(process, field, K, label_value, shape, n_pilot, fine, modes), sys.stderr if log is None else log
    path, cached = cached_grid(cache_dir, key, K, own, log, "its gits grid for this field")
    if cached is not None:
        return cached
    t0 = time.perf_counter()
    field64, x0, lab = pilot_draws(process, field, n_pilot, shape, label_value, path=path, log=log,
                                   announce=f"--schedule gits: one teacher solve of {n_pilot} pilot draws on a {fine}-step grid, then {fine} field calls")
    fine_grid = process.grid(fine)
    with torch.no_grad():
        traj, vel = _teacher(process, field64, x0, fine_grid, sample_fn, lab, modes)
    cost = euler_costs(traj, vel, fine_grid.tolist())
    last = fine - 1 if process.ends_at_zero else fine  # the denoising step s_min -> 0 stays the process's own (module docstring)
    idx = gits_path(cost, K - 1 if process.ends_at_zero else K, 0, last) + ([fine] if process.ends_at_zero else [])
    grid = [float(fine_grid[i]) for i in idx]
    total = float(sum(cost[a, b] for a, b in zip(idx, idx[1:])))
    print(f"--schedule gits: {K}-step grid in {time.perf_counter() - t0:.1f} s (summed Euler cost along the teacher {total:.3g})",
          file=log, flush=True)
    if path is not None:
        cache = _read_cache(path)
        cache[key] = {"grid": grid, "schedule": GITS, "steps": K, "process": process.describe(), "field": field_fingerprint(field)[:16],
                      "label": label_value, "n_pilot": n_pilot, "fine": fine, "summed_cost": total, "version": VERSION,
                      "wall_s": round(time.perf_counter() - t0, 3)}
        write_json(path, cache)
    return torch.tensor(grid, dtype=torch.float64)
