"""The Process: the physics of one generative model, and nothing else.

Every process perturbs data ``y`` into ``x`` at a scale ``s`` and generates by integrating
``dx/ds = v(x, s)`` (or an SDE) from ``s_max`` (prior) down to ``s_min`` or 0 (data);
DESIGN.md §1.  A process knows no network and no solver: it turns a field estimator
into a flow (:meth:`Process.flow`) that any solver integrates.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Optional, Sequence

import torch
from torch import Tensor

from ..errors import UserError
from ..fields.kinds import FieldEstimator

__all__ = ["Process", "ProcessFlow", "DenoiserFlow", "NoScoreError", "check_scale_range", "draw"]


class NoScoreError(TypeError):
    """The process's field gives no score (its kernel is not Gaussian)."""


def check_scale_range(name_min: str, s_min: float, name_max: str, s_max: float) -> None:
    if not (math.isfinite(s_min) and math.isfinite(s_max)):
        raise UserError(f"{name_min}={s_min} and {name_max}={s_max} must be finite")
    if s_min <= 0:
        raise UserError(f"{name_min} must be > 0, got {s_min}")
    if s_min >= s_max:
        raise UserError(f"{name_min}={s_min} must be < {name_max}={s_max}")


def draw(shape: Sequence[int], sampler, *, generator=None, noise=None, device=None) -> Tensor:
    """Draw a batch with ``sampler(n, generator)``, per-sample seeded when ``noise`` is given.

    ``noise`` is a :class:`physgen.noise.SeededNoise`: sample ``i`` then depends only on its
    index and seed, not on the batch.
    """
    if noise is not None:
        if len(noise) != shape[0]:
            raise ValueError(f"noise indexes {len(noise)} samples, batch asks for {shape[0]}")
        return noise.draw(-1, sampler, device)
    return sampler(shape[0], generator)


class Process(ABC):
    """Base class of every process (diffusion, NCSN, PFGM, PFGM++, GenPhys).

    Subclasses set ``name``, ``network_kind`` (what a neural field for it predicts),
    ``s_min``/``s_max`` and implement the abstract methods.  ``has_score`` says whether
    :meth:`score` and :meth:`sde` exist (Gaussian kernels only).
    """

    name: ClassVar[str]
    network_kind: ClassVar[str] = "denoiser"
    has_score: ClassVar[bool] = False
    denoiser_form: ClassVar[bool] = False
    s_min: float
    s_max: float

    # --- training -------------------------------------------------------------------
    @abstractmethod
    def sample_scales(self, n: int, *, generator: Optional[torch.Generator] = None, device=None) -> Tensor:
        """Training scales ``[n]`` (float32) from the process's training distribution."""

    @abstractmethod
    def perturb(self, y: Tensor, s: Tensor, *, generator: Optional[torch.Generator] = None) -> Tensor:
        """Draw ``x ~ p_s(x | y)`` for a batch (``s`` shaped ``[B]``)."""

    @abstractmethod
    def loss(self, field: FieldEstimator, y: Tensor, *, generator=None, label: Optional[Tensor] = None) -> Tensor:
        """Per-sample training loss ``[B]`` of ``field`` on clean data ``y``."""

    # --- sampling -------------------------------------------------------------------
    @abstractmethod
    def sample_prior(self, shape: Sequence[int], *, generator=None, noise=None, device=None, dtype=torch.float32) -> Tensor:
        """Draw ``x`` at ``s_max``; ``shape = (n, *data_shape)``."""

    @abstractmethod
    def velocity(self, field: FieldEstimator, x: Tensor, s: Tensor, label: Optional[Tensor] = None) -> Tensor:
        """``dx/ds`` from the field."""

    @abstractmethod
    def default_schedule(self, steps: int) -> Tensor:
        """The schedule (float64, decreasing) the process samples with by default."""

    @abstractmethod
    def exact_field(self, points: Tensor, labels: Optional[Tensor] = None) -> FieldEstimator:
        """The closed-form field of the empirical distribution of ``points`` (DESIGN.md §3)."""

    @abstractmethod
    def precondition(self, net: torch.nn.Module, sigma_data: float = 0.5) -> FieldEstimator:
        """Wrap a raw network ``F(x_in, c_noise, label)`` into this process's neural field."""

    def schedule(self, steps: int, name: Optional[str] = None) -> Tensor:
        """``steps`` integration steps on the named schedule (default: the process's own).

        Denoiser-form processes end at ``s = 0`` (the last step is the denoising Euler step);
        the others stop at ``s_min`` (``steps + 1`` points).
        """
        if name is None:
            return self.default_schedule(steps)
        from solvers.schedules import make_schedule

        if self.denoiser_form:
            return make_schedule(name, steps, self.s_min, self.s_max, append_zero=True)
        return make_schedule(name, steps + 1, self.s_min, self.s_max)

    def flow(self, field: FieldEstimator, label: Optional[Tensor] = None) -> "ProcessFlow":
        """The probability-flow ODE as a solver callable (with ``denoise`` for the denoiser form)."""
        return (DenoiserFlow if self.denoiser_form else ProcessFlow)(self, field, label)

    def score(self, field: FieldEstimator, x: Tensor, s: Tensor, label: Optional[Tensor] = None) -> Tensor:
        raise NoScoreError(f"process {self.name!r} has no score: its kernel is not Gaussian")

    def sde(self, field: FieldEstimator, label: Optional[Tensor] = None) -> Any:
        raise NoScoreError(f"process {self.name!r} has no reverse SDE: its field gives no score")

    def analytic_field(self, mixture) -> FieldEstimator:
        raise UserError(f"process {self.name!r} has no analytic Gaussian-mixture field; use --field exact or mlp")

    def generate(self, field, x0: Tensor, schedule: Tensor, method: str, *, noise=None, label=None, **options):
        """Process-specific sampling (e.g. Yukawa's births), or ``None`` to use the generic path.

        ``physgen.sampling.sample`` calls this first; a process that needs more than a flow
        (extra state, resampling) overrides it and returns a ``solvers.Solution``.
        """
        return None

    def finalize(self, x: Tensor) -> Tensor:
        """Map the solver's end state to data space (identity except for augmented processes)."""
        return x

    def config(self) -> dict:
        """Constructor arguments, for ``config.json`` and checkpoints."""
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


class ProcessFlow:
    """``flow(x, s) = process.velocity(field, x, s)``: what a solver integrates."""

    def __init__(self, process: Process, field: FieldEstimator, label: Optional[Tensor] = None):
        self.process, self.field, self.label = process, field, label

    def __call__(self, x: Tensor, s: Tensor) -> Tensor:
        return self.process.velocity(self.field, x, s, self.label)


class DenoiserFlow(ProcessFlow):
    """A flow of the form ``dx/ds = (x - D(x, s))/s``, exposing ``denoise`` (DPM-Solver needs it)."""

    def denoise(self, x: Tensor, s: Tensor) -> Tensor:
        return self.process.denoise(self.field, x, s, self.label)
