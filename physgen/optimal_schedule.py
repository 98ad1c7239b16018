"""``--schedule optimal``: the error-optimal K-step grid for a process, a field and a solver.

The search is :func:`solvers.optimal.optimise_grid` (physics-agnostic: it minimises the
solver's measured mean squared global error on pilot draws).  This module hands it

* the pilot: ``n_pilot`` (1024) draws from the process's prior, seeded per sample with
  :data:`PILOT_SEED` (never the user's ``--seed``, so the samples a command reports are not
  the ones the grid was fitted on, and one grid serves every seed).  Why a thousand: a few
  samples near the flow's separatrices carry most of the mean squared error (problem (b) of
  benchmarks/bench_quality_per_nfe.py, deis at 10 NFE: the worst 1% of 1000 samples carry
  75% of it), so a smaller pilot fits its own outliers -- with 256 draws the fitted grid
  for deis on (b) was no better than its best fixed schedule on 1000 other draws (RMS
  error 0.047 vs 0.046), with 1024 it was (0.039 vs 0.045);
* the reference: the same ODE solved by dopri5 in float64 (``rtol = atol = 1e-9``) from the
  same draws over the span of the process's own K-step grid (its first scale, its last
  positive scale, then the denoising step to 0 where the grid has one), the field cast to
  float64 -- all through :func:`physgen.sampling.sample` (passed in as ``sample_fn``), so a
  process's coordinates (VP's σ form) and sampling modes apply as they do when sampling;
* the start grids: the process's own schedule and ``edm``, ``log-uniform`` and
  ``polyexponential:rho=2`` laid out by the process at K steps (they share the ends);
* the cache: ``optimal_schedules.json`` in ``cache_dir`` (the run folder), one entry per
  sha256 of the process and its configuration, the field's fingerprint (a network's
  weights, an exact field's points, a mixture's parameters: :func:`field_fingerprint`), K,
  the solver and its options, the label, the sample shape and the pilot's settings.
  The cache is derived data that a fit reproduces exactly (the pilot's seed is fixed), so
  what cannot be trusted in it is refitted, never used and never fatal: an entry is used
  only if its grid is what a user's grid must be (K + 1 finite numbers, strictly
  decreasing, the ends of the process's own K-step grid), and a file that is not a JSON
  object of entries (damaged, truncated, nested beyond reason, of another type) is
  ignored; either way one warning line names the file and why, and the fit rewrites it.
  Only a cache path that cannot hold a file (a folder there, an unwritable folder) is
  refused, before the fit, which could not be kept.

Cost: one reference solve plus at most ``max_evals`` solves of K steps on the pilot
draws, in float64, once per cache entry: about 10 s for an analytic toy field and 2 min for
the toy MLP on one CPU thread (1024 draws, 400 solves).  An image network pays for
``n_pilot`` images per evaluation (the tiny 8x8 U-Net of the tests on one CPU thread: a
4-step solve of 256 images takes 1.4 s and the reference 165 s; 1024 draws ran past 14
minutes), so samples of more than :data:`SMALL_DIM` numbers (images) default to
:data:`N_PILOT_LARGE` draws and :data:`MAX_EVALS_LARGE` solves; ``optimal:n_pilot=N,max_evals=M``
sets both.  The fit logs its progress (solves done, rate, best error, an upper-bound ETA)
to stderr.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor

import solvers
from solvers.base import SolverError
from solvers.optimal import optimise_grid
from solvers.schedules import parse_schedule

from .config import read_json
from .errors import UserError
from .io import write_json
from .noise import SeededNoise
from .processes.base import Process

__all__ = ["OPTIMAL", "optimal_schedule", "optimal_options", "field_fingerprint", "grid_problem", "CACHE_NAME", "PILOT_SEED", "N_PILOT", "MAX_EVALS",
           "N_PILOT_LARGE", "MAX_EVALS_LARGE", "SMALL_DIM", "START_SCHEDULES", "cached_grid", "cached_entry", "reference_solve", "pilot_draws", "schedule_keywords"]

OPTIMAL = "optimal"
CACHE_NAME = "optimal_schedules.json"
PILOT_SEED = 7_777_777
N_PILOT, MAX_EVALS = 1024, 400  # toy samples (at most SMALL_DIM numbers each)
N_PILOT_LARGE, MAX_EVALS_LARGE = 64, 100  # images: each pilot draw costs a network call per step
SMALL_DIM = 64
LOG_EVERY_S = 10.0
REFERENCE_TOL = 1e-9
START_SCHEDULES = ("edm", "log-uniform", "polyexponential:rho=2")
MAX_REFERENCES = 8  # teachers kept in memory (reference_solve): 64 images of 3x32x32 in float64 are 1.5 MB
_REFERENCES: dict[str, tuple[tuple, Tensor]] = {}
VERSION = 2  # bump when the search or a solver step changes, so old cache entries are refitted (2: the hard solve budget, multistep_order, 3m-sde weight)


def _fingerprint(obj: Any, h, seen: set, depth: int) -> None:
    if isinstance(obj, Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif obj is None or isinstance(obj, (bool, int, float, str)):
        h.update(repr(obj).encode())
    elif isinstance(obj, (list, tuple)):
        h.update(b"[")
        for v in obj:
            _fingerprint(v, h, seen, depth)
        h.update(b"]")
    elif isinstance(obj, dict):
        for k in sorted(obj, key=str):
            h.update(str(k).encode())
            _fingerprint(obj[k], h, seen, depth)
    elif isinstance(obj, torch.nn.Module):
        h.update(type(obj).__qualname__.encode())
        _fingerprint(dict(obj.state_dict()), h, seen, depth)
    elif id(obj) in seen or depth > 6:
        h.update(type(obj).__qualname__.encode())
    else:
        seen.add(id(obj))
        h.update(type(obj).__qualname__.encode())
        if hasattr(obj, "__self__") and hasattr(obj, "__func__"):  # a bound method: its function and its object
            h.update(obj.__func__.__qualname__.encode())
            _fingerprint(obj.__self__, h, seen, depth + 1)
        elif hasattr(obj, "__dict__"):
            _fingerprint({k: v for k, v in vars(obj).items() if not k.startswith("_")}, h, seen, depth + 1)


def field_fingerprint(field: Any) -> str:
    """sha256 of what decides a field's values: a network's class and weights, or the tensors
    and numbers an analytic / exact field holds (points, labels, mixture parameters, its
    profile's parameters), walked through its attributes."""
    h = hashlib.sha256()
    _fingerprint(field, h, set(), 0)
    return h.hexdigest()


def schedule_keywords(spec: str, name: str, bounds: dict) -> dict:
    """The keywords of a fitted schedule ``NAME[:KEY=N][,KEY=M]`` (``bounds``: key -> (lo, hi), integers);
    :class:`UserError` naming an unknown key, a value that is not an integer in range, a key given twice."""
    head, _, rest = str(spec).partition(":")
    if head != name:
        raise UserError(f"not the {name} schedule: {spec!r}")
    out = {}
    for item in filter(None, (t.strip() for t in rest.split(","))):
        key, sep, value = (v.strip() for v in item.partition("="))
        if not sep or key not in bounds:
            raise UserError(f"schedule {name!r} takes {' and '.join(f'{k}=N' for k in bounds)}; got {item!r}")
        lo, hi = bounds[key]
        if not value.isdigit() or not lo <= int(value) <= hi:
            raise UserError(f"schedule {name!r}: {key} must be an integer in {lo}..{hi}, got {value!r}")
        if key in out:
            raise UserError(f"schedule {name!r}: {key} is given twice ({spec!r}); give it once")
        out[key] = int(value)
    return out


def optimal_options(spec: str) -> dict:
    """The keywords of ``optimal[:n_pilot=N][,max_evals=M]`` (positive integers); :class:`UserError` otherwise."""
    return schedule_keywords(spec, OPTIMAL, {"n_pilot": (2, 10**6), "max_evals": (1, 10**6)})


def _device(field: Any) -> torch.device:
    if isinstance(field, torch.nn.Module):
        p = next(iter(field.parameters()), None)
        p = next(iter(field.buffers()), None) if p is None else p
        return p.device if p is not None else torch.device("cpu")
    for v in vars(field).values() if hasattr(field, "__dict__") else ():
        if isinstance(v, Tensor):
            return v.device
        if hasattr(v, "__dict__"):
            found = next((w for w in vars(v).values() if isinstance(w, Tensor)), None)
            if found is not None:
                return found.device
    return torch.device("cpu")


def _label_value(label) -> Optional[int]:
    if label is None:
        return None
    t = torch.as_tensor(label).flatten()
    if t.numel() == 0 or bool((t != t[0]).any()):
        raise UserError("--schedule optimal fits one grid for one class: give a single --label (or none)")
    return int(t[0])


def _cache_path(cache_dir) -> Optional[Path]:
    """``cache_dir/optimal_schedules.json``; :class:`UserError` if no file can be kept there (checked before a fit)."""
    if cache_dir is None:
        return None
    path = Path(cache_dir) / CACHE_NAME
    if path.exists() and not path.is_file():
        raise UserError(f"the optimal-schedule cache {str(path)!r} is not a file; remove it (or give another --out) so the fit can be kept")
    folder = path.parent
    if folder.exists() and not (folder.is_dir() and os.access(folder, os.W_OK)):
        raise UserError(f"the optimal-schedule cache {str(path)!r} cannot be written: {str(folder)!r} is not a writable folder")
    return path


def _warn(log, path: Path, why: str) -> None:
    if log is not None:
        print(f"warning: optimal-schedule cache {str(path)!r}: {why}; refitting (the fit rewrites it)", file=log, flush=True)


def _read_cache(path: Optional[Path], log=None) -> dict:
    """The cache's entries; a file that is not a JSON object is ignored (with a warning on ``log``)."""
    if path is None or not path.is_file():
        return {}
    try:
        data = read_json(path, "the optimal-schedule cache")
    except UserError as exc:
        _warn(log, path, str(exc).split(f"{str(path)!r}: ", 1)[-1])
        return {}
    if not isinstance(data, dict):
        _warn(log, path, f"it holds a {type(data).__name__}, not an object of entries")
        return {}
    return data


def grid_problem(grid: Any, steps: int, ends: Sequence[float]) -> Optional[str]:
    """Why ``grid`` is not a valid ``steps``-step grid with the process's ``ends`` (its first and
    last points, and the last positive one before a final 0), or None: the checks a user's grid gets."""
    if not isinstance(grid, list) or len(grid) != steps + 1:
        return f"not a list of {steps + 1} numbers"
    bad = next((v for v in grid if not (type(v) in (int, float) and math.isfinite(v))), None)
    if bad is not None or any(type(v) not in (int, float) for v in grid):
        return f"not all finite numbers (it holds {bad!r})"
    if not all(a > b for a, b in zip(grid, grid[1:])):
        return "not strictly decreasing"
    first, last = float(ends[0]), float(ends[-1])
    if grid[0] != first or grid[-1] != last or (last == 0.0 and len(ends) > 2 and grid[-2] != float(ends[-2])):
        return f"its ends {grid[0]!r} ... {grid[-1]!r} are not the process's ({first!r} ... {last!r})"
    return None


def cached_entry(cache_dir, key: str, problem: Callable[[Any], Optional[str]], log, what: str) -> tuple[Optional[Path], Optional[dict]]:
    """``(the cache file, its entry under key)``: the entry if the cache in ``cache_dir`` holds one under
    ``key`` that ``problem`` finds nothing wrong with (``problem(entry)``: why not, or None); else ``None``
    (with a warning on ``log`` when an entry was there: refitted, not trusted).  Every fit (``optimal``,
    ``gits``, ``fitted:BASE``) looks up its result here and re-reads the file just before writing its own."""
    path = _cache_path(cache_dir)
    cache = _read_cache(path, log)
    if key not in cache:
        return path, None
    entry = cache[key]
    why = problem(entry) if isinstance(entry, dict) else "not an object"
    if why is None:
        return path, entry
    _warn(log, path, f"{what} is {why}")
    return path, None


def cached_grid(cache_dir, key: str, K: int, own: Sequence[float], log, what: str) -> tuple[Optional[Path], Optional[Tensor]]:
    """``(the cache file, its grid under key)``: the grid if the cache in ``cache_dir`` holds a valid
    ``K``-step grid with the ends of the process's own grid ``own``; else ``None`` (:func:`cached_entry`)."""
    path, entry = cached_entry(cache_dir, key, lambda e: grid_problem(e.get("grid"), K, [own[0], *own[-2:]]), log, what)
    return path, None if entry is None else torch.tensor([float(v) for v in entry["grid"]], dtype=torch.float64)


def pilot_draws(process: Process, field: Any, n_pilot: int, shape: Sequence[int], label_value: Optional[int], *,
                announce: Optional[str] = None, path: Optional[Path] = None, log=None) -> tuple[Any, Tensor, Optional[Tensor]]:
    """``(field in float64, the pilot prior draws (seed PILOT_SEED), their labels)``: what a fit solves on.
    ``announce``: the fit's one line on ``log`` first, with where its grid will be cached (``path``)."""
    if announce is not None:
        print(f"{announce} (cached in {str(path) if path is not None else 'nothing: no run folder'})", file=log, flush=True)
    device = _device(field)
    field64 = copy.deepcopy(field).to(torch.float64) if isinstance(field, torch.nn.Module) else field
    x0 = process.sample_prior((n_pilot, *shape), noise=SeededNoise(PILOT_SEED, range(n_pilot)), device=device, dtype=torch.float64)
    lab = None if label_value is None else torch.full((n_pilot,), label_value, dtype=torch.long, device=device)
    return field64, x0, lab


def reference_solve(process: Process, field64: Any, x0: Tensor, grid: Sequence[float], sample_fn: Callable, lab, modes: dict) -> Tensor:
    """The teacher every fit is measured against: dopri5 in float64 (``rtol = atol =`` :data:`REFERENCE_TOL`)
    from ``x0`` over the span of ``grid`` (its first scale, its last positive one, then the denoising step
    to 0 where the grid has one), in the process's sampling ``modes``.

    Kept in memory (:data:`_REFERENCES`, the last :data:`MAX_REFERENCES`): the grids and coefficients of
    one command (``fitted:ipndm`` and ``fitted:dpmpp-2m`` at 5 and 10 steps, an ``optimal`` grid and the
    coefficients fitted on it) share the process's ends, so one teacher serves them all; on an image
    field each teacher costs minutes.  A kept teacher is used only for the same process and
    configuration, the same weights or field values (:func:`field_fingerprint`), the same draws,
    labels, span, modes and ``sample_fn``; a field that is not a network must also be the same object."""
    span = [grid[0], grid[-2], 0.0] if grid[-1] == 0.0 and len(grid) > 2 else [grid[0], grid[-1]]
    h = hashlib.sha256(json.dumps({"process": process.name, "config": process.config(), "span": span, "modes": modes, "tol": REFERENCE_TOL},
                                  sort_keys=True, default=str).encode())
    for part in (field64, x0, lab):
        _fingerprint(part, h, set(), 0)
    key = h.hexdigest()
    anchors = (sample_fn, None if isinstance(field64, torch.nn.Module) else field64)  # held, so their ids cannot be reused
    kept = _REFERENCES.get(key)
    if kept is not None and all(a is b for a, b in zip(kept[0], anchors)):
        return kept[1].clone()
    x = sample_fn(process, field64, x0, torch.tensor(span, dtype=torch.float64), "dopri5", label=lab, rtol=REFERENCE_TOL,
                  atol=REFERENCE_TOL, **modes).x
    _REFERENCES[key] = (anchors, x.detach().clone())
    while len(_REFERENCES) > MAX_REFERENCES:
        _REFERENCES.pop(next(iter(_REFERENCES)))
    return x


def _check_fittable(method: str) -> None:
    """:class:`UserError` unless ``method`` is a fixed-step ODE solver on the grid's steps (what the fit optimises)."""
    spec = solvers.get_solver(method)
    if spec.stochastic or spec.adaptive or spec.grid != "steps":
        kind = ("stochastic" if spec.stochastic else "adaptive" if spec.adaptive else
                "laid on its own steps between the grid's ends" if spec.grid == "ends" else "run on noise levels")
        raise UserError(f"--schedule optimal fits the grid of a fixed-step ODE solver to its error against the exact ODE solution; "
                        f"solver {method!r} is {kind}")


def _start_grids(process: Process, K: int) -> dict:
    """name -> the ``K``-step grid of each start of the search (the process's own schedule first)."""
    starts = {}
    for name in dict.fromkeys([process.default_schedule_name, *START_SCHEDULES]):
        base, kw = parse_schedule(name)
        try:
            starts[name] = process.grid(K, base, **kw).tolist()
        except UserError:
            continue  # a schedule this process cannot lay out (e.g. log-uniform from a bound <= 0)
    return starts


def optimal_schedule(process: Process, field: Any, steps: Optional[int], *, method: str, sample_fn: Callable, shape: Sequence[int],
                     options: Optional[dict] = None, label=None, cache_dir=None, n_pilot: Optional[int] = None,
                     max_evals: Optional[int] = None, log=None) -> Tensor:
    """The error-optimal grid of ``steps`` integration steps for ``method`` on ``(process, field)``
    (float64, decreasing, the ends of the process's own grid); see the module docstring.
    ``n_pilot``/``max_evals`` default by sample size (toy or image); progress goes to ``log``
    (default stderr)."""
    _check_fittable(method)
    K = process.default_steps if steps is None else steps  # checked by physgen.sampling.grid, the entry
    options = dict(options or {})
    label_value = _label_value(label)
    shape = tuple(int(v) for v in shape)
    small = math.prod(shape) <= SMALL_DIM
    n_pilot = n_pilot if n_pilot is not None else (N_PILOT if small else N_PILOT_LARGE)
    max_evals = max_evals if max_evals is not None else (MAX_EVALS if small else MAX_EVALS_LARGE)
    key_fields = {"version": VERSION, "process": process.name, "config": process.config(), "field": field_fingerprint(field),
                  "steps": K, "solver": method, "options": options, "label": label_value, "shape": list(shape),
                  "n_pilot": n_pilot, "pilot_seed": PILOT_SEED, "reference_tol": REFERENCE_TOL, "max_evals": max_evals,
                  "starts": [process.default_schedule_name, *START_SCHEDULES]}
    key = hashlib.sha256(json.dumps(key_fields, sort_keys=True, default=str).encode()).hexdigest()
    log = sys.stderr if log is None else log
    own = process.grid(K).tolist()  # the process's own K-step grid: its ends are every grid's
    path, cached = cached_grid(cache_dir, key, K, own, log, "its grid for this fit")
    if cached is not None:
        return cached

    t0 = time.perf_counter()
    field64, x0, lab = pilot_draws(process, field, n_pilot, shape, label_value, path=path, log=log,
                                   announce=f"--schedule optimal: fitting a {K}-step grid for {method} on {n_pilot} pilot draws, at most {max_evals} solves")
    modes = {k: v for k, v in options.items() if k in {o.name for o in process.sampling_options}}
    starts = _start_grids(process, K)
    first = starts[process.default_schedule_name]
    with torch.no_grad():
        ref = reference_solve(process, field64, x0, first, sample_fn, lab, modes)
        sample_fn(process, field64, x0[:2], torch.tensor(first, dtype=torch.float64), method,
                  label=None if lab is None else lab[:2], **options)  # a bad option is the user's error, raised here once

        t_search, done, last_log = time.perf_counter(), [0], [time.perf_counter()]

        def solve(grid: list[float]) -> Optional[Tensor]:
            done[0] += 1
            now = time.perf_counter()
            if now - last_log[0] >= LOG_EVERY_S:
                last_log[0] = now
                rate = done[0] / (now - t_search)
                print(f"--schedule optimal: {done[0]}/{max_evals} solves, {rate:.2f} solves/s, "
                      f"ETA <= {time.strftime('%H:%M:%S', time.gmtime(max(0, max_evals - done[0]) / rate))}", file=log, flush=True)
            try:
                return sample_fn(process, field64, x0, torch.tensor(grid, dtype=torch.float64), method, label=lab, **options).x
            except (FloatingPointError, SolverError):  # diverged on this grid (DivergenceError is a FloatingPointError)
                return None

        result = optimise_grid(solve, ref, starts, max_evals=max_evals)
    print(f"--schedule optimal: {result.evaluations} solves in {time.perf_counter() - t0:.1f} s; pilot RMS error {result.error:.3g} "
          f"(best start {result.start}: {result.start_errors.get(result.start, float('nan')):.3g})", file=log, flush=True)
    if path is not None:
        cache = _read_cache(path)  # re-read: another command may have added entries meanwhile (a damaged file is replaced)
        cache[key] = {"grid": result.grid, "solver": method, "steps": K, "options": options, "process": process.describe(),
                      "field": key_fields["field"][:16], "label": label_value, "pilot_rms_error": result.error,
                      "start": result.start, "start_rms_errors": result.start_errors, "solves": result.evaluations,
                      "wall_s": round(time.perf_counter() - t0, 3), "n_pilot": n_pilot, "version": VERSION}
        write_json(path, cache)
    return torch.tensor(result.grid, dtype=torch.float64)
