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
NFE counts evaluations of the joint callable (one evaluation gives both v and κ); with a
separate ``rate`` callable each of the two counts.  ``trajectory`` (``[K+1, B, ...]``) follows
each output particle's ancestry through the resamplings.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor

from ._common import check_batch
from .base import Solution, SolverStats, as_schedule

__all__ = ["births", "systematic_resample", "effective_sample_size", "BIRTH_MODES"]

BIRTH_MODES = ("smc", "weights", "off")


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


def births(
    flow: Callable,
    x: Tensor,
    schedule: Union[Tensor, Sequence[float]],
    *,
    rate: Optional[Callable[[Tensor, Tensor], Tensor]] = None,
    mode: str = "smc",
    method: str = "heun",
    ess_threshold: float = 0.5,
    rate_offset: float = 0.0,
    rate_clip: Optional[float] = None,
    final_resample: bool = True,
    generator: Optional[torch.Generator] = None,
    return_trajectory: bool = False,
) -> Solution:
    """Integrate ``dx/ds = v`` backwards over a decreasing ``schedule`` with births at rate κ.

    ``flow(x, s)`` returns ``v`` when ``rate(x, s) -> κ [B]`` is given, else the pair
    ``(v, κ)`` from one evaluation (the way a field gives both).  ``method``: ``"heun"``
    (default) or ``"euler"``.  ``generator`` drives the resampling uniforms.
    """
    if mode not in BIRTH_MODES:
        raise ValueError(f"unknown births mode {mode!r}; valid: {', '.join(BIRTH_MODES)}")
    if method not in ("heun", "euler"):
        raise ValueError(f"births integrates with 'heun' or 'euler', got {method!r}")
    if not 0.0 <= ess_threshold <= 1.0:
        raise ValueError(f"ess_threshold must be in [0, 1], got {ess_threshold}")
    if rate_clip is not None and not rate_clip > 0:
        raise ValueError(f"rate_clip must be > 0 or None, got {rate_clip}")
    check_batch(x, "births")
    s = as_schedule(schedule)
    if s[1] > s[0]:
        raise ValueError("births integrates backwards: the schedule must decrease")
    n = x.shape[0]
    dev = x.device
    nfe = 0

    def evaluate(xx: Tensor, ss: float) -> tuple[Tensor, Tensor]:
        nonlocal nfe
        nfe += 1
        sb = torch.full((n,), ss, device=dev, dtype=xx.dtype)
        if rate is None:
            out = flow(xx, sb)
            if not (isinstance(out, tuple) and len(out) == 2):
                raise TypeError("births: without rate=..., flow(x, s) must return the pair (velocity, rate)")
            v, k = out
        else:
            nfe += 1  # a separate rate callable is a second evaluation
            v, k = flow(xx, sb), rate(xx, sb)
        return v, k.to(torch.float64).reshape(n)

    weighted = mode != "off"
    log_w = torch.zeros(n, device=dev, dtype=torch.float64)
    ess_hist: list[Tensor] = []
    resamples = torch.zeros((), device=dev, dtype=torch.long)
    clipped = torch.zeros((), device=dev, dtype=torch.float64)
    n_rate = 0
    arange = torch.arange(n, device=dev)
    traj = [x] if return_trajectory else None

    def clip(k: Tensor) -> Tensor:
        nonlocal clipped, n_rate
        n_rate += 1
        if rate_clip is None:
            return k
        clipped = clipped + (k > rate_clip).to(torch.float64).mean()
        return k.clamp(max=rate_clip)

    K = len(s) - 1
    for i in range(K):
        h = s[i + 1] - s[i]
        v1, k1 = evaluate(x, s[i])
        if s[i + 1] == 0.0:  # final step to 0: Euler, weights frozen (the rate diverges at 0)
            x = x + h * v1
        elif method == "euler":
            x = x + h * v1
            if weighted:
                log_w = log_w + abs(h) * (clip(k1) - rate_offset)
        else:
            xp = x + h * v1
            v2, k2 = evaluate(xp, s[i + 1])
            x = x + 0.5 * h * (v1 + v2)
            if weighted:
                log_w = log_w + abs(h) * (0.5 * (clip(k1) + clip(k2)) - rate_offset)
        if weighted and s[i + 1] != 0.0:
            ess = effective_sample_size(log_w) / n
            ess_hist.append(ess)
            if mode == "smc":
                low = ess < ess_threshold
                u = torch.rand((), generator=generator, device=dev, dtype=torch.float64)
                idx = torch.where(low, systematic_resample(log_w, u), arange)
                x = x.index_select(0, idx)
                if traj is not None:  # keep each path the ancestry of its particle
                    traj = [t.index_select(0, idx) for t in traj]
                log_w = torch.where(low, torch.zeros_like(log_w), log_w - log_w.max())
                resamples = resamples + low.to(torch.long)
            else:
                log_w = log_w - log_w.max()
        if traj is not None:
            traj.append(x)

    extra: dict = {"mode": mode}
    if weighted:
        if not bool(torch.isfinite(log_w).all()):
            bad = int((~torch.isfinite(log_w)).sum())
            raise FloatingPointError(f"births: {bad} of {n} log-weights are NaN or Inf (the rate diverged; stop at a larger s_min or set rate_clip)")
        ess_final = effective_sample_size(log_w) / n
        hist = torch.stack(ess_hist).tolist() if ess_hist else []
        extra.update(
            ess=hist,
            ess_min=float(min(hist)) if hist else 1.0,
            ess_final=float(ess_final),
            resamples=int(resamples),
            rate_clipped=float(clipped) / max(n_rate, 1),
        )
        if final_resample:
            u = torch.rand((), generator=generator, device=dev, dtype=torch.float64)
            idx = systematic_resample(log_w, u)
            x = x.index_select(0, idx)
            if traj is not None:
                traj = [t.index_select(0, idx) for t in traj]
        else:
            extra["log_weights"] = log_w - torch.logsumexp(log_w, 0)
    stats = SolverStats(nfe=nfe, steps=K, accepted=K * n, rejected=0,
                        trajectory=torch.stack(traj) if traj is not None else None, extra=extra)
    return Solution(x, stats)
