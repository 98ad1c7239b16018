"""Typed, bounded ``argparse`` value types shared by the commands (:mod:`physgen.config`'s
parsers): a bad value is one line ``argument --flag: ... got 'VALUE'``, exit status 2."""
from __future__ import annotations

from ..config import (
    LIMIT_REASONS, MAX_BATCH, MAX_DEPTH, MAX_LEVELS, MAX_LR, MAX_RESOLUTION, MAX_SAMPLES, MAX_STEPS, MAX_TRAIN_STEPS, MAX_WIDTH,
    TOLERANCE_RANGE, arg, parse_D, parse_float, parse_int, parse_optional, parse_probability, parse_seed,
)
from ..runtime import available_cpus

__all__ = ["POSITIVE", "OPTIONAL_POSITIVE", "NONNEGATIVE", "FINITE", "PROBABILITY", "FRACTION", "STEPS", "TRAIN_STEPS", "SAMPLES",
           "BATCH", "WIDTH", "DEPTH", "LEVELS", "RESOLUTION", "SEED", "LABEL", "THREADS", "D", "COUNT", "LR", "TOLERANCE"]

POSITIVE = arg(parse_float, 0.0, lo_open=True)  # finite, > 0, fits float32 (scales, tolerances, rates)
OPTIONAL_POSITIVE = arg(parse_optional(parse_float), 0.0, lo_open=True)  # the same, or none/off
NONNEGATIVE = arg(parse_float, 0.0)
LR = arg(parse_float, 0.0, MAX_LR, lo_open=True, why=LIMIT_REASONS["lr"])  # a learning rate
TOLERANCE = arg(parse_float, *TOLERANCE_RANGE, why=LIMIT_REASONS["tolerance"])  # an adaptive solver's rtol or atol
FINITE = arg(parse_float)
PROBABILITY = arg(parse_probability)
FRACTION = arg(parse_probability, hi_open=True)  # [0, 1)
STEPS = arg(parse_int, 1, MAX_STEPS, LIMIT_REASONS["steps"])
TRAIN_STEPS = arg(parse_int, 1, MAX_TRAIN_STEPS, LIMIT_REASONS["train_steps"])
SAMPLES = arg(parse_int, 1, MAX_SAMPLES, LIMIT_REASONS["samples"])
BATCH = arg(parse_int, 1, MAX_BATCH, LIMIT_REASONS["batch"])
WIDTH = arg(parse_int, 1, MAX_WIDTH, LIMIT_REASONS["width"])
DEPTH = arg(parse_int, 1, MAX_DEPTH, LIMIT_REASONS["depth"])
LEVELS = arg(parse_int, 1, MAX_LEVELS, LIMIT_REASONS["levels"])
RESOLUTION = arg(parse_int, 1, MAX_RESOLUTION, LIMIT_REASONS["resolution"])
COUNT = arg(parse_int, 0, MAX_TRAIN_STEPS)  # a number of steps that may be 0 (periods, warm-ups)
SEED = arg(parse_seed)
LABEL = arg(parse_int, 0, MAX_SAMPLES)
THREADS = arg(parse_int, 0, available_cpus(), "the CPUs available here: more threads only slow torch down, and huge counts abort OpenMP")
D = arg(parse_D)
