"""Processes by name.  ``make_process("edm", sigma_max=10)``; unknown names and unknown or
invalid options raise :class:`physgen.errors.UserError` listing what is valid."""
from __future__ import annotations

import importlib
from typing import Any

from ..config import check_options, parse_D
from ..errors import unknown_name
from .base import DenoiserFlow, NoScoreError, Process, ProcessFlow
from .gaussian import EDM, VE, VP, DenoiserProcess, GaussianKernel

__all__ = ["Process", "ProcessFlow", "DenoiserFlow", "NoScoreError", "EDM", "VE", "VP", "DenoiserProcess", "GaussianKernel", "PROCESSES", "process_names", "process_class", "make_process"]

# name -> "module:Class" (imported lazily so a process's heavy deps load only when used)
PROCESSES: dict[str, str] = {
    "ve": "physgen.processes.gaussian:VE",
    "vp": "physgen.processes.gaussian:VP",
    "edm": "physgen.processes.gaussian:EDM",
    "yukawa": "physgen.processes.yukawa:Yukawa",
    "ncsn": "physgen.processes.ncsn:NCSN",
    "pfgmpp": "physgen.processes.pfgmpp:PFGMpp",
    "pfgm": "physgen.processes.pfgm:PFGM",
}


def process_names() -> list[str]:
    return sorted(PROCESSES)


def process_class(name: str) -> type:
    if name not in PROCESSES:
        raise unknown_name("process", name, PROCESSES)
    module, cls = PROCESSES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def make_process(name: str, **options: Any) -> Process:
    """Build a process, passing only options it accepts; ``None`` values mean "default".

    Options set to a non-``None`` value that the process does not take raise a UserError
    naming the option (e.g. ``--D`` for a process with no D).
    """
    cls = process_class(name)
    given = {key: value for key, value in options.items() if value is not None}
    # names and value types against the constructor (physgen.config.check_options)
    return cls(**check_options(cls.__init__, given, f"process {name!r}", custom={"D": parse_D}))
