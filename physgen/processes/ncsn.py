"""NCSN: noise-conditional score networks sampled by annealed Langevin dynamics.

Song & Ermon 2019 (NCSN, arXiv 1907.05600) and Song & Ermon 2020 (NCSNv2, arXiv 2006.09011).
The perturbation is VE's, ``x = y + σ ε``, restricted to ``L`` geometric levels
``σ_1 > σ_2 > … > σ_L`` (``σ_i = σ_1 γ^{-(i-1)}``), so :class:`NCSN` *is* a
:class:`~physgen.processes.gaussian.VE` process with discrete levels: it inherits the
score, the reverse SDE, the PF-ODE, the exact and analytic fields, the NCSNv2 score
preconditioning ``s(x, σ) = F(x, σ)/σ`` and VE's integration grid.  Training is denoising
score matching with ``λ(σ) = σ²`` and a uniform level index::

    L(θ) = E_{i ~ U{1..L}} E_{y, ε} ‖σ_i s_θ(y + σ_i ε, σ_i) + ε‖²

Sampling is annealed Langevin dynamics (:func:`solvers.annealed_langevin`, sampler ``ald``)
on the process's own levels (:meth:`NCSN.langevin_levels`), with ``T`` and ``ε`` from
NCSNv2's technique 4; the levels are :mod:`physgen.processes.ncsnv2`, the whole plan
:func:`physgen.ncsnv2_plan.ncsn_plan`.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..errors import UserError
from .gaussian import VE
from .ncsnv2 import DEFAULT_MAX_RATIO, _check_int, choose_num_levels, geometric_levels

__all__ = ["NCSN"]


class NCSN(VE):
    """NCSN / NCSNv2 (arXiv 1907.05600, 2006.09011): VE with ``L`` geometric levels (module docstring).

    ``num_levels`` fixes ``L``; left ``None`` it follows NCSNv2's rule for the data
    dimension ``N``, which the process learns from ``dim`` or from the first data it sees
    (training batch, exact or analytic field) and then keeps: one process serves one ``N``.
    ODE and SDE solvers integrate on VE's grid; ``ald`` runs on the levels
    (:meth:`langevin_levels`).  The prior is the kernel at ``σ_1``, ``N(prior_mean, σ_1² I)``.
    """

    name = "ncsn"
    network_kind = "score"

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, num_levels: Optional[int] = None,
                 dim: Optional[int] = None, sigma_data: float = 0.5, max_ratio: float = DEFAULT_MAX_RATIO, prior_mean=None):
        super().__init__(sigma_min, sigma_max, sigma_data, prior_mean=prior_mean)
        if num_levels is not None:
            _check_int("num_levels", num_levels, 2)
        if dim is not None:
            _check_int("dim", dim, 1)
        if not (max_ratio > 1):
            raise UserError(f"max_ratio must be > 1, got {max_ratio}")
        self._num_levels, self.dim, self.max_ratio = num_levels, dim, float(max_ratio)

    # --- the level sequence -------------------------------------------------------------
    def bind_dim(self, dim: int) -> int:
        """Record the data dimension (first call), or check it against the recorded one."""
        dim = int(dim)
        if self.dim is None:
            self.dim = dim
        elif self.dim != dim:
            raise UserError(f"this NCSN process was set up for {self.dim}-dimensional data, got {dim} dimensions")
        return dim

    @property
    def num_levels(self) -> Optional[int]:
        """``L``: given, or NCSNv2's rule once the dimension is known (else ``None``)."""
        if self._num_levels is not None:
            return self._num_levels
        if self.dim is None:
            return None
        key = (self.s_max, self.s_min, self.dim, self.max_ratio)
        if getattr(self, "_rule_cache", (None,))[0] != key:
            self._rule_cache = (key, choose_num_levels(self.s_max, self.s_min, self.dim, max_ratio=self.max_ratio)[0])
        return self._rule_cache[1]

    def levels(self, dim: Optional[int] = None) -> Tensor:
        """``σ_1 > … > σ_L`` (float64)."""
        if dim is not None:
            self.bind_dim(dim)
        L = self.num_levels
        if L is None:
            raise UserError("NCSN's number of levels follows from the data dimension, which is not known yet; "
                            "pass num_levels (--process-opt num_levels=L) or dim")
        return geometric_levels(self.s_max, self.s_min, L)

    def langevin_levels(self, dim: int, num_levels: Optional[int] = None) -> Tensor:
        """The process's levels for annealed Langevin (``num_levels`` overrides ``L``)."""
        self.bind_dim(dim)
        if num_levels is None:
            return self.levels()
        return geometric_levels(self.s_max, self.s_min, _check_int("levels", num_levels, 2))

    # --- training: uniform level index, λ(σ) = σ² ----------------------------------------
    def sample_scales(self, n, *, generator=None, device=None) -> Tensor:
        lv = self.levels().to(device=device or "cpu", dtype=torch.float32)
        idx = torch.randint(0, lv.shape[0], (n,), generator=generator, device=device)
        return lv[idx]

    def loss(self, field, y, *, generator=None, label=None) -> Tensor:
        self.bind_dim(y[0].numel())
        return super().loss(field, y, generator=generator, label=label)

    # --- fields (VE's, after noting the dimension) ---------------------------------------
    def exact_field(self, points: Tensor, labels: Optional[Tensor] = None):
        self.bind_dim(points[0].numel())
        return super().exact_field(points, labels)

    def analytic_field(self, mixture):
        self.bind_dim(mixture.dim)
        return super().analytic_field(mixture)

    def config(self) -> dict:
        return {"sigma_min": self.s_min, "sigma_max": self.s_max, "num_levels": self.num_levels, "dim": self.dim,
                "sigma_data": self.sigma_data, "max_ratio": self.max_ratio, "prior_mean": self.prior_mean}
