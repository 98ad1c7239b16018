"""``physgen experiment NAME --out DIR ...``: the experiments of :mod:`physgen.experiments`.
Each experiment module defines ``add_arguments(parser)`` and ``run(args) -> int`` and a
one-line docstring; the table below maps CLI names to modules (static imports)."""
from __future__ import annotations

from ..experiments import d_sweep, editing, flows, guidance, langevin_mixture, telegrapher, yukawa

from ..runfolder import add_overwrite_argument, prepare

EXPERIMENTS = {
    "d-sweep": d_sweep,
    "langevin-mixture": langevin_mixture,
    "yukawa": yukawa,
    "guidance": guidance,
    "telegrapher": telegrapher,
    "editing": editing,
    "flows": flows,
}


def register(sub) -> None:
    parser = sub.add_parser("experiment", help="run a named experiment (figures + tables into --out)")
    exp_sub = parser.add_subparsers(dest="experiment", metavar="NAME")
    exp_sub.required = True
    for name, module in EXPERIMENTS.items():
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
