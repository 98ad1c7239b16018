"""The step loop, written once, that every fixed-step solver runs.

A fixed-step method is only its *step function* (:data:`StepFn`), its update written as the
paper writes it, k-diffusion style::

    def dpmpp_2m_step(run, i, x, old):            # state: the previous data prediction
        s, s_next = run.s[i], run.s[i + 1]
        d = run.f.denoise(x, run.at(s))
        ...
        return torch.lerp(x, d_prime, 1 - s_next / s), d

``run`` (a :class:`Run`) holds the counted target, the host schedule and the noise;
``state`` is handed in and returned (a multistep method's history), so a step function keeps
nothing between calls.  :func:`run_steps` does the rest, the same way for every method:

* validates the batch and the schedule (strictly monotone, finite, >= 2 points);
* resolves the noise (``noise`` *or* ``generator``, not both) for stochastic methods;
* computes every coefficient on the host in float64 and hands the target its scales as
  ``[B]`` tensors filled on the device (:meth:`Run.at`), so the loop never syncs with it;
* takes the last step to ``s = 0`` (when the schedule ends there) as the denoising step
  :func:`to_zero` unless the method owns its final step;
* watches for divergence on the device (``check_every`` > 0: the flag is read every so
  many steps, one sync each; 0: never inside the loop);
* records the trajectory and the statistics (NFE counted at the target).
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor

from .offers import NEED_TABLE
from .base import Counted, DenoiserFormError, NoiseFn, Solution, SolverStats, as_schedule, default_noise
from .spec import LOOP_OPTIONS, NOISE_KEYS, STOCHASTIC_OPTIONS, Option, takes

__all__ = [
    "StepFn", "Run", "run_steps", "fixed_step", "default_describe", "to_zero", "resolve_noise", "DivergenceWatch",
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


class Run:
    """What a step function sees besides the state it is handed: the counted target ``f``, the
    host schedule ``s``, the noise, the divergence watch, an ``extra`` dict for the statistics,
    :meth:`at` for the scale tensors, and :meth:`reindex` for steps that resample particles (the
    trajectory then follows each particle's ancestry)."""

    def __init__(self, name: str, f: Counted, s: list[float], x: Tensor, noise: Optional[NoiseFn], watch: DivergenceWatch,
                 check_every: int = 0):
        self.name, self.f, self.s, self.noise, self.watch, self.check_every = name, f, s, noise, watch, check_every
        self.extra: dict = {}
        self.index: Optional[Tensor] = None
        self._shape, self._dtype, self._device = (x.shape[0],), x.dtype, x.device

    def at(self, value: float) -> Tensor:
        """The host scale ``value`` as the ``[B]`` tensor a target takes: rounded once from the
        float64 host value to the samples' dtype by a fill on the device (no host sync).  A
        target must not write into it."""
        return torch.full(self._shape, value, dtype=self._dtype, device=self._device)

    def reindex(self, idx: Tensor) -> None:
        self.index = idx if self.index is None else self.index.index_select(0, idx)


StepFn = Callable[[Run, int, Tensor, Any], "tuple[Tensor, Any]"]
"""``step(run, i, x, state) -> (x_next, state_next)``: one step ``s_i -> s_{i+1}`` of a
method, its update written as the paper's formula; ``state`` is whatever the method carries
from step to step (a multistep method's previous evaluations), handed in and returned, never
kept elsewhere.  Fixed parameters are bound with ``functools.partial``."""


def default_describe(s: list[float], i: int) -> str:
    return f"step {i} of {len(s) - 1} (s={s[i]:.4g} -> {s[i + 1]:.4g})"


def run_steps(step: StepFn, target, x: Tensor, schedule, *, name: str, state: Any = None, need: str = "flow",
              stochastic: bool = False, own_final: bool = False, check: Optional[Callable[[list], None]] = None,
              hint: str = "take more steps", describe: Optional[Callable[[list, int], str]] = None,
              finish: Optional[Callable[[Run, Tensor, Any], Tensor]] = None, noise: Optional[NoiseFn] = None,
              generator: Optional[torch.Generator] = None, return_trajectory: bool = False, check_every: int = 0,
              extra: Optional[dict] = None) -> Solution:
    """Integrate with the step function ``step`` (:data:`StepFn`) over ``schedule``, starting
    from ``state``; see the module docstring.  NFE is counted at ``target``.

    What differs between methods is said here, once, as data: ``need`` (what the target offers,
    :data:`solvers.offers.NEED_TABLE`); ``stochastic`` (it takes noise); ``own_final`` (``step``
    takes the last step to ``s = 0`` too, instead of :func:`to_zero`); ``check(s)`` (the
    method's own schedule check, e.g. :func:`positive_scales`); ``hint`` (what to try when it
    diverges); ``describe(s, k)`` (where it diverged, for methods whose watch counts inner
    steps); ``finish(run, x, state)`` (after the last step, e.g. a final resampling).
    """
    check_batch(x, name)
    require(target, need, name)
    if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 0:
        raise ValueError(f"{name}: check_every must be an integer >= 0, got {check_every!r}")
    s = as_schedule(schedule)
    if check is not None:
        check(s)
    noise_fn = resolve_noise(name, noise, generator) if stochastic else None
    if not stochastic and (noise is not None or generator is not None):
        raise ValueError(f"{name} is deterministic: it takes no noise or generator")
    f = Counted(target)
    K = len(s) - 1
    n_steps = K - 1 if s[-1] == 0.0 and not own_final else K
    watch = DivergenceWatch(name, x, hint=hint)
    run = Run(name, f, s, x, noise_fn, watch, check_every)
    where = functools.partial(describe or default_describe, s)
    if check_every:
        watch.update(x, -2)
    traj = [x] if return_trajectory else None
    for i in range(K):
        if i < n_steps:
            x, state = step(run, i, x, state)
        else:
            x = to_zero(f, x, run.at(s[K - 1]), s[K - 1])
        if run.index is not None and traj is not None:  # resampled: paths follow the ancestry
            traj = [t.index_select(0, run.index) for t in traj]
        run.index = None
        if check_every:
            watch.update(x, i)
            if (i + 1) % check_every == 0 or i == K - 1:
                watch.check(x, where)
        if traj is not None:
            traj.append(x)
    if finish is not None:
        x = finish(run, x, state)
    if run.index is not None and traj is not None:
        traj = [t.index_select(0, run.index) for t in traj[:-1]] + [x]
    stats = SolverStats(nfe=f.nfe, steps=K, accepted=K * x.shape[0], rejected=0,
                        trajectory=torch.stack(traj) if traj is not None else None, extra={**run.extra, **(extra or {})})
    return Solution(x, stats)


def fixed_step(name: str, step: StepFn, *options: Option, state: Any = None, stochastic: bool = False, **rule) -> Callable[..., Solution]:
    """The table row's function of a fixed-step method given by its step function alone:
    ``fn(target, x, schedule, **options)`` runs ``step`` with :func:`run_steps` as the solver
    ``name``, from ``state`` (immutable: it is shared by every run).  ``options`` are the step
    function's own keyword parameters, declared and typed like every solver's
    (:func:`solvers.spec.takes`); ``rule`` the rest of :func:`run_steps`' keywords (``need``,
    ``own_final``, ``check``, ...).  With it a new sampler is its step function and one row::

        register_solver(Spec("my-2m", fixed_step("my-2m", my_2m_step, need="denoiser"), ("denoiser",), 2, 1, "ref"))
    """
    own = [o.name for o in options]

    @takes(name, *options, base=STOCHASTIC_OPTIONS if stochastic else LOOP_OPTIONS, passthrough=NOISE_KEYS if stochastic else ())
    def solver(target, x, schedule, **given):
        bound = functools.partial(step, **{k: given.pop(k) for k in own}) if own else step
        return run_steps(bound, target, x, schedule, name=name, state=state, stochastic=stochastic, **rule, **given)

    solver.__doc__ = step.__doc__
    return solver


def lerp_coefficients(s: float, s_next: float) -> float:
    """``1 - s_next/s``: the weight of ``D`` in the exact step of ``dx/dλ = D - x`` with constant ``D``."""
    return 1.0 - s_next / s


def expm1_ratio(h: float) -> float:
    """``(e^h - 1)/h`` and stable for small ``h`` (the φ_1 function of exponential integrators)."""
    return math.expm1(h) / h if h != 0 else 1.0
