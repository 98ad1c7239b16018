"""The Process: the physics of one generative model, and nothing else.

Every process perturbs data ``y`` into ``x`` at a scale ``s`` and generates by integrating
``dx/ds = v(x, s)`` (or an SDE) from ``s_max`` (prior) down to ``s_min`` or 0 (data);
DESIGN.md §1.  A process knows no network and no solver.  It *offers* a field to the
solvers (:meth:`Process.offers`: need -> object, the needs of :data:`solvers.offers.NEED_TABLE`) and maps
a step count to its grid (:meth:`Process.grid`, the one discretisation every command uses).
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Optional, Sequence

import torch
from torch import Tensor

from solvers.schedules import SCHEDULES, make_schedule

from ..config import MAX_STEPS  # the one bound, checked by config.parse_steps
from ..errors import UserError, unknown_name
from ..fields.kinds import FieldEstimator, expand_as_batch

__all__ = ["Process", "ProcessFlow", "DenoiserFlow", "KernelPrior", "NoScoreError", "check_scale_range", "draw",
           "MAX_STEPS", "DEFAULT_STEPS", "prior_centre", "check_prior_mean"]

DEFAULT_STEPS = 18
"""``--steps`` when none is given: EDM's 18 Heun steps (35 NFE)."""


class NoScoreError(TypeError):
    """The process offers no score (a non-Gaussian kernel, or a path that has none)."""


def check_scale_range(name_min: str, s_min: float, name_max: str, s_max: float) -> None:
    if not (isinstance(s_min, (int, float)) and isinstance(s_max, (int, float))) or isinstance(s_min, bool) or isinstance(s_max, bool):
        raise UserError(f"{name_min} and {name_max} must be numbers, got {s_min!r} and {s_max!r}")
    if not (math.isfinite(s_min) and math.isfinite(s_max)):
        raise UserError(f"{name_min}={s_min} and {name_max}={s_max} must be finite")
    if s_min <= 0:
        raise UserError(f"{name_min} must be > 0, got {s_min}")
    if s_min >= s_max:
        raise UserError(f"{name_min}={s_min} must be < {name_max}={s_max}")
    if s_max > 1e15:
        flag = "--" + name_max.replace("_", "-")
        raise UserError(f"{name_max} ({flag}) = {s_max:g} is too large: scales above 1e15 lose float32 precision in x "
                        f"(and s² overflows float32)")


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


def prior_centre(prior_mean, x: Tensor) -> Tensor:
    """``prior_mean`` (one value, or one per data coordinate) shaped like one sample of ``x``."""
    mean = torch.tensor(prior_mean, device=x.device, dtype=x.dtype).flatten()
    if mean.numel() not in (1, x[0].numel()):
        raise UserError(f"prior_mean has {mean.numel()} values but the data have {x[0].numel()} dimensions")
    return mean.expand(x[0].numel()).reshape(1, *x.shape[1:])


def check_prior_mean(prior_mean) -> Optional[list]:
    if prior_mean is None:
        return None
    try:
        values = [float(v) for v in (prior_mean if isinstance(prior_mean, (list, tuple)) else torch.as_tensor(prior_mean).flatten().tolist())]
    except (TypeError, ValueError):
        raise UserError(f"prior_mean must be a list of numbers, got {prior_mean!r}") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise UserError(f"prior_mean must be finite numbers, got {prior_mean!r}")
    return values


class Process(ABC):
    """Base class of every process (diffusion, NCSN, PFGM, PFGM++, GenPhys).

    Subclasses set ``name``, ``network_kind`` (what a neural field for it predicts),
    ``s_min``/``s_max`` and implement the abstract methods.  What a process gives the
    samplers is declared by :meth:`capabilities` and built by :meth:`offers`; ``ends_at_zero``
    says that its grid ends with the denoising step to ``s = 0`` (denoiser form);
    ``default_schedule_name`` names the schedule of :meth:`grid` and ``default_steps`` its
    step count when none is given (18, EDM's; more where 18 leave a measured bias);
    ``sampling_options``
    (``solvers.Option``) are process-side sampling modes (Yukawa's ``birth_death``).
    """

    name: ClassVar[str]
    network_kind: ClassVar[str] = "denoiser"
    ends_at_zero: ClassVar[bool] = False
    default_schedule_name: ClassVar[str] = "uniform"
    default_steps: ClassVar[int] = DEFAULT_STEPS
    scale_is_sigma: ClassVar[bool] = True
    """Whether the scale ``s`` is the ``σ`` of EDM's denoiser form the process offers (EDM, VE,
    PFGM++, Yukawa, telegrapher): ``False`` for an affine Gaussian path whose scale is a time, which
    the solvers see in ``σ = b/a`` through :class:`physgen.processes.gaussian.SigmaForm` (VP), and
    which then maps ``σ`` back with ``t_of_sigma``."""
    sampling_options: ClassVar[tuple] = ()
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
    def exact_field(self, points: Tensor, labels: Optional[Tensor] = None) -> FieldEstimator:
        """The closed-form field of the empirical distribution of ``points`` (DESIGN.md §3)."""

    @abstractmethod
    def precondition(self, net: torch.nn.Module, sigma_data: float = 0.5) -> FieldEstimator:
        """Wrap a raw network ``F(x_in, c_noise, label)`` into this process's neural field."""

    # --- what the process gives the solvers ------------------------------------------
    def capabilities(self, **modes) -> frozenset:
        """The needs (:data:`solvers.offers.NEED_TABLE`) this process meets for any field of its kind."""
        return frozenset({"flow"})

    def offers(self, field: FieldEstimator, label: Optional[Tensor] = None, **modes) -> dict:
        """need -> the object a solver with that need is handed (keys: :meth:`capabilities`)."""
        return {"flow": self.flow(field, label)}

    def flow(self, field: FieldEstimator, label: Optional[Tensor] = None) -> "ProcessFlow":
        """The probability-flow ODE as a solver callable (with ``denoise`` for the denoiser form)."""
        return ProcessFlow(self, field, label)

    # --- the one discretisation --------------------------------------------------------
    def schedule_bounds(self) -> tuple[float, float]:
        """``(lo, hi)`` of the coordinate the named schedules are laid out in (default: ``s`` itself)."""
        return self.s_min, self.s_max

    def from_schedule_space(self, u: Tensor) -> Tensor:
        """Scales ``s`` from points ``u`` of the schedule coordinate (identity by default)."""
        return u

    def schedule_options(self, name: str) -> dict:
        """Extra keywords of the named schedule (the ρ of EDM's schedule)."""
        return {}

    def grid(self, steps: Optional[int] = None, schedule: Optional[str] = None, **options) -> Tensor:
        """The grid of ``steps`` integration steps on the named schedule (default: the process's own).

        The one discretisation of every command (toy, compare-solvers, sample, training grids,
        nll, experiments): ``steps`` intervals, float64, decreasing.  A process with
        ``ends_at_zero`` lays ``steps`` points of the schedule from ``s_max`` to ``s_min`` and
        appends ``s = 0`` (the last step is the denoising step: EDM's convention, so
        ``heun --steps 18`` is 35 NFE); the others lay ``steps + 1`` points and stop at ``s_min``.
        ``options`` (e.g. ``rho``) override the schedule's keywords from :meth:`schedule_options`.
        """
        steps = self.default_steps if steps is None else steps  # checked where it entered (parse_steps: the flag, sampling.grid)
        name = self.default_schedule_name if schedule is None else schedule
        if name not in SCHEDULES:
            raise unknown_name("schedule", name, SCHEDULES)
        lo, hi = self.schedule_bounds()
        try:
            if self.ends_at_zero:
                u = make_schedule(name, steps, lo, hi, append_zero=True, **{**self.schedule_options(name), **options})
            else:
                u = make_schedule(name, steps + 1, lo, hi, append_zero=False, **{**self.schedule_options(name), **options})
        except ValueError as exc:
            raise UserError(f"schedule {name!r} for process {self.name!r}: {exc}") from None
        return self.from_schedule_space(u)

    def signal_scale(self, s: float) -> float:
        """``a(s)`` of ``x = a(s) y + noise``: how much the process shrinks the data at scale ``s``
        (1 for all but VP), so ``x / a(s)`` is in the data's units (the divergence and stray checks)."""
        return 1.0

    # --- the rest --------------------------------------------------------------------
    def prior_log_prob(self, x: Tensor) -> Tensor:
        """``log p_prior(x)`` at ``s_max`` (float64 ``[B]``), for the likelihood."""
        raise UserError(f"process {self.name!r} has no prior density for the likelihood")

    def score(self, field: FieldEstimator, x: Tensor, s: Tensor, label: Optional[Tensor] = None) -> Tensor:
        raise NoScoreError(f"process {self.describe()} offers no score (it offers: {', '.join(sorted(self.capabilities()))})")

    def sde(self, field: FieldEstimator, label: Optional[Tensor] = None) -> Any:
        """The reverse SDE with its exact transition (``offers(field)["sde"]``; Gaussian kernels only)."""
        if "sde" not in self.capabilities():
            raise NoScoreError(f"process {self.describe()} offers no reverse SDE (it offers: {', '.join(sorted(self.capabilities()))})")
        return self.offers(field, label)["sde"]

    def analytic_field(self, mixture) -> FieldEstimator:
        raise UserError(f"process {self.name!r} has no analytic Gaussian-mixture field; use --field exact or mlp")

    @classmethod
    def defaults_for_data(cls, data: Tensor, given: dict) -> dict:
        """Scale-dependent options filled in from toy data (only those the process takes and
        ``given`` does not set); see :func:`physgen.processes.data_defaults`."""
        return {}

    def describe(self) -> str:
        """``'pfgmpp' (D=128)``: the name and the option that decides the kernel, if any."""
        for attr in ("D", "m"):
            value = getattr(self, attr, None)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return f"{self.name!r} ({attr}={value:g})" if isinstance(value, float) else f"{self.name!r} ({attr}={value})"
        return repr(self.name)

    def config(self) -> dict:
        """Constructor arguments, for ``config.json`` and checkpoints."""
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


class KernelPrior:
    """The prior of a process whose perturbation is a radial kernel: the kernel at the largest
    scale (:meth:`prior_scale`) around ``prior_mean`` (the origin when ``None``).  Mixed into
    the σ-form processes (EDM, VE, NCSN, PFGM++, Yukawa) and PFGM."""

    prior_mean: Optional[list] = None

    def prior_scale(self) -> float:
        """The kernel's scale at ``s_max`` (σ_max; PFGM's z_max)."""
        return float(self.s_max)

    def sample_prior(self, shape, *, generator=None, noise=None, device=None, dtype=torch.float32) -> Tensor:
        shape = tuple(shape)

        def sampler(n, g):
            s = torch.full((n,), self.prior_scale(), device=device, dtype=torch.float64)
            return self.kernel.sample_offsets((n, *shape[1:]), s, g, device, torch.float64).to(dtype)

        x = draw(shape, sampler, generator=generator, noise=noise, device=device)
        return x if self.prior_mean is None else x + prior_centre(self.prior_mean, x)

    def prior_log_prob(self, x: Tensor) -> Tensor:
        """The kernel's normalised log-density at :meth:`prior_scale` around the prior's centre (float64 ``[B]``)."""
        s = torch.full((x.shape[0],), self.prior_scale(), dtype=torch.float64, device=x.device)
        offset = x if self.prior_mean is None else x - prior_centre(self.prior_mean, x)
        return self.kernel.log_prob(offset, s)


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

    def __call__(self, x: Tensor, s: Tensor) -> Tensor:
        return (x - self.denoise(x, s)) / expand_as_batch(s, x)
