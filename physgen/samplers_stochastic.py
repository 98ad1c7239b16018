"""Adapters from (process, field) to the stochastic samplers of the ``solvers`` package.

Registered with :func:`physgen.sampling.register_sampler` under the names users type:

* ``ald``: annealed Langevin dynamics (NCSN, arXiv 1907.05600; NCSNv2, arXiv 2006.09011).
  On ``ncsn`` the levels are the process's (NCSNv2 ratio rule) and ``T``, ``ε`` come from
  NCSNv2's technique 4 (:func:`physgen.processes.ncsn.ncsnv2_levels`) unless ``levels``,
  ``steps_per_level`` or ``eps`` are given.  On the other score processes the same rule
  places geometric levels on the VE-equivalent noise level ``b(s)/a(s)`` of the Gaussian
  marginal ``x = a y + b ε`` (VP: ``151 .. 0.0105``, mapped back to times), and the step
  sizes follow the noise std ``b(s)`` of ``x``.  The solver's ``schedule`` is not used
  (the levels are ALD's schedule).
* ``langevin``: plain Langevin at the smallest level (``sigma``, ``step``, ``n_steps``;
  ``eps`` and ``steps_per_level`` are accepted as aliases of ``step`` and ``n_steps``).
* ``pc``: predictor-corrector (arXiv 2011.13456, Alg. 4/5), reverse-diffusion predictor with
  the exact Gaussian transition of the process, Langevin corrector (``snr``, ``corrector_steps``,
  ``norms``: ``auto`` = per-sample norms from 64 dimensions, batch means below; see
  :func:`solvers.pc` for why per-sample steps fail in 2-D).
* ``edm-sde``: EDM's stochastic sampler (arXiv 2206.00364, Alg. 2) on the σ-form processes;
  defaults are EDM's ImageNet-64 settings ``S_churn=40, S_min=0.05, S_max=50, S_noise=1.003``.
* ``ddpm``: DDPM ancestral sampling (arXiv 2006.11239, Alg. 2) on VP, with discrete
  ``ᾱ_j = a(τ_j)²`` of the continuous VP schedule at the sampling times ``τ_j``.

Each needs a score (a Gaussian kernel): a process without one (PFGM++ with finite D, PFGM,
Yukawa) gets a one-line :class:`~physgen.errors.UserError` saying so.  The initial state
``x0`` is the caller's draw from the process prior at the schedule's first scale (for
``ncsn``, ``N(0, σ_1² I)``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

import solvers
from solvers.base import Solution

from .errors import UserError
from .fields.kinds import convert_gaussian
from .sampling import register_sampler

__all__ = ["require_score", "describe_process", "GaussianTransitionSDE", "ALDPlan", "plan_ald", "ddpm_discretization", "EDM_STOCHASTIC"]


def describe_process(process) -> str:
    """``'pfgmpp' (D=128)``: the name plus the option that decides its kernel, if any."""
    extra = ""
    for attr in ("D", "m"):
        value = getattr(process, attr, None)
        if isinstance(value, (int, float)):
            extra = f" ({attr}={value:g})" if isinstance(value, float) else f" ({attr}={value})"
            break
    return f"{process.name!r}{extra}"


def require_score(process, sampler: str) -> None:
    """UserError when ``process`` has no score (its kernel is not Gaussian)."""
    if not getattr(process, "has_score", False):
        raise UserError(f"sampler {sampler!r} needs a score; process {describe_process(process)} has none: "
                        f"its kernel is not Gaussian (use an ODE solver such as heun, or a Gaussian process: ve, vp, edm, ncsn)")


def _reject_unknown(sampler: str, options: dict, accepted: tuple) -> None:
    bad = sorted(k for k in options if k not in accepted)
    if bad:
        raise UserError(f"sampler {sampler!r} has no option {bad[0]!r}; it takes: {', '.join(accepted)}")


def _score_fn(process, field, label):
    return lambda x, s: process.score(field, x, s, label)


def _positive_levels(schedule: Tensor) -> Tensor:
    s = torch.as_tensor(schedule, dtype=torch.float64).flatten().cpu()
    return s[s > 0]


def _noise_std(process, scales: Tensor) -> Tensor:
    """``b(s)`` of the process's Gaussian marginal ``x = a y + b ε`` (``σ`` for VE-type processes)."""
    _, b = process.coefficients(scales.double())
    return b.double()


def _int_option(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise UserError(f"{name} must be an integer, got {value!r}")
    return value


@dataclass
class ALDPlan:
    """What ``ald`` will run: ``levels`` (scales for the score), ``sigmas`` (noise stds), ``T``, ``eps``, and a text."""

    levels: Tensor
    sigmas: Tensor
    steps_per_level: int
    eps: float
    text: str


def _equivalent_sigma(process, scales: Tensor) -> Tensor:
    """``b(s)/a(s)``: the VE noise level with the same signal-to-noise ratio (``σ`` itself for VE/EDM/NCSN)."""
    a, b = process.coefficients(scales.double())
    return b.double() / a.double()


def _scale_of_sigma(process, sigmas: Tensor) -> Tensor:
    """The scales ``s`` with ``b(s)/a(s) = σ`` (identity for the σ-form processes; bisection otherwise)."""
    if getattr(process, "denoiser_form", False):
        return sigmas.clone()
    lo = torch.full_like(sigmas, float(process.s_min))
    hi = torch.full_like(sigmas, float(process.s_max))
    for _ in range(100):  # b/a increases with s
        mid = 0.5 * (lo + hi)
        below = _equivalent_sigma(process, mid) < sigmas
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    s = 0.5 * (lo + hi)
    s[0], s[-1] = float(process.s_max), float(process.s_min)
    return s


def plan_ald(process, dim: int, schedule: Optional[Tensor] = None, *, levels=None, steps_per_level=None, eps=None,
             budget: Optional[int] = None) -> ALDPlan:
    """Resolve the annealed-Langevin settings for ``process`` (see the module docstring).

    ``levels``: an int ``L`` (geometric noise levels between the process's ends), a list of
    scales, or ``None`` (NCSN: the process's levels; others: NCSNv2's ratio rule on the
    noise std ``b(s)`` between ``b(s_max)`` and ``b(s_min)``).  ``T`` and ``ε`` follow
    NCSNv2's technique 4 unless given.  The sampling ``schedule`` is not used: annealed
    Langevin runs on its own levels.
    """
    from .processes.ncsn import DEFAULT_BUDGET, NCSN, choose_eps, ncsnv2_levels

    budget = DEFAULT_BUDGET if budget is None else _int_option("budget", budget)
    T = None if steps_per_level is None else _int_option("steps-per-level", steps_per_level)
    L_given = None
    if isinstance(levels, (list, tuple)):  # explicit scales
        lv = torch.tensor([float(v) for v in levels], dtype=torch.float64)
        if lv.numel() == 0 or not bool((lv > 0).all()) or not bool(torch.isfinite(lv).all()):
            raise UserError(f"ald levels must be positive and finite, got {lv.tolist()[:6]}")
        if lv.numel() > 1 and not bool((lv[1:] < lv[:-1]).all()):
            raise UserError(f"ald levels must decrease, got {lv.tolist()[:6]}")
        sig = _noise_std(process, lv)
        T = max(1, budget // lv.numel()) if T is None else T
        if T < 1:
            raise UserError(f"steps-per-level must be >= 1, got {T}")
        how = "given"
        if eps is None:
            gamma = max(max((sig[:-1] / sig[1:]).tolist(), default=1.0), 1.0 + 1e-9)
            eps, _ = choose_eps(gamma, float(sig[-1]), T)
            how = f"NCSNv2 technique 4 at the largest level ratio {gamma:.4g}"
        eps = float(eps)
        if not (eps > 0 and math.isfinite(eps)):
            raise UserError(f"eps must be positive and finite, got {eps}")
        text = (f"annealed Langevin on {process.name!r}: {lv.numel()} given levels s = {float(lv[0]):.4g} .. {float(lv[-1]):.4g}, "
                f"T = {T} steps per level, eps = {eps:.4g} ({how})")
        return ALDPlan(lv, sig, T, eps, text)
    if levels is not None:
        L_given = _int_option("levels", levels)
        if L_given < 2:
            raise UserError(f"levels must be >= 2 for annealed Langevin, got {L_given} (use --solver langevin for one level)")
    if isinstance(process, NCSN):
        plan = process.plan(dim, num_levels=L_given, steps_per_level=T, eps=eps, budget=budget)
        return ALDPlan(plan.levels, plan.levels, plan.steps_per_level, plan.eps, plan.explain())
    ends = _equivalent_sigma(process, torch.tensor([float(process.s_max), float(process.s_min)], dtype=torch.float64))
    plan = ncsnv2_levels(dim=dim, sigma_max=float(ends[0]), sigma_min=float(ends[1]), num_levels=L_given,
                         steps_per_level=T, eps=eps, budget=budget)
    plan.sources["sigma_max"] = f"b/a at s_max of process {process.name!r} (its VE-equivalent noise level)"
    plan.sources["sigma_min"] = f"b/a at s_min of process {process.name!r}"
    scales = _scale_of_sigma(process, plan.levels)
    sig = _noise_std(process, scales)
    if sig.numel() > 1:  # technique 4 for the step sizes in x, whose noise std is b(s)
        T_plan = plan.steps_per_level
        eps_x = plan.eps if eps is not None else choose_eps(float((sig[:-1] / sig[1:]).max()), float(sig[-1]), T_plan)[0]
    else:
        eps_x = plan.eps
    text = plan.explain() + (f"\n  levels mapped to s = {float(scales[0]):.4g} .. {float(scales[-1]):.4g}; step sizes from "
                             f"b(s) = {float(sig[0]):.4g} .. {float(sig[-1]):.4g}, eps = {eps_x:.4g}"
                             if not getattr(process, "denoiser_form", False) else "")
    return ALDPlan(scales, sig, plan.steps_per_level, eps_x, text)


@register_sampler("ald")
def _ald(process, field, x0, schedule, *, noise=None, label=None, **options) -> Solution:
    require_score(process, "ald")
    _reject_unknown("ald", options, ("levels", "steps_per_level", "eps", "budget", "final_denoise", "return_trajectory"))
    plan = plan_ald(process, int(x0[0].numel()), schedule, levels=options.get("levels"),
                    steps_per_level=options.get("steps_per_level"), eps=options.get("eps"), budget=options.get("budget"))
    sol = solvers.annealed_langevin(
        _score_fn(process, field, label), x0, plan.levels, eps=plan.eps, steps_per_level=plan.steps_per_level,
        noise=noise, sigmas=plan.sigmas, final_denoise=bool(options.get("final_denoise", True)),
        return_trajectory=bool(options.get("return_trajectory", False)),
    )
    sol.stats.extra["plan"] = plan.text
    return sol


@register_sampler("langevin")
def _langevin(process, field, x0, schedule, *, noise=None, label=None, **options) -> Solution:
    require_score(process, "langevin")
    _reject_unknown("langevin", options, ("sigma", "step", "n_steps", "eps", "steps_per_level", "check_every", "return_trajectory"))
    if "step" in options and "eps" in options:
        raise UserError("sampler 'langevin': give step or eps (its alias), not both")
    if "n_steps" in options and "steps_per_level" in options:
        raise UserError("sampler 'langevin': give n_steps or steps_per_level (its alias), not both")
    sigma = options.get("sigma")
    if sigma is None:
        pos = _positive_levels(schedule)
        sigma = float(pos[-1]) if pos.numel() else process.s_min
    sigma = float(sigma)
    if not (sigma > 0 and math.isfinite(sigma)):
        raise UserError(f"sigma must be positive and finite, got {sigma}")
    n_steps = _int_option("n_steps", options.get("n_steps", options.get("steps_per_level", 1000)))
    step = options.get("step", options.get("eps"))
    if step is None:  # NCSNv2 technique 4 for one level reached from a level 1.5x wider
        from .processes.ncsn import choose_eps

        b = float(_noise_std(process, torch.tensor([sigma], dtype=torch.float64))[0])
        step, _ = choose_eps(1.5, b, n_steps)
    return solvers.langevin(_score_fn(process, field, label), x0, sigma, step=float(step), n_steps=n_steps, noise=noise,
                            check_every=_int_option("check_every", options.get("check_every", 100)),
                            return_trajectory=bool(options.get("return_trajectory", False)))


class GaussianTransitionSDE:
    """A process's reverse SDE plus its exact Gaussian transition (for the reverse-diffusion predictor).

    ``transition(s, s_next) = (r, G²)`` with ``x_s = r x_{s_next} + G z``:
    ``r = a(s)/a(s_next)``, ``G² = b(s)² - r² b(s_next)²`` (VE: ``1, s² - s_next²``; VP:
    ``√(1-β_i), β_i``), computed in float64.
    """

    def __init__(self, process, field, label=None):
        self.process = process
        self.inner = process.sde(field, label)

    def drift(self, x: Tensor, s: Tensor) -> Tensor:
        return self.inner.drift(x, s)

    def diffusion(self, s: Tensor) -> Tensor:
        return self.inner.diffusion(s)

    def transition(self, s: Tensor, s_next: Tensor) -> tuple[Tensor, Tensor]:
        a1, b1 = self.process.coefficients(s.double())
        a0, b0 = self.process.coefficients(s_next.double())
        r = a1.double() / a0.double()
        g2 = (b1.double() ** 2 - r**2 * b0.double() ** 2).clamp_min(0.0)
        return r.to(s.dtype), g2.to(s.dtype)


PC_SAMPLE_NORMS_MIN_DIM = 64
"""``norms="auto"`` uses per-sample norms from this many dimensions per sample (see :func:`solvers.pc`)."""


def _pc_norms(norms: str, x0: Tensor) -> str:
    """``auto``: the paper's per-sample norms when ``N >= 64`` (``‖z‖/√N`` then spreads by
    ``1/√(2N) <= 9%``), else the score-SDE code's batch means, because per-sample steps are
    heavy-tailed in low dimension (a 2-D mixture sampled with them loses its mode weights).
    Batch means make a sample depend on its batch; pass ``norms=sample`` to avoid that."""
    if norms not in ("auto", "sample", "batch"):
        raise UserError(f"pc norms must be auto, sample or batch, got {norms!r}")
    if norms == "auto":
        return "sample" if x0[0].numel() >= PC_SAMPLE_NORMS_MIN_DIM else "batch"
    return norms


@register_sampler("pc")
def _pc(process, field, x0, schedule, *, noise=None, label=None, **options) -> Solution:
    require_score(process, "pc")
    _reject_unknown("pc", options, ("predictor", "snr", "corrector_steps", "denoise_last", "norms", "check_every", "return_trajectory"))
    predictor = options.get("predictor", "reverse-diffusion")
    from solvers.stochastic import PREDICTORS

    if predictor not in PREDICTORS:
        raise UserError(f"unknown predictor {predictor!r}; valid: {', '.join(PREDICTORS)}")
    snr = options.get("snr")
    return solvers.pc(
        GaussianTransitionSDE(process, field, label), _score_fn(process, field, label), x0, schedule,
        predictor=predictor, snr=0.16 if snr is None else float(snr),
        corrector_steps=_int_option("corrector_steps", options.get("corrector_steps", 1)), noise=noise,
        denoise_last=bool(options.get("denoise_last", True)), norms=_pc_norms(options.get("norms", "auto"), x0), check_every=_int_option("check_every", options.get("check_every", 10)),
        return_trajectory=bool(options.get("return_trajectory", False)),
    )


EDM_STOCHASTIC = {"s_churn": 40.0, "s_min": 0.05, "s_max": 50.0, "s_noise": 1.003}
"""EDM's stochastic settings for ImageNet-64 (arXiv 2206.00364, Table 5)."""


@register_sampler("edm-sde")
def _edm_sde(process, field, x0, schedule, *, noise=None, label=None, **options) -> Solution:
    require_score(process, "edm-sde")
    if not getattr(process, "denoiser_form", False):
        raise UserError(f"sampler 'edm-sde' needs a process in the σ form dx/dσ = (x - D)/σ (ve, edm, ncsn); "
                        f"process {describe_process(process)} integrates in another scale (use pc, ddpm or euler-maruyama)")
    _reject_unknown("edm-sde", options, (*EDM_STOCHASTIC, "check_every", "return_trajectory"))
    kw = {k: float(options.get(k, v)) for k, v in EDM_STOCHASTIC.items()}
    return solvers.edm_sde(process.flow(field, label), x0, schedule, noise=noise, **kw,
                           check_every=_int_option("check_every", options.get("check_every", 10)),
                           return_trajectory=bool(options.get("return_trajectory", False)))


def ddpm_discretization(process, schedule: Tensor) -> tuple[list[float], list[float]]:
    """``(ᾱ_j, τ_j)`` in forward order from the decreasing VP ``schedule``: ``ᾱ_j = a(τ_j)²``.

    The chain starts at the data (``τ_0 = 0``, ``ᾱ_0 = 1``), so ``β_1 = 1 - a(τ_1)²`` and
    ``β_j = 1 - a(τ_j)²/a(τ_{j-1})²``: the exact discrete VP chain at the sampling times.
    """
    tau = torch.as_tensor(schedule, dtype=torch.float64).flatten().cpu().flip(0)
    tau = tau[tau > 0]
    a, _ = process.coefficients(tau)
    return (a.double() ** 2).tolist(), tau.tolist()


@register_sampler("ddpm")
def _ddpm(process, field, x0, schedule, *, noise=None, label=None, **options) -> Solution:
    require_score(process, "ddpm")
    if getattr(process, "name", None) != "vp":
        raise UserError(f"sampler 'ddpm' needs the VP process (x = a y + b ε with a² + b² = 1); process "
                        f"{describe_process(process)} is not one (use pc, edm-sde or euler-maruyama)")
    _reject_unknown("ddpm", options, ("variance", "check_every", "return_trajectory"))
    variance = options.get("variance", "beta")
    if variance not in ("beta", "beta_tilde"):
        raise UserError(f"ddpm variance must be 'beta' or 'beta_tilde', got {variance!r}")
    ab, tau = ddpm_discretization(process, schedule)

    def eps_fn(x: Tensor, t: Tensor) -> Tensor:
        a, b = process.coefficients(t)
        return convert_gaussian(field(x, t, label), field.kind, "eps", x, a, b)

    return solvers.ddpm_ancestral(eps_fn, x0, ab, scales=tau, variance=variance, noise=noise,
                                  check_every=_int_option("check_every", options.get("check_every", 10)),
                                  return_trajectory=bool(options.get("return_trajectory", False)))
