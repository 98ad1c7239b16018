"""NCSNv2's techniques (Song & Ermon 2020, arXiv 2006.09011): the annealed-Langevin plan.

NCSN (arXiv 1907.05600) samples by annealed Langevin dynamics on ``L`` geometric noise
levels ``σ_1 > σ_2 > … > σ_L`` (``σ_i = σ_1 γ^{-(i-1)}``); NCSNv2 chooses its settings:

1. ``σ_1`` at least the largest Euclidean distance between two training points
   (:func:`max_pairwise_distance`; the toy defaults choose a larger ``σ_max`` by the
   prior-matching rule of :meth:`physgen.processes.gaussian.DenoiserProcess.defaults_for_data`,
   which satisfies it).
2. ``γ = σ_{i-1}/σ_i`` such that ``Φ(√(2N)(γ-1) + 3γ) - Φ(√(2N)(γ-1) - 3γ) ≈ 0.5``: the
   probability that a sample of ``N(0, σ_i² I)`` falls in the 3-standard-deviation shell of
   ``‖x‖`` at level ``σ_{i-1}`` (``‖x‖ ≈ N(σ√N, σ²/2)``).  We take the smallest ``L`` whose
   ratio meets ``≥ 0.5`` (CIFAR-10, ``σ_1 = 50``, ``σ_L = 0.01``: ``L = 220``; the paper used
   232, overlap 0.57).  For ``N ≤ 4`` the overlap exceeds 0.99 for *every* ratio (the
   shells are wider than their radii), so the rule alone would allow ``L = 2``; the ratio is
   therefore also capped at ``max_ratio`` (default 1.5: NCSN's 2-D toy used 20 → 1 in 10
   levels, ratio 1.39).
4. ``T`` as large as the budget allows, then ``ε`` making Eq. (6) closest to 1
   (:func:`solvers.langevin.choose_eps`, the Langevin step-size rule itself; in ``N <= 4``
   dimensions after a quarter of the steps, :func:`solvers.langevin.default_eps` says why).

Step convention: ours is NCSN's Alg. 1, ``x <- x + (α/2) s + √α z``; the NCSN/NCSNv2 code
(and NCSNv2's Alg. 1) write ``x + a s + √(2a) z``, so ``a = α/2`` and ``ε_code = ε/2``.
Every Gaussian process gets these levels for ``ald`` (:meth:`GaussianMarginal.langevin_levels`
in :mod:`physgen.processes.gaussian`), placed on its VE-equivalent noise level ``b/a``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field as dc_field
from typing import Optional

import torch
from torch import Tensor

from solvers.langevin import DEFAULT_BUDGET, LOW_DIM, default_eps, variance_ratio

from ..errors import UserError

__all__ = [
    "NCSNv2Plan",
    "ncsnv2_levels",
    "max_pairwise_distance",
    "shell_overlap",
    "choose_num_levels",
    "geometric_levels",
    "DEFAULT_MAX_RATIO",
    "DEFAULT_BUDGET",
]

DEFAULT_MAX_RATIO = 1.5
_MAX_LEVELS = 100_000


def _phi(v: float) -> float:
    return 0.5 * (1.0 + math.erf(v / math.sqrt(2.0)))


def geometric_levels(sigma_max: float, sigma_min: float, num_levels: int) -> Tensor:
    """``σ_i = σ_1 (σ_L/σ_1)^{(i-1)/(L-1)}``, ``i = 1..L`` (float64, endpoints exact)."""
    if num_levels == 1:
        return torch.tensor([float(sigma_max)], dtype=torch.float64)
    la, lb = math.log(sigma_max), math.log(sigma_min)
    values = [math.exp(la + (lb - la) * i / (num_levels - 1)) for i in range(num_levels)]
    values[0], values[-1] = float(sigma_max), float(sigma_min)
    return torch.tensor(values, dtype=torch.float64)


def max_pairwise_distance(data: Tensor, max_points: int = 2000) -> float:
    """NCSNv2 technique 1: the largest Euclidean distance between two of the first ``max_points`` points."""
    if not isinstance(data, Tensor):
        data = torch.as_tensor(data)
    if data.ndim < 2 or data.shape[0] < 2:
        raise UserError(f"need at least 2 data points shaped [n, ...] to pick sigma_max, got shape {tuple(data.shape)}")
    sub = data[:max_points].reshape(min(data.shape[0], max_points), -1).double()
    if not bool(torch.isfinite(sub).all()):
        raise UserError("data contains NaN or Inf; cannot pick sigma_max from it")
    return float(torch.cdist(sub, sub).max())


def shell_overlap(gamma: float, dim: int) -> float:
    """NCSNv2 technique 2: ``Φ(√(2N)(γ-1) + 3γ) - Φ(√(2N)(γ-1) - 3γ)``."""
    a = math.sqrt(2.0 * dim) * (gamma - 1.0)
    return _phi(a + 3.0 * gamma) - _phi(a - 3.0 * gamma)


def choose_num_levels(sigma_max: float, sigma_min: float, dim: int, *, target: float = 0.5,
                      max_ratio: float = DEFAULT_MAX_RATIO) -> tuple[int, float, float, str]:
    """Smallest ``L >= 2`` whose ratio ``γ = (σ_1/σ_L)^{1/(L-1)}`` has overlap ``>= target`` and ``γ <= max_ratio``.

    Returns ``(L, γ, overlap, reason)`` where ``reason`` says which condition decided.
    """
    span = math.log(sigma_max / sigma_min)
    by_cap = 2 if max_ratio == math.inf else max(2, 1 + math.ceil(span / math.log(max_ratio) - 1e-12))
    L = 2
    while shell_overlap(math.exp(span / (L - 1)), dim) < target:
        L += 1
        if L > _MAX_LEVELS:
            raise UserError(f"no level count up to {_MAX_LEVELS} reaches overlap {target} in {dim} dimensions")
    by_rule = L
    L = max(by_rule, by_cap)
    gamma = math.exp(span / (L - 1))
    reason = "overlap rule" if by_rule >= by_cap else "ratio cap"
    return L, gamma, shell_overlap(gamma, dim), reason


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


def _check_int(name: str, value, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise UserError(f"{name} must be an integer >= {lo}, got {value!r}")
    return value


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
