"""GenPhys (Liu, Luo, Xu, Jaakkola, Tegmark, arXiv 2304.02637): physical processes as generative models.

* :mod:`~physgen.genphys.framework`: :class:`PhysicalProcess` (a PDE as one class), the C1
  (positive kernel) and C2 (smoothing dispersion) checks, :func:`classify`;
* :mod:`~physgen.genphys.catalogue`: heat, Poisson, Laplace, Yukawa, the damped wave per
  coordinate (telegrapher, Kac flows; generative) and Helmholtz, wave, the isotropic damped
  wave in N ≥ 2, Klein-Gordon, Schrödinger, hyper-diffusion (not), by name;
* :mod:`~physgen.genphys.fields`: density-flow fields of a point set.

GenPhys sits above the processes: the kernels it classifies live in :mod:`physgen.kernels`
(Yukawa's NIG law in :mod:`physgen.kernels.nig`, the Kac law in :mod:`physgen.kernels.kac`),
the generative processes in :mod:`physgen.processes` (:class:`physgen.processes.yukawa.Yukawa`,
:class:`physgen.processes.telegrapher.Telegrapher`), and sampling
with births in :func:`solvers.births` (the ``births`` row of the solver table).
"""
from .catalogue import CATALOGUE, classify_all, get_physical_process, physical_process_names
from .framework import PhysicalProcess, Verdict, check_c1, check_c2, classify

__all__ = ["PhysicalProcess", "Verdict", "check_c1", "check_c2", "classify", "CATALOGUE", "get_physical_process",
           "physical_process_names", "classify_all"]
