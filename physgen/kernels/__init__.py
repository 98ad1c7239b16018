"""Perturbation kernels and their special functions, in one place, used by processes and GenPhys.

Each kernel ``k_s`` is the law of ``x - y`` at scale ``s`` for one data point ``y``:
``sample_offsets(shape, s, generator, device, dtype)`` draws it exactly on the device,
``log_prob(offset, s)`` is its normalised log-density, and a log-profile (``-d²/(2s²)`` for
the Gaussian) gives the posterior weights of the exact fields.

* :class:`GaussianKernel`: diffusion (VE, EDM, PFGM++ at D = inf).
* :class:`StudentTKernel`: PFGM++ with ``D`` extra dimensions; ``D = 1`` is PFGM's Poisson
  (Cauchy) kernel; ``D`` is a :class:`physgen.config.ExtraDims` (:func:`physgen.config.parse_D`).
* :class:`NIGKernel` and :mod:`physgen.kernels.nig`: Yukawa's Normal-Inverse-Gaussian law,
  its death rate and radial transport; :mod:`physgen.kernels.special`: log Bessel K.
* :class:`KacKernel` and :mod:`physgen.kernels.kac`: the Kac (telegraph-process) law of the
  damped wave equation per coordinate (arXiv 2506.20641), atoms included.
"""
from .gaussian import GaussianKernel, per_row
from .kac import KacKernel, kac_log_density, kac_offsets, kac_velocity
from .nig import NIGKernel
from .student_t import StudentTKernel

__all__ = ["GaussianKernel", "StudentTKernel", "NIGKernel", "KacKernel", "per_row", "kac_offsets", "kac_log_density",
           "kac_velocity"]
