"""``physgen reflow``: retrain a trained toy flow on its own (noise, sample) pairs (k-rectified flow)."""
from __future__ import annotations

import sys

from ..reflow import INITS, OUTPUTS, ReflowConfig, run_reflow
from ..runfolder import add_overwrite_argument, prepare
from ..runtime import set_threads
from .flags import BATCH, COUNT, LR, SAMPLES, SEED, STEPS, THREADS, TRAIN_STEPS, add_grid_arguments


def register(sub) -> None:
    p = sub.add_parser("reflow", help="retrain a flow-matching toy run on its own (noise, sample) pairs: the k+1-rectified flow")
    p.add_argument("--ckpt", required=True, help="RUN: a `physgen toy --field mlp` run (or reflow output) of a flow-matching process, or its checkpoint")
    p.add_argument("--n-pairs", type=SAMPLES, default=10_000, help="prior draws taken to samples by RUN's flow (the training pairs)")
    p.add_argument("--out", required=True, help="RUN2: the new run folder (reflow --ckpt RUN2 takes it again)")
    add_grid_arguments(p, "heun", ("the ODE solver that draws the pairs (euler, heun, dpmpp-2m, ipndm, dopri5, ...)",
                                   "its integration steps (default 18)", "its grid (edm, uniform, ...; default: the process's)"))
    p.add_argument("--train-steps", type=TRAIN_STEPS, default=None, help="training steps (default: RUN's, the same budget per stage)")
    p.add_argument("--batch", type=BATCH, default=None, help="training batch (default: RUN's)")
    p.add_argument("--lr", type=LR, default=None, help="learning rate (default: RUN's)")
    p.add_argument("--init", default="run", choices=INITS, help="start from RUN's weights (default) or a fresh seeded network")
    p.add_argument("--seed", type=SEED, default=0, help="seeds the pairs' prior draws, the training and the evaluation draws")
    p.add_argument("--n-eval", type=SAMPLES, default=2000, help="prior draws for the straightness and the few-step Euler metrics")
    p.add_argument("--straightness-steps", type=STEPS, default=100, help="Euler steps on which the straightness is measured")
    p.add_argument("--checkpoint-every", type=COUNT, default=0, help="a checkpoint every N training steps (0: at the end only)")
    p.add_argument("--resume", action="store_true", help="continue the reflow in --out from its newest checkpoint (its pairs.npy reused)")
    p.add_argument("--threads", type=THREADS, default=1, help="CPU threads for torch (0: torch's default)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    add_overwrite_argument(p)
    p.set_defaults(func=run)


def run(args) -> int:
    set_threads(args.threads)
    config = ReflowConfig(ckpt=args.ckpt, out=args.out, n_pairs=args.n_pairs, solver=args.solver, steps=args.steps, schedule=args.schedule,
                          train_steps=args.train_steps, batch=args.batch, lr=args.lr, init=args.init, seed=args.seed, n_eval=args.n_eval,
                          straightness_steps=args.straightness_steps, checkpoint_every=args.checkpoint_every, resume=args.resume,
                          device=args.device)
    prepare(args.out, "reflow", OUTPUTS, overwrite=args.overwrite, resume=args.resume)
    m = run_reflow(config, log_stream=sys.stderr)
    w2 = "  ".join(f"w2@{n}nfe {m['sliced_w2_euler_before'][n]:.4g}->{m['sliced_w2_euler_after'][n]:.4g}" for n in m["sliced_w2_euler_after"])
    print(f"{m['k']}-rectified flow: straightness {m['straightness_before']:.4g} -> {m['straightness_after']:.4g}  {w2}")
    print(f"wrote {args.out}/config.json, pairs.npy, metrics.json, trajectories.png, checkpoints/")
    return 0
