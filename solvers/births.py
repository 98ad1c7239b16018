"""Integrating a flow with births and deaths: weighted particles, systematic resampling.

A density that obeys ``∂p/∂s + ∇·(p v) = −κ p`` (a flow with a per-particle death rate κ
when ``s`` increases, e.g. Yukawa's GenPhys process, arXiv 2304.02637) is sampled
backwards in ``s`` by particles that follow ``dx/ds = v`` and *split* at rate κ per unit
``|ds|``.  With a fixed batch the splitting is carried as log-weights, integrated alongside
the ODE (derivation: along ``dx/ds = v`` a weighted particle cloud with
``d log w/ds = −κ`` has the density of the equation above):

    x_{i+1} = x_i + h/2 (v(x_i, s_i) + v(x', s_{i+1})),   x' = x_i + h v(x_i, s_i)   (Heun)
    ℓ_{i+1} = ℓ_i + |h|/2 (κ(x_i, s_i) + κ(x', s_{i+1})) − c |h|                      (trapezoid)

which is Heun's method on the joint system ``(x, ℓ)``; ``c`` (``rate_offset``, Yukawa: the
mean rate m) is a constant shift that keeps ℓ small and changes no normalised weight.  The
effective sample size ``ESS = (Σw)²/Σw²`` is recorded after every step; ``mode``:

* ``"smc"``: sequential Monte Carlo: resample systematically whenever ``ESS/n`` falls
  below ``ess_threshold`` (weights reset to equal), and once more at the end;
* ``"weights"``: carry the weights to the end and resample once there;
* ``"off"``: the flow alone (κ ignored): biased whenever κ varies between particles.

The batch size never changes.  Resampling is decided on the device (``torch.where`` on
the ESS test, indices from ``searchsorted`` on the weights' CDF), so the step loop has no
host sync and no Python loop over particles.  The rate is not integrated over a final step
to ``s = 0`` (the rate typically diverges there, e.g. Yukawa's ``κ ≈ m r/z`` for
particles that have not reached the data): weights freeze at the last positive scale and
that step is plain Euler (for a denoiser flow: ``x ← D(x, s_{K−1})``).  ``rate_clip``
optionally clips κ from above; the fraction of clipped rate evaluations is reported.

Statistics (``Solution.stats.extra``): ``ess`` (ESS/n after each step, before any
resampling), ``ess_min``, ``ess_final`` (before the final resampling), ``resamples``
(intermediate resampling events), ``rate_clipped``, ``mode``; with
``final_resample=False`` also ``log_weights`` (the normalised log-weights of the output).
NFE counts evaluations of the joint callable (one evaluation gives both v and κ).  ``trajectory`` (``[K+1, B, ...]``) follows
each output particle's ancestry through the resamplings.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor

from ._loop import Run, run_steps
from .base import Solution, as_schedule
from .offers import BIRTH_MODES, BIRTH_STEPS
from .spec import NOISE_KEYS, STOCHASTIC_OPTIONS, Option, takes

__all__ = ["births", "systematic_resample", "effective_sample_size", "BIRTH_MODES"]


def effective_sample_size(log_w: Tensor) -> Tensor:
    """``(Σw)²/Σw²`` from log-weights (a 0-d tensor, no sync)."""
    return torch.exp(2.0 * torch.logsumexp(log_w, 0) - torch.logsumexp(2.0 * log_w, 0))


def systematic_resample(log_w: Tensor, u: Tensor) -> Tensor:
    """Indices ``[n]`` of a systematic resample of ``n`` particles with log-weights ``log_w``.

    ``u ~ U[0, 1)`` (one number for the whole batch): particle ``j`` is copied once for each
    of the points ``(u + i)/n`` that falls in its slice of the weights' CDF, i.e. between
    ``⌊n w_j⌋`` and ``⌈n w_j⌉`` times (Kitagawa 1996; Douc, Cappé & Moulines 2005).
    """
    n = log_w.shape[0]
    w = torch.softmax(log_w.to(torch.float64), 0)
    cdf = torch.cumsum(w, 0)
    positions = (u.to(torch.float64) + torch.arange(n, device=log_w.device, dtype=torch.float64)) / n
    return torch.searchsorted(cdf, positions, right=True).clamp_(max=n - 1)


@dataclass(frozen=True)
class Weights:
    """What :func:`births_step` carries between steps: the particles' log-weights ``ℓ``, ``ESS/n``
    after each step, the resampling events, the clipped fractions of the rate evaluations (summed)
    and the number of rate evaluations (all on the device but the count)."""

    log_w: Tensor
    ess: tuple
    resamples: Tensor
    clipped: Tensor
    n_rate: int = 0

    @staticmethod
    def start(n: int, device) -> "Weights":
        zero = torch.zeros((), device=device, dtype=torch.float64)
        return Weights(torch.zeros(n, device=device, dtype=torch.float64), (), torch.zeros((), device=device, dtype=torch.long), zero)


def evaluate_joint(run: Run, x: Tensor, s: float) -> tuple[Tensor, Tensor]:
    """``(v, κ)`` from one evaluation of the joint target (κ as float64 ``[n]``)."""
    out = run.f(x, run.at(s))
    if not (isinstance(out, tuple) and len(out) == 2):
        raise TypeError("births: the target must return the pair (velocity, rate) from one evaluation")
    v, k = out
    return v, k.to(torch.float64).reshape(x.shape[0])


def clip_rate(k: Tensor, w: Weights, rate_clip: Optional[float]) -> tuple[Tensor, Weights]:
    """``min(κ, rate_clip)`` and the weights' count of rate evaluations and clipped fraction."""
    if rate_clip is None:
        return k, replace(w, n_rate=w.n_rate + 1)
    return k.clamp(max=rate_clip), replace(w, n_rate=w.n_rate + 1, clipped=w.clipped + (k > rate_clip).to(torch.float64).mean())


def births_step(run: Run, i: int, x: Tensor, w: Weights, *, mode: str, method: str, ess_threshold: float, rate_offset: float,
                rate_clip: Optional[float], generator: Optional[torch.Generator]):
    """Heun (or Euler) on ``x`` with the trapezoid rule on the log-weights, resampling on the device
    (module docstring); the step to ``s = 0`` is Euler with the weights frozen (the rate diverges at 0)."""
    s, s_next = run.s[i], run.s[i + 1]
    h = s_next - s
    v1, k1 = evaluate_joint(run, x, s)
    if s_next == 0.0:
        return x + h * v1, w
    if method == "euler":
        x = x + h * v1
        rate, w = clip_rate(k1, w, rate_clip)
    else:
        xp = x + h * v1
        v2, k2 = evaluate_joint(run, xp, s_next)
        x = x + 0.5 * h * (v1 + v2)
        r1, w = clip_rate(k1, w, rate_clip)
        r2, w = clip_rate(k2, w, rate_clip)
        rate = 0.5 * (r1 + r2)
    if mode == "off":
        return x, w
    log_w = w.log_w + abs(h) * (rate - rate_offset)
    ess = effective_sample_size(log_w) / x.shape[0]
    if mode != "smc":
        return x, replace(w, log_w=log_w - log_w.max(), ess=w.ess + (ess,))
    low = ess < ess_threshold
    u = torch.rand((), generator=generator, device=x.device, dtype=torch.float64)
    idx = torch.where(low, systematic_resample(log_w, u), torch.arange(x.shape[0], device=x.device))
    run.reindex(idx)
    return x.index_select(0, idx), replace(w, log_w=torch.where(low, torch.zeros_like(log_w), log_w - log_w.max()), ess=w.ess + (ess,),
                                           resamples=w.resamples + low.to(torch.long))


def births_finish(run: Run, x: Tensor, w: Weights, *, mode: str, final_resample: bool, generator: Optional[torch.Generator]) -> Tensor:
    """The statistics, then the final resampling (``final_resample``; else the normalised log-weights go to the statistics)."""
    run.extra["mode"] = mode
    if mode == "off":
        return x
    n = x.shape[0]
    if not bool(torch.isfinite(w.log_w).all()):
        bad = int((~torch.isfinite(w.log_w)).sum())
        raise FloatingPointError(f"births: {bad} of {n} log-weights are NaN or Inf (the rate diverged; stop at a larger s_min or set rate_clip)")
    hist = torch.stack(w.ess).tolist() if w.ess else []
    run.extra.update(ess=hist, ess_min=float(min(hist)) if hist else 1.0, ess_final=float(effective_sample_size(w.log_w) / n),
                     resamples=int(w.resamples), rate_clipped=float(w.clipped) / max(w.n_rate, 1))
    if not final_resample:
        run.extra["log_weights"] = w.log_w - torch.logsumexp(w.log_w, 0)
        return x
    u = torch.rand((), generator=generator, device=x.device, dtype=torch.float64)
    idx = systematic_resample(w.log_w, u)
    run.reindex(idx)
    return x.index_select(0, idx)


@takes("births", Option("mode", str, "smc", "smc (resample at low ESS), weights (resample once at the end) or off", choices=BIRTH_MODES),
       Option("method", str, "heun", "step rule for x: heun or euler (log-weights by the trapezoid rule)", choices=BIRTH_STEPS),
       Option("ess_threshold", float, 0.5, "smc: resample when ESS/n falls below this", lo=0.0, hi=1.0),
       Option("rate_offset", float, None, "constant subtracted from the rate (default: the target's rate_offset, else 0)", none_ok=True),
       Option("rate_clip", float, None, "clip the rate from above (reported)", lo=0.0, lo_open=True, none_ok=True),
       Option("final_resample", bool, True, "resample once at the end (else return the log-weights)"),
       Option("seed", int, None, "seed of the resampling uniforms (default: the sampling seed)", lo=0, hi=2**63 - 1, none_ok=True),
       base=STOCHASTIC_OPTIONS[:1], passthrough=NOISE_KEYS)
def births(
    joint: Callable,
    x: Tensor,
    schedule: Union[Tensor, Sequence[float]],
    *,
    mode: str,
    method: str,
    ess_threshold: float,
    rate_offset: Optional[float],
    rate_clip: Optional[float],
    final_resample: bool,
    seed: Optional[int],
    noise=None,
    generator: Optional[torch.Generator] = None,
    return_trajectory: bool = False,
) -> Solution:
    """Integrate ``dx/ds = v`` backwards over a decreasing ``schedule`` with births at rate κ.

    ``joint(x, s)`` returns the pair ``(v, κ)`` from one evaluation (the way a field gives
    both; one NFE).  ``generator`` (or ``seed``, or the ``seed`` of per-sample ``noise``)
    drives the resampling uniforms: unlike the flow-only samplers, an SMC sample depends on
    the whole batch (particles are resampled together).
    """
    s = as_schedule(schedule)
    if s[1] > s[0]:
        raise ValueError("births integrates backwards: the schedule must decrease")
    if generator is None:
        generator = torch.Generator(device=x.device)
        generator.manual_seed((getattr(noise, "seed", 0) if seed is None else seed) + 7919)  # not the prior's stream
    offset = float(getattr(joint, "rate_offset", 0.0)) if rate_offset is None else rate_offset
    step = functools.partial(births_step, mode=mode, method=method, ess_threshold=ess_threshold, rate_offset=offset, rate_clip=rate_clip,
                             generator=generator)
    finish = functools.partial(births_finish, mode=mode, final_resample=final_resample, generator=generator)
    return run_steps(step, joint, x, s, name="births", state=Weights.start(x.shape[0], x.device), need="births", stochastic=True,
                     own_final=True, hint="stop at a larger s_min or set rate_clip", finish=finish, generator=generator,
                     return_trajectory=return_trajectory)
