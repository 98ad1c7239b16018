"""``physgen experiment NAME --out DIR ...``: the experiments in the top-level ``experiments``
package.  Each experiment module defines ``add_arguments(parser)`` and ``run(args) -> int``
and a one-line docstring; the table below maps CLI names to modules."""
from __future__ import annotations

import importlib

from ..runfolder import add_overwrite_argument, prepare

EXPERIMENTS = {
    "d-sweep": "experiments.d_sweep",
    "langevin-mixture": "experiments.langevin_mixture",
    "yukawa": "experiments.yukawa",
    "guidance": "experiments.guidance",
}


def register(sub) -> None:
    parser = sub.add_parser("experiment", help="run a named experiment (figures + tables into --out)")
    exp_sub = parser.add_subparsers(dest="experiment", metavar="NAME")
    exp_sub.required = True
    for name, module_name in EXPERIMENTS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name == module_name:
                continue
            raise
        p = exp_sub.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        module.add_arguments(p)
        add_overwrite_argument(p)
        p.set_defaults(func=_in_run_folder(name, module))


def _in_run_folder(name: str, module):
    """The experiment's ``run`` after :func:`physgen.runfolder.prepare` of its ``--out`` with
    the files the module declares (``OUTPUTS``)."""

    def run(args) -> int:
        prepare(args.out, f"experiment {name}", module.OUTPUTS, overwrite=args.overwrite)
        return module.run(args)

    return run
