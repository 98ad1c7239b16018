"""Error-optimal grids: the K-step grid on which a solver's global error is smallest.

"Align Your Steps" (Sabour et al., arXiv 2404.14507) chooses a sampler's grid by minimising
a bound on the distance between the sampled and the true distribution, for one model and
one solver.  Here the quantity minimised is the solver's *measured* global error on pilot
draws, for the user's own target (field x process) and solver:

    J(grid) = log (1/n) Σ_i ‖x_i(grid) - x_i^ref‖²,

where ``x_i(grid)`` is the solver's result from pilot start point ``i`` on ``grid`` and
``x_i^ref`` a fine reference solve of the same ODE over the same span.  ``J`` is an unbiased
estimate (over start points) of the mean squared global error, so it accounts for
everything a local-error argument leaves out: error propagation along the path, a
multistep method's warm-up, a final denoising step.  (Equidistributing an estimated local
truncation error, the classical alternative, needs each method's error constant and its
interaction with step-size changes; minimising ``J`` needs neither.)

Parameterisation.  The grid's ends (first scale, last positive scale, a final 0) are kept,
so the problem -- and its reference -- stay the same; the ``M`` positive intervals are laid
in ``v = log s`` (``s`` itself if a scale is not positive) as fractions of the span,
``Δv_j = (v_M - v_0) softmax(θ)_j`` with ``θ_M = 0``, which keeps every grid strictly
monotone.  The search starts from the best of the given start grids (a solver on its best
fixed schedule; then from the next best, while the budget lasts) and runs L-BFGS-B on ``θ`` (``M - 1`` numbers) with finite-difference
gradients (``J`` is a smooth function of the grid for every fixed-step solver, evaluated in
float64; on problem (a) of benchmarks/bench_quality_per_nfe.py it reached lower errors within
400 solves than Powell's and Nelder-Mead's derivative-free searches), and keeps the best
start if the search finds nothing better, so the result is never worse on the pilot draws.  Everything here is
physics-agnostic: it sees a ``solve(grid) -> x`` callable and the reference.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Sequence

import numpy as np
from scipy.optimize import minimize
from torch import Tensor

__all__ = ["OptimalGrid", "optimise_grid", "grid_from_theta", "theta_from_grid", "mean_squared_error"]

MAX_STARTS = 3  # searches from the best few start grids (local minima differ: a multistep method may spend its first steps on history)
FD_STEP = 1e-6  # finite-difference step in θ for the gradient (J is smooth in θ; the pilot runs in float64)
BAD = 1e3  # J of a grid on which the solver fails or diverges (log of a squared error: far above any real one)


@dataclass
class OptimalGrid:
    """The result: ``grid`` (host floats, the ends of the start grids), its pilot error
    (RMS, not log), the best start's name and error, and the number of solves."""

    grid: list[float]
    error: float
    start: str
    start_error: float
    start_errors: dict
    evaluations: int


def _coordinate(positive: Sequence[float]):
    if min(positive) > 0:
        return np.log, np.exp
    return (lambda v: np.asarray(v, dtype=float)), (lambda v: np.asarray(v, dtype=float))


def theta_from_grid(grid: Sequence[float]) -> np.ndarray:
    """``θ`` (length ``M - 1``) of a grid's positive part (its last logit is 0)."""
    pos, _ = _split(grid)
    fwd, _ = _coordinate(pos)
    d = np.diff(fwd(np.asarray(pos, dtype=float)))
    frac = d / d.sum()
    return np.log(frac[:-1]) - math.log(frac[-1])


def grid_from_theta(theta: np.ndarray, ends: Sequence[float]) -> list[float]:
    """The grid with ``ends`` = ``(s_0, s_M[, 0])`` and interval fractions ``softmax([θ, 0])``."""
    pos_ends, zero = _split(ends)
    fwd, inv = _coordinate(pos_ends)
    v0, v1 = (float(v) for v in fwd(np.asarray(pos_ends, dtype=float)))
    logits = np.append(np.asarray(theta, dtype=float), 0.0)
    w = np.exp(logits - logits.max())
    cum = np.concatenate([[0.0], np.cumsum(w / w.sum())])
    out = [float(v) for v in inv(v0 + (v1 - v0) * cum)]
    out[0], out[-1] = float(pos_ends[0]), float(pos_ends[-1])  # the ends exactly
    return out + ([0.0] if zero else [])


def _split(grid: Sequence[float]) -> tuple[list[float], bool]:
    g = [float(v) for v in grid]
    return (g[:-1], True) if g[-1] == 0.0 else (g, False)


def mean_squared_error(x: Tensor, ref: Tensor) -> float:
    """``(1/n) Σ_i ‖x_i - ref_i‖²`` in float64."""
    d = x.reshape(x.shape[0], -1).double() - ref.reshape(ref.shape[0], -1).double().to(x.device)
    return float(d.pow(2).sum(1).mean())


def optimise_grid(solve: Callable[[list[float]], Optional[Tensor]], reference: Tensor, starts: Mapping[str, Sequence[float]], *,
                  max_evals: int = 400, tol: float = 1e-6) -> OptimalGrid:
    """Minimise ``J`` (module docstring) over the interior points of the grid.

    ``solve(grid)`` returns the solver's result on the pilot draws, or ``None`` if it failed;
    ``starts`` are valid grids with the same number of steps and the same ends (the first
    one's ends are kept).  ``max_evals`` bounds the solves of the search exactly (the objective stops
    L-BFGS-B mid line search once they are spent; the best grid seen is kept); ``tol`` is
    its tolerance on the relative change of ``J``.
    """
    names = list(starts)
    if not names:
        raise ValueError("optimise_grid needs at least one start grid")
    first = [float(v) for v in starts[names[0]]]
    pos, zero = _split(first)
    ends = [pos[0], pos[-1]] + ([0.0] if zero else [])
    evaluations, limit = 0, math.inf
    best_J, best_grid = math.inf, first  # the best grid the search has solved

    def J_grid(grid: list[float]) -> float:
        nonlocal evaluations, best_J, best_grid
        if evaluations >= limit:  # L-BFGS-B checks maxfun only between line searches: stop it here
            raise _BudgetSpent
        evaluations += 1
        x = solve(grid)
        if x is None:
            return BAD
        mse = mean_squared_error(x, reference)
        J = math.log(mse) if math.isfinite(mse) and mse > 0 else (BAD if not math.isfinite(mse) else -BAD)
        if J < best_J:
            best_J, best_grid = J, list(grid)
        return J

    start_J = {}
    for n in names:
        g = [float(v) for v in starts[n]]
        if len(g) != len(first) or g[0] != first[0] or _split(g)[0][-1] != pos[-1] or (g[-1] == 0.0) != zero:
            raise ValueError(f"start grid {n!r} does not have the steps and ends of {names[0]!r}")
        start_J[n] = J_grid(g)
    best = min(start_J, key=start_J.get)
    start_errors = {n: math.sqrt(math.exp(v)) if v < BAD else math.inf for n, v in start_J.items()}
    M = len(pos) - 1
    if M < 2:  # no interior point to move
        return OptimalGrid(first, start_errors[best], best, start_errors[best], start_errors, evaluations)
    limit = max_evals + len(start_J)  # a hard bound on the search's solves
    for name in sorted(start_J, key=start_J.get)[:MAX_STARTS]:  # L-BFGS-B from the best starts, while the budget lasts
        budget = limit - evaluations
        if budget < 2 * M or start_J[name] >= BAD:
            break
        try:
            minimize(lambda th: J_grid(grid_from_theta(th, ends)), theta_from_grid(starts[name]), method="L-BFGS-B",
                     bounds=[(-12.0, 12.0)] * (M - 1), options={"maxfun": budget, "ftol": tol, "eps": FD_STEP})
        except _BudgetSpent:
            break
    return OptimalGrid(best_grid, math.sqrt(math.exp(best_J)), best, start_errors[best], start_errors, evaluations)


class _BudgetSpent(Exception):
    """Raised inside the objective once ``max_evals`` solves are spent (ends the search)."""
