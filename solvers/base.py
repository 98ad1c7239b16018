"""What flows between a process and a solver: the target protocols, the statistics, the result.

A solver integrates ``dx/ds = v(x, s)`` (or an SDE) over a schedule ``s_0, s_1, ..., s_K``
(strictly monotone; generation runs it decreasing) for a whole batch at once.  It knows
nothing of physics: it receives a *target* object, one of the protocols below, and the
table (:mod:`solvers.spec`) says which one each solver needs (each need and its protocol: :mod:`solvers.offers`).  ``s`` is always handed to the
target as a tensor shaped ``[B]`` (one scale per sample), so adaptive solvers can keep a
different scale per sample.

Conventions shared by every solver in this package:

* The schedule is a 1-D float64 tensor (or sequence) of scales, kept on the host; its
  values are read once, so the step loop never syncs with the device.
* NFE is counted at the target by :class:`Counted` (one evaluation on a batch = 1 NFE),
  never inferred from the number of steps.
* A step whose end is ``s = 0`` is the denoising step ``x <- D(x, s_{K-1})`` (Euler on the
  denoiser form; EDM, arXiv 2206.00364, Alg. 1); no solver evaluates a target at ``s = 0``.
  The rule is written once, in :func:`solvers._loop.to_zero`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol, Sequence, Union, runtime_checkable

import torch
from torch import Tensor

__all__ = [
    "Flow",
    "DenoiserFlow",
    "SDE",
    "GaussianTransition",
    "SolverStats",
    "Solution",
    "Counted",
    "NoiseFn",
    "DenoiserFormError",
    "SolverError",
    "as_schedule",
    "scale_batch",
    "default_noise",
]


@runtime_checkable
class Flow(Protocol):
    """``v(x, s) = dx/ds`` with ``x`` shaped ``[B, ...]`` and ``s`` shaped ``[B]``."""

    def __call__(self, x: Tensor, s: Tensor) -> Tensor: ...


@runtime_checkable
class DenoiserFlow(Flow, Protocol):
    """A flow of the shared EDM / PFGM++ / Yukawa form ``dx/ds = (x - D(x, s)) / s``.

    ``denoise(x, s)`` returns ``D``.  Solvers built on that form (DPM-Solver family,
    UniPC, DEIS, ancestral samplers) require it and say so when a target lacks it.
    """

    def denoise(self, x: Tensor, s: Tensor) -> Tensor: ...


@runtime_checkable
class SDE(Protocol):
    """Reverse-time SDE ``dx = f(x, s) ds + g(s) dW`` integrated with decreasing ``s``.

    ``drift(x, s)`` is the drift per unit ``ds`` (the reverse-time drift, already containing
    the score term); ``diffusion(s)`` returns ``g(s)`` shaped ``[B]`` so that the
    noise increment over a step of size ``|ds|`` has standard deviation ``g sqrt(|ds|)``.
    """

    def drift(self, x: Tensor, s: Tensor) -> Tensor: ...

    def diffusion(self, s: Tensor) -> Tensor: ...


@runtime_checkable
class GaussianTransition(Protocol):
    """A Gaussian process ``x = a(s) y + b(s) ε`` seen by the score-based samplers.

    ``score(x, s) = ∇ log p_s(x)``; ``marginal(s) -> (a, b)``; ``transition(s, s_next) ->
    (r, G²)`` with ``x_s = r x_{s_next} + G z`` (``r = a(s)/a(s_next)``,
    ``G² = b(s)² - r² b(s_next)²``); ``denoise(x, s) = (x + b² score)/a`` (Tweedie).
    """

    def score(self, x: Tensor, s: Tensor) -> Tensor: ...

    def marginal(self, s: Tensor) -> tuple[Tensor, Tensor]: ...

    def transition(self, s: Tensor, s_next: Tensor) -> tuple[Tensor, Tensor]: ...


NoiseFn = Callable[[int, Tensor], Tensor]
"""``noise(step, like) -> standard normal tensor shaped like ``like```.

Passing per-sample-seeded noise (``physgen.noise.SeededNoise``) makes a stochastic sample
independent of the batch it was drawn in.
"""


def default_noise(generator: Optional[torch.Generator] = None) -> NoiseFn:
    """Noise from one generator, in call order (reproducible for a fixed batch)."""

    def noise(step: int, like: Tensor) -> Tensor:
        return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)

    return noise


@dataclass
class SolverStats:
    """Statistics every solver returns.

    ``nfe`` counts evaluations of the target on the batch; ``steps`` counts steps taken
    (for adaptive solvers: attempted steps of the slowest sample), ``accepted`` and
    ``rejected`` count per-sample step decisions summed over the batch (fixed-step
    solvers: ``accepted = steps * B``).  ``trajectory`` is ``[K+1, B, ...]`` when asked for.
    ``extra`` holds solver-specific records (e.g. an ESS history).
    """

    nfe: int = 0
    steps: int = 0
    accepted: int = 0
    rejected: int = 0
    trajectory: Optional[Tensor] = None
    extra: dict = field(default_factory=dict)


@dataclass
class Solution:
    """The end state ``x`` of a solve and its :class:`SolverStats`."""

    x: Tensor
    stats: SolverStats


class SolverError(RuntimeError):
    """A solve that cannot finish as asked (e.g. an adaptive solver at its step limit)."""


class DenoiserFormError(TypeError):
    """A solver of the denoiser form was handed a target without ``denoise``."""


EVALUATIONS = ("denoise", "drift", "score")
"""Methods of a target that evaluate the field (each call is one NFE); ``__call__`` too."""


class Counted:
    """Wraps a target and counts its evaluations (the NFE); other attributes pass through.

    Calling the target and each method in :data:`EVALUATIONS` adds one; coefficient
    methods (``diffusion``, ``marginal``, ``transition``) are free.  ``nfe`` is a plain
    Python int, so counting never touches the device.
    """

    def __init__(self, target):
        self.target = target
        self.nfe = 0

    def __call__(self, x: Tensor, s: Tensor):
        self.nfe += 1
        return self.target(x, s)

    def has(self, name: str) -> bool:
        return callable(getattr(self.target, name, None))

    def __getattr__(self, name: str):
        attr = getattr(self.target, name)
        if name not in EVALUATIONS:
            return attr

        def counted(*args, **kwargs):
            self.nfe += 1
            return attr(*args, **kwargs)

        return counted


def as_schedule(schedule: Union[Tensor, Sequence[float]]) -> list[float]:
    """Validate a schedule (strictly monotone, at least two finite points) and return host floats."""
    values = schedule.detach().to("cpu", torch.float64).flatten().tolist() if isinstance(schedule, Tensor) else [float(v) for v in schedule]
    if len(values) < 2:
        raise ValueError(f"a schedule needs at least 2 points, got {len(values)}")
    if any(v != v or v in (float("inf"), float("-inf")) for v in values):
        raise ValueError(f"schedule must be finite, got {values[:6]}{'...' if len(values) > 6 else ''}")
    diffs = [b - a for a, b in zip(values[:-1], values[1:])]
    if not (all(d < 0 for d in diffs) or all(d > 0 for d in diffs)):
        raise ValueError(f"schedule must be strictly monotone, got {values[:6]}{'...' if len(values) > 6 else ''}")
    return values


def scale_batch(s: float, x: Tensor) -> Tensor:
    """The scalar scale ``s`` as a ``[B]`` tensor on ``x``'s device and dtype (no sync)."""
    return torch.full((x.shape[0],), s, device=x.device, dtype=x.dtype)
