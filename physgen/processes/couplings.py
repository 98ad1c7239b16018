"""Couplings ``π(y, z)`` of a data batch and a noise batch for flow matching.

Conditional flow matching trains on pairs ``(y, z) ~ π`` whose marginals are the data and
the noise (arXiv 2210.02747 uses the independent coupling).  OT-CFM (Tong et al., arXiv
2302.00482, §3.2; Pooladian et al., arXiv 2304.14772) pairs each minibatch by optimal
transport for the cost ``c(y, z) = ‖y - z‖²``, which straightens the learnt paths:

* ``independent``: ``π = p_data × N(0, I)``, the batch as drawn;
* ``ot``: the assignment ``σ = argmin_σ Σ_i ‖y_i - z_σ(i)‖²`` (exact minibatch OT with
  uniform weights is a permutation, Birkhoff-von Neumann), solved by
  ``scipy.optimize.linear_sum_assignment`` on the CPU;
* ``sinkhorn``: the entropic plan ``P = argmin ⟨P, C⟩ - ε H(P)`` with uniform marginals
  (Cuturi 2013, arXiv 1306.0895), log-domain Sinkhorn on the batch's device with ``C``
  divided by its mean (so ``ε`` is unitless); each ``y_i`` then draws its partner from
  ``P[i, :] / P[i, :].sum()``.  This keeps every data point once (the data marginal
  exact); torchcfm's sampler draws pairs from the whole plan instead.  ``ε → 0`` gives ``ot``,
  ``ε → ∞`` ``independent``.

Under ``torch.distributed`` the coupling is solved over the *global* batch: every rank's
``y`` and ``z`` are gathered, rank 0 solves and draws (with its generator), the partner
indices are broadcast, and each rank keeps the pairs of its own rows, so the pairs do not
depend on the number of processes (torchcfm couples per GPU only).
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist
from scipy.optimize import linear_sum_assignment
from torch import Tensor

__all__ = ["COUPLINGS", "DEFAULT_SINKHORN_EPS", "SINKHORN_MAX_ITERATIONS", "SINKHORN_TOL", "partners", "couple", "sinkhorn_log_plan"]

COUPLINGS = ("independent", "ot", "sinkhorn")
DEFAULT_SINKHORN_EPS = 0.05
SINKHORN_MAX_ITERATIONS = 5000
SINKHORN_TOL = 1e-6


def _cost(y: Tensor, z: Tensor) -> Tensor:
    yf, zf = y.reshape(y.shape[0], -1).double(), z.reshape(z.shape[0], -1).double()
    return torch.cdist(yf, zf).pow(2)


def sinkhorn_log_plan(cost: Tensor, eps: float, max_iterations: int = SINKHORN_MAX_ITERATIONS, tol: float = SINKHORN_TOL) -> Tensor:
    """``log P`` of the entropic plan with uniform marginals: ``P_ij = exp((f_i + g_j - C_ij)/ε)``,
    the potentials ``f, g`` updated alternately in the log domain (stable for small ``ε``) until
    the row sums (the column sums are exact after each ``g`` update) are within ``tol`` of ``1/n``
    relatively, or ``max_iterations`` (at ``ε = 1e-3`` of the mean cost, 256 points: about 1000)."""
    n, m = cost.shape
    log_a, log_b = -math.log(n), -math.log(m)
    f, g = torch.zeros(n, dtype=cost.dtype, device=cost.device), torch.zeros(m, dtype=cost.dtype, device=cost.device)
    for i in range(max_iterations):
        f = -eps * torch.logsumexp((g[None, :] - cost) / eps + log_b, dim=1)
        g = -eps * torch.logsumexp((f[:, None] - cost) / eps + log_a, dim=0)
        if i % 20 == 19:
            rows = torch.logsumexp((f[:, None] + g[None, :] - cost) / eps + log_b, dim=1)  # log(n · row sum)
            if float(rows.abs().max()) < tol:
                break
    return (f[:, None] + g[None, :] - cost) / eps + log_a + log_b

def partners(y: Tensor, z: Tensor, coupling: str, eps: float = DEFAULT_SINKHORN_EPS,
             generator: Optional[torch.Generator] = None) -> Tensor:
    """The index ``j(i)`` of the noise row paired with data row ``i`` (``[B]``, long) in one process."""
    if coupling == "independent":
        return torch.arange(y.shape[0], device=y.device)
    cost = _cost(y, z)
    if coupling == "ot":
        rows, cols = linear_sum_assignment(cost.cpu().numpy())
        index = np.empty_like(cols)
        index[rows] = cols
        return torch.as_tensor(index, device=y.device)
    if coupling == "sinkhorn":
        log_plan = sinkhorn_log_plan(cost / cost.mean().clamp_min(1e-300), eps)
        probs = torch.softmax(log_plan, dim=1)
        return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(y.device)
    raise ValueError(f"unknown coupling {coupling!r}")


def _gather(x: Tensor) -> Tensor:
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def couple(y: Tensor, z: Tensor, coupling: str, eps: float = DEFAULT_SINKHORN_EPS,
           generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
    """``(y, z')`` with ``z'`` the noise rows paired with ``y`` (module docstring); over the
    global batch under ``torch.distributed`` (equal batch sizes on every rank)."""
    if coupling == "independent":
        return y, z
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return y, z[partners(y, z, coupling, eps, generator)]
    rank, b = dist.get_rank(), y.shape[0]
    all_y, all_z = _gather(y), _gather(z)
    index = partners(all_y, all_z, coupling, eps, generator) if rank == 0 else torch.empty(all_y.shape[0], dtype=torch.long, device=y.device)
    dist.broadcast(index, src=0)
    return y, all_z[index[rank * b:(rank + 1) * b]]
