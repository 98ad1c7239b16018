"""``physgen toy``: sample a toy 2-D distribution with any process, field and solver."""
from __future__ import annotations

import sys

from ..processes import make_process
from ..runfolder import add_overwrite_argument, prepare
from ..runtime import set_threads
from ..toy import ToyConfig, run_toy
from .flags import (BATCH, DEPTH, LABEL, LR, SAMPLES, SEED, THREADS, TRAIN_STEPS, WIDTH, add_condition_arguments, add_guidance_arguments,
                    add_observe_arguments, add_process_arguments, add_sampler_arguments, condition_option, guidance_options, list_solvers,
                    observe_option, process_options, sampler_options, sampling_steps)

OUTPUTS = ("config.json", "samples.npy", "metrics.json", "samples.png", "trajectories.png", "checkpoints/ckpt-*.pt")  # what physgen toy writes (--field mlp: checkpoints)


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
    add_condition_arguments(p)
    add_observe_arguments(p)
    p.add_argument("--out", default="runs/toy")
    add_overwrite_argument(p)
    p.set_defaults(func=run)


def run(args) -> int:
    if args.list_solvers:
        return list_solvers(make_process(args.process, **process_options(args)), args)
    set_threads(args.threads)
    opts = sampler_options(args)
    rtol, atol = opts.pop("rtol", None), opts.pop("atol", None)
    observe = observe_option(args)  # before --condition's flags: --condition-method with --observe-A names the right conflict
    config = ToyConfig(
        process=args.process, dataset=args.dataset, field=args.field, n_data=args.n_data, train_steps=args.train_steps,
        batch=args.batch, lr=args.lr, hidden=args.hidden, depth=args.depth, solver=args.solver, steps=sampling_steps(args),
        schedule=args.schedule, rtol=rtol, atol=atol, n_samples=args.n_samples, seed=args.seed, device=args.device,
        process_options=process_options(args), sampler_options=opts, label=args.label, out=args.out,
        cond_drop=args.cond_drop, condition=condition_option(args), observe=observe, **guidance_options(args),
    )
    prepare(args.out, "toy", OUTPUTS, overwrite=args.overwrite)
    metrics = run_toy(config, log_stream=sys.stderr)
    keys = ("sliced_w2", "mmd", "energy", "ks_conditional", "weight_error", "nfe", "wall_s")
    print("  ".join(f"{k}={metrics[k]:.4g}" if isinstance(metrics[k], float) else f"{k}={metrics[k]}" for k in keys if k in metrics))
    print(f"wrote {args.out}/config.json, samples.npy, metrics.json, samples.png, trajectories.png")
    return 0
