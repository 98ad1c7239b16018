"""The step loop, written once, that every fixed-step solver runs.

A fixed-step method is only its *step rule* (a :class:`StepRule`): which scales it evaluates
in step ``i`` and how it combines the evaluations.  :func:`run_steps` does the rest, the
same way for every method:

* validates the batch and the schedule (strictly monotone, finite, >= 2 points);
* resolves the noise (``noise`` *or* ``generator``, not both) for stochastic rules;
* precomputes every scale the rule will evaluate into one host-to-device copy, so the loop
  never syncs with the device;
* takes the last step to ``s = 0`` (when the schedule ends there) as the denoising step
  :func:`to_zero` unless the rule owns its final step;
* watches for divergence on the device (``check_every`` > 0: the flag is read every so
  many steps, one sync each; 0: never inside the loop);
* records the trajectory and the statistics (NFE counted at the target).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor

from .offers import NEED_TABLE
from .base import Counted, DenoiserFormError, NoiseFn, Solution, SolverStats, as_schedule, default_noise

__all__ = [
    "StepRule", "Context", "run_steps", "to_zero", "resolve_noise", "DivergenceWatch",
    "host_values", "scale_table", "combine", "check_batch", "require", "positive_scales", "check_tolerances",
]

TOLERANCE_FLOOR = 10 * 2.0**-52
"""10x float64's machine epsilon: no floating-point solve resolves a smaller error, and asking for one only
shrinks the steps (like tol^(1/5) for a fifth-order pair) until the solver runs into max_steps."""


def host_values(values: Sequence[float], dtype: torch.dtype, device: torch.device) -> Tensor:
    """Host floats as a 1-D tensor on ``device`` (rounded once from float64 to ``dtype``).

    On CUDA the copy goes through pinned memory with ``non_blocking`` so it does not stall
    the host (no sync)."""
    col = torch.tensor(list(values), dtype=torch.float64).to(dtype=dtype)
    if torch.device(device).type == "cuda":
        return col.pin_memory().to(device, non_blocking=True)
    return col.to(device)


def scale_table(values: Sequence[float], x: Tensor) -> list[Tensor]:
    """Scales as ``[B]`` tensors: one host-to-device copy, entry ``i`` a broadcast view
    (``col[i].expand(B)``, stride 0), so the loop neither allocates scale tensors nor syncs.
    A target must not write into ``s``."""
    if not values:
        return []
    col = host_values(values, x.dtype, x.device)
    B = x.shape[0]
    return [col[i].expand(B) for i in range(len(values))]


def combine(x: Tensor, ks: Sequence[Tensor], coeffs: Sequence[float], h: float) -> Tensor:
    """``x + h * sum_j coeffs[j] * ks[j]`` with one kernel per nonzero coefficient; never
    writes into ``x`` or any ``ks[j]``."""
    out: Optional[Tensor] = None
    for k, a in zip(ks, coeffs):
        if a == 0.0:
            continue
        if out is None:
            out = torch.add(x, k, alpha=a * h)
        else:
            out.add_(k, alpha=a * h)
    return x if out is None else out


def check_batch(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(f"{name}: x must be shaped [B, ...] with B >= 1, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: x must be floating point, got {x.dtype}")


def require(target, need: str, name: str) -> None:
    """``TypeError`` (``DenoiserFormError`` for the denoiser form) when ``target`` lacks what ``need``
    means (:data:`solvers.offers.NEED_TABLE`)."""
    spec = NEED_TABLE[need]
    missing = spec.missing(target)
    if not missing:
        return
    what = type(getattr(target, "target", target)).__name__
    if need == "denoiser":
        raise DenoiserFormError(f"{name} needs a flow of the denoiser form dx/ds = (x - D(x, s))/s exposing "
                                f"denoise(x, s); {what} has no denoise method")
    methods = ", ".join("a callable" if m == "__call__" else m for m in spec.methods)
    raise TypeError(f"{name} needs {need} ({methods}); {what} lacks {', '.join(missing)}")


def check_tolerances(name: str, rtol: float, atol: float) -> None:
    """``ValueError`` unless an adaptive solver can meet ``rtol``/``atol``: not both below
    :data:`TOLERANCE_FLOOR` (2.2e-15; both 0 included)."""
    if rtol < TOLERANCE_FLOOR and atol < TOLERANCE_FLOOR:
        raise ValueError(f"{name}: rtol={rtol:g} and atol={atol:g} are both below {TOLERANCE_FLOOR:.1e}, 10x the resolution of float64: "
                         f"no floating-point solve meets them, and the steps would shrink until max_steps; loosen one of them")


def positive_scales(s: list[float], name: str) -> None:
    """Solvers in ``λ = -log s`` need positive scales (a final 0 is the denoising step)."""
    pos = s[:-1] if s[-1] == 0.0 else s
    if any(v <= 0 for v in pos):
        raise ValueError(f"{name} works in lambda = -log s and needs positive scales (a final 0 is allowed), got {s[:6]}")


def resolve_noise(name: str, noise: Optional[NoiseFn], generator: Optional[torch.Generator]) -> NoiseFn:
    """The noise source of a stochastic solver: ``noise`` (e.g. per-sample seeded) or one ``generator``."""
    if noise is not None and generator is not None:
        raise ValueError(f"{name}: pass either noise or generator, not both")
    return noise if noise is not None else default_noise(generator)


class DivergenceWatch:
    """Records the first step at which the state stopped being finite, without syncing.

    ``update(x, step)`` is a device-side reduction and a masked fill (no host transfer);
    ``check(x, describe)`` reads the flag once (one sync) and raises ``FloatingPointError``
    with ``describe(step)`` when it was set.
    """

    def __init__(self, name: str, x: Tensor, hint: str = ""):
        self.name, self.hint = name, hint
        self.first = torch.full((), -1, dtype=torch.long, device=x.device)

    def update(self, x: Tensor, step: int) -> None:
        bad = ~torch.isfinite(x).all()
        self.first.masked_fill_(bad & (self.first == -1), step)

    def check(self, x: Tensor, describe: Callable[[int], str]) -> None:
        k = int(self.first)  # -1: never non-finite; -2: the initial state already was
        if k == -1:
            return
        rows = int((~torch.isfinite(x.reshape(x.shape[0], -1)).all(1)).sum())
        where = "the initial state" if k == -2 else describe(k)
        hint = f"; {self.hint}" if self.hint else ""
        raise FloatingPointError(f"{self.name} diverged: non-finite values first appeared at {where} "
                                 f"({rows} of {x.shape[0]} samples non-finite now){hint}")


def to_zero(f, x: Tensor, s_b: Tensor, s: float) -> Tensor:
    """The last step, from ``s`` to 0: ``x <- D(x, s)`` when the target has ``denoise``
    (Euler on the denoiser form, exactly; for a Gaussian target, Tweedie's posterior mean),
    else Euler on the flow, ``x - s v(x, s)``, or on an SDE's drift."""
    if callable(getattr(f, "denoise", None)):
        return f.denoise(x, s_b)
    if callable(getattr(f, "drift", None)):
        return torch.add(x, f.drift(x, s_b), alpha=-s)
    return torch.add(x, f(x, s_b), alpha=-s)


class Context:
    """What a step rule sees: the counted target ``f``, the host schedule ``s``, the noise,
    the divergence watch, an ``extra`` dict for the statistics, and ``reindex`` for rules
    that resample particles (the trajectory then follows each particle's ancestry)."""

    def __init__(self, name: str, f: Counted, s: list[float], noise: Optional[NoiseFn], watch: DivergenceWatch, check_every: int = 0):
        self.name, self.f, self.s, self.noise, self.watch, self.check_every = name, f, s, noise, watch, check_every
        self.extra: dict = {}
        self.index: Optional[Tensor] = None

    def reindex(self, idx: Tensor) -> None:
        self.index = idx if self.index is None else self.index.index_select(0, idx)


class StepRule:
    """A fixed-step method: override :meth:`plan` and :meth:`step` (and, rarely, :meth:`final`).

    ``plan(s, i)`` runs on the host before the loop and returns ``(scales, coef)``: the
    scales step ``i`` evaluates the target at (in order; they become ``at`` in
    :meth:`step`) and any host-side coefficients.  ``step(ctx, x, i, at, coef)`` returns
    the next state.  The last step to ``s = 0`` is :func:`to_zero` unless ``own_final``:
    then :meth:`plan` and :meth:`step` serve it too.  ``stochastic`` rules get noise.
    """

    name = "rule"
    stochastic = False
    own_final = False
    hint = "take more steps"

    def validate(self, s: list[float]) -> None:
        """Check the schedule for this method (e.g. positive scales for ``λ = -log s``)."""

    def plan(self, s: list[float], i: int) -> tuple[list[float], Any]:
        raise NotImplementedError

    def step(self, ctx: Context, x: Tensor, i: int, at: list[Tensor], coef: Any) -> Tensor:
        raise NotImplementedError

    def finish(self, ctx: Context, x: Tensor) -> Tensor:
        """After the last step (e.g. a final resampling)."""
        return x

    def describe(self, s: list[float], i: int) -> str:
        return f"step {i} of {len(s) - 1} (s={s[i]:.4g} -> {s[i + 1]:.4g})"


def run_steps(rule: StepRule, target, x: Tensor, schedule, *, need: str = "flow", noise: Optional[NoiseFn] = None,
              generator: Optional[torch.Generator] = None, return_trajectory: bool = False, check_every: int = 0,
              extra: Optional[dict] = None) -> Solution:
    """Integrate with ``rule`` over ``schedule``; see the module docstring.  NFE is counted at ``target``."""
    name = rule.name
    check_batch(x, name)
    require(target, need, name)
    if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 0:
        raise ValueError(f"{name}: check_every must be an integer >= 0, got {check_every!r}")
    s = as_schedule(schedule)
    rule.validate(s)
    noise_fn = resolve_noise(name, noise, generator) if rule.stochastic else None
    if not rule.stochastic and (noise is not None or generator is not None):
        raise ValueError(f"{name} is deterministic: it takes no noise or generator")
    f = Counted(target)
    K = len(s) - 1
    final_zero = s[-1] == 0.0 and not rule.own_final
    n_rule = K - 1 if final_zero else K
    plans = [rule.plan(s, i) for i in range(n_rule)]
    values = [v for scales, _ in plans for v in scales] + ([s[K - 1]] if final_zero else [])
    table = scale_table(values, x)
    watch = DivergenceWatch(name, x, hint=rule.hint)
    ctx = Context(name, f, s, noise_fn, watch, check_every)
    if check_every:
        watch.update(x, -2)
    traj = [x] if return_trajectory else None

    def describe(i: int) -> str:
        return rule.describe(s, i)

    row = 0
    for i in range(K):
        if i < n_rule:
            scales, coef = plans[i]
            x = rule.step(ctx, x, i, table[row : row + len(scales)], coef)
            row += len(scales)
        else:
            x = to_zero(f, x, table[row], s[K - 1])
        if ctx.index is not None and traj is not None:  # resampled: paths follow the ancestry
            traj = [t.index_select(0, ctx.index) for t in traj]
        ctx.index = None
        if check_every:
            watch.update(x, i)
            if (i + 1) % check_every == 0 or i == K - 1:
                watch.check(x, describe)
        if traj is not None:
            traj.append(x)
    x = rule.finish(ctx, x)
    if ctx.index is not None and traj is not None:
        traj = [t.index_select(0, ctx.index) for t in traj[:-1]] + [x]
    stats = SolverStats(nfe=f.nfe, steps=K, accepted=K * x.shape[0], rejected=0,
                        trajectory=torch.stack(traj) if traj is not None else None, extra={**ctx.extra, **(extra or {})})
    return Solution(x, stats)


def lerp_coefficients(s: float, s_next: float) -> float:
    """``1 - s_next/s``: the weight of ``D`` in the exact step of ``dx/dλ = D - x`` with constant ``D``."""
    return 1.0 - s_next / s


def expm1_ratio(h: float) -> float:
    """``(e^h - 1)/h`` and stable for small ``h`` (the φ_1 function of exponential integrators)."""
    return math.expm1(h) / h if h != 0 else 1.0
