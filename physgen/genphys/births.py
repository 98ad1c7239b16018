"""Process-side glue for sampling with births and deaths (:func:`solvers.births.births`).

``sample_with_births(process, field, x0, schedule, method, mode=...)`` works for any process
that offers ``velocity_and_rate(field, x, s, label) -> (dx/ds, κ)`` from one field
evaluation (Yukawa: :meth:`physgen.processes.yukawa.Yukawa.velocity_and_rate`).  The
resampling uniforms come from a generator seeded with the sampling seed (``noise.seed``)
or the ``seed`` option, so a run is reproducible; unlike the flow-only samplers, an SMC
sample depends on the whole batch (particles are resampled together).

``physgen.sampling`` imports this module to register adapters; it registers none: births
are reached through the ``birth_death`` sampler option of the processes that have them.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..errors import UserError, unknown_name

__all__ = ["sample_with_births"]

_OPTIONS = ("ess_threshold", "rate_clip", "final_resample", "return_trajectory", "seed")


def sample_with_births(process, field, x0: Tensor, schedule: Tensor, method: str = "heun", *, mode: str = "smc", noise=None,
                       label: Optional[Tensor] = None, rate_offset: float = 0.0, **options):
    """Integrate ``process``'s physical flow with births (``mode`` ``smc`` or ``weights``, or ``off``)."""
    from solvers.births import BIRTH_MODES, births

    if mode not in BIRTH_MODES:
        raise unknown_name("births mode", mode, BIRTH_MODES)
    if method not in ("heun", "euler"):
        raise UserError(f"sampling with births steps with heun or euler (log-weights by the trapezoid rule), got --solver {method!r}")
    bad = sorted(set(options) - set(_OPTIONS))
    if bad:
        raise UserError(f"unknown option(s) {bad} for sampling with births; valid: {', '.join(_OPTIONS)}")
    seed = options.pop("seed", None)
    if seed is None:
        seed = getattr(noise, "seed", 0)
    gen = torch.Generator(device=x0.device)
    gen.manual_seed(int(seed) + 7919)  # distinct from the prior's stream
    threshold = float(options.pop("ess_threshold", 0.5))
    if not 0.0 <= threshold <= 1.0:
        raise UserError(f"ess_threshold must be in [0, 1], got {threshold}")
    clip = options.pop("rate_clip", None)
    if clip is not None and not float(clip) > 0:
        raise UserError(f"rate_clip must be > 0, got {clip}")

    def joint(x, s):
        return process.velocity_and_rate(field, x, s, label)

    sol = births(joint, x0, schedule, mode=mode, method=method, ess_threshold=threshold, rate_offset=rate_offset,
                 rate_clip=None if clip is None else float(clip), generator=gen, **options)
    sol.stats.extra["birth_death"] = mode
    return sol
