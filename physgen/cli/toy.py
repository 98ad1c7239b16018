"""``physgen toy``: sample a toy 2-D distribution with any process, field and solver."""
from __future__ import annotations

import sys
from typing import Optional

from ..config import parse_key_values
from ..errors import UserError
from ..runfolder import add_overwrite_argument, prepare
from .argtypes import BATCH, DEPTH, FINITE, FRACTION, LABEL, LEVELS, LR, POSITIVE, SAMPLES, SEED, STEPS, THREADS, TOLERANCE, TRAIN_STEPS, WIDTH, D

OUTPUTS = ("config.json", "samples.npy", "metrics.json", "samples.png", "trajectories.png")  # what physgen toy writes


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


PROCESS_FLAGS = {"sigma_min": "--sigma-min", "sigma_max": "--sigma-max", "m": "--m", "a": "--a", "c": "--c", "D": "--D"}
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


def add_sampler_arguments(p) -> None:
    """The sampling flags every sampling command shares (one rule: :func:`sampling_steps`, :func:`sampler_options`)."""
    p.add_argument("--solver", default="heun", help="euler, heun, dpmpp-2m, dopri5, ald, ... (--list-solvers prints the table)")
    p.add_argument("--list-solvers", action="store_true", help="print the solver table for the process (needs, order, NFE per step) and exit")
    p.add_argument("--steps", type=STEPS, default=None, help="K integration steps on every path (default 18; ald: K noise levels, default NCSNv2's rule)")
    p.add_argument("--schedule", default=None, help="edm, uniform, log-uniform, polyexponential (NAME:rho=R sets a schedule's rho), vp-time, ve-time, or optimal[:n_pilot=N,max_evals=M] (fitted to the solver's error on this field, cached in --out); default: the process's")
    p.add_argument("--rtol", type=TOLERANCE, default=None, help="adaptive solvers (dopri5, torchdiffeq:*): relative tolerance (default 1e-5)")
    p.add_argument("--atol", type=TOLERANCE, default=None, help="adaptive solvers: absolute tolerance (default 1e-5)")
    p.add_argument("--levels", type=LEVELS, default=None, help="annealed Langevin: number of noise levels (= --steps for ald)")
    p.add_argument("--steps-per-level", type=LEVELS, default=None, help="annealed Langevin: T")
    p.add_argument("--eps", type=POSITIVE, default=None, help="annealed Langevin: step size ε")
    p.add_argument("--snr", type=POSITIVE, default=None, help="predictor-corrector: Langevin corrector snr")
    p.add_argument("--birth-death", default=None, help="Yukawa: smc, weights, off, transport")
    p.add_argument("--sampler-opt", action="append", default=[], metavar="KEY=VALUE", help="any other sampler option (JSON value)")


def sampler_options(args) -> dict:
    """Solver options and process sampling modes from the flags (checked against the chosen solver later);
    a name the command sets itself (:data:`physgen.sampling.COMMAND_ARGUMENTS`) or a key given twice is refused."""
    from ..sampling import SAMPLER_FLAGS, check_sampler_options

    opts = {k: getattr(args, k) for k in SAMPLER_FLAGS if getattr(args, k, None) is not None}
    given = check_sampler_options(parse_key_values(args.sampler_opt, "--sampler-opt"))
    return _merge_once(opts, given, SAMPLER_FLAGS, "--sampler-opt")


def sampling_steps(args) -> Optional[int]:
    """``--steps``, with ``--levels`` as its name for annealed Langevin (one rule for every command)."""
    import solvers

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
    from ..sampling import format_solver_table

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
    from ..guidance import GuidanceTransform, load_classifier

    classifier = None
    if args.guidance == "classifier":
        if args.classifier_ckpt is None:
            raise UserError("--guidance classifier needs --classifier-ckpt (train one with `physgen train-classifier`)")
        classifier = load_classifier(args.classifier_ckpt, process, device)
    return GuidanceTransform(args.guidance, process, args.w, args.guidance_interval, classifier)


def guidance_options(args) -> dict:
    return {"guidance": args.guidance, "w": args.w, "guidance_interval": args.guidance_interval, "classifier_ckpt": args.classifier_ckpt}


def register(sub) -> None:
    p = sub.add_parser("toy", help="sample a 2-D toy distribution; writes samples, metrics and figures")
    add_process_arguments(p)
    p.add_argument("--dataset", default="moons", help="a toy name, FILE.npy ([n, 2]) or FILE.json (Gaussian mixture)")
    p.add_argument("--field", default="exact", help="exact, analytic or mlp")
    p.add_argument("--n-data", type=SAMPLES, default=10_000)
    p.add_argument("--train-steps", type=TRAIN_STEPS, default=2000)  # the toy recipe: ToyConfig's defaults
    p.add_argument("--batch", type=BATCH, default=512)
    p.add_argument("--lr", type=LR, default=5e-3)
    p.add_argument("--hidden", type=WIDTH, default=64)
    p.add_argument("--depth", type=DEPTH, default=3)
    add_sampler_arguments(p)
    p.add_argument("--n-samples", type=SAMPLES, default=2000)
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--threads", type=THREADS, default=1, help="CPU threads for torch (toy-sized work runs fastest on one; 0: torch's default)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--label", type=LABEL, default=None, help="class label to condition on")
    add_guidance_arguments(p)
    p.add_argument("--out", default="runs/toy")
    add_overwrite_argument(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..processes import make_process
    from ..runtime import set_threads
    from ..toy import ToyConfig, run_toy

    if args.list_solvers:
        return list_solvers(make_process(args.process, **process_options(args)), args)
    set_threads(args.threads)
    opts = sampler_options(args)
    rtol, atol = opts.pop("rtol", None), opts.pop("atol", None)
    config = ToyConfig(
        process=args.process, dataset=args.dataset, field=args.field, n_data=args.n_data, train_steps=args.train_steps,
        batch=args.batch, lr=args.lr, hidden=args.hidden, depth=args.depth, solver=args.solver, steps=sampling_steps(args),
        schedule=args.schedule, rtol=rtol, atol=atol, n_samples=args.n_samples, seed=args.seed, device=args.device,
        process_options=process_options(args), sampler_options=opts, label=args.label, out=args.out,
        cond_drop=args.cond_drop, **guidance_options(args),
    )
    prepare(args.out, "toy", OUTPUTS, overwrite=args.overwrite)
    metrics = run_toy(config, log_stream=sys.stderr)
    keys = ("sliced_w2", "mmd", "energy", "nfe", "wall_s")
    print("  ".join(f"{k}={metrics[k]:.4g}" if isinstance(metrics[k], float) else f"{k}={metrics[k]}" for k in keys if k in metrics))
    print(f"wrote {args.out}/config.json, samples.npy, metrics.json, samples.png, trajectories.png")
    return 0
