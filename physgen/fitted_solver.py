"""``--solver fitted:BASE``: the ``2K`` coefficients of :mod:`solvers.fitted` fitted to a field.

The fit (on the grid the command integrates on: the process's own, a named one, ``optimal``
fitted for BASE first, ``gits`` or ``file:PATH``) minimises the mean squared global error
against a float64 teacher on pilot draws,

    J(c, τ) = log (1/n) Σ_i ‖x_i(c, τ) - x_i^ref‖²,

with L-BFGS-B in the box :func:`solvers.fitted.coefficient_bounds`, from the neutral values
(BASE itself), with exact gradients: the ``K``-step solve is differentiated by autograd in
float64 (one solve and its backward pass per evaluation; ``J`` is a smooth function of the
coefficients).  The best point met is kept, and the neutral one if nothing beats it, so the
fitted solver is never worse than BASE on the pilot draws.

What it shares with ``--schedule optimal`` (:mod:`physgen.optimal_schedule`, the one home of
each): the pilot draws (seed :data:`~physgen.optimal_schedule.PILOT_SEED`, never the user's
``--seed``; 1024 toy draws, 64 for images), the teacher
(:func:`~physgen.optimal_schedule.reference_solve`), the field's fingerprint and the cache
file ``optimal_schedules.json`` in the run folder, where an entry's key is the sha256 of the
process and its configuration, the field's fingerprint, the grid (so K), BASE and its
options, the label, the sample shape, the pilot's settings and :data:`VERSION`.  A cached
entry is used only if its coefficients are ``K`` pairs of finite numbers inside the box and its
grid is the grid asked for (:func:`coefficients_problem`); anything else is refitted with one
warning line, never trusted.  Fitted coefficients are also kept in memory for the command's
life (:data:`_MEMO`), so the sampling call after the grid's does not fit twice; a call of
:func:`physgen.sampling.sample` with a ``fitted:`` solver and no coefficients fits them (no
cache) if no command did.

Cost: one teacher solve (kept in memory by :func:`~physgen.optimal_schedule.reference_solve`: a
command's fits on grids with the same ends share it), then at most ``MAX_STEPS // K`` (toy: 160 at K = 5, 80 at K = 10) or
:data:`MAX_EVALS_LARGE` (images) evaluations, each one K-step solve of the pilot draws and its
backward pass: a fixed budget of field calls per fit whatever K, so the fit is deterministic
(its cache entry is reproducible) and bounded: on problem (b) of the solver benchmark (a
trained toy MLP) 157 solves at K = 5 took 92.6 CPU seconds on one thread, on the analytic
field of problem (a) 1.3-1.7 CPU s (benchmarks/RESULTS.md).
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
from scipy.optimize import minimize
from torch import Tensor

from solvers.base import SolverError
from solvers.fitted import base_name, coefficient_bounds, neutral

from .io import write_json
from .optimal_schedule import (N_PILOT, N_PILOT_LARGE, PILOT_SEED, REFERENCE_TOL, SMALL_DIM, LOG_EVERY_S, _label_value, _read_cache,
                               cached_entry, field_fingerprint, pilot_draws, reference_solve)
from .processes.base import Process

__all__ = ["fitted_coefficients", "coefficients_problem", "fit_key", "VERSION", "MAX_STEPS", "MAX_EVALS_LARGE"]

VERSION = 1  # bump when the parameterisation (solvers.fitted) or the fit changes: old entries are then refitted
MAX_STEPS, MAX_EVALS_LARGE = 800, 40  # toy: at most 800 // K solves of K steps (one solve: a forward and a backward pass)
BAD = 1e3  # J where the solve fails or diverges (a log squared error: far above any real one)
LOOP_ONLY = ("return_trajectory", "check_every")  # options that do not change the result
_MEMO: dict[str, list] = {}


def coefficients_problem(entry: dict, grid: Sequence[float]) -> Optional[str]:
    """Why a cache entry cannot serve as the coefficients of ``grid``, or None."""
    if entry.get("version") != VERSION:
        return f"from version {entry.get('version')!r} of the fit, not {VERSION}"
    if entry.get("grid") != list(grid):
        return "fitted on another grid"
    pairs, bounds = entry.get("coefficients"), coefficient_bounds(grid)
    if not isinstance(pairs, list) or len(pairs) != len(grid) - 1 or not all(isinstance(p, list) and len(p) == 2 for p in pairs):
        return f"not {len(grid) - 1} pairs of numbers"
    flat = [v for p in pairs for v in p]
    if not all(type(v) in (int, float) and math.isfinite(v) for v in flat):
        return "not all finite numbers"
    if not all(lo <= v <= hi for v, (lo, hi) in zip(flat, bounds)):
        return "outside the fit's bounds"
    return None


def fit_key(process: Process, field: Any, grid: Sequence[float], method: str, options: dict, label_value, shape, n_pilot: int,
            max_evals: int) -> str:
    key_fields = {"fitted": VERSION, "process": process.name, "config": process.config(), "field": field_fingerprint(field),
                  "grid": list(grid), "solver": base_name(method), "options": options, "label": label_value, "shape": list(shape),
                  "n_pilot": n_pilot, "pilot_seed": PILOT_SEED, "reference_tol": REFERENCE_TOL, "max_evals": max_evals}
    return hashlib.sha256(json.dumps(key_fields, sort_keys=True, default=str).encode()).hexdigest()


def fitted_coefficients(process: Process, field: Any, schedule, method: str, *, sample_fn: Callable, shape: Sequence[int],
                        options: Optional[dict] = None, label=None, cache_dir=None, log=None) -> list:
    """The ``K`` pairs ``(c_i, τ_i)`` of ``method`` (``fitted:BASE``) on ``schedule`` for ``(process, field)``:
    from memory, from the cache in ``cache_dir``, or fitted (module docstring)."""
    s = [float(v) for v in torch.as_tensor(schedule, dtype=torch.float64).flatten().tolist()]
    options = {k: v for k, v in sorted((options or {}).items()) if k not in LOOP_ONLY}
    shape, label_value = tuple(int(v) for v in shape), _label_value(label)
    small = math.prod(shape) <= SMALL_DIM
    n_pilot, max_evals = (N_PILOT, max(10, MAX_STEPS // (len(s) - 1))) if small else (N_PILOT_LARGE, MAX_EVALS_LARGE)
    key = fit_key(process, field, s, method, options, label_value, shape, n_pilot, max_evals)
    if key in _MEMO:
        return _MEMO[key]
    log = sys.stderr if log is None else log
    path, entry = cached_entry(cache_dir, key, lambda e: coefficients_problem(e, s), log, f"its {method} coefficients")
    if entry is not None:
        _MEMO[key] = [[float(c), float(t)] for c, t in entry["coefficients"]]
        return _MEMO[key]
    t0, cpu0 = time.perf_counter(), time.process_time()
    field64, x0, lab = pilot_draws(process, field, n_pilot, shape, label_value)
    modes = {k: v for k, v in options.items() if k in {o.name for o in process.sampling_options}}
    with torch.no_grad():  # a bad option is the user's error: one line, raised here before any fitting is announced
        sample_fn(process, field64, x0[:2], torch.tensor(s, dtype=torch.float64), method, label=None if lab is None else lab[:2],
                  coefficients=neutral(len(s) - 1), **options)
        print(f"{method}: fitting {2 * (len(s) - 1)} coefficients on a {len(s) - 1}-step grid, {n_pilot} pilot draws, at most "
              f"{max_evals} solves (cached in {str(path) if path is not None else 'nothing: no run folder'})", file=log, flush=True)
        ref = reference_solve(process, field64, x0, s, sample_fn, lab, modes)
    pairs, errors, evals = _fit(lambda c: sample_fn(process, field64, x0, torch.tensor(s, dtype=torch.float64), method, label=lab,
                                                    coefficients=c, **options).x, ref, s, max_evals, method, log)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    print(f"{method}: {evals} solves in {wall:.1f} s ({cpu:.1f} CPU s); pilot RMS error {errors[1]:.3g} (neutral, {base_name(method)} itself: {errors[0]:.3g})",
          file=log, flush=True)
    if path is not None:
        cache = _read_cache(path)  # re-read: another command may have added entries meanwhile
        cache[key] = {"coefficients": pairs, "grid": s, "solver": method, "steps": len(s) - 1, "options": options,
                      "process": process.describe(), "field": field_fingerprint(field)[:16], "label": label_value,
                      "pilot_rms_error": errors[1], "neutral_pilot_rms_error": errors[0], "solves": evals, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
                      "n_pilot": n_pilot, "version": VERSION}
        write_json(path, cache)
    _MEMO[key] = pairs
    return pairs


class _BudgetSpent(Exception):
    """Raised by the objective once the fit's solves are spent."""


def _fit(solve: Callable[[Tensor], Tensor], ref: Tensor, s: Sequence[float], max_evals: int, method: str, log) -> tuple[list, tuple, int]:
    """``(pairs, (neutral RMS, fitted RMS), solves)``: L-BFGS-B on ``J`` from the neutral point, the best point kept."""
    K, bounds = len(s) - 1, coefficient_bounds(s)
    best, done, t_start, last_log = [math.inf, None], [0], time.perf_counter(), [time.perf_counter()]

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        if done[0] >= max_evals:  # L-BFGS-B checks maxfun only between iterations: the budget is enforced here
            raise _BudgetSpent
        done[0] += 1
        if time.perf_counter() - last_log[0] >= LOG_EVERY_S:
            last_log[0] = time.perf_counter()
            rate = done[0] / (last_log[0] - t_start)
            print(f"{method}: {done[0]}/{max_evals} solves, {rate:.2f} solves/s, best pilot RMS {math.exp(best[0] / 2):.3g}, "
                  f"ETA <= {time.strftime('%H:%M:%S', time.gmtime(max(0, max_evals - done[0]) / rate))}", file=log, flush=True)
        p = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
        with torch.enable_grad():
            try:
                loss = (solve(p.view(K, 2)) - ref).pow(2).flatten(1).sum(1).mean().log()
            except (FloatingPointError, SolverError):  # diverged with these coefficients (DivergenceError is a FloatingPointError)
                return BAD, np.zeros_like(theta)
            if not bool(torch.isfinite(loss)):
                return BAD, np.zeros_like(theta)
            (grad,) = torch.autograd.grad(loss, p)
        value = float(loss.detach())
        if value < best[0]:
            best[0], best[1] = value, theta.copy()
        return value, np.nan_to_num(grad.numpy(), nan=0.0, posinf=0.0, neginf=0.0)

    start = np.array([v for pair in neutral(K) for v in pair], dtype=float)
    neutral_value, _ = objective(start)
    try:
        minimize(objective, start, jac=True, method="L-BFGS-B", bounds=bounds, options={"maxfun": max_evals - 1, "maxiter": max_evals})
    except _BudgetSpent:
        pass  # the best point met is kept
    theta = best[1] if best[1] is not None else start
    pairs = [[float(theta[2 * i]), float(theta[2 * i + 1])] for i in range(K)]
    return pairs, (math.exp(neutral_value / 2), math.exp(best[0] / 2)), done[0]
