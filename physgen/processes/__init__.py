"""Processes by name.  ``make_process("edm", sigma_max=10)``; unknown names and unknown or
invalid options raise :class:`physgen.errors.UserError` listing what is valid."""
from __future__ import annotations

import inspect
from typing import Any

from ..config import check_options, decode_inf
from ..errors import UserError, unknown_name
from .base import DEFAULT_STEPS, MAX_STEPS, DenoiserFlow, NoScoreError, Process, ProcessFlow
from .flow_matching import FMVP, FMCosine, RectifiedFlow
from .gaussian import EDM, VE, VP, DenoiserProcess, GaussianSDE, SigmaForm
from .interpolant import Interpolant
from .ncsn import NCSN
from .pfgm import PFGM
from .pfgmpp import PFGMpp
from .telegrapher import Telegrapher
from .yukawa import Yukawa

__all__ = ["Process", "ProcessFlow", "DenoiserFlow", "NoScoreError", "EDM", "VE", "VP", "NCSN", "PFGM", "PFGMpp", "Yukawa", "Telegrapher", "RectifiedFlow", "FMVP", "FMCosine", "Interpolant",
           "DenoiserProcess", "GaussianSDE", "SigmaForm", "PROCESSES", "process_names", "process_class", "make_process",
           "data_defaults", "process_from_record", "DEFAULT_STEPS", "MAX_STEPS"]

PROCESSES: dict[str, type] = {cls.name: cls for cls in (VE, VP, EDM, NCSN, PFGMpp, PFGM, Yukawa, Telegrapher,
                                                          RectifiedFlow, FMVP, FMCosine, Interpolant)}
"""name -> Process class (``--process``)."""


def process_names() -> list[str]:
    return sorted(PROCESSES)


def process_class(name: str) -> type:
    if name not in PROCESSES:
        raise unknown_name("process", name, PROCESSES)
    return PROCESSES[name]


def accepted_options(name: str) -> list[str]:
    """The constructor options of process ``name``."""
    return [p for p in inspect.signature(process_class(name).__init__).parameters if p != "self"]


def make_process(name: str, **options: Any) -> Process:
    """Build a process, passing only options it accepts; ``None`` values mean "default".

    Options set to a non-``None`` value that the process does not take raise a UserError
    naming the option (e.g. ``--D`` for a process with no D); a value of the wrong type is
    a UserError naming the option too.
    """
    cls = process_class(name)
    given = {key: value for key, value in options.items() if value is not None}
    # names and value types against the constructor's annotations (physgen.config.check_options):
    # PFGM++'s D is annotated ExtraDims, so a plain value is parsed by parse_D here, once, and a
    # parsed one (the --D flag's) passes as it is
    return cls(**check_options(cls.__init__, given, f"process {name!r}"))


def process_from_record(record: Any, where: str) -> Process:
    """The process a file records as ``{"name": NAME, **options}`` (a checkpoint's), every error
    one line naming ``where`` (the file): a missing record, an unknown name, a bad option."""
    if not isinstance(record, dict) or not isinstance(record.get("name"), str):
        raise UserError(f"{where} does not record its process")
    options = {k: decode_inf(v) for k, v in record.items() if k != "name"}
    try:
        return make_process(record["name"], **options)
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None


def data_defaults(name: str, data, given: dict) -> dict:
    """``given`` plus the scale defaults of process ``name`` for toy ``data`` (the prior
    centred on the data and matched to its spread: each class's ``defaults_for_data``)."""
    accepted = set(accepted_options(name))
    filled = {k: v for k, v in process_class(name).defaults_for_data(data, given).items() if k in accepted}
    return {**given, **filled}
