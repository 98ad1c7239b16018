"""DPM-Solver-fast and DPM-Solver-adaptive (Lu et al., arXiv 2206.00927, Sec. 3.3 and 3.4, Alg. 4/5).

Both use the singlestep DPM-Solver-1/2/3 in the noise-prediction form on the denoiser form
(``α = 1``, ``σ = s``, ``λ = -log s``, ``ε = (x - D)/σ``, ``h = λ_t - λ_s``; the paper's
Alg. 1 and 2, k-diffusion's ``DPMSolver``)::

    DPM-Solver-1:  x_t = x_s - σ_t (e^h - 1) ε_s                      (DDIM = Euler in σ)
    DPM-Solver-2:  u_1 = x_s - σ_1 (e^{r_1 h} - 1) ε_s,               λ_1 = λ_s + r_1 h
                   x_t = x_s - σ_t (e^h - 1) ε_s - σ_t/(2 r_1) (e^h - 1) (ε(u_1) - ε_s)
    DPM-Solver-3:  u_2 = x_s - σ_2 (e^{r_2 h} - 1) ε_s - σ_2 (r_2/r_1) ((e^{r_2 h} - 1)/(r_2 h) - 1) (ε(u_1) - ε_s)
                   x_t = x_s - σ_t (e^h - 1) ε_s - σ_t/r_2 ((e^h - 1)/h - 1) (ε(u_2) - ε_s),   r_1 = 1/3, r_2 = 2/3

* ``dpm-fast`` (Alg. 4, k-diffusion's ``sample_dpm_fast``) spends a budget of ``N`` NFE on
  ``M = ⌊N/3⌋ + 1`` steps uniform in ``λ`` with orders ``3, ..., 3, 2, 1`` (``N ≡ 0 mod 3``)
  or ``3, ..., 3, N mod 3``.  ``--steps K`` is the budget: the solve costs exactly ``K`` NFE,
  of which ``K - 1`` go to DPM-Solver-fast from the grid's first point to its last positive
  one and 1 to the denoising step to ``s = 0`` (a grid that does not end at 0: all ``K``).
  Only the grid's ends are used (the paper's steps are uniform in ``λ``), so a ``--schedule``
  changes nothing but them (its row says ``grid="ends"``); a trajectory is recorded on its
  own points, listed in ``stats.extra["grid"]``.
* ``dpm-adaptive`` (Alg. 5, k-diffusion's ``sample_dpm_adaptive``, "DPM-Solver-12/23"):
  order 3 compares DPM-Solver-2 (``r_1 = 1/3``) with DPM-Solver-3, which share their first
  two evaluations (3 NFE per attempted step); order 2 compares DPM-Solver-1 with -2 (2 NFE).
  The error ``E = RMS((x_low - x_high)/δ)``, ``δ = max(atol, rtol max(|x_low|, |x_s|))``, drives
  k-diffusion's PID controller in ``λ`` (``h <- h f``, ``f = 1 + atan(ε^{b_1} ε_1^{b_2} ε_2^{b_3} - 1)``
  with ``ε = 1/E`` and ``b`` from ``pcoeff, icoeff, dcoeff`` over the order; accept when
  ``f >= accept_safety``).  Where we differ from k-diffusion: every sample has its own ``λ``,
  step and controller state (one step size for the batch lets the hardest sample set
  everyone's steps, and makes a sample depend on its batch); ``δ`` uses the current state
  ``|x_s|`` where k-diffusion keeps the previous step's ``x_low``; a grid ending at ``s = 0``
  ends with the denoising step (k-diffusion stops at ``σ_min``); ``eta > 0`` (ancestral
  noise) is not offered.  NFE is counted at the target: one per batch evaluation, rejected
  attempts included.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor

from ._loop import Run, check_batch, check_tolerances, host_values, positive_scales, require, run_steps
from .adaptive import PerSampleProgress, finish_per_sample
from .base import Counted, Solution, as_schedule
from .dpm import denoiser_scales
from .spec import Option, takes, tolerance

__all__ = ["dpm_fast", "dpm_adaptive", "dpm_solver_coefficients", "fast_orders"]


def dpm_solver_coefficients(h, sigma_s, order: int, r1: float = 1 / 3, r2: float = 2 / 3) -> dict:
    """The DPM-Solver-``order`` step as combinations of ``ε`` (module docstring), for float or
    tensor ``h``/``sigma_s``: ``sigma`` (stage scales), ``a1`` (``u_1 = x + a1 ε_s``), ``a2``
    (``u_2 = x + a2[0] ε_s + a2[1] ε_1``) and ``b`` (``x_t = x + Σ b_j ε_j``)."""
    tensor = isinstance(h, Tensor)
    exp, expm1 = (torch.exp, torch.expm1) if tensor else (math.exp, math.expm1)
    e_h = sigma_s * exp(-h) * expm1(h)  # σ_t (e^h - 1) = σ_s - σ_t
    if order == 1:
        return {"sigma": [], "b": [-e_h]}
    s1 = sigma_s * exp(-r1 * h)
    a1 = -s1 * expm1(r1 * h)
    if order == 2:
        return {"sigma": [s1], "a1": a1, "b": [-e_h + e_h / (2 * r1), -e_h / (2 * r1)]}
    s2 = sigma_s * exp(-r2 * h)
    c2 = s2 * (r2 / r1) * (expm1(r2 * h) / (r2 * h) - 1)
    ct = sigma_s * exp(-h) / r2 * (expm1(h) / h - 1)
    return {"sigma": [s1, s2], "a1": a1, "a2": [-s2 * expm1(r2 * h) + c2, -c2], "b": [-e_h + ct, 0.0, -ct]}


def fast_orders(nfe: int) -> list[int]:
    """DPM-Solver-fast's orders for a budget of ``nfe`` evaluations (they sum to ``nfe``)."""
    m = nfe // 3 + 1
    return [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]


def _combo(x: Tensor, ws: Sequence, eps: Sequence[Tensor], bshape) -> Tensor:
    """``x + Σ w_j ε_j`` for float weights or per-sample ``[B]`` weights (never writes into ``x``)."""
    out = x
    for w, e in zip(ws, eps):
        if isinstance(w, Tensor):
            out = torch.addcmul(out, w.to(e.dtype).view(bshape), e)
        elif w != 0.0:
            out = torch.add(out, e, alpha=w)
    return out


def _evaluate(f, x: Tensor, sig, coef: dict, bshape) -> list[Tensor]:
    """``[ε_s, ε(u_1), ε(u_2)]`` of one DPM-Solver step (as many as its order), at the scales
    ``sig`` and ``coef["sigma"]`` (``[B]`` tensors)."""
    eps = [f(x, sig)]
    if coef["sigma"]:
        eps.append(f(_combo(x, [coef["a1"]], eps, bshape), coef["sigma"][0]))
    if len(coef["sigma"]) == 2:
        eps.append(f(_combo(x, coef["a2"], eps, bshape), coef["sigma"][1]))
    return eps


def dpm_fast_step(run: Run, i: int, x: Tensor, state, *, orders: list):
    """A DPM-Solver-``orders[i]`` step from ``s_i`` to ``s_{i+1}`` (:func:`dpm_solver_coefficients`); no state."""
    s, s_next = run.s[i], run.s[i + 1]
    order = orders[i]
    coef = dpm_solver_coefficients(math.log(s / s_next), s, order, *((0.5,) if order == 2 else ()))
    eps = _evaluate(run.f, x, run.at(s), {**coef, "sigma": [run.at(v) for v in coef["sigma"]]}, None)
    return _combo(x, coef["b"], eps, None), state


@takes("dpm-fast")
def dpm_fast(flow: Callable[[Tensor, Tensor], Tensor], x: Tensor, schedule: Union[Tensor, Sequence[float]], **loop) -> Solution:
    """DPM-Solver-fast (arXiv 2206.00927, Alg. 4; k-diffusion's ``sample_dpm_fast``): a grid of
    ``K`` steps is a budget of exactly ``K`` NFE (see :mod:`solvers.dpm_adaptive`)."""
    s = as_schedule(schedule)
    positive_scales(s, "dpm-fast")
    zero = s[-1] == 0.0
    budget = len(s) - 1 - (1 if zero else 0)
    end = s[-2] if zero else s[-1]
    orders = fast_orders(budget) if budget else []
    la, lb = math.log(s[0]), math.log(end)
    grid = [s[0]] + [math.exp(la + (lb - la) * j / len(orders)) for j in range(1, len(orders))] + ([end] if orders else [])
    grid += [0.0] if zero else []
    return run_steps(functools.partial(dpm_fast_step, orders=orders), flow, x, grid, name="dpm-fast", need="denoiser",
                     check=denoiser_scales("dpm-fast"), extra={"grid": grid}, **loop)


PID_WHY = ("the step factor is E^-(pcoeff + icoeff + dcoeff)/order times the previous errors' powers, whose exponents sum to "
           "-icoeff/order: the integral gain must set the step by the error's level, the other two only temper it (k-diffusion's "
           "default is the integral controller icoeff = 1). Measured on a Gaussian flow at rtol 1e-2 to 1e-5: icoeff in [0.5, 2] "
           "with pcoeff, dcoeff in [0, 1] finishes within 1700 steps for any accept_safety; icoeff 0.1-0.3 with pcoeff or "
           "dcoeff 2 did not finish in 3000, and icoeff <= 0 never does")


def _rms(v: Tensor) -> Tensor:
    return v.flatten(1).pow(2).mean(1).sqrt()


@takes("dpm-adaptive", Option("order", int, 3, "3: DPM-Solver-23 (3 NFE per attempt); 2: DPM-Solver-12 (2 NFE)", lo=2, hi=3),
       tolerance("rtol", 0.05, "relative tolerance"), tolerance("atol", 0.0078, "absolute tolerance"),
       Option("h_init", float, 0.05, "first step in λ = -log s", lo=0.0, lo_open=True, hi=1.0,
              why="a first step of h in λ shrinks the scale by e^-h: past 1 the embedded estimate (order 2 against 3) is out "
                  "of its small-step regime and passes bad steps (h_init = 5 accepted an error 240x rtol on a Gaussian flow)"),
       Option("pcoeff", float, 0.0, "PID proportional coefficient", lo=0.0, hi=1.0, why=PID_WHY),
       Option("icoeff", float, 1.0, "PID integral coefficient", lo=0.5, hi=2.0, why=PID_WHY),
       Option("dcoeff", float, 0.0, "PID derivative coefficient", lo=0.0, hi=1.0, why=PID_WHY),
       Option("accept_safety", float, 0.81, "accept a step when the controller's factor is at least this", lo=0.25, hi=1.0,
              why="the factor 1 + atan(E^-b - 1) is at least 1 - π/4 = 0.215 whatever the error E: at or below that every step "
                  "is accepted and the error control is off"),
       Option("max_steps", int, 10_000, "step limit per sample", lo=1),
       Option("check_every", int, 4, "CUDA: force the blocking all-done test every N steps", lo=1),
       Option("return_trajectory", bool, False, "states at every schedule point"), base=())
def dpm_adaptive(flow: Callable[[Tensor, Tensor], Tensor], x: Tensor, schedule: Union[Tensor, Sequence[float]], *, order: int,
                 rtol: float, atol: float, h_init: float, pcoeff: float, icoeff: float, dcoeff: float, accept_safety: float,
                 max_steps: int, check_every: int, return_trajectory: bool) -> Solution:
    """DPM-Solver-adaptive (arXiv 2206.00927, Alg. 5; k-diffusion's ``sample_dpm_adaptive``) with
    per-sample step control in ``λ`` (see :mod:`solvers.dpm_adaptive`).

    ``stats.steps`` counts loop iterations (the slowest sample's attempts); ``accepted`` /
    ``rejected`` sum decisions over samples (``stats.extra`` has them per sample).  Raises
    :class:`~solvers.base.SolverError` if a sample is unfinished after ``max_steps`` attempts.
    """
    name = "dpm-adaptive"
    check_batch(x, name)
    require(flow, "denoiser", name)
    check_tolerances(name, rtol, atol)
    s = as_schedule(schedule)
    positive_scales(s, name)
    f = Counted(flow)
    B, dev, dt = x.shape[0], x.device, x.dtype
    tdt = torch.float64 if dev.type != "mps" else torch.float32
    zero = s[-1] == 0.0
    pts = s[:-1] if zero else s
    bshape = (B,) + (1,) * (x.dim() - 1)
    b1, b2, b3 = (pcoeff + icoeff + dcoeff) / order, -(pcoeff + 2 * dcoeff) / order, dcoeff / order
    x0, progress = x, None
    if len(pts) >= 2:
        lams = [-math.log(v) for v in (pts if return_trajectory else [pts[0], pts[-1]])]
        T = host_values(lams, tdt, dev)
        direction = 1.0 if lams[-1] > lams[0] else -1.0
        progress = PerSampleProgress(T, x, return_trajectory, check_every, name, max_steps, f"rtol={rtol}, atol={atol}")
        h = torch.full((B,), direction * h_init, dtype=tdt, device=dev)
        errs: Optional[list[Tensor]] = None
        while not progress.finished():
            h_eff, hits = progress.clip(h)
            h_safe = torch.where(h_eff == 0, torch.full_like(h_eff, direction), h_eff)  # frozen samples: any finite step
            sig = torch.exp(-progress.t)
            high = dpm_solver_coefficients(h_safe, sig, order, *((0.5,) if order == 2 else ()))
            low = dpm_solver_coefficients(h_safe, sig, order - 1)  # order 3: DPM-Solver-2 with r1 = 1/3 shares ε(u_1)
            eps = _evaluate(f, x, sig.to(dt), {**high, "sigma": [v.to(dt) for v in high["sigma"]]}, bshape)
            x_high, x_low = _combo(x, high["b"], eps, bshape), _combo(x, low["b"], eps, bshape)
            delta = torch.maximum(x_low.abs(), x.abs()).mul_(rtol).clamp_(min=atol)
            err = _rms((x_low - x_high) / delta).to(tdt)
            err = torch.where(torch.isfinite(err), err, torch.full_like(err, math.inf))
            inv = 1.0 / (err + 1e-8)
            if errs is None:
                errs = [inv, inv, inv]
            factor = inv.pow(b1) * errs[1].pow(b2) * errs[2].pow(b3)
            factor = 1.0 + torch.atan(factor - 1.0)
            active = ~progress.done
            accept = (factor >= accept_safety) & active
            errs = [inv, torch.where(accept, inv, errs[1]), torch.where(accept, errs[1], errs[2])]
            x = torch.where(accept.view(bshape), x_high, x)
            h = torch.where(active, h_eff * factor, h)
            progress.advance(accept, hits, h_eff, x)
    return finish_per_sample(f, x, x0, pts, zero, progress, return_trajectory)
