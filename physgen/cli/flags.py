"""The CLI's flag library: the typed, bounded ``argparse`` value types (:mod:`physgen.config`'s
parsers, each limit defined once there: a bad value is one line ``argument --flag: ... got
'VALUE'``, exit status 2) and the flag groups several commands share (process, sampler,
guidance), each with the one function that turns its flags into library arguments."""
from __future__ import annotations

from typing import Optional

import solvers

from ..config import (
    LIMIT_REASONS, MAX_BATCH, MAX_DEPTH, MAX_LEVELS, MAX_LR, MAX_RESOLUTION, MAX_SAMPLES, MAX_TRAIN_STEPS, MAX_WIDTH,
    TOLERANCE_RANGE, arg, parse_D, parse_float, parse_int, parse_key_values, parse_optional, parse_probability, parse_seed, parse_steps,
)
from ..editing.condition import CONDITION_METHODS, Condition
from ..editing.observation import LinearObservation
from ..errors import UserError
from ..guidance import GuidanceTransform, load_classifier
from ..runtime import available_cpus
from ..sampling import SAMPLER_FLAGS, check_sampler_options, format_solver_table

__all__ = ["add_process_arguments", "add_coupling_arguments", "PROCESS_FLAGS", "process_options", "add_sampler_arguments", "sampler_options",
           "add_grid_arguments", "add_tolerance_arguments",
           "sampling_steps", "list_solvers", "add_guidance_arguments", "guidance_transform", "guidance_options",
           "POSITIVE", "OPTIONAL_POSITIVE", "NONNEGATIVE", "FINITE", "PROBABILITY", "FRACTION", "STEPS", "TRAIN_STEPS", "SAMPLES",
           "BATCH", "WIDTH", "DEPTH", "LEVELS", "RESOLUTION", "SEED", "LABEL", "THREADS", "WORKERS", "D", "COUNT", "LR", "TOLERANCE",
           "JUMPS", "add_condition_arguments", "condition_option", "add_observe_arguments", "observe_option"]

POSITIVE = arg(parse_float, 0.0, lo_open=True)  # finite, > 0, fits float32 (scales, tolerances, rates)
OPTIONAL_POSITIVE = arg(parse_optional(parse_float), 0.0, lo_open=True)  # the same, or none/off
NONNEGATIVE = arg(parse_float, 0.0)
LR = arg(parse_float, 0.0, MAX_LR, lo_open=True, why=LIMIT_REASONS["lr"])  # a learning rate
TOLERANCE = arg(parse_float, *TOLERANCE_RANGE, why=LIMIT_REASONS["tolerance"])  # an adaptive solver's rtol or atol
FINITE = arg(parse_float)
PROBABILITY = arg(parse_probability)
FRACTION = arg(parse_probability, hi_open=True)  # [0, 1)
STEPS = arg(parse_steps)
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
WORKERS = arg(parse_int, 1, available_cpus(), "the CPUs available here: more worker processes would only share cores")
D = arg(parse_D)
JUMPS = arg(parse_int, 1, 1000, "RePaint jumps back at most the whole grid; 1000 is far past any grid it uses")


# --------------------------------------------------------------------------- flag groups

def add_process_arguments(p) -> None:
    """Process options shared by every command that builds a process."""
    p.add_argument("--process", default="edm", help="ve, vp, edm, ... (see the README)")
    p.add_argument("--sigma-min", type=POSITIVE, default=None, help="smallest scale (default: the process's)")
    p.add_argument("--sigma-max", type=POSITIVE, default=None, help="largest scale (toy default: 10 x the data's largest principal std, the prior-matching rule)")
    p.add_argument("--D", type=D, default=None, help="PFGM++ extra dimensions: a positive integer or inf")
    p.add_argument("--m", type=FINITE, default=None, help="Yukawa mass")
    p.add_argument("--a", type=POSITIVE, default=None, help="telegrapher: Kac flip rate (damping)")
    p.add_argument("--c", type=POSITIVE, default=None, help="telegrapher: Kac speed")
    p.add_argument("--process-opt", action="append", default=[], metavar="KEY=VALUE", help="any other process option (JSON value)")
    add_coupling_arguments(p)


def add_coupling_arguments(p) -> None:
    """Flow matching's training coupling (physgen/processes/couplings.py): process options of the fm processes."""
    p.add_argument("--coupling", default=None, choices=("independent", "ot", "sinkhorn"),
                   help="flow matching: pair data and noise independently (default), by minibatch OT, or by entropic OT")
    p.add_argument("--sinkhorn-eps", type=POSITIVE, default=None, help="--coupling sinkhorn: entropic ε relative to the mean cost (default 0.05)")


PROCESS_FLAGS = {"sigma_min": "--sigma-min", "sigma_max": "--sigma-max", "m": "--m", "a": "--a", "c": "--c", "D": "--D",
                 "coupling": "--coupling", "sinkhorn_eps": "--sinkhorn-eps"}
"""Process options with a flag of their own (every other one is ``--process-opt KEY=VALUE``)."""


def _merge_once(flags: dict, given: dict, flag_names: dict, where: str) -> dict:
    """The dedicated flags' values and the ``KEY=VALUE`` pairs of ``where``; a key set both ways is refused."""
    for key in given:
        if flags.get(key) is not None:
            raise UserError(f"{flag_names[key]} and {where} {key}=... both set {key}; give it once")
    return {**flags, **given}


def process_options(args) -> dict:
    opts = {k: getattr(args, k) for k in PROCESS_FLAGS}
    return _merge_once(opts, parse_key_values(args.process_opt, "--process-opt"), PROCESS_FLAGS, "--process-opt")


def add_grid_arguments(p, solver: str, helps: tuple[str, str, str]) -> None:
    """``--solver``, ``--steps``, ``--schedule``: the solver and the sampling grid it integrates on (``physgen toy``'s
    grid, :func:`physgen.sampling.grid`), declared once for every command that solves on one; ``solver`` is the
    command's default solver and ``helps`` the three flags' help, which say what the command solves."""
    solver_help, steps_help, schedule_help = helps
    p.add_argument("--solver", default=solver, help=solver_help)
    p.add_argument("--steps", type=STEPS, default=None, help=steps_help)
    p.add_argument("--schedule", default=None, help=schedule_help)


def add_tolerance_arguments(p, which: str, which_atol: str) -> None:
    """``--rtol``, ``--atol``: the adaptive solvers' tolerances (default 1e-5 each); ``which``/``which_atol`` name
    the solvers they apply to in each flag's help."""
    p.add_argument("--rtol", type=TOLERANCE, default=None, help=f"{which}: relative tolerance (default 1e-5)")
    p.add_argument("--atol", type=TOLERANCE, default=None, help=f"{which_atol}: absolute tolerance (default 1e-5)")


def add_sampler_arguments(p) -> None:
    """The sampling flags every sampling command shares (one rule: :func:`sampling_steps`, :func:`sampler_options`)."""
    add_grid_arguments(p, "heun", (
        "euler, heun, dpmpp-2m, dopri5, ald, ... (--list-solvers prints the table)",
        "K integration steps on every path (default 18; ald: K noise levels, default NCSNv2's rule)",
        "edm, uniform, log-uniform, polyexponential (NAME:rho=R sets a schedule's rho), vp-time, ve-time, optimal[:n_pilot=N,max_evals=M] (fitted to the solver's error on this field, cached in --out), gits[:n_pilot=N,fine=M] (steps by dynamic programming over one teacher trajectory, cached likewise), or file:SIGMAS.json (your own K+1 scales); default: the process's"))
    p.add_argument("--list-solvers", action="store_true", help="print the solver table for the process (needs, order, NFE per step) and exit")
    add_tolerance_arguments(p, "adaptive solvers (dopri5, torchdiffeq:*)", "adaptive solvers")
    p.add_argument("--levels", type=LEVELS, default=None, help="annealed Langevin: number of noise levels (= --steps for ald)")
    p.add_argument("--steps-per-level", type=LEVELS, default=None, help="annealed Langevin: T")
    p.add_argument("--eps", type=POSITIVE, default=None, help="annealed Langevin: step size ε")
    p.add_argument("--snr", type=POSITIVE, default=None, help="predictor-corrector: Langevin corrector snr")
    p.add_argument("--birth-death", default=None, help="Yukawa: smc, weights, off, transport")
    p.add_argument("--sampler-opt", action="append", default=[], metavar="KEY=VALUE", help="any other sampler option (JSON value)")


def sampler_options(args) -> dict:
    """Solver options and process sampling modes from the flags (checked against the chosen solver later);
    a name the command sets itself (:data:`physgen.sampling.COMMAND_ARGUMENTS`) or a key given twice is refused."""
    opts = {k: getattr(args, k) for k in SAMPLER_FLAGS if getattr(args, k, None) is not None}
    given = check_sampler_options(parse_key_values(args.sampler_opt, "--sampler-opt"))
    return _merge_once(opts, given, SAMPLER_FLAGS, "--sampler-opt")


def sampling_steps(args) -> Optional[int]:
    """``--steps``, with ``--levels`` as its name for annealed Langevin (one rule for every command)."""
    levels = getattr(args, "levels", None)
    if levels is None:
        return args.steps
    try:
        levelled = solvers.get_solver(args.solver).grid == "levels"
    except ValueError:
        levelled = False
    if not levelled:
        raise UserError(f"--levels applies to annealed Langevin (--solver ald); solver {args.solver!r} takes --steps")
    if args.steps is not None and args.steps != levels:
        raise UserError(f"--levels {levels} and --steps {args.steps} disagree (for ald they are the same number)")
    return levels


def list_solvers(process, args) -> int:
    """``--list-solvers``: the table for ``process`` (its sampling modes from the flags)."""
    modes = {o.name: sampler_options(args)[o.name] for o in process.sampling_options if o.name in sampler_options(args)}
    print(format_solver_table(process, **modes))
    return 0


def add_guidance_arguments(p, cond_drop: bool = True) -> None:
    """--guidance/--w/--guidance-interval/--classifier-ckpt (and --cond-drop) (physgen/guidance.py)."""
    p.add_argument("--guidance", default=None, choices=("cfg", "classifier"), help="guide towards --label: classifier-free (cfg) or classifier guidance")
    p.add_argument("--w", type=FINITE, default=1.0, help="guidance scale (0: unconditional, 1: conditional)")
    p.add_argument("--guidance-interval", default=None, metavar="LO,HI", help="guide only for scales in [LO, HI] (the process's s)")
    p.add_argument("--classifier-ckpt", default=None, help="classifier.pt from `physgen train-classifier` (default: the Bayes classifier of an exact/analytic field, or one trained here)")
    if cond_drop:
        p.add_argument("--cond-drop", type=FRACTION, default=0.1, help="label dropout when training a conditional network")


def guidance_transform(args, process, device=None):
    """From CLI flags ``--guidance --w --guidance-interval --classifier-ckpt --label`` (``physgen sample``;
    None without ``--guidance``: the caller has refused the flags that only act with it)."""
    if args.guidance is None:
        return None
    if args.label is None:
        raise UserError(f"--guidance {args.guidance} needs --label (the class to guide towards)")
    classifier = None
    if args.guidance == "classifier":
        if args.classifier_ckpt is None:
            raise UserError("--guidance classifier needs --classifier-ckpt (train one with `physgen train-classifier`)")
        classifier = load_classifier(args.classifier_ckpt, process, device)
    return GuidanceTransform(args.guidance, process, args.w, args.guidance_interval, classifier)


def guidance_options(args) -> dict:
    return {"guidance": args.guidance, "w": args.w, "guidance_interval": args.guidance_interval, "classifier_ckpt": args.classifier_ckpt}


def add_condition_arguments(p) -> None:
    """``--condition xI=VALUE`` (repeatable) and the editing method that samples the other
    coordinates (:mod:`physgen.editing.condition`); the method's own options are refused with
    another method."""
    p.add_argument("--condition", action="append", default=[], metavar="xI=VALUE",
                   help="observe coordinate I at VALUE (e.g. x0=1.5) and sample the others given it")
    p.add_argument("--condition-method", choices=CONDITION_METHODS, default="smc",
                   help="smc (twisted SMC, asymptotically exact; default), repaint, blend or sdedit")
    p.add_argument("--strength", type=PROBABILITY, default=None, help="--condition-method sdedit: fraction of the grid run (default 0.5)")
    p.add_argument("--jump-length", type=JUMPS, default=None, help="--condition-method repaint: levels re-noised per jump (default 3)")
    p.add_argument("--jump-n-sample", type=JUMPS, default=None, help="--condition-method repaint: descents through each jump point (default 3)")


def condition_option(args) -> Optional[Condition]:
    """The :class:`Condition` of the flags, or ``None`` without ``--condition`` (then the
    method's flags are refused: they would do nothing)."""
    if not args.condition:
        given = [f for f, v in (("--strength", args.strength), ("--jump-length", args.jump_length),
                                ("--jump-n-sample", args.jump_n_sample)) if v is not None]
        if given or args.condition_method != "smc":
            raise UserError(f"{(given or ['--condition-method'])[0]} needs --condition xI=VALUE (the coordinates to observe)")
        return None
    return Condition.parse(args.condition, method=args.condition_method, strength=args.strength, jump_length=args.jump_length,
                           jump_n_sample=args.jump_n_sample)


def add_observe_arguments(p) -> None:
    """``--observe-A``, ``--observe-y``, ``--observe-noise``: a noisy linear observation
    ``y = A x + n`` of the point, sampled by twisted SMC (:mod:`physgen.editing.observation`);
    the three go together, and not with ``--condition``."""
    p.add_argument("--observe-A", default=None, metavar="ROWS",
                   help="observe y = A x + n, n ~ N(0, σ² I): the matrix A, rows separated by ';' and entries by ',' "
                        "(e.g. '1,-1' measures x0 - x1; '1,0;0,1' both coordinates; --observe-A=-1,1 when it starts with a minus) "
                        "or JSON [[1, -1]]; "
                        "the posterior p(x | y) is sampled by twisted SMC (asymptotically exact; processes with a Gaussian transition)")
    p.add_argument("--observe-y", default=None, metavar="VALUES", help="the measured y, one value per row of --observe-A (e.g. 0.5, or '0.5,1')")
    p.add_argument("--observe-noise", default=None, metavar="SIGMA", help="σ, the standard deviation of the observation noise n (> 0)")


def observe_option(args) -> Optional[LinearObservation]:
    """The :class:`LinearObservation` of the flags, or ``None`` without them; an editing method
    other than smc is refused with them (only SMC samples this posterior)."""
    observation = LinearObservation.from_flags(args.observe_A, args.observe_y, args.observe_noise)
    if observation is not None and args.condition_method != "smc":
        raise UserError(f"--observe-A is sampled by twisted SMC only; --condition-method {args.condition_method} applies to --condition")
    return observation
