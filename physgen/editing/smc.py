"""An asymptotically exact conditional sampler: twisted sequential Monte Carlo (TDS, Wu et al.
2023, arXiv 2306.17775) for inpainting under any process with a Gaussian transition.

**The model.**  On the process's grid ``s_0 = s_max > ... > s_L`` (its positive points) the
reverse model is the ancestral chain of the exact Gaussian posterior (DDPM with β̃, arXiv
2006.11239): with the forward transition ``x_s = r x_{s'} + G z`` and the marginal
``x_{s'} = a' y + b' ε`` of the process (``offers(field)["transition"]``),

    p_θ(x_{s'} | x_s) = N(m, v I),   m = (G² a' D(x_s, s) + r b'² x_s)/b²,   v = b'² G²/b²,

``b² = r² b'² + G²`` and ``D`` the field's denoiser.  Its conditional given the known
coordinates ``x^M = y`` is the target.

**The observation.**  The known coordinates are observed with a small Gaussian noise,
``y = x_0^M + n``, ``n ~ N(0, σ_y² I)``, ``σ_y`` = ``noise_std`` (default: the grid's last
positive noise level ``σ_L = b(s_L)/a(s_L)``, 0.002 for EDM, 0.01 for VP), and the model's
data are ``x_0 = D(x_L, s_L)``.  The target is ``p_θ(x_0 | y) ∝ p_θ(x_0) N(y; x_0^M, σ_y²)``:
the mask's exact conditional is its ``σ_y -> 0`` limit, and at ``σ_y = σ_L`` the two differ by
``O(σ_L²/c²)`` relative in a component's variance ``c²`` and weight (the same order as
stopping the grid at ``s_L``).

**Twisting** (TDS §3): particles carry the twisting function

    p̃_k(y | x_k) = N(y; D(x_k, s_k)^M, τ_k² I_m),      τ_k² = σ_k² - σ_L² + σ_y²,

(``σ_k = b/a`` the VE-equivalent noise level: the posterior spread of a coordinate given
``x_k`` is at most ``σ_k`` in the data's units), which at ``s_L`` *is* the likelihood, so the
last weight needs no correction; the proposal is the model's step moved along the twist's
gradient, ``q(x' | x) = N(m + v ∇_x log p̃_k(y | x), v I)`` (TDS eq. 9, ``∇`` by autograd
through the field), and the weight of a step is

    w = p_θ(x' | x) p̃_{k+1}(y | x') / (p̃_k(y | x) q(x' | x)),     w_0 = p̃_0(y | x_0).

Any positive twist leaves the sampler consistent (TDS Thm. 1): the weighted particles target
``p_θ(x_0 | y)`` *exactly* as their number grows.  What remains is the model's own error
(the field and the grid's discretisation of the ancestral chain, measured in
``tests/editing``).  A grid that ends at 0 returns ``D(x_L, s_L)``, the denoiser already
evaluated for the last weight; the known coordinates are then set to their values.

**Noisy linear observations** ``y = A x + n`` (:func:`smc_observe`) run the same chain with
the twist ``N(y; A D(x_k), (σ_k² - σ_L²) A Aᵀ + σ_y² I)``, the likelihood itself at ``s_L``.

Weights, effective sample size and systematic resampling are the births sampler's
(:func:`solvers.births.effective_sample_size`, :func:`solvers.births.systematic_resample`):
rows of the batch with the same known values form one population, resampled (within the
population) whenever its ``ESS/n`` falls below ``ess_threshold``, and once at the end.
**Duplicates.**  The final resampling (and any within the chain after the last step's
noise) copies particles: the ``n`` returned rows hold fewer distinct points, about the
final effective sample size, as any SMC output does; they are a weighted sample's
equal-weight form, unbiased for expectations, not ``n`` independent draws.  No move step
follows (a Markov kernel leaving ``p_θ(x_0 | y)`` invariant would need the model's density
at ``x_0``, which the chain does not give); ``stats.extra["distinct"]`` counts the distinct
rows so the user sees it (``physgen toy --condition`` records it in ``metrics.json``).
Covered: every process offering ``transition`` (VE, EDM, VP, NCSN, PFGM++ at ``D = inf``);
PFGM++ at finite ``D``, PFGM, Yukawa and the telegrapher have no Gaussian transition to
twist and are refused.  NFE: one field evaluation (with its gradient through the field) per
positive grid point.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from solvers.base import Solution
from solvers.births import effective_sample_size, systematic_resample

from ..errors import UserError
from ..sampling import grid as sampling_grid
from .masks import check_known, check_mask, known_part, with_known
from .steps import Tally, has_transition

__all__ = ["smc_condition", "smc_observe", "SMC_STEPS"]

SMC_STEPS = 200
"""Default grid points of the ancestral chain (the process's schedule).  The chain needs more
steps than the ODE: on ``0.3 N((-1,-1.5), 0.5²) + 0.7 N((1,1.5), 0.5²)`` given ``x_0 = 0``
(4000 particles, analytic field, 10 seeds) EDM's 18 steps leave the left mode's weight at
0.39 (target 0.30); at 100 steps the KS distance averages 0.034 (max 0.056), at 200 0.030
(max 0.037) with the weight within 0.025 for EDM and VP (tests/editing/test_targets.py)."""


class Populations:
    """Log-weights of the rows of a batch, grouped into populations that share their known
    values; ESS and resampling (the births sampler's) within each population."""

    def __init__(self, values: Tensor, threshold: float, generator: torch.Generator):
        _, self.group = torch.unique(values, dim=0, return_inverse=True)
        self.rows = [torch.nonzero(self.group == g).flatten() for g in range(int(self.group.max()) + 1)]
        self.log_w = torch.zeros(values.shape[0], dtype=torch.float64, device=values.device)
        self.threshold, self.generator = threshold, generator
        self.ess: list[float] = []
        self.resamples = 0

    def resample(self, force: bool = False) -> Tensor:
        """A row index that resamples every population whose ``ESS/n`` is below the threshold (all when ``force``)."""
        index = torch.arange(self.log_w.shape[0], device=self.log_w.device)
        worst = 1.0
        for rows in self.rows:
            ess = float(effective_sample_size(self.log_w[rows])) / rows.numel()
            worst = min(worst, ess)
            if force or ess < self.threshold:
                u = torch.rand((), generator=self.generator, device=self.log_w.device, dtype=torch.float64)
                index[rows] = rows[systematic_resample(self.log_w[rows], u)]
                self.log_w[rows] = 0.0
                self.resamples += int(not force)
        self.ess.append(worst)
        return index


def _check(process, steps_grid: list, ess_threshold) -> list:
    if not has_transition(process):
        raise UserError(f"smc_condition twists the process's Gaussian transition; process {process.describe()} has none "
                        f"(its kernel is not Gaussian): use inpaint (blend) there")
    if isinstance(ess_threshold, bool) or not isinstance(ess_threshold, (int, float)) or not 0 <= ess_threshold <= 1:
        raise UserError(f"ess_threshold must be a number in [0, 1], got {ess_threshold!r}")
    positive = [v for v in steps_grid if v > 0]
    if len(positive) < 2:
        raise UserError(f"smc_condition needs a grid with at least 2 positive scales, got {steps_grid}")
    return positive


def _check_noise(noise_std, sigma_last: float) -> float:
    if noise_std is None:
        return sigma_last
    if isinstance(noise_std, bool) or not isinstance(noise_std, (int, float)) or not math.isfinite(noise_std) or noise_std <= 0:
        raise UserError(f"noise_std (the observation noise σ_y) must be a number > 0, got {noise_std!r}")
    return float(noise_std)


class MaskObservation:
    """``y = x^M + n``: ``log N(y; d^M, (t + σ_y²) I)`` for a denoised ``d`` and an extra variance ``t``."""

    def __init__(self, mask: Tensor, values: Tensor, noise_std: float):
        self.mask, self.values, self.var = mask, values, noise_std**2

    def log_likelihood(self, d: Tensor, extra: float) -> Tensor:
        res = (self.values - known_part(d, self.mask)).double()
        c = extra + self.var
        return -0.5 * res.pow(2).sum(1) / c - 0.5 * res.shape[1] * math.log(2 * math.pi * c)


class LinearObservation:
    """``y = A x + n``: ``log N(y; A d, t A Aᵀ + σ_y² I)`` (Cholesky of the ``m x m`` covariance)."""

    def __init__(self, A: Tensor, values: Tensor, noise_std: float):
        self.A, self.values, self.var = A.double(), values.double(), noise_std**2
        self.gram = self.A @ self.A.T

    def log_likelihood(self, d: Tensor, extra: float) -> Tensor:
        res = self.values - d.reshape(d.shape[0], -1).double() @ self.A.T
        eye = torch.eye(self.gram.shape[0], dtype=torch.float64, device=self.gram.device)
        chol = torch.linalg.cholesky(extra * self.gram + self.var * eye)
        z = torch.linalg.solve_triangular(chol, res.T, upper=False).T
        return -0.5 * z.pow(2).sum(1) - torch.log(torch.diagonal(chol)).sum() - 0.5 * res.shape[1] * math.log(2 * math.pi)


class Twisted:
    """The field seen by the sampler: the denoiser, the twist ``log p̃(y | x)`` and its gradient."""

    def __init__(self, target, observation, sigma_last: float):
        self.target, self.observation, self.sigma_last = target, observation, sigma_last
        self.nfe = 0

    def sigma(self, s: float) -> float:
        a, b = self.coefficients(s)
        return b / a

    def coefficients(self, s: float) -> tuple[float, float]:
        a, b = self.target.marginal(torch.tensor([s], dtype=torch.float64))
        return float(a), float(b)

    def __call__(self, x: Tensor, s: float) -> tuple[Tensor, Tensor, Tensor]:
        extra = max(self.sigma(s) ** 2 - self.sigma_last**2, 0.0)  # τ_k² - σ_y²
        self.nfe += 1
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            d = self.target.denoise(xg, torch.full((x.shape[0],), s, dtype=x.dtype, device=x.device))
            log_t = self.observation.log_likelihood(d, extra)
            grad, = torch.autograd.grad(log_t.sum(), xg)
        return d.detach(), log_t.detach(), grad.detach()

    def model_step(self, x: Tensor, d: Tensor, s: float, s_next: float) -> tuple[Tensor, float]:
        """``(m, v)`` of ``p_θ(x_{s'} | x_s)`` (module docstring)."""
        r, g2 = (float(t) for t in self.target.transition(torch.tensor([s], dtype=torch.float64), torch.tensor([s_next], dtype=torch.float64)))
        a1, b1 = self.coefficients(s_next)
        b2 = r * r * b1 * b1 + g2
        return (g2 * a1 * d + r * b1 * b1 * x) / b2, b1 * b1 * g2 / b2


def _gauss_log_ratio(x: Tensor, m: Tensor, shifted: Tensor, v: float) -> Tensor:
    """``log N(x; m, v) - log N(x; shifted, v)`` per row (float64)."""
    flat = lambda t: t.reshape(t.shape[0], -1).double()
    return (flat(x - shifted).pow(2) - flat(x - m).pow(2)).sum(1) / (2 * v)


def _setup(process, field, steps, schedule, ess_threshold, noise_std, label) -> tuple:
    """``(grid, positive points, transition target, σ_L, σ_y)``."""
    s = sampling_grid(process, SMC_STEPS if steps is None else steps, schedule, method="ddpm").tolist()
    points = _check(process, s, ess_threshold)
    target = process.offers(field, label)["transition"]
    a, b = target.marginal(torch.tensor([points[-1]], dtype=torch.float64))
    sigma_last = float(b / a)
    return s, points, target, sigma_last, _check_noise(noise_std, sigma_last)


def _run(process, twisted: Twisted, pops: Populations, like: Tensor, points: list, ends_at_zero: bool,
         generator: torch.Generator) -> Tensor:
    """The twisted chain over ``points`` (module docstring); returns the resampled particles
    (their denoised value where the grid ends at 0)."""
    x = process.sample_prior(like.shape, generator=generator, device=like.device, dtype=like.dtype)
    for k in range(len(points)):
        d, log_t, grad = twisted(x, points[k])
        pops.log_w += log_t
        if k == len(points) - 1:  # p̃_L is the likelihood: the weights are complete
            break
        index = pops.resample()
        x, d, log_t, grad = x[index], d[index], log_t[index], grad[index]
        pops.log_w -= log_t
        m, v = twisted.model_step(x, d, points[k], points[k + 1])
        shifted = m + v * grad
        x = shifted + math.sqrt(v) * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        pops.log_w += _gauss_log_ratio(x, m, shifted, v)
    return (d if ends_at_zero else x)[pops.resample(force=True)].detach()


def _solution(x: Tensor, twisted: Twisted, pops: Populations, s: list, noise_std: float, editing: str) -> Solution:
    tally = Tally()
    tally.nfe, tally.steps = twisted.nfe, len(s) - 1
    distinct = int(torch.unique(x.reshape(x.shape[0], -1), dim=0).shape[0])
    return tally.solution(x, editing=editing, grid=s, ess=pops.ess, resamples=pops.resamples,
                          particles=[int(r.numel()) for r in pops.rows], noise_std=noise_std, distinct=distinct)


def smc_condition(process, field, known: Tensor, mask, *, steps: Optional[int] = None, schedule: Optional[str] = None,
                  noise_std: Optional[float] = None, ess_threshold: float = 0.5, seed: int = 0,
                  label: Optional[Tensor] = None) -> Solution:
    """Sample ``p(x^{M̄} | x^M = known^M)`` by twisted SMC (module docstring).

    ``known [B, *data]``: rows with equal known values form one population of particles (pass
    ``P`` copies of an input for ``P`` particles); ``mask`` is 1 where known.  ``steps`` and
    ``schedule`` pick the grid (:func:`physgen.sampling.grid`, default :data:`SMC_STEPS` on the
    process's schedule); ``noise_std`` is ``σ_y`` (default ``σ_L``); ``ess_threshold`` is the
    births sampler's.  ``stats.extra``: ``ess`` (the lowest ESS/n of the populations at each
    grid point), ``resamples``, ``particles`` (per population), ``noise_std``.
    """
    known = check_known(known)
    mask = check_mask(mask, known.shape[1:])
    s, points, target, sigma_last, noise_std = _setup(process, field, steps, schedule, ess_threshold, noise_std, label)
    generator = torch.Generator(device=known.device).manual_seed(int(seed))
    values = known_part(known, mask)
    twisted = Twisted(target, MaskObservation(mask, values, noise_std), sigma_last)
    pops = Populations(values, float(ess_threshold), generator)
    x = _run(process, twisted, pops, known, points, s[-1] == 0.0, generator)
    return _solution(with_known(x, mask, values), twisted, pops, s, noise_std, "smc")


def smc_observe(process, field, y: Tensor, A: Tensor, data_shape, *, noise_std: float, steps: Optional[int] = None,
                schedule: Optional[str] = None, ess_threshold: float = 0.5, seed: int = 0, label: Optional[Tensor] = None) -> Solution:
    """Sample ``p(x | y)`` for noisy linear observations ``y = A x + n``, ``n ~ N(0, σ_y² I)``, by
    the same twisted SMC (twist ``N(y; A D(x_k), (σ_k² - σ_L²) A Aᵀ + σ_y² I)``, the likelihood
    itself at ``s_L``).  ``y [B, m]`` (rows with equal ``y`` form one population), ``A [m, N]``
    acting on the flattened sample of shape ``data_shape``, ``noise_std = σ_y > 0``."""
    data_shape = tuple(int(v) for v in data_shape)
    n = math.prod(data_shape)
    if not (isinstance(A, Tensor) and A.dim() == 2 and A.shape[1] == n and bool(torch.isfinite(A).all())):
        raise UserError(f"A must be a finite [m, {n}] matrix (m observations of a sample of shape {data_shape}), got "
                        f"{tuple(A.shape) if isinstance(A, Tensor) else type(A).__name__}")
    y = check_known(y, (A.shape[0],), what="observation y")
    if noise_std is None:
        raise UserError("smc_observe needs noise_std, the observation noise σ_y > 0")
    s, points, target, sigma_last, noise_std = _setup(process, field, steps, schedule, ess_threshold, noise_std, label)
    generator = torch.Generator(device=y.device).manual_seed(int(seed))
    twisted = Twisted(target, LinearObservation(A.to(y.device), y, noise_std), sigma_last)
    pops = Populations(y, float(ess_threshold), generator)
    x = _run(process, twisted, pops, y.new_zeros((y.shape[0], *data_shape)), points, s[-1] == 0.0, generator)
    return _solution(x, twisted, pops, s, noise_std, "smc-linear")
