"""``physgen compare-solvers``: every solver at every step budget on one problem, against NFE.

    physgen compare-solvers --process pfgmpp --D 128 --dataset moons --field exact \\
        --solvers euler,heun,dpmpp-2m,dopri5 --steps 4,8,16,32,64 --n-samples 1000 --out runs/cmp

Writes ``results.csv`` (``solver, kind, steps, nfe, error_vs_reference, sliced_w2, mmd,
wall_s, ...``), ``results.json``, ``error_vs_nfe.png``, ``quality_vs_nfe.png`` and
``time_vs_nfe.png`` into ``--out`` and prints a markdown table; progress goes to stderr.
What is measured, the reference solve and the tolerance of adaptive solvers: see
:mod:`physgen.compare.run`.  ``--ckpt`` takes a toy checkpoint (compare-solvers writes one
when it trains an MLP), an image checkpoint of ``physgen train`` (file or run dir), or a
model trained elsewhere that :func:`physgen.pretrained.load` reads (an EDM / PFGM++ snapshot,
a diffusers folder; its reference images need ``--dataset``).
"""
from __future__ import annotations

import sys
import argparse

from ..config import parse_steps
from ..errors import UserError
from ..runfolder import add_overwrite_argument, prepare
from .flags import (BATCH, DEPTH, LABEL, LR, SAMPLES, SEED, TOLERANCE, TRAIN_STEPS, WIDTH, add_process_arguments, list_solvers,
                    process_options, sampler_options)
from ..compare.build import ProblemConfig, compare_solvers
from ..compare.run import markdown_table, stderr_log
from ..io import write_json
from ..sampling import solver_spec
from ..processes import make_process

# what compare-solvers writes (the toy MLP's checkpoint only when it trains one)
OUTPUTS = ("results.csv", "results.json", "error_vs_nfe.png", "quality_vs_nfe.png", "time_vs_nfe.png", "config.json", "checkpoints/ckpt-*.pt")


def _int_list(text: str, flag: str) -> list[int]:
    """Comma-separated step budgets, each checked by :func:`physgen.config.parse_steps` (``[1, MAX_STEPS]``)."""
    items = [item.strip() for item in str(text).split(",") if item.strip()]
    if not items:
        raise UserError(f"{flag} expects comma-separated positive integers, got {text!r}")
    return [parse_steps(item, flag) for item in items]


def _name_list(text):
    if text is None:
        return None
    names = [n.strip() for n in str(text).split(",") if n.strip()]
    if not names:
        raise UserError(f"--solvers expects comma-separated solver names, got {text!r}")
    return names


def register(sub) -> None:
    p = sub.add_parser(
        "compare-solvers",
        help="every solver x step budget on one problem: error vs a float64 reference, sample quality and time, against NFE",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Runs every solver at every step budget from the same prior samples and writes results.csv, results.json,\n"
            "error_vs_nfe.png, quality_vs_nfe.png and time_vs_nfe.png into --out, and prints a markdown table.\n"
            "error_vs_reference = sqrt(mean_i ||x_i - x_ref_i||^2): x_ref is the same ODE solved by dopri5 in float64\n"
            "(--ref-rtol/--ref-atol, default 1e-9) on the same field, ending with the same final Euler/denoise step to s = 0.\n"
            "NFE is counted at the field.  Adaptive solvers get rtol = atol = min(0.1, 100/steps^5) for a budget;\n"
            "stochastic samplers (process with a score only) get metrics but no reference error."
        ),
    )
    add_process_arguments(p)
    p.set_defaults(process=None)
    p.add_argument("--dataset", default=None, help="toy dataset (default moons, or the checkpoint's); for an image checkpoint: the image dataset spec of the reference images")
    p.add_argument("--field", default="exact", help="exact, analytic or mlp (trains an MLP unless --ckpt is given)")
    p.add_argument("--ckpt", default=None, help="toy or image checkpoint (file or run dir), EDM/PFGM++ snapshot (.pkl/.pt) or diffusers folder whose network is the field")
    p.add_argument("--list-solvers", action="store_true", help="print the solver table for the process (needs, order, NFE per step) and exit")
    p.add_argument("--solvers", default=None, help="comma-separated solver/sampler names, or 'all' (default: euler, heun, midpoint, rk4, lms, dpm2, dpmpp-2m, dpmpp-3m, unipc-bh2, deis, ipndm, dopri5 and, if the process has a score, euler-maruyama, pc, edm-sde, ddpm; those that cannot run are skipped)")
    p.add_argument("--steps", default="4,8,16,32,64", help="comma-separated step budgets (adaptive solvers: tolerance min(0.1, 100/steps^5))")
    p.add_argument("--schedule", default=None, help="edm, uniform, log-uniform, polyexponential (NAME:rho=R sets a schedule's rho), vp-time, ve-time, optimal[:n_pilot=N,max_evals=M] (fitted to the solver's error on this field, cached in --out), gits[:n_pilot=N,fine=M] (steps by dynamic programming over one teacher trajectory, cached likewise), or file:SIGMAS.json (your own K+1 scales); default: the process's")
    p.add_argument("--n-data", type=SAMPLES, default=5000, help="toy: points of the exact field / MLP training set")
    p.add_argument("--n-samples", type=SAMPLES, default=1000)
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--label", type=LABEL, default=None, help="class label to condition on")
    p.add_argument("--train-steps", type=TRAIN_STEPS, default=2000, help="--field mlp: training steps")
    p.add_argument("--batch", type=BATCH, default=512, help="--field mlp: training batch")
    p.add_argument("--lr", type=LR, default=2e-3)
    p.add_argument("--hidden", type=WIDTH, default=256)
    p.add_argument("--depth", type=DEPTH, default=3)
    p.add_argument("--solve-batch", type=BATCH, default=None, help="solve in chunks of this many samples (images; NFE is then per chunk)")
    p.add_argument("--ref-rtol", type=TOLERANCE, default=1e-9, help="reference dopri5 (float64) rtol")
    p.add_argument("--ref-atol", type=TOLERANCE, default=1e-9, help="reference dopri5 (float64) atol")
    p.add_argument("--no-ref-check", dest="ref_check", action="store_false", help="skip the second reference at 10x tolerance (its error estimate); the reference itself runs (error_vs_reference is measured against it) unless every solver compared is stochastic")
    p.add_argument("--inception", default=None, help="image checkpoints: local Inception-v3 weights for an FID column")
    p.add_argument("--fid-ref", default=None, metavar="STATS.npz", help="with --inception: FID against these reference statistics (physgen eval ref-stats) instead of the held-out images")
    p.add_argument("--birth-death", default=None, help="Yukawa: transport, smc, weights, off")
    p.add_argument("--sampler-opt", action="append", default=[], metavar="KEY=VALUE", help="solver option (JSON value), passed to the solvers that take it")
    p.add_argument("--out", default="runs/compare-solvers")
    add_overwrite_argument(p)
    p.set_defaults(func=run)


def problem_config(args) -> ProblemConfig:
    """The problem flags as the library's :class:`~physgen.compare.build.ProblemConfig`."""
    return ProblemConfig(
        process=args.process, process_options=process_options(args), dataset=args.dataset, field=args.field, ckpt=args.ckpt,
        n_data=args.n_data, n_samples=args.n_samples, seed=args.seed, device=args.device, label=args.label,
        train_steps=args.train_steps, batch=args.batch, lr=args.lr, hidden=args.hidden, depth=args.depth, schedule=args.schedule,
        solve_batch=args.solve_batch, inception=args.inception, fid_ref=args.fid_ref, out=args.out,
    )


def run(args) -> int:
    if args.list_solvers:
        return list_solvers(make_process(args.process or "edm", **process_options(args)), args)
    steps = _int_list(args.steps, "--steps")
    names = _name_list(args.solvers)
    for name in names or ():
        if name != "all":
            solver_spec(name)  # an unknown name: one line listing the valid ones
    if not (args.ref_rtol > 0 and args.ref_atol > 0):
        raise UserError(f"--ref-rtol and --ref-atol must be > 0, got {args.ref_rtol}, {args.ref_atol}")
    options = sampler_options(args)  # before any work: a name the command passes itself is refused here
    # with --ckpt nothing is trained here: a checkpoint in --out is the input, not an old output
    keep_input = (lambda path: path.parent.name == "checkpoints") if args.ckpt is not None else None
    prepare(args.out, "compare-solvers", OUTPUTS, overwrite=args.overwrite, keep=keep_input,
            conflicts=[o for o in OUTPUTS if not o.startswith("checkpoints/")] if args.ckpt is not None else None)
    _, result, paths = compare_solvers(problem_config(args), names, steps, ref_rtol=args.ref_rtol, ref_atol=args.ref_atol,
                                       check_reference=args.ref_check, options=options, log=stderr_log(), log_stream=sys.stderr)
    write_json(f"{args.out}/config.json", {k: v for k, v in vars(args).items() if k != "func"})
    print(markdown_table(result))
    print(f"wrote {', '.join(str(p) for p in paths)}")
    return 0
