"""Perturbation kernels ``p_s(x | y)`` shared by processes, samplers and tests.

* :mod:`~physgen.kernels.kac`: the Kac (telegraph-process) kernel of the damped wave
  equation (arXiv 2506.20641), :class:`KacKernel`.
"""
from __future__ import annotations

from .kac import KacKernel, kac_log_density, kac_offsets, kac_velocity

__all__ = ["KacKernel", "kac_offsets", "kac_log_density", "kac_velocity"]
