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
from ..runfolder import release_all
from . import (compare_solvers, demo, edit, encode, eval as eval_cmd, experiment, export_model, genphys, import_model, nll, reflow, sample, toy,
               train, train_autoencoder, train_classifier)

COMMANDS = (toy, demo, experiment, compare_solvers, nll, genphys, train, sample, eval_cmd, train_classifier, edit, encode,
            train_autoencoder, import_model, export_model, reflow)
"""The subcommand modules, in help order."""


class UsageError(Exception):
    """A command line argparse refuses (unknown flag, bad value): one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse with its error as one line (no usage block), raised instead of exiting, so
    that ``main`` returns 2 in-process too (subcommand parsers inherit the class)."""

    def error(self, message: str):
        raise UsageError(f"{self.prog}: error: {message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="physgen", description="Physics-inspired generative models: diffusion, NCSN, PFGM, PFGM++, GenPhys.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as e:
        print(str(e).replace("\n", " "), file=sys.stderr)
        return 2
    try:
        result = args.func(args)
    except (ValueError, FileNotFoundError, FloatingPointError, NoScoreError, DenoiserFormError, SolverError) as e:
        if os.environ.get("PHYSGEN_DEBUG"):
            raise
        lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
        print(f"physgen {args.command}: error: {lines[0] if lines else type(e).__name__}", file=sys.stderr)  # one line
        return 2
    except KeyboardInterrupt:
        print(f"physgen {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        release_all()  # the run-folder locks of this command
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
