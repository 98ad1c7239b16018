"""Adaptive Dormand-Prince 5(4) with per-sample step-size control.

Dormand & Prince (1980), "A family of embedded Runge-Kutta formulae", J. Comp. Appl.
Math. 6; controller and starting step from Hairer, Norsett & Wanner, Solving ODEs I,
Sec. II.4.  (Integrating a whole batch with one step size, as torchdiffeq does, lets
the hardest sample set everyone's steps; here each sample has its own ``s`` and ``h``.)
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor

from ._loop import check_batch, check_tolerances, combine, host_values, scale_table, to_zero
from .base import Counted, Solution, SolverError, SolverStats, as_schedule
from .spec import Option, takes, tolerance

__all__ = ["dopri5", "DOPRI5_C", "DOPRI5_A", "DOPRI5_B", "DOPRI5_E", "PerSampleProgress", "finish_per_sample"]

DOPRI5_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
DOPRI5_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
DOPRI5_B = DOPRI5_A[6] + (0.0,)  # 5th-order weights = last row (FSAL)
_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
DOPRI5_E = tuple(b - bs for b, bs in zip(DOPRI5_B, _B4))  # b - b*: the error estimate weights

_SAFETY, _FAC_MIN, _FAC_MAX = 0.9, 0.2, 10.0


def _rms(v: Tensor) -> Tensor:
    return v.flatten(1).pow(2).mean(1).sqrt()


@takes("dopri5", tolerance("rtol", 1e-5, "relative tolerance"), tolerance("atol", 1e-5, "absolute tolerance"),
       Option("max_steps", int, 10_000, "step limit per sample", lo=1, hi=10_000_000),
       Option("first_step", float, None, "first step size (default: Hairer's heuristic)", lo=0.0, lo_open=True, none_ok=True),
       Option("check_every", int, 4, "CUDA: force the blocking all-done test every N steps", lo=1),
       Option("return_trajectory", bool, False, "states at every schedule point"), base=())
def dopri5(flow: Callable[[Tensor, Tensor], Tensor], x: Tensor, schedule: Union[Tensor, Sequence[float]], *, rtol: float,
           atol: float, max_steps: int, first_step: Optional[float], check_every: int, return_trajectory: bool) -> Solution:
    """Adaptive Dormand-Prince 5(4) with a separate step size for every sample.

    Step (stages ``k_1..k_7`` of the Dormand-Prince tableau, ``k_7 = v(x_{n+1}, s+h)`` reused
    as the next ``k_1``, so an accepted step costs 6 NFE)::

        x_{n+1} = x_n + h sum_j b_j k_j                     (5th order)
        err     = h sum_j (b_j - b*_j) k_j                  (vs the embedded 4th order)
        q       = RMS_elements( err / (atol + rtol max(|x_n|, |x_{n+1}|)) )   per sample
        accept if q <= 1;  h <- h clamp(0.9 q^{-1/5}, 0.2, 10)
        (the factor is at most 1 on a rejection and on the step right after one)

    Every sample keeps its own scale ``s`` and step ``h`` (tensors ``[B]``); the flow is
    called on the whole batch with the per-sample scale tensor, accept/reject is a
    ``torch.where``, and samples that have finished are frozen (``h = 0``).  On CUDA "all
    done" is read from an asynchronous copy of the flag, with a blocking check (one device
    sync) only every ``check_every`` steps; on the CPU it is checked every step.  The first
    step is chosen per sample by Hairer's heuristic (one extra NFE) unless ``first_step``
    is given.

    With ``return_trajectory`` the intermediate schedule points are output points (every
    sample steps exactly onto each); otherwise only the endpoints matter.  A schedule ending
    at ``s = 0`` is integrated adaptively to its last positive point and finished with the
    denoising step of :func:`solvers._loop.to_zero`.  ``stats.steps`` counts loop iterations (the slowest sample's attempts),
    ``accepted``/``rejected`` sum decisions over samples, and ``stats.extra`` holds
    ``accepted_per_sample`` and ``rejected_per_sample`` (``[B]`` tensors).

    Raises :class:`~solvers.base.SolverError` if some sample is unfinished after ``max_steps`` steps.
    """
    check_batch(x, "dopri5")
    check_tolerances("dopri5", rtol, atol)
    s = as_schedule(schedule)
    f = Counted(flow)
    B = x.shape[0]
    dev, dt = x.device, x.dtype
    tdt = torch.float64 if dev.type != "mps" else torch.float32
    last_euler = s[-1] == 0.0
    pts = s[:-1] if last_euler else s
    bshape = (B,) + (1,) * (x.dim() - 1)

    x0, progress = x, None
    if len(pts) >= 2:
        targets = pts if return_trajectory else [pts[0], pts[-1]]
        T = host_values(targets, tdt, dev)
        direction = 1.0 if pts[-1] > pts[0] else -1.0
        progress = PerSampleProgress(T, x, return_trajectory, check_every, "dopri5", max_steps, f"rtol={rtol}, atol={atol}")
        t = progress.t
        just_rejected = torch.zeros(B, dtype=torch.bool, device=dev)

        k1 = f(x, t.to(dt))
        span = abs(pts[-1] - pts[0]) if not return_trajectory else abs(pts[1] - pts[0])
        if first_step is not None:
            habs = torch.full((B,), float(first_step), dtype=tdt, device=dev)
        else:
            habs = _initial_step(f, x, t, k1, direction, rtol, atol, span)
        h = direction * torch.minimum(habs, (progress.target - t).abs())

        while not progress.finished():
            t, target = progress.t, progress.target
            h_eff, hits = progress.clip(h)
            x5, k7, err = _dopri5_step(f, x, k1, t, h_eff, target, hits)
            sc = torch.maximum(x.abs(), x5.abs()).mul_(rtol).add_(atol)
            q = _rms(err / sc).to(tdt)
            q = torch.where(torch.isfinite(q), q, torch.full_like(q, math.inf))
            active = ~progress.done
            accept = (q <= 1.0) & active
            am = accept.view(bshape)
            x = torch.where(am, x5, x)
            k1 = torch.where(am, k7, k1)
            fac = (_SAFETY * q.pow(-0.2)).clamp(_FAC_MIN, _FAC_MAX)
            # no growth on a rejection, nor on the step right after one (Hairer's facmax = 1)
            fac = torch.where(accept & ~just_rejected, fac, fac.clamp(max=1.0))
            just_rejected = torch.where(active, ~accept, just_rejected)
            h = torch.where(active, h_eff * fac, h)
            progress.advance(accept, hits, h_eff, x)
    return finish_per_sample(f, x, x0, pts, last_euler, progress, return_trajectory)


def _dopri5_step(f, x: Tensor, k1: Tensor, t: Tensor, h: Tensor, target: Tensor, hits: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One Dormand-Prince step of size ``h`` (``[B]``) from ``(x, t)`` with ``k_1`` given:
    ``(x_{n+1}, k_7, err)``; a sample that ``hits`` its target takes its last stages exactly there."""
    hx = h.to(x.dtype).view((x.shape[0],) + (1,) * (x.dim() - 1))
    ks = [k1]
    y = x
    for j in range(1, 7):
        y = torch.addcmul(x, hx, combine(ks[0].mul(DOPRI5_A[j][0]), ks[1:], DOPRI5_A[j][1:], 1.0))
        tj = torch.where(hits, target, t + h) if j >= 5 else t + DOPRI5_C[j] * h
        ks.append(f(y, tj.to(x.dtype)))
    return y, ks[6], hx * combine(ks[0].mul(DOPRI5_E[0]), ks[1:], DOPRI5_E[1:], 1.0)


class PerSampleProgress:
    """Each sample's way through the output times ``T`` of a per-sample adaptive solver
    (dopri5, dpm-adaptive): its time ``t``, the output point it steps onto (``target``, its
    segment ``seg``), whether it is done, its accepted/rejected counts, and the trajectory of
    output points.  The solver's own part is the attempt and the step-size controller::

        while not progress.finished():
            h_eff, hits = progress.clip(h)          # the step, cut to land on the next output time
            ...attempt, accept, new h...
            progress.advance(accept, hits, h_eff, x)
    """

    def __init__(self, T: Tensor, x: Tensor, return_trajectory: bool, check_every: int, name: str, max_steps: int, tolerances: str):
        B, dev = x.shape[0], x.device
        self.T, self.M, self.B = T, len(T), B
        self.name, self.max_steps, self.tolerances = name, max_steps, tolerances
        self.t = T[0].expand(B).clone()
        self.seg = torch.ones(B, dtype=torch.long, device=dev)
        self.target = T[self.seg]
        self.done = torch.zeros(B, dtype=torch.bool, device=dev)
        self.accepted = torch.zeros(B, dtype=torch.long, device=dev)
        self.rejected = torch.zeros(B, dtype=torch.long, device=dev)
        self.zero = torch.zeros((), dtype=T.dtype, device=dev)
        self.bshape = (B,) + (1,) * (x.dim() - 1)
        self.traj: Optional[Tensor] = None
        if return_trajectory:
            self.traj = torch.zeros((self.M,) + tuple(x.shape), dtype=x.dtype, device=dev)
            self.traj[0] = x
            self._traj_flat = self.traj.view((self.M * B,) + tuple(x.shape[1:]))
            self._rows = torch.arange(B, device=dev)
        self.flag = _DoneFlag(dev, check_every)
        self.steps = 0

    def finished(self) -> bool:
        """Every sample done (tested without a device sync on CUDA but every ``check_every``
        steps); raises :class:`~solvers.base.SolverError` at ``max_steps``."""
        if self.steps == 0 or not (self.flag.finished(self.done, self.steps) or self.steps >= self.max_steps):
            return False
        if bool(self.done.all()):
            return True
        if self.steps >= self.max_steps:
            raise SolverError(f"{self.name}: {int((~self.done).sum())} of {self.B} samples unfinished after max_steps={self.max_steps} "
                              f"steps ({self.tolerances}); raise max_steps or loosen the tolerances")
        return False

    def clip(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """``(h_eff, hits)``: the step cut to end on the next output time (``hits``), 0 when done."""
        remaining = self.target - self.t
        hits = h.abs() >= remaining.abs()
        return torch.where(self.done, self.zero, torch.where(hits, remaining, h)), hits

    def advance(self, accept: Tensor, hits: Tensor, h_eff: Tensor, x: Tensor) -> None:
        """Count the decisions, move the accepted samples on (onto the output time they hit,
        recording it), and post the all-done flag."""
        active = ~self.done
        self.accepted += accept
        self.rejected += active & ~accept
        self.t = torch.where(accept, torch.where(hits, self.target, self.t + h_eff), self.t)
        reached = accept & hits
        if self.traj is not None:
            idx = self.seg.clamp(max=self.M - 1) * self.B + self._rows
            self._traj_flat.index_copy_(0, idx, torch.where(reached.view(self.bshape), x, self._traj_flat.index_select(0, idx)))
        self.seg = self.seg + reached
        self.done = self.seg >= self.M
        self.target = self.T[self.seg.clamp(max=self.M - 1)]
        self.flag.post(self.done)
        self.steps += 1


def finish_per_sample(f, x: Tensor, x0: Tensor, pts, zero_end: bool, progress: Optional[PerSampleProgress],
                      return_trajectory: bool) -> Solution:
    """The denoising step to ``s = 0`` (where the schedule ends there) and the statistics of a
    per-sample adaptive solve: ``steps`` counts loop iterations (the slowest sample's
    attempts), ``accepted``/``rejected`` sum decisions over samples, ``stats.extra`` holds them
    per sample."""
    B = x.shape[0]
    zeros = torch.zeros(B, dtype=torch.long, device=x.device)
    acc_n, rej_n = (progress.accepted, progress.rejected) if progress is not None else (zeros, zeros)
    traj = progress.traj if progress is not None else None
    if zero_end:
        xe = to_zero(f, x, scale_table([pts[-1]], x)[0], pts[-1])
        if return_trajectory:
            traj = torch.cat([traj, xe[None]]) if traj is not None else torch.stack([x0, xe])
        x = xe
    stats = SolverStats(nfe=f.nfe, steps=int((acc_n + rej_n).max()) + (1 if zero_end else 0),
                        accepted=int(acc_n.sum()) + (B if zero_end else 0), rejected=int(rej_n.sum()), trajectory=traj,
                        extra={"accepted_per_sample": acc_n.cpu(), "rejected_per_sample": rej_n.cpu()})
    return Solution(x, stats)


class _DoneFlag:
    """Decides when to test "every sample done" without stalling the device.

    On the CPU the test is free, so it runs every step.  On CUDA the flag is copied
    asynchronously into pinned host memory after each step and read once its copy has
    landed (no sync); a blocking test is forced only every ``check_every`` steps.
    """

    def __init__(self, device: torch.device, check_every: int):
        self.every = check_every
        self.async_ = device.type == "cuda"
        if self.async_:
            self.device = device
            self.host = torch.zeros((), dtype=torch.bool).pin_memory()
            self.event = torch.cuda.Event()
            self.pending = False

    def post(self, done: Tensor) -> None:
        if self.async_:
            self.host.copy_(done.all(), non_blocking=True)
            self.event.record(torch.cuda.current_stream(self.device))
            self.pending = True

    def finished(self, done: Tensor, steps: int) -> bool:
        if not self.async_ or steps % self.every == 0:
            return True  # caller runs the blocking test
        if self.pending and self.event.query():
            self.pending = False
            return bool(self.host)
        return False


def _initial_step(f, x: Tensor, t: Tensor, k1: Tensor, direction: float, rtol: float, atol: float,
                  span: float) -> Tensor:
    """Hairer's starting step (Solving ODEs I, II.4), per sample, for a method of order 5."""
    tdt = t.dtype
    bshape = (x.shape[0],) + (1,) * (x.dim() - 1)
    sc = x.abs().mul(rtol).add_(atol)
    d0 = _rms(x / sc).to(tdt)
    d1 = _rms(k1 / sc).to(tdt)
    small = (d0 < 1e-5) | (d1 < 1e-5) | ~torch.isfinite(d0 / d1)
    h0 = torch.where(small, torch.full_like(d0, 1e-6), 0.01 * d0 / d1).clamp(max=span)
    x1 = torch.addcmul(x, (direction * h0).to(x.dtype).view(bshape), k1)
    k2 = f(x1, (t + direction * h0).to(x.dtype))
    d2 = _rms((k2 - k1) / sc).to(tdt) / h0
    dm = torch.maximum(d1, d2)
    h1 = torch.where(dm <= 1e-15, torch.clamp(h0 * 1e-3, min=1e-6), (0.01 / dm).pow(0.2))
    h1 = torch.where(torch.isfinite(h1), h1, h0)
    return torch.minimum(100 * h0, h1).clamp(max=span)
