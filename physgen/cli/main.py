"""``physgen <command> ...``.  Each subcommand lives in its own module of this package and
defines ``register(subparsers)``, which adds its parser with ``set_defaults(func=...)``;
:data:`COMMANDS` lists the modules (static imports: a renamed module is an import error,
never a silently missing command).

A user's mistake (``ValueError``, including :class:`physgen.errors.UserError`) is printed as
one line on stderr with exit status 2; set ``PHYSGEN_DEBUG=1`` for the traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from solvers.base import DenoiserFormError, SolverError

from ..processes.base import NoScoreError
from . import compare_solvers, demo, eval as eval_cmd, experiment, genphys, nll, sample, toy, train, train_classifier

COMMANDS = (toy, demo, experiment, compare_solvers, nll, genphys, train, sample, eval_cmd, train_classifier)
"""The subcommand modules, in help order."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="physgen", description="Physics-inspired generative models: diffusion, NCSN, PFGM, PFGM++, GenPhys.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except (ValueError, FileNotFoundError, FloatingPointError, NoScoreError, DenoiserFormError, SolverError) as e:
        if os.environ.get("PHYSGEN_DEBUG"):
            raise
        print(f"physgen {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"physgen {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
