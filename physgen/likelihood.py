"""Exact log-likelihood by the instantaneous change of variables along the probability-flow ODE.

Song et al. 2021 (arXiv 2011.13456, App. D.2), after FFJORD (Grathwohl et al. 2019,
arXiv 1810.01367).  Along a solution ``x(s)`` of ``dx/ds = v(x, s)`` the density evolves as

    d/ds log p_s(x(s)) = -∇·v(x(s), s),

so integrating the augmented ODE

    d/ds [x, ℓ] = [v(x, s), ∇·v(x, s)],        x(s_min) = x,  ℓ(s_min) = 0,

from ``s_min`` up to ``s_max`` (adaptive Dormand-Prince, :func:`solvers.dopri5`) gives

    log p_{s_min}(x) = log p_prior(x(s_max)) + ℓ(s_max).

The divergence is exact in low dimension (``N`` vector-Jacobian products on the batch:
``∂v_i/∂x_i`` for ``i = 1..N``) or Hutchinson's estimate ``ε^T (∂v/∂x) ε`` with one
Rademacher probe ``ε`` per sample, fixed for the whole solve (unbiased: ``E[ε εᵀ] = I``).

The prior density is the process's own prior at ``s_max``: ``N(0, σ_max² I)`` for VE, EDM
and NCSN, the Student-t kernel around 0 at ``r_max = σ_max √D`` for PFGM++
(``process.kernel.log_prob``), and ``N(0, I)`` for VP.  (These are the priors the samplers
draw from; the true ``p_{s_max}`` differs from them by ``O(‖data‖²/σ_max²)`` per sample.)

**Offset and dequantisation.**  The ODE starts at ``s_min > 0`` (its velocity is singular at
``s = 0``), so what is computed is the density of the data perturbed at ``s_min``
(``p_{s_min} = p_data * N(0, s_min² I)`` for VE/EDM), evaluated at the data points.  For
continuous data (the toys) that is reported as is: for ``s_min`` well below the data's
scale it differs from ``log p_data`` by ``O(s_min²)``.  For quantised data (8-bit images in
``[-1, 1]``, bin width ``w = 2/255``) pass ``dequantize=w``: uniform noise ``U(-w/2, w/2)``
is added per coordinate and ``N log(1/w)`` nats are added to the NLL, which makes it an
upper bound on the discrete NLL (bits/dim then compare with the literature's).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor, nn

import solvers

from .errors import UserError

__all__ = [
    "LikelihoodResult",
    "log_likelihood",
    "check_prior_density",
    "exact_divergence",
    "hutchinson_divergence",
    "prior_log_prob",
    "rademacher",
    "EXACT_DIVERGENCE_MAX_DIM",
]

EXACT_DIVERGENCE_MAX_DIM = 32
"""``divergence="auto"`` is exact up to this many dimensions per sample, Hutchinson above."""


@dataclass
class LikelihoodResult:
    """Per-sample ``logp = log p_{s_min}(x)`` (float64 ``[B]``, after dequantisation when asked) and its parts."""

    logp: Tensor
    prior_logp: Tensor
    delta_logp: Tensor
    nfe: int
    dim: int
    divergence: str
    s_min: float
    s_max: float
    dequantize_nats: float = 0.0

    @property
    def n(self) -> int:
        return int(self.logp.shape[0])

    @property
    def nll(self) -> float:
        """Mean negative log-likelihood in nats per sample."""
        return float(-self.logp.mean())

    @property
    def nll_std_err(self) -> float:
        return float(self.logp.std(unbiased=True) / math.sqrt(self.n)) if self.n > 1 else float("nan")

    @property
    def bits_per_dim(self) -> float:
        return self.nll / (self.dim * math.log(2.0))

    def summary(self) -> dict:
        """The keys ``physgen nll`` writes to ``nll.json``."""
        return {
            "nll_nats": self.nll,
            "nll_std_err": self.nll_std_err,
            "nll_nats_per_dim": self.nll / self.dim,
            "bits_per_dim": self.bits_per_dim,
            "bits_per_dim_std_err": self.nll_std_err / (self.dim * math.log(2.0)),
            "n": self.n,
            "dim": self.dim,
            "nfe": self.nfe,
            "divergence": self.divergence,
            "s_min": self.s_min,
            "s_max": self.s_max,
            "prior_logp_mean": float(self.prior_logp.mean()),
            "delta_logp_mean": float(self.delta_logp.mean()),
            "dequantize_nats": self.dequantize_nats,
        }

    @staticmethod
    def concat(parts: list["LikelihoodResult"]) -> "LikelihoodResult":
        first = parts[0]
        return LikelihoodResult(
            logp=torch.cat([p.logp for p in parts]), prior_logp=torch.cat([p.prior_logp for p in parts]),
            delta_logp=torch.cat([p.delta_logp for p in parts]), nfe=sum(p.nfe for p in parts), dim=first.dim,
            divergence=first.divergence, s_min=first.s_min, s_max=first.s_max, dequantize_nats=first.dequantize_nats,
        )


VelocityFn = Callable[[Tensor, Tensor], Tensor]


def exact_divergence(fn: VelocityFn, x: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
    """``(v, ∇·v)`` with the exact divergence: ``N`` batched vector-Jacobian products.

    ``∂v_i/∂x_i`` for every sample at once is the ``i``-th column of the gradient of
    ``Σ_b v_{b,i}`` (samples do not interact), so ``N`` backward passes give the trace.
    """
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        v = fn(xg, s)
        vf = v.reshape(v.shape[0], -1)
        n = vf.shape[1]
        div = torch.zeros(v.shape[0], dtype=v.dtype, device=v.device)
        for i in range(n):
            (g,) = torch.autograd.grad(vf[:, i].sum(), xg, retain_graph=i < n - 1)
            div = div + g.reshape(g.shape[0], -1)[:, i]
    return v.detach(), div.detach()


def hutchinson_divergence(fn: VelocityFn, x: Tensor, s: Tensor, probe: Tensor) -> tuple[Tensor, Tensor]:
    """``(v, εᵀ (∂v/∂x) ε)``: Hutchinson's unbiased estimate of ``∇·v`` with the probe ``ε`` (one VJP)."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        v = fn(xg, s)
        (g,) = torch.autograd.grad((v * probe).sum(), xg)
    div = (g * probe).reshape(g.shape[0], -1).sum(1)
    return v.detach(), div.detach()


def rademacher(shape, *, noise=None, generator: Optional[torch.Generator] = None, device=None,
               dtype=torch.float32, step: int = -3) -> Tensor:
    """±1 with probability ½ each; per sample from ``noise`` (a ``SeededNoise``) when given."""
    shape = tuple(shape)

    def sampler(n, g):
        return torch.randint(0, 2, (n, *shape[1:]), generator=g, device=device).to(dtype).mul_(2).sub_(1)

    if noise is not None:
        return noise.draw(step, sampler, device)
    return sampler(shape[0], generator)


def prior_log_prob(process, x: Tensor) -> Tensor:
    """``log p_prior(x)`` at ``s_max`` (float64 ``[B]``): the density of the process's prior draw."""
    return process.prior_log_prob(x)


def check_prior_density(process, x: Tensor) -> None:
    """:class:`UserError` (the process's own one line) if ``process`` has no prior density to end
    the likelihood with (the telegrapher's Kac kernel has atoms): asked of one point before any
    field is built or ODE solved, so the refusal costs nothing."""
    with torch.no_grad():
        process.prior_log_prob(x[:1].detach().double())


def _field_dtype(field) -> torch.dtype:
    if isinstance(field, nn.Module):
        for p in field.parameters():
            return p.dtype
    return torch.float64


def log_likelihood(
    process,
    field,
    x: Tensor,
    *,
    label: Optional[Tensor] = None,
    divergence: str = "auto",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    s_min: Optional[float] = None,
    noise=None,
    generator: Optional[torch.Generator] = None,
    prior: Optional[Callable[[Tensor], Tensor]] = None,
    dequantize: Optional[float] = None,
    dtype: Optional[torch.dtype] = None,
    max_steps: int = 10_000,
    solver: str = "dopri5",
    schedule: Optional[Tensor] = None,
) -> LikelihoodResult:
    """``log p_{s_min}(x)`` for a batch ``x [B, ...]`` by the PF-ODE of ``process`` with ``field``.

    ``divergence``: ``"exact"``, ``"hutchinson"`` or ``"auto"`` (exact up to
    :data:`EXACT_DIVERGENCE_MAX_DIM` dimensions).  Hutchinson probes and dequantisation noise
    come per sample from ``noise`` (a ``SeededNoise``; then a sample's estimate does not depend
    on its batch) or from ``generator``.  ``prior(x_end)`` overrides :func:`prior_log_prob`
    (tests use the exact ``p_{s_max}``).  ``s_min`` defaults to the process's.  The solve runs
    in float64 for closed-form fields and in the network's dtype for neural ones.

    ``solver``: ``dopri5`` (adaptive, ``rtol``/``atol``, the default) or any fixed-step flow
    solver of the table, which then integrates on ``schedule`` (the sampling grid of
    :func:`physgen.sampling.grid`) run backwards: its positive points from ``s_min`` up to
    ``s_max`` (a grid ending at 0 loses its last, denoising step, which the ODE from the data
    at ``s_min`` does not take).
    """
    if divergence not in ("auto", "exact", "hutchinson"):
        raise UserError(f"divergence must be auto, exact or hutchinson, got {divergence!r}")
    if x.ndim < 2 or x.shape[0] == 0:
        raise UserError(f"x must be shaped [B, ...] with B >= 1, got {tuple(x.shape)}")
    if prior is None:
        check_prior_density(process, x)
    shape = tuple(x.shape)
    B, N = shape[0], math.prod(shape[1:])
    method = ("exact" if N <= EXACT_DIVERGENCE_MAX_DIM else "hutchinson") if divergence == "auto" else divergence
    points = None
    if not solvers.get_solver(solver).adaptive:
        if schedule is None:
            raise UserError(f"solver {solver!r} integrates the likelihood ODE on a grid: pass --steps (and --schedule)")
        if s_min is not None:
            raise UserError("--s-min applies to the adaptive likelihood solve; a fixed-step grid starts at its own last positive scale")
        s = torch.as_tensor(schedule, dtype=torch.float64).flatten()
        points = s[s > 0].flip(0)
        if points.numel() < 2:
            raise UserError(f"the likelihood grid needs two positive scales, got {s.tolist()}")
    lo = float(points[0]) if points is not None else float(process.s_min if s_min is None else s_min)
    hi = float(process.s_max)
    if not (0 < lo < hi and math.isfinite(hi)):
        raise UserError(f"process {process.name!r}: the likelihood needs 0 < s_min < s_max (finite), got s_min={lo}, s_max={hi}")
    dt = dtype or _field_dtype(field)
    x = x.to(dt)
    extra_nats = 0.0
    if dequantize is not None:
        w = float(dequantize)
        if not (w > 0 and math.isfinite(w)):
            raise UserError(f"dequantize (the bin width) must be positive, got {dequantize}")
        if noise is not None:
            u = noise.rand(shape, step=-4, device=x.device, dtype=dt)
        else:
            u = torch.rand(shape, generator=generator, device=x.device, dtype=dt)
        x = x + w * (u - 0.5)
        extra_nats = N * math.log(1.0 / w)
    probe = None
    if method == "hutchinson":
        probe = rademacher(shape, noise=noise, generator=generator, device=x.device, dtype=dt)

    def velocity(xx: Tensor, s: Tensor) -> Tensor:
        return process.velocity(field, xx, s, label)

    def augmented(z: Tensor, s: Tensor) -> Tensor:
        xx = z[:, :N].reshape(shape)
        if probe is None:
            v, div = exact_divergence(velocity, xx, s)
        else:
            v, div = hutchinson_divergence(velocity, xx, s, probe)
        return torch.cat([v.reshape(B, N), div.reshape(B, 1).to(v.dtype)], dim=1)

    z0 = torch.cat([x.reshape(B, N), torch.zeros(B, 1, dtype=dt, device=x.device)], dim=1)
    if points is None:
        sol = solvers.solve(augmented, z0, [lo, hi], solver, rtol=rtol, atol=atol, **({"max_steps": max_steps} if solver == "dopri5" else {}))
    else:
        sol = solvers.solve(augmented, z0, points, solver)
    z1 = sol.x
    if not bool(torch.isfinite(z1).all()):
        raise FloatingPointError(f"the likelihood ODE produced non-finite values between s={lo:g} and s={hi:g}; "
                                 f"tighten rtol/atol (now {rtol:g}/{atol:g})")
    x_end = z1[:, :N].reshape(shape)
    delta = z1[:, N].double()
    prior_lp = (prior or (lambda xe: prior_log_prob(process, xe)))(x_end).double()
    logp = prior_lp + delta - extra_nats
    return LikelihoodResult(logp=logp.cpu(), prior_logp=prior_lp.cpu(), delta_logp=delta.cpu(), nfe=sol.stats.nfe,
                            dim=N, divergence=method, s_min=lo, s_max=hi, dequantize_nats=extra_nats)
