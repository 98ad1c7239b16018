"""Robustness probes of a trained sampler: PFGM++'s §6.2 perturbations (arXiv 2302.04265).

PFGM++ compares how fast sample quality degrades, as a function of ``D``, under three
perturbations of sampling; each is a solver- and field-agnostic hook here:

(a) **noise injected at every step** -- :func:`noisy_solve` / :func:`sample_with_noise`:
    after the solver's step from ``s_i`` to ``s_{i+1}`` the state becomes
    ``x_{i+1} ← x_{i+1} + α s_{i+1} ε_i`` with ``ε_i ~ N(0, I)`` (for the denoiser form
    ``s = σ``, so this is the paper's ``x += α σ ε``), ``α ∈ {0, 0.1, 0.2}`` in the paper.
    Nothing is added after a step that ends at ``s = 0``.
(b) **fewer steps** -- :func:`budget_schedule`: the process's default schedule with fewer
    points (Heun on a schedule ending at 0 costs ``2·steps - 1`` NFE).
(c) **post-training weight quantisation** -- :func:`quantize_weights`: every floating
    parameter tensor rounded to ``k`` bits, uniform and symmetric per tensor (5 to 9 bits
    in the paper).
"""
from __future__ import annotations

import copy
from typing import Optional

import torch
from torch import Tensor, nn

import solvers
from solvers.base import NoiseFn, Solution, SolverStats, as_schedule, default_noise

from .errors import UserError
from .sampling import grid

__all__ = ["noisy_solve", "sample_with_noise", "budget_schedule", "quantize_weights", "quantize_tensor"]


def noisy_solve(flow, x: Tensor, schedule, method: str = "heun", *, alpha: float, noise: Optional[NoiseFn] = None,
                generator: Optional[torch.Generator] = None, **options) -> Solution:
    """Integrate ``flow`` over ``schedule`` with ``method``, adding ``α s_{i+1} ε_i`` after every step (arXiv 2302.04265, §6.2).

    The solve is split into one call of the solver per schedule interval ``[s_i, s_{i+1}]``
    (so the injected noise lands exactly at the schedule points), then
    ``x ← x + α s_{i+1} ε_i`` with ``ε_i = noise(i, x)`` (per-sample seeded with a
    :class:`physgen.noise.SeededNoise`, or from ``generator``).  Every one-step solver
    (Euler, Heun, RK, dopri5 over the interval) takes exactly the steps it would take
    unperturbed; a multistep solver (``lms``, ``dpmpp-2m``) restarts its history on every
    interval, i.e. runs as its one-step starter.  A final step to ``s = 0`` stays the
    solvers' Euler step and gets no noise.  With ``alpha = 0`` the result equals the
    unsplit solve of any one-step method.  Stats: NFE, steps, accepted and rejected summed.
    """
    if not (isinstance(alpha, (int, float)) and alpha >= 0):
        raise UserError(f"alpha must be a number >= 0, got {alpha!r}")
    if solvers.get_solver(method).stochastic:
        raise UserError(f"noise injection wraps an ODE solver; {method!r} is stochastic")
    if noise is not None and generator is not None:
        raise ValueError("pass either noise or generator, not both")
    noise_fn = noise if noise is not None else default_noise(generator)
    s = as_schedule(schedule)
    stats = SolverStats()
    traj = [x] if options.pop("return_trajectory", False) else None
    for i in range(len(s) - 1):
        sol = solvers.solve(flow, x, [s[i], s[i + 1]], method=method, **options)
        x = sol.x
        stats.nfe += sol.stats.nfe
        stats.steps += sol.stats.steps
        stats.accepted += sol.stats.accepted
        stats.rejected += sol.stats.rejected
        if alpha > 0 and s[i + 1] != 0.0:
            x = x + (alpha * s[i + 1]) * noise_fn(i, x)
        if traj is not None:
            traj.append(x)
    if traj is not None:
        stats.trajectory = torch.stack(traj)
    return Solution(x, stats)


def sample_with_noise(process, field, x0: Tensor, schedule, method: str = "heun", *, alpha: float,
                      noise: Optional[NoiseFn] = None, generator: Optional[torch.Generator] = None,
                      label: Optional[Tensor] = None, **options) -> Solution:
    """:func:`noisy_solve` on ``process.flow(field, label)``: perturbation (a) for any process."""
    return noisy_solve(process.flow(field, label), x0, schedule, method, alpha=alpha, noise=noise, generator=generator, **options)


def budget_schedule(process, steps: int) -> Tensor:
    """Perturbation (b): the process's own grid with ``steps`` steps (fewer steps = less NFE)."""
    return grid(process, steps)


def _check_bits(bits) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 16:
        raise UserError(f"bits must be an integer from 2 to 16, got {bits!r}")
    return bits


def quantize_tensor(w: Tensor, bits: int) -> Tensor:
    """Uniform symmetric per-tensor quantisation (arXiv 2302.04265, §6.2): ``Δ = max|w| / (2^{k-1} - 1)``, ``w_q = Δ · round(w / Δ)``.

    The ``2^k - 1`` levels ``{-(2^{k-1}-1), ..., 2^{k-1}-1} · Δ`` are symmetric about 0 (0 is
    exact); an all-zero tensor is returned unchanged.
    """
    levels = 2 ** (_check_bits(bits) - 1) - 1
    peak = w.detach().abs().max()
    if float(peak) == 0.0:
        return w.detach().clone()
    step = peak / levels
    return torch.round(w.detach() / step) * step


def quantize_weights(module: nn.Module, bits: int) -> nn.Module:
    """Perturbation (c): a deep copy of ``module`` with every floating parameter quantised to ``bits``.

    Uniform symmetric per-tensor (:func:`quantize_tensor`); buffers (normalisation
    statistics, fixed frequencies) are left as they are; the original is not modified.
    """
    _check_bits(bits)
    out = copy.deepcopy(module)
    with torch.no_grad():
        for p in out.parameters():
            if p.is_floating_point():
                p.copy_(quantize_tensor(p, bits))
    return out
