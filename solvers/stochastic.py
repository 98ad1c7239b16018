"""Stochastic samplers: predictor-corrector, EDM's churn sampler and DDPM ancestral sampling.

All are physics-agnostic and batched: they receive callables (a reverse SDE, a score, a
denoiser-form flow, an ε-predictor), count NFE at those callables, draw noise from a
:data:`~solvers.base.NoiseFn`, and stop with a ``FloatingPointError`` naming the step and
the level (scale) where a non-finite value first appeared (the test accumulates on the
device and is read every ``check_every`` steps, so it does not sync every step).

* :func:`pc`: predictor-corrector sampling (Song et al. 2021, arXiv 2011.13456, Alg. 4/5).
* :func:`edm_sde`: EDM's stochastic sampler (Karras et al. 2022, arXiv 2206.00364, Alg. 2),
  built on the Heun step of :func:`solvers.runge_kutta.heun`.
* :func:`ddpm_ancestral`: DDPM ancestral sampling (Ho et al. 2020, arXiv 2006.11239, Alg. 2).
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor

from ._common import check_batch, scale_table
from .base import SDE, CountedFlow, CountedSDE, NoiseFn, Solution, SolverStats, as_schedule, default_noise
from .langevin import DivergenceWatch, _check_count
from .runge_kutta import heun

__all__ = ["pc", "edm_sde", "ddpm_ancestral", "PREDICTORS", "alphas_cumprod_from_betas"]

PREDICTORS = ("reverse-diffusion", "euler-maruyama")


def _bshape(x: Tensor) -> tuple:
    return (x.shape[0],) + (1,) * (x.dim() - 1)


def _per_sample(v, x: Tensor) -> Tensor:
    """A scalar or ``[B]`` coefficient as a tensor broadcasting against ``x``."""
    t = torch.as_tensor(v, dtype=x.dtype, device=x.device)
    return t.reshape(_bshape(x)) if t.numel() == x.shape[0] and t.numel() > 1 else t.reshape((1,) * x.dim())


def pc(
    sde: SDE,
    score: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    schedule: Union[Tensor, Sequence[float]],
    *,
    predictor: str = "reverse-diffusion",
    snr: float = 0.16,
    corrector_steps: int = 1,
    noise: Optional[NoiseFn] = None,
    generator: Optional[torch.Generator] = None,
    denoise_last: bool = True,
    norms: str = "sample",
    check_every: int = 10,
    return_trajectory: bool = False,
) -> Solution:
    """Predictor-corrector sampling (Song et al. 2021, arXiv 2011.13456, Alg. 4 VE / Alg. 5 VP).

    At each scale ``s_k`` of the decreasing schedule (``k = 0..K-1``) it runs
    ``corrector_steps`` Langevin corrector steps at ``s_k``, then one predictor step from
    ``s_k`` to ``s_{k+1}`` (the order of the score-SDE code, so that the last step ends on
    the clean sample).

    *Corrector* (App. G, Alg. 4/5): ``g = score(x, s_k)``, ``z ~ N(0, I)``,
    ``ε = 2 α (snr ‖z‖/‖g‖)²`` with norms taken **per sample**, ``x <- x + ε g + √(2ε) z``;
    ``α = r²`` from the transition below (``α = 1`` for VE, ``1 - β_i`` for VP).
    ``norms="batch"`` uses the batch means of ``‖z‖`` and ``‖g‖`` instead (one step size for
    the batch, as the score-SDE code does).  Per-sample norms keep a sample independent of
    its batch, but in low dimension they are unsafe: the jump ``√(2ε)‖z‖ = 2 snr ‖z‖²/‖g‖``
    is heavy-tailed where ``‖g‖ → 0`` near a mode (``P(jump > J) ~ J^{-N}`` in ``N``
    dimensions), which in 2-D visibly scatters samples out of their modes.  In high
    dimension both norms concentrate and the two rules agree.

    *Predictor*:

    * ``"reverse-diffusion"`` (App. E): if ``sde`` has ``transition(s, s_next) -> (r, G²)``,
      the exact Gaussian forward transition ``x_s = r x_{s_next} + G z`` (VE: ``r = 1``,
      ``G² = s² - s_next²``; VP: ``r = √(1-β_i)``, ``G² = β_i``), reversed:
      ``x <- (2 - r) x + G² score(x, s_k) + G z``.  Without ``transition`` it falls back to
      the Euler-Maruyama discretisation (which is what reverse diffusion is then).
    * ``"euler-maruyama"``: ``x <- x + drift(x, s_k) Δs + g(s_k) √|Δs| z`` (``Δs < 0``).

    The last predictor step adds no noise when ``denoise_last`` (the score-SDE code's
    ``noise_removal``) or when it ends at ``s = 0``.  NFE = ``K (corrector_steps + 1)``.
    Noise for draw ``j`` of step ``k`` is ``noise(k (M+1) + j, x)`` (``M = corrector_steps``).
    """
    owner = "pc"
    check_batch(x, owner)
    if predictor not in PREDICTORS:
        raise ValueError(f"{owner}: unknown predictor {predictor!r}; valid: {', '.join(PREDICTORS)}")
    snr = float(snr)
    if not (snr >= 0 and math.isfinite(snr)):
        raise ValueError(f"{owner}: snr must be >= 0 and finite, got snr={snr!r}")
    if isinstance(corrector_steps, bool) or not isinstance(corrector_steps, int) or corrector_steps < 0:
        raise ValueError(f"{owner}: corrector_steps must be an integer >= 0, got {corrector_steps!r}")
    every = _check_count("check_every", check_every, owner)
    if norms not in ("sample", "batch"):
        raise ValueError(f"{owner}: norms must be 'sample' or 'batch', got {norms!r}")
    if noise is not None and generator is not None:
        raise ValueError(f"{owner}: pass either noise or generator, not both")
    s = as_schedule(schedule)
    if s[-1] > s[0]:
        raise ValueError(f"{owner}: the schedule must decrease (prior -> data), got {s[:4]}...")
    K, M = len(s) - 1, corrector_steps
    noise_fn = noise if noise is not None else default_noise(generator)
    fs = CountedFlow(score)
    sde_c = CountedSDE(sde)
    transition = getattr(sde, "transition", None)
    table = scale_table(s[:K], x)
    next_table = scale_table(s[1:], x)
    watch = DivergenceWatch(owner, x, hint="lower snr or take more steps")
    watch.update(x, -2)
    traj = [x] if return_trajectory else None
    tiny = torch.finfo(x.dtype).tiny

    def describe(k: int) -> str:
        i, j = divmod(k, M + 1)
        what = "predictor" if j == M else f"corrector step {j}"
        return f"step {i} of {K} ({what}; level s={s[i]:.4g} -> {s[i + 1]:.4g})"

    for k in range(K):
        s_k, dt = table[k], s[k + 1] - s[k]
        to_zero = s[k + 1] == 0.0
        if transition is not None:  # the transition only reads coefficients, so s_{k+1} = 0 is fine
            r, g2 = transition(s_k, next_table[k])
            r, g2 = _per_sample(r, x), _per_sample(g2, x)
        else:
            r, g2 = _per_sample(1.0, x), None
        alpha = r * r
        base = k * (M + 1)
        for j in range(M):
            g = fs(x, s_k)
            z = noise_fn(base + j, x)
            gn = g.reshape(x.shape[0], -1).norm(dim=1)
            zn = z.reshape(x.shape[0], -1).norm(dim=1)
            if norms == "batch":
                gn, zn = gn.mean(), zn.mean()
            gn = gn.clamp_min(tiny).reshape(-1, *([1] * (x.dim() - 1)))
            zn = zn.reshape(-1, *([1] * (x.dim() - 1)))
            step = 2.0 * alpha * (snr * zn / gn) ** 2
            x = x + step * g + (2.0 * step).sqrt() * z
            watch.update(x, base + j)
        last = k == K - 1
        quiet = to_zero or (last and denoise_last)
        if predictor == "reverse-diffusion" and transition is not None:
            x_mean = (2.0 - r) * x + g2 * fs(x, s_k)
            x = x_mean if quiet else x_mean + g2.sqrt() * noise_fn(base + M, x)
        else:
            drift = sde_c.drift(x, s_k)
            x_mean = torch.add(x, drift, alpha=dt)
            if quiet:
                x = x_mean
            else:
                gd = _per_sample(sde_c.diffusion(s_k), x)
                x = x_mean + gd * math.sqrt(abs(dt)) * noise_fn(base + M, x)
        watch.update(x, base + M)
        if (k + 1) % every == 0 or last:
            watch.check(x, describe)
        if traj is not None:
            traj.append(x)
    stats = SolverStats(
        nfe=fs.nfe + sde_c.nfe,
        steps=K,
        accepted=K * x.shape[0],
        trajectory=torch.stack(traj) if traj is not None else None,
        extra={"snr": snr, "corrector_steps": M, "batch_norms": int(norms == "batch")},
    )
    return Solution(x, stats)


def edm_sde(
    flow: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    schedule: Union[Tensor, Sequence[float]],
    *,
    s_churn: float = 0.0,
    s_min: float = 0.0,
    s_max: float = math.inf,
    s_noise: float = 1.0,
    noise: Optional[NoiseFn] = None,
    generator: Optional[torch.Generator] = None,
    check_every: int = 10,
    return_trajectory: bool = False,
) -> Solution:
    """EDM's stochastic sampler (Karras et al. 2022, arXiv 2206.00364, Alg. 2).

    ``flow`` is a flow of the denoiser form ``dx/dσ = (x - D(x, σ))/σ`` (σ(t) = t, s(t) = 1)
    and ``schedule`` the decreasing ``σ_0 > … > σ_N`` (usually ending at 0).  For each step::

        γ_i = min(S_churn/N, √2 - 1)  if S_min <= σ_i <= S_max  else 0
        σ̂ = (1 + γ_i) σ_i,      x̂ = x + √(σ̂² - σ_i²) S_noise z
        x <- Heun step of the flow from σ̂ to σ_{i+1}   (Euler when σ_{i+1} = 0)

    The Heun step is :func:`solvers.runge_kutta.heun` on the two-point schedule
    ``[σ̂, σ_{i+1}]``, so with ``S_churn = 0`` (or no σ in ``[S_min, S_max]``) the result is
    bit-for-bit the Heun ODE sampler on the same schedule.  Noise for step ``i`` is
    ``noise(i, x)`` (drawn only when ``γ_i > 0``).  NFE is the Heun steps' total.
    """
    owner = "edm_sde"
    check_batch(x, owner)
    for name, v in (("s_churn", s_churn), ("s_noise", s_noise)):
        if not (float(v) >= 0 and math.isfinite(float(v))):
            raise ValueError(f"{owner}: {name} must be >= 0 and finite, got {name}={v!r}")
    if not float(s_min) <= float(s_max):
        raise ValueError(f"{owner}: need s_min <= s_max, got s_min={s_min}, s_max={s_max}")
    every = _check_count("check_every", check_every, owner)
    if noise is not None and generator is not None:
        raise ValueError(f"{owner}: pass either noise or generator, not both")
    s = as_schedule(schedule)
    if s[-1] > s[0] or s[-1] < 0:
        raise ValueError(f"{owner}: the schedule must decrease to a value >= 0, got {s[:4]}...")
    N = len(s) - 1
    noise_fn = noise if noise is not None else default_noise(generator)
    gamma_max = math.sqrt(2.0) - 1.0
    watch = DivergenceWatch(owner, x, hint="lower s_churn or s_noise, or take more steps")
    watch.update(x, -2)
    traj = [x] if return_trajectory else None
    nfe = 0
    hats = []

    def describe(i: int) -> str:
        return f"step {i} of {N} (level σ={hats[i]:.4g} -> {s[i + 1]:.4g})"

    for i in range(N):
        t_cur, t_next = s[i], s[i + 1]
        gamma = min(float(s_churn) / N, gamma_max) if float(s_min) <= t_cur <= float(s_max) else 0.0
        t_hat = t_cur + gamma * t_cur
        if gamma > 0.0:
            z = noise_fn(i, x)
            x = torch.add(x, z, alpha=math.sqrt(t_hat**2 - t_cur**2) * float(s_noise))
        hats.append(t_hat)
        sol = heun(flow, x, [t_hat, t_next])
        x, nfe = sol.x, nfe + sol.stats.nfe
        watch.update(x, i)
        if (i + 1) % every == 0 or i == N - 1:
            watch.check(x, describe)
        if traj is not None:
            traj.append(x)
    stats = SolverStats(
        nfe=nfe,
        steps=N,
        accepted=N * x.shape[0],
        trajectory=torch.stack(traj) if traj is not None else None,
        extra={"s_churn": float(s_churn), "s_noise": float(s_noise)},
    )
    return Solution(x, stats)


def alphas_cumprod_from_betas(betas: Union[Tensor, Sequence[float]]) -> list[float]:
    """``ᾱ_t = Π_{j<=t} (1 - β_j)`` (DDPM, arXiv 2006.11239, §2), as host floats."""
    b = betas.detach().to("cpu", torch.float64).tolist() if isinstance(betas, Tensor) else [float(v) for v in betas]
    if not b or not all(0.0 < v < 1.0 for v in b):
        raise ValueError(f"ddpm_ancestral: betas must lie in (0, 1), got {b[:6]}")
    out, acc = [], 1.0
    for v in b:
        acc *= 1.0 - v
        out.append(acc)
    return out


def ddpm_ancestral(
    eps_fn: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    alphas_cumprod: Optional[Union[Tensor, Sequence[float]]] = None,
    *,
    betas: Optional[Union[Tensor, Sequence[float]]] = None,
    scales: Optional[Union[Tensor, Sequence[float]]] = None,
    variance: str = "beta",
    noise: Optional[NoiseFn] = None,
    generator: Optional[torch.Generator] = None,
    check_every: int = 10,
    return_trajectory: bool = False,
) -> Solution:
    """DDPM ancestral sampling (Ho et al. 2020, arXiv 2006.11239, Alg. 2).

    ``alphas_cumprod`` (or ``betas``) lists ``ᾱ_1 > … > ᾱ_T`` in forward order, with
    ``ᾱ_0 = 1``, ``β_t = 1 - ᾱ_t/ᾱ_{t-1}``, ``α_t = 1 - β_t``.  From ``x_T`` (``≈ N(0, I)``)::

        x_{t-1} = (x_t - β_t/√(1 - ᾱ_t) ε(x_t, t)) / √α_t + σ_t z      (z = 0 at t = 1)

    with ``σ_t² = β_t`` (``variance="beta"``, the paper's choice for CIFAR-10) or the
    posterior variance ``β̃_t = (1 - ᾱ_{t-1})/(1 - ᾱ_t) β_t`` (``"beta_tilde"``).
    ``eps_fn(x, s)`` gets the scale ``scales[t-1]`` as a ``[B]`` tensor (default: ``t - 1``,
    the 0-based index DDPM's network sees).  Noise for step ``t`` is ``noise(T - t, x)``;
    NFE = ``T``.
    """
    owner = "ddpm_ancestral"
    check_batch(x, owner)
    if (alphas_cumprod is None) == (betas is None):
        raise ValueError(f"{owner}: pass exactly one of alphas_cumprod and betas")
    if variance not in ("beta", "beta_tilde"):
        raise ValueError(f"{owner}: variance must be 'beta' or 'beta_tilde', got {variance!r}")
    every = _check_count("check_every", check_every, owner)
    if noise is not None and generator is not None:
        raise ValueError(f"{owner}: pass either noise or generator, not both")
    if betas is not None:
        ab = alphas_cumprod_from_betas(betas)
    else:
        ab = (alphas_cumprod.detach().to("cpu", torch.float64).tolist() if isinstance(alphas_cumprod, Tensor)
              else [float(v) for v in alphas_cumprod])
    T = len(ab)
    if T == 0 or not all(0.0 < v <= 1.0 for v in ab) or any(b >= a for a, b in zip([1.0] + ab[:-1], ab)):
        raise ValueError(f"{owner}: alphas_cumprod must lie in (0, 1] and strictly decrease, got {ab[:6]}")
    sc = list(range(T)) if scales is None else (scales.detach().to("cpu", torch.float64).tolist()
                                                if isinstance(scales, Tensor) else [float(v) for v in scales])
    if len(sc) != T:
        raise ValueError(f"{owner}: scales has {len(sc)} entries but there are {T} steps")
    noise_fn = noise if noise is not None else default_noise(generator)
    f = CountedFlow(eps_fn)
    table = scale_table(sc, x)
    watch = DivergenceWatch(owner, x, hint="check the ε model and the β schedule")
    watch.update(x, -2)
    traj = [x] if return_trajectory else None
    prev = [1.0] + ab[:-1]

    def describe(k: int) -> str:
        t = T - k
        return f"step {k} of {T} (t={t}, level ᾱ_t={ab[t - 1]:.4g}, scale {sc[t - 1]:.4g})"

    for k in range(T):
        t = T - k  # 1-based DDPM index
        a_bar, a_prev = ab[t - 1], prev[t - 1]
        beta = 1.0 - a_bar / a_prev
        e = f(x, table[t - 1])
        x_new = torch.add(x, e, alpha=-beta / math.sqrt(1.0 - a_bar)).mul_(1.0 / math.sqrt(1.0 - beta))
        if t > 1:
            var = beta if variance == "beta" else (1.0 - a_prev) / (1.0 - a_bar) * beta
            x_new.add_(noise_fn(k, x), alpha=math.sqrt(var))
        x = x_new
        watch.update(x, k)
        if (k + 1) % every == 0 or k == T - 1:
            watch.check(x, describe)
        if traj is not None:
            traj.append(x)
    stats = SolverStats(
        nfe=f.nfe,
        steps=T,
        accepted=T * x.shape[0],
        trajectory=torch.stack(traj) if traj is not None else None,
        extra={},
    )
    return Solution(x, stats)
