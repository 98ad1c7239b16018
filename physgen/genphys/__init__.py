"""GenPhys (Liu, Luo, Xu, Jaakkola, Tegmark, arXiv 2304.02637): physical processes as generative models.

* :mod:`~physgen.genphys.framework`: :class:`PhysicalProcess` (a PDE as one class), the C1
  (positive kernel) and C2 (smoothing dispersion) checks, :func:`classify`;
* :mod:`~physgen.genphys.catalogue`: heat, Poisson, Laplace, Yukawa, the damped wave per
  coordinate (telegrapher, Kac flows; generative) and Helmholtz, wave, the isotropic damped
  wave in N ≥ 2, Klein-Gordon, Schrödinger, hyper-diffusion (not), by name;
* :mod:`~physgen.genphys.nig`: the Yukawa (Normal-Inverse-Gaussian) kernel, its death rate
  and radial transport speed; :mod:`~physgen.genphys.special`: log-space Bessel K;
* :mod:`~physgen.genphys.fields`: density-flow fields of a point set;
* :mod:`~physgen.genphys.births`: sampling a process with births (SMC) via
  :func:`solvers.births.births`.

The Yukawa process itself is :class:`physgen.processes.yukawa.Yukawa` (``--process yukawa``),
the telegrapher :class:`physgen.processes.telegrapher.Telegrapher` (``--process telegrapher``).
Names below import lazily.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PhysicalProcess": "framework", "Verdict": "framework", "check_c1": "framework", "check_c2": "framework", "classify": "framework",
    "CATALOGUE": "catalogue", "get_physical_process": "catalogue", "physical_process_names": "catalogue", "classify_all": "catalogue",
    "sample_inverse_gaussian": "nig", "nig_offsets": "nig", "death_rate_pair": "nig", "radial_speed": "nig",
    "log_bessel_k": "special", "bessel_k_ratio": "special",
    "sample_with_births": "births",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
