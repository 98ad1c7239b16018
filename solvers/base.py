"""What flows between a process and a solver: the flow protocol, the statistics, the result.

A solver integrates ``dx/ds = v(x, s)`` (or an SDE) over a decreasing schedule
``s_0 > s_1 > ... > s_K`` for a whole batch at once.  It knows nothing of physics: it
receives a callable.  ``s`` is always handed to the callable as a tensor shaped ``[B]``
(one scale per sample), so adaptive solvers can keep a different scale per sample.

Conventions shared by every solver in this package:

* The schedule is a 1-D float64 tensor (or sequence) of scales, kept on the host; its
  values are read once (``tolist``) so the step loop never syncs with the device.
* NFE is counted at the callable by :class:`CountedFlow` (one call on a batch = 1 NFE),
  never inferred from the number of steps.
* A step whose end is ``s = 0`` is taken with Euler (EDM, arXiv 2206.00364, Alg. 1):
  for flows of the denoiser form ``v = (x - D(x, s)) / s`` that step is exactly
  ``x <- D(x, s_{K-1})``, and no solver ever evaluates the flow at ``s = 0``.
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
    "SolverStats",
    "Solution",
    "CountedFlow",
    "CountedSDE",
    "NoiseFn",
    "DenoiserFormError",
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

    ``denoise(x, s)`` returns ``D``.  Solvers built on that form (DPM-Solver family)
    require it and say so when a flow lacks it.
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

    ``nfe`` counts evaluations of the flow on the batch; ``steps`` counts steps taken
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


class DenoiserFormError(TypeError):
    """A solver of the denoiser form was handed a flow without ``denoise``."""


class CountedFlow:
    """Wraps a flow and counts its evaluations (the NFE), passing ``denoise`` through.

    ``flow.nfe`` is a plain Python int, so counting never touches the device.
    """

    def __init__(self, flow: Callable[[Tensor, Tensor], Tensor]):
        self.flow = flow
        self.nfe = 0

    def __call__(self, x: Tensor, s: Tensor) -> Tensor:
        self.nfe += 1
        return self.flow(x, s)

    @property
    def has_denoiser(self) -> bool:
        return callable(getattr(self.flow, "denoise", None))

    def denoise(self, x: Tensor, s: Tensor) -> Tensor:
        if not self.has_denoiser:
            raise DenoiserFormError(
                f"this solver needs a flow of the form dx/ds = (x - D(x, s))/s with a "
                f"denoise(x, s) method; {type(self.flow).__name__} has none"
            )
        self.nfe += 1
        return self.flow.denoise(x, s)


class CountedSDE:
    """Wraps an SDE and counts drift evaluations (each drift evaluation calls the field once)."""

    def __init__(self, sde: SDE):
        self.sde = sde
        self.nfe = 0

    def drift(self, x: Tensor, s: Tensor) -> Tensor:
        self.nfe += 1
        return self.sde.drift(x, s)

    def diffusion(self, s: Tensor) -> Tensor:
        return self.sde.diffusion(s)


def as_schedule(schedule: Union[Tensor, Sequence[float]]) -> list[float]:
    """Validate a schedule (strictly monotone, at least two points) and return host floats."""
    values = schedule.detach().to("cpu", torch.float64).tolist() if isinstance(schedule, Tensor) else [float(v) for v in schedule]
    if len(values) < 2:
        raise ValueError(f"a schedule needs at least 2 points, got {len(values)}")
    diffs = [b - a for a, b in zip(values[:-1], values[1:])]
    if not (all(d < 0 for d in diffs) or all(d > 0 for d in diffs)):
        raise ValueError(f"schedule must be strictly monotone, got {values[:6]}{'...' if len(values) > 6 else ''}")
    if any(v != v for v in values):
        raise ValueError("schedule contains NaN")
    return values


def scale_batch(s: float, x: Tensor) -> Tensor:
    """The scalar scale ``s`` as a ``[B]`` tensor on ``x``'s device and dtype (no sync)."""
    return torch.full((x.shape[0],), s, device=x.device, dtype=x.dtype)
