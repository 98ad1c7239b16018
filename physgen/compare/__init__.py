"""Solver comparison (``physgen compare-solvers``, issue 6): error against a float64 reference
solution of the same ODE, sample quality and wall time, all against NFE counted at the field.

:mod:`physgen.compare.problems` says *what* is solved (a :class:`Problem`: process, field,
start points, held-out data, metrics; toy and image implementations);
:mod:`physgen.compare.run` runs every solver at every budget on it and writes the table
and figures.
"""
from __future__ import annotations

from .problems import ImageProblem, Problem, ToyProblem, cast_field, load_problem_from_checkpoint, load_toy_checkpoint
from .run import (
    CSV_COLUMNS,
    DEFAULT_SOLVERS,
    DEFAULT_STEPS,
    DEFAULT_STOCHASTIC,
    Comparison,
    Row,
    adaptive_tolerance,
    compare,
    is_adaptive,
    is_stochastic,
    markdown_table,
    reference_solve,
    rms_error,
    write_outputs,
)

__all__ = [
    "Problem", "ToyProblem", "ImageProblem", "cast_field", "load_problem_from_checkpoint", "load_toy_checkpoint",
    "Comparison", "Row", "compare", "reference_solve", "rms_error", "adaptive_tolerance", "is_adaptive", "is_stochastic",
    "markdown_table", "write_outputs", "CSV_COLUMNS", "DEFAULT_SOLVERS", "DEFAULT_STOCHASTIC", "DEFAULT_STEPS",
]
