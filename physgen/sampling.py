"""The bridge from (process, field) to a solver: one function, ``sample``.

Deterministic solvers integrate ``process.flow(field)``; stochastic samplers need more of
the process (its SDE, its score, its noise levels), so each registers an *adapter* here:
``SAMPLERS[name](process, field, x0, schedule, *, noise, label, **options) -> Solution``.
Names not registered here are looked up as ODE solvers in the ``solvers`` package.
Every adapter returns the solver's :class:`solvers.Solution` (NFE counted at the field).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

import solvers
from solvers.base import Solution

from .errors import UserError, unknown_name
from .noise import SeededNoise

__all__ = ["SAMPLERS", "register_sampler", "sampler_names", "sample", "check_finite"]

Adapter = Callable[..., Solution]
SAMPLERS: dict[str, Adapter] = {}


def register_sampler(name: str) -> Callable[[Adapter], Adapter]:
    def deco(fn: Adapter) -> Adapter:
        SAMPLERS[name] = fn
        return fn

    return deco


def _load_adapters() -> None:
    """Import the modules that register stochastic adapters (each is optional)."""
    import importlib

    for module in ("physgen.samplers_stochastic", "physgen.genphys.births"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:  # a module not written yet is fine; a broken import is not
            if e.name is None or not (module == e.name or module.startswith(e.name + ".")):
                raise


def sampler_names() -> list[str]:
    _load_adapters()
    return sorted(set(SAMPLERS) | set(solvers.solver_names()))


@register_sampler("euler-maruyama")
def _euler_maruyama(process, field, x0, schedule, *, noise=None, label=None, **options) -> Solution:
    return solvers.euler_maruyama(process.sde(field, label), x0, schedule, noise=noise, **options)


def sample(
    process,
    field,
    x0: Tensor,
    schedule: Tensor,
    method: str = "heun",
    *,
    noise: Optional[SeededNoise] = None,
    label: Optional[Tensor] = None,
    **options,
) -> Solution:
    """Generate from ``x0`` (drawn at ``schedule[0]``) with the named solver or sampler."""
    _load_adapters()
    special = process.generate(field, x0, schedule, method, noise=noise, label=label, **options)
    if special is not None:
        return special
    if method in SAMPLERS:
        return SAMPLERS[method](process, field, x0, schedule, noise=noise, label=label, **options)
    try:
        return solvers.solve(process.flow(field, label), x0, schedule, method=method, **options)
    except ValueError as e:
        if str(e).startswith("unknown solver"):
            raise unknown_name("solver", method, sampler_names()) from None
        raise


def check_finite(x: Tensor, what: str = "samples") -> None:
    bad = ~torch.isfinite(x.reshape(x.shape[0], -1)).all(1)
    if bool(bad.any()):
        raise FloatingPointError(f"{int(bad.sum())} of {x.shape[0]} {what} are NaN or Inf")
