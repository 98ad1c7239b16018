"""Editing and conditional sampling for every process (issue 23).

* :func:`inpaint`: known-region replacement, blended diffusion and RePaint with its jumps
  (arXiv 2201.09865), with the process's own kernel (:mod:`.replacement`);
* :func:`sdedit`: SDEdit (arXiv 2108.01073) and PFCM's hijacked start (arXiv 2402.08159)
  (:mod:`.sdedit`);
* :func:`smc_condition`: twisted SMC (TDS, arXiv 2306.17775), asymptotically exact for
  processes with a Gaussian transition (:mod:`.smc`);
* :mod:`.conditional`: the closed-form conditional of a Gaussian mixture and the KS
  distance, the yardstick of the tests and the experiment.

All return a :class:`solvers.base.Solution` whose ``stats.nfe`` counts every field evaluation.
"""
from .conditional import conditional_mixture, ks_statistic, mixture_cdf
from .masks import check_mask, check_strength
from .replacement import inpaint, jump_schedule
from .sdedit import sdedit
from .smc import smc_condition, smc_observe

__all__ = ["inpaint", "sdedit", "smc_condition", "smc_observe", "jump_schedule", "conditional_mixture", "ks_statistic", "mixture_cdf", "check_mask",
           "check_strength"]
