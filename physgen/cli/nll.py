"""``physgen nll``: exact negative log-likelihood of data under a process and field, by the
probability-flow ODE and the instantaneous change of variables (:mod:`physgen.likelihood`).

The field is ``exact`` (the empirical field of ``--n-data`` training points), ``analytic``
(Gaussian-mixture datasets), or ``mlp``: loaded from ``--ckpt`` (a checkpoint file or run
directory written by :func:`physgen.training.train`), or trained on the spot as
``physgen toy`` does.  The NLL is evaluated on ``--n`` fresh points drawn with another seed
(for toy sets), or on the first ``--n`` images of the dataset (image checkpoints).
Writes ``DIR/nll.json``.
"""
from __future__ import annotations

import sys

from ..likelihood import NLLConfig, load_field_checkpoint, run_nll
from ..runfolder import add_overwrite_argument, prepare
from .flags import (BATCH, DEPTH, LR, POSITIVE, SAMPLES, SEED, TRAIN_STEPS, WIDTH, add_grid_arguments, add_process_arguments,
                    add_tolerance_arguments, process_options)

__all__ = ["register", "run", "load_field_checkpoint"]


def register(sub) -> None:
    p = sub.add_parser("nll", help="exact NLL (nats, bits/dim) by the probability-flow ODE; writes nll.json")
    add_process_arguments(p)
    p.set_defaults(process=None)  # from the checkpoint when one is given, else edm
    p.add_argument("--dataset", default=None, help="a toy name, FILE.npy/.npz/.json (default moons, or the checkpoint's); with an image checkpoint: digits, cifar10:PATH, ... (default: the one it was trained on)")
    p.add_argument("--field", default=None, help="exact, analytic or mlp (default: analytic for a Gaussian-mixture dataset, else mlp: from --ckpt or trained here)")
    p.add_argument("--ckpt", default=None, help="checkpoint file or run directory (state dicts under 'model'/'ema')")
    p.add_argument("--weights", default="ema", choices=["ema", "model"], help="which weights of the checkpoint")
    p.add_argument("--n", type=SAMPLES, default=1000, help="number of points to evaluate")
    p.add_argument("--n-data", type=SAMPLES, default=10_000, help="points behind an exact field / MLP training")
    p.add_argument("--batch", type=BATCH, default=500, help="points per ODE solve")
    div = p.add_mutually_exclusive_group()
    div.add_argument("--exact-divergence", dest="divergence", action="store_const", const="exact", help="exact divergence (N backward passes)")
    div.add_argument("--hutchinson", dest="divergence", action="store_const", const="hutchinson", help="Hutchinson's estimator (one Rademacher probe per sample)")
    p.set_defaults(divergence="auto")
    add_grid_arguments(p, "dopri5", (
        "dopri5 (adaptive, default) or a fixed-step flow solver on the sampling grid of --steps/--schedule",
        "fixed-step solvers: the grid of `physgen toy --steps K` (its positive points, backwards)",
        "fixed-step solvers: the schedule of that grid (default: the process's)"))
    add_tolerance_arguments(p, "dopri5", "dopri5")
    p.add_argument("--s-min", type=POSITIVE, default=None, help="dopri5: start of the integration (default: the process's sigma_min / t_eps)")
    p.add_argument("--dequantize", type=POSITIVE, default=None, metavar="WIDTH",
                   help="uniform dequantisation with this bin width (8-bit images in [-1,1]: 2/255, the default for image data)")
    p.add_argument("--train-steps", type=TRAIN_STEPS, default=2000, help="--field mlp without --ckpt: training steps")
    p.add_argument("--hidden", type=WIDTH, default=256)
    p.add_argument("--depth", type=DEPTH, default=3)
    p.add_argument("--lr", type=LR, default=2e-3)
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--out", default="runs/nll")
    add_overwrite_argument(p)
    p.set_defaults(func=run)


def run(args) -> int:
    out = prepare(args.out, "nll", ("nll.json",), overwrite=args.overwrite).path
    config = NLLConfig(
        process=args.process, process_options=process_options(args), dataset=args.dataset, field=args.field, ckpt=args.ckpt,
        weights=args.weights, n=args.n, n_data=args.n_data, batch=args.batch, divergence=args.divergence, solver=args.solver,
        steps=args.steps, schedule=args.schedule, rtol=args.rtol, atol=args.atol, s_min=args.s_min, dequantize=args.dequantize,
        train_steps=args.train_steps, hidden=args.hidden, depth=args.depth, lr=args.lr, seed=args.seed, device=args.device, out=str(out),
    )
    result, summary = run_nll(config, log_stream=sys.stderr)
    ref_text = f"  (analytic at s_min: {summary['analytic_nll_nats']:.4f})" if "analytic_nll_nats" in summary else ""
    print(f"nll = {result.nll:.4f} ± {result.nll_std_err:.4f} nats ({result.bits_per_dim:.4f} bits/dim) over {result.logp.numel()} points, "
          f"{result.divergence} divergence, {result.nfe} NFE, {summary['wall_s']:.1f} s{ref_text}")
    print(f"wrote {out / 'nll.json'}")
    return 0
