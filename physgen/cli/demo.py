"""``physgen demo``: the main job on the embedded default, in about a minute on 2 CPU cores.

Trains a small MLP field for several processes on ``moons`` (generated, nothing to
download) with ``physgen toy``'s training defaults (``ToyConfig``: the toy recipe measured in
benchmarks/RESULTS.md, "The demo's recipe"), samples each with Heun, and writes ``DIR/demo.png`` (data beside every
process's samples), ``DIR/metrics.md`` and ``DIR/metrics.json`` (sliced W2, MMD, energy
distance against fresh data, NFE, wall time), plus each process's own run folder.

The processes' runs are independent (each seeds its own weights, data, training noise and
prior draws from ``--seed``), so ``--workers`` of them run at once, each in its own
process with ``--threads`` threads: a toy MLP runs fastest on one thread, so on 2 cores two
one-thread workers take about half the wall time of one, with bit-identical results
(tests/cli/test_demo.py).
"""
from __future__ import annotations

import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch

from ..runfolder import add_overwrite_argument, prepare
from .flags import SAMPLES, SEED, THREADS, TRAIN_STEPS, WORKERS
from .toy import OUTPUTS as TOY_OUTPUTS
from ..data import load_toy
from ..io import save_figure, write_json, atomic_write
from ..processes import PROCESSES
from ..toy import ToyConfig, run_toy
from ..runtime import available_cpus, set_threads

DEMO_PROCESSES = ("edm", "ve", "vp", "pfgmpp")
# Heun in 32 steps (63 field evaluations; the toy's default, 18 steps, takes 35): at 10,000
# samples the discretisation error of 18 steps shows in sliced W2 (medians of seeds 0-2: ve 0.046
# -> 0.039, vp 0.049 -> 0.043; benchmarks/RESULTS.md, "The demo's recipe")
DEMO_SOLVER, DEMO_STEPS = "heun", 32
OUTPUTS = ("demo.png", "metrics.md", "metrics.json", *(f"{p}/{name}" for p in DEMO_PROCESSES for name in TOY_OUTPUTS))


def register(sub) -> None:
    p = sub.add_parser("demo", help="train and sample several processes on a toy set; write a figure and a metrics table")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--dataset", default="moons")
    p.add_argument("--train-steps", type=TRAIN_STEPS, default=None, help="optimiser steps per process (default: the toy recipe's, ToyConfig.train_steps)")
    p.add_argument("--n-samples", type=SAMPLES, default=2000)
    p.add_argument("--threads", type=THREADS, default=1, help="CPU threads for torch per worker (toy-sized work runs fastest on one; 0: torch's default)")
    p.add_argument("--workers", type=WORKERS, default=None,
                   help="processes trained at once, each in its own worker process (default: one per CPU, at most one per process; 1: all in this process)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=SEED, default=0)
    add_overwrite_argument(p)
    p.set_defaults(func=run)


def demo_configs(args, out) -> list[ToyConfig]:
    """One toy run per demo process: the toy's defaults throughout (``--train-steps`` aside),
    the demo's solver and step count, ``moons``-sized data, PFGM++ at D = 128."""
    recipe = {} if args.train_steps is None else {"train_steps": args.train_steps}
    return [ToyConfig(process=name, dataset=args.dataset, field="mlp", n_data=10_000, solver=DEMO_SOLVER, steps=DEMO_STEPS,
                      n_samples=args.n_samples, seed=args.seed, device=args.device, process_options={"D": 128} if name == "pfgmpp" else {},
                      out=str(out / name), **recipe)
            for name in DEMO_PROCESSES if name in PROCESSES]


class _Prefixed:
    """A text stream that starts each line with ``prefix``: the workers' progress lines interleave."""

    def __init__(self, stream, prefix: str):
        self.stream, self.prefix, self.at_line_start = stream, prefix, True

    def write(self, text: str) -> int:
        for part in text.splitlines(keepends=True):
            self.stream.write(self.prefix + part if self.at_line_start else part)
            self.at_line_start = part.endswith("\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def demo_row(config: ToyConfig, threads: int = 1) -> dict:
    """Train and sample one process (in a worker or here); its row of the metrics table."""
    set_threads(threads)
    log = _Prefixed(sys.stderr, f"[demo] {config.process}: ")
    print(f"training an MLP field ({config.train_steps} steps) and sampling", file=log, flush=True)
    metrics = run_toy(config, log_stream=log)
    return {"process": config.process, **{k: metrics[k] for k in ("sliced_w2", "mmd", "energy", "nfe", "wall_s", "final_loss")}}


def run_all(configs: list[ToyConfig], workers: int, threads: int) -> list[dict]:
    """The rows of ``configs`` in order: here (``workers`` 1) or in ``workers`` fresh (spawned,
    not forked: a forked OpenMP runtime can hang) worker processes."""
    if workers <= 1 or len(configs) <= 1:
        return [demo_row(c, threads) for c in configs]
    with ProcessPoolExecutor(min(workers, len(configs)), mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(demo_row, configs, [threads] * len(configs)))


def run(args) -> int:
    set_threads(args.threads)
    load_toy(args.dataset)  # an unknown dataset is refused here, before any worker starts
    out = prepare(args.out, "demo", OUTPUTS, overwrite=args.overwrite).path
    t_start = time.perf_counter()
    configs = demo_configs(args, out)
    workers = min(available_cpus(), len(configs)) if args.workers is None else args.workers
    rows = run_all(configs, workers, args.threads)

    import matplotlib  # heavy optional dependency: imported only where it is used

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy optional dependency: imported only where it is used

    g = torch.Generator().manual_seed(args.seed + 1_000_003)
    data = load_toy(args.dataset).sample(args.n_samples, g).numpy()
    fig, axes = plt.subplots(1, len(rows) + 1, figsize=(3.2 * (len(rows) + 1), 3.4), sharex=True, sharey=True)
    lim = float(np.quantile(np.abs(data), 0.995)) * 1.3
    panels = [("data", data)] + [(f"{r['process']}  SW2={r['sliced_w2']:.3f}", np.load(out / r["process"] / "samples.npy")) for r in rows]
    for ax, (title, pts) in zip(axes, panels):
        ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.5)
        ax.set_title(title, fontsize=9)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
    fig.suptitle(f"physgen demo: MLP fields on {args.dataset}, {DEMO_SOLVER} {DEMO_STEPS} steps")
    save_figure(fig, out / "demo.png", dpi=110)

    header = "| process | sliced W2 | MMD | energy | NFE | sample wall s | final loss |\n|---|---|---|---|---|---|---|\n"
    table = header + "".join(
        f"| {r['process']} | {r['sliced_w2']:.4f} | {r['mmd']:.5f} | {r['energy']:.4f} | {r['nfe']} | {r['wall_s']:.2f} | {r['final_loss']:.4f} |\n" for r in rows
    )

    with atomic_write(out / "metrics.md", "w") as f:
        f.write(table)
    write_json(out / "metrics.json", rows)
    print(table)
    print(f"wrote {out}/demo.png, metrics.md, metrics.json in {time.perf_counter() - t_start:.0f} s")
    return 0
