"""NCSNv2's whole annealed-Langevin plan (Song & Ermon 2020, arXiv 2006.09011): the levels of
techniques 1 and 2 (:mod:`physgen.processes.ncsnv2`, the process's geometry) and technique 4,
``T`` as large as the budget allows, then ``ε`` making Eq. (6) closest to 1
(:func:`solvers.langevin.choose_eps`, the Langevin step-size rule itself; in ``N <= 4``
dimensions after a quarter of the steps, :func:`solvers.langevin.default_eps` says why).

It sits beside the dispatcher, above the processes: the step size belongs to the sampler,
so a process imports no Langevin algorithm.  Step convention: ours is NCSN's Alg. 1,
``x <- x + (α/2) s + √α z``; the NCSN/NCSNv2 code write ``x + a s + √(2a) z``, so
``ε_code = ε/2``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field as dc_field
from typing import Optional

from torch import Tensor

from solvers.langevin import DEFAULT_BUDGET, LOW_DIM, default_eps, variance_ratio

from .errors import UserError
from .processes.ncsn import NCSN
from .processes.ncsnv2 import DEFAULT_MAX_RATIO, _check_int, choose_num_levels, geometric_levels, max_pairwise_distance, shell_overlap

__all__ = ["NCSNv2Plan", "ncsnv2_levels", "ncsn_plan", "DEFAULT_BUDGET"]


@dataclass
class NCSNv2Plan:
    """Annealed-Langevin hyper-parameters chosen by NCSNv2's techniques (:func:`ncsnv2_levels`).

    ``eps`` is in our (NCSN paper) convention; ``eps_code = eps/2`` is the NCSN/NCSNv2 code's
    ``step_lr``.  ``sources`` records, per value, how it was chosen; :meth:`explain` prints it.
    """

    dim: int
    sigma_max: float
    sigma_min: float
    num_levels: int
    ratio: float
    overlap: float
    steps_per_level: int
    eps: float
    variance_ratio: float
    sources: dict = dc_field(default_factory=dict)

    @property
    def eps_code(self) -> float:
        return self.eps / 2.0

    @property
    def nfe(self) -> int:
        return self.num_levels * self.steps_per_level + 1

    @property
    def levels(self) -> Tensor:
        return geometric_levels(self.sigma_max, self.sigma_min, self.num_levels)

    def as_dict(self) -> dict:
        return {"dim": self.dim, "sigma_max": self.sigma_max, "sigma_min": self.sigma_min, "num_levels": self.num_levels,
                "ratio": self.ratio, "overlap": self.overlap, "steps_per_level": self.steps_per_level, "eps": self.eps,
                "eps_code": self.eps_code, "variance_ratio": self.variance_ratio, "nfe": self.nfe}

    def explain(self) -> str:
        s = self.sources
        lines = [
            f"NCSNv2 (arXiv 2006.09011) annealed Langevin settings for N = {self.dim} dimensions:",
            f"  sigma_1 = {self.sigma_max:.6g}: {s.get('sigma_max', 'given')}",
            f"  sigma_L = {self.sigma_min:.6g}: {s.get('sigma_min', 'given')}",
            f"  L = {self.num_levels} levels, ratio gamma = {self.ratio:.6g}: {s.get('num_levels', 'given')}; "
            f"technique 2's overlap Phi(sqrt(2N)(gamma-1)+3gamma) - Phi(sqrt(2N)(gamma-1)-3gamma) = {self.overlap:.4g}",
            f"  T = {self.steps_per_level} steps per level: {s.get('steps_per_level', 'given')}",
            f"  eps = {self.eps:.6g} (step alpha_i = eps sigma_i^2/sigma_L^2 in x + alpha/2 s + sqrt(alpha) z; "
            f"the NCSN code's step_lr = {self.eps_code:.6g}): {s.get('eps', 'given')}; "
            f"Eq. (6) s_T^2/sigma^2 = {self.variance_ratio:.6g}",
            f"  total NFE = L*T + 1 (final denoising x + sigma_L^2 s(x, sigma_L)) = {self.nfe}",
        ]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.explain()


def _step_size(eps: Optional[float], gamma: float, sigma_min: float, T: int, dim: int) -> tuple[float, str]:
    """``(ε, how it was chosen)``: NCSNv2's technique 4 unless given."""
    if eps is None:
        return default_eps(gamma, sigma_min, T, dim), (
            "technique 4, the step size that brings Eq. (6) closest to 1" if dim > LOW_DIM else
            f"technique 4 reached after a quarter of the T steps (in {dim} <= {LOW_DIM} dimensions the chain must "
            "also mix between modes: solvers.langevin.default_eps)")
    eps = float(eps)
    if not (eps > 0 and math.isfinite(eps)):
        raise UserError(f"eps must be positive and finite, got {eps}")
    return eps, "given"


def ncsnv2_levels(
    data: Optional[Tensor] = None,
    *,
    dim: Optional[int] = None,
    sigma_max: Optional[float] = None,
    sigma_min: float = 0.01,
    num_levels: Optional[int] = None,
    steps_per_level: Optional[int] = None,
    eps: Optional[float] = None,
    budget: int = DEFAULT_BUDGET,
    target_overlap: float = 0.5,
    max_ratio: float = DEFAULT_MAX_RATIO,
    max_points: int = 2000,
) -> NCSNv2Plan:
    """Choose ``σ_1``, ``L``, ``T`` and ``ε`` by NCSNv2's techniques 1, 2 and 4 (module docstring).

    ``data [n, ...]`` gives the dimension ``N`` and ``σ_1`` (largest pairwise distance among
    the first ``max_points`` points); without data pass ``dim`` and ``sigma_max``.  Any value
    given explicitly is kept (and the rest chosen around it).  ``T`` defaults to
    ``max(1, budget // L)``.  Returns an :class:`NCSNv2Plan`; ``plan.explain()`` says why
    each value was chosen.
    """
    sources: dict[str, str] = {}
    if data is not None:
        data_dim = int(data[0].numel())
        if dim is not None and int(dim) != data_dim:
            raise UserError(f"dim={dim} disagrees with the data's dimension {data_dim}")
        dim = data_dim
    if dim is None:
        raise UserError("ncsnv2_levels needs data or dim (the data dimension N)")
    dim = _check_int("dim", dim, 1)
    if sigma_max is None:
        if data is None:
            raise UserError("ncsnv2_levels needs data or sigma_max")
        n_used = min(int(data.shape[0]), max_points)
        sigma_max = max_pairwise_distance(data, max_points)
        sources["sigma_max"] = f"technique 1, the largest pairwise distance among {n_used} data points"
    else:
        sources["sigma_max"] = "given"
    sigma_max, sigma_min = float(sigma_max), float(sigma_min)
    if not (math.isfinite(sigma_min) and sigma_min > 0):
        raise UserError(f"sigma_min must be positive and finite, got {sigma_min}")
    if not (math.isfinite(sigma_max) and sigma_max > sigma_min):
        raise UserError(f"sigma_max must be finite and > sigma_min={sigma_min}, got {sigma_max}")
    sources["sigma_min"] = "given (NCSNv2 uses 0.01)" if sigma_min == 0.01 else "given"
    if not (max_ratio > 1):
        raise UserError(f"max_ratio must be > 1, got {max_ratio}")
    if not (0 < target_overlap < 1):
        raise UserError(f"target_overlap must be in (0, 1), got {target_overlap}")
    span = math.log(sigma_max / sigma_min)
    if num_levels is None:
        L, gamma, ov, reason = choose_num_levels(sigma_max, sigma_min, dim, target=target_overlap, max_ratio=max_ratio)
        if reason == "overlap rule":
            sources["num_levels"] = f"technique 2, the fewest levels whose overlap is >= {target_overlap}"
        else:
            sources["num_levels"] = (f"technique 2 allows fewer levels in {dim} dimensions (overlap >= {target_overlap} "
                                     f"already), so the ratio cap gamma <= {max_ratio:g} decides")
    else:
        L = _check_int("levels", num_levels, 2)
        gamma = math.exp(span / (L - 1))
        ov = shell_overlap(gamma, dim)
        sources["num_levels"] = "given"
    if steps_per_level is None:
        budget = _check_int("budget", budget, 1)
        T = max(1, budget // L)
        sources["steps_per_level"] = f"technique 4, as many as the budget of {budget} score evaluations allows over {L} levels"
    else:
        T = _check_int("steps-per-level", steps_per_level, 1)
        sources["steps_per_level"] = "given"
    eps, sources["eps"] = _step_size(eps, gamma, sigma_min, T, dim)
    vr = variance_ratio(eps, gamma, sigma_min, T)
    return NCSNv2Plan(dim=dim, sigma_max=sigma_max, sigma_min=sigma_min, num_levels=L, ratio=gamma, overlap=ov,
                      steps_per_level=T, eps=eps, variance_ratio=vr, sources=sources)


def ncsn_plan(process: NCSN, dim: Optional[int] = None, *, num_levels: Optional[int] = None, steps_per_level: Optional[int] = None,
              eps: Optional[float] = None, budget: int = DEFAULT_BUDGET) -> NCSNv2Plan:
    """The annealed-Langevin settings for an NCSN process (its ``σ_1``, ``σ_L`` and ``L`` unless overridden)."""
    if dim is not None:
        process.bind_dim(dim)
    if process.dim is None:
        raise UserError("the NCSN plan needs the data dimension (dim)")
    plan = ncsnv2_levels(dim=process.dim, sigma_max=process.s_max, sigma_min=process.s_min,
                         num_levels=num_levels if num_levels is not None else process._num_levels,
                         steps_per_level=steps_per_level, eps=eps, budget=budget, max_ratio=process.max_ratio)
    plan.sources["sigma_max"] = "the process's sigma_max (toy default: the prior-matching rule, above technique 1's largest pairwise distance)"
    plan.sources["sigma_min"] = "the process's sigma_min"
    return plan
