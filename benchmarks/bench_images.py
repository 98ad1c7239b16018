"""Image throughput benchmark (not a test): training img/s of the DDPM++ CIFAR-10 U-Net
(``ddpmpp-cifar10``, 55.7M parameters, 3x32x32) at batch 512 with PFGM++ (D=2048), in

* ``fp32``            plain float32 (cuDNN's default TF32 convolutions),
* ``bf16+cl``         bf16 autocast + channels_last,
* ``bf16+cl+compile`` the same under ``torch.compile``,

through the real training loop (:func:`physgen.training.train`: EMA, clipping off, Adam
fused), and sampling img/s at 35 NFE (Heun, 18 steps) in fp32 and bf16 autocast.  The
data are random tensors already on the GPU (throughput does not depend on them).

    python benchmarks/bench_images.py [--batch 512] [--steps 30] [--warmup 10] [--write]

Without CUDA it prints why and exits 0 (nothing to measure: the CPU numbers of a 56M
U-Net would say nothing about a GPU run).  ``--write`` replaces its sub-section of
``## Images (issue 7)`` in ``benchmarks/RESULTS.md`` (nothing else).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import write_subsection  # noqa: E402

HEADING = "## Images (issue 7)"
SUBHEADING = "### Throughput: DDPM++ CIFAR-10 U-Net, training and sampling"


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
CONFIGS = {
    "fp32": dict(precision="fp32", channels_last=False, compile=False),
    "bf16+cl": dict(precision="bf16", channels_last=True, compile=False),
    "bf16+cl+compile": dict(precision="bf16", channels_last=True, compile=True),
}


def _process():
    from physgen.processes import PROCESSES, make_process

    if "pfgmpp" in PROCESSES:
        return make_process("pfgmpp", D=2048)
    print("note: pfgmpp not registered; timing EDM (same network and loss cost)")
    return make_process("edm")


def bench_train(name: str, opts: dict, args, device) -> dict:
    from physgen.nets.unet import build_unet
    from physgen.training import TrainConfig, train

    torch.manual_seed(0)
    process = _process()
    net = build_unet(args.arch, 32, 3)
    field = process.precondition(net)
    data = torch.rand(8 * args.batch, 3, 32, 32, device=device) * 2 - 1

    def batch(n, g):
        i = torch.randint(0, data.shape[0], (n,), device=device, generator=g)
        return data[i], None

    marks = {}

    def on_step(step, ema):
        if step in (args.warmup, args.warmup + args.steps):
            _sync(device)
            marks[step] = time.perf_counter()

    cfg = TrainConfig(steps=args.warmup + args.steps, batch=args.batch, micro_batch=args.micro_batch, lr=1e-3, warmup_steps=100,
                      ema_halflife=500_000.0, grad_clip=None, log_every=max(args.steps, 10), **opts)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    result = train(process, field, batch, cfg, device=device, log_stream=open(os.devnull, "w"), on_step=on_step)
    total = time.perf_counter() - t0
    dt = marks[args.warmup + args.steps] - marks[args.warmup]
    out = {
        "config": name, "img_per_s": args.steps * args.batch / dt, "ms_per_step": 1000 * dt / args.steps,
        "warmup_s": marks[args.warmup] - t0, "total_s": total, "peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan"),
        "final_loss": result.losses[-1],
    }
    del result, field, net, data
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def bench_sample(precision: str, args, device) -> dict:
    from physgen.images.generate import generate
    from physgen.nets.unet import build_unet

    torch.manual_seed(0)
    process = _process()
    field = process.precondition(build_unet(args.arch, 32, 3)).to(device).eval()
    # a random (untrained) network: the cost per NFE does not depend on the weights, but
    # give the zero-initialised output layer weights so the work is not trivially zero
    with torch.no_grad():
        field.net.out_conv.weight.normal_(0, 1e-3)
    n = args.sample_batch * (args.sample_batches + 1)
    times = []
    nfe = 0
    for idx, x, stats in generate(process, field, range(n), (3, 32, 32), steps=18, solver="heun", batch=args.sample_batch, device=device, precision=precision):
        _sync(device)
        times.append(time.perf_counter())
        nfe = stats.nfe
    dt = times[-1] - times[0]  # the first batch is warm-up
    return {"precision": precision, "nfe": nfe, "img_per_s": args.sample_batch * args.sample_batches / dt, "batch": args.sample_batch}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--micro-batch", type=int, default=None, help="gradient accumulation chunk (if 512 does not fit)")
    p.add_argument("--steps", type=int, default=30, help="timed training steps")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps first (compile happens here)")
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"subset of {','.join(CONFIGS)}")
    p.add_argument("--sample-batch", type=int, default=512)
    p.add_argument("--sample-batches", type=int, default=3, help="timed sampling batches (after one warm-up batch)")
    p.add_argument("--device", default="cuda", help="cuda[:N]; 'cpu' only smoke-tests this script (numbers meaningless)")
    p.add_argument("--arch", default="ddpmpp-cifar10", help="U-Net preset (the table is for ddpmpp-cifar10)")
    p.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    p.add_argument("--results", type=Path, default=Path(__file__).resolve().parent / "RESULTS.md")
    args = p.parse_args(argv)
    if args.device != "cpu" and not torch.cuda.is_available():
        print(f"skipped: no CUDA device (torch {torch.__version__}, built with CUDA {torch.version.cuda}; "
              f"torch.cuda.is_available() is False). Run this on a GPU machine.")
        return 0
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    rows = []
    for name in args.configs.split(","):
        if name not in CONFIGS:
            p.error(f"unknown config {name!r}; valid: {', '.join(CONFIGS)}")
        try:
            r = bench_train(name, CONFIGS[name], args, device)
        except Exception as exc:  # e.g. compile unavailable: report, keep going
            r = {"config": name, "error": f"{type(exc).__name__}: {exc}".splitlines()[0][:200]}
        rows.append(r)
        print(r, flush=True)
    samp = [bench_sample(pr, args, device) for pr in ("fp32", "bf16")]
    for s in samp:
        print(s, flush=True)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU smoke run ({platform.processor() or platform.machine()}), not a measurement"
    lines = [
        f"Training: `{args.arch}` U-Net ({sum(p.numel() for p in __import__('physgen.nets.unet', fromlist=['build_unet']).build_unet(args.arch, 32, 3).parameters()) / 1e6:.1f}M params), 3x32x32, global batch {args.batch}"
        + (f" (micro-batch {args.micro_batch})" if args.micro_batch else "")
        + f", PFGM++ D=2048 loss, Adam (fused) + EMA through `physgen.training.train`; {args.steps} timed steps after {args.warmup} warm-up steps.",
        "",
        "| config | img/s | ms/step | peak memory (GiB) | warm-up incl. compile (s) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['config']} | failed: {r['error']} | | | |")
        else:
            lines.append(f"| {r['config']} | {r['img_per_s']:.0f} | {r['ms_per_step']:.1f} | {r['peak_mem_gib']:.1f} | {r['warmup_s']:.1f} |")
    ok = [r for r in rows if "error" not in r]
    if ok:
        best = max(ok, key=lambda r: r["img_per_s"])
        hours = 200e6 / best["img_per_s"] / 3600
        lines += ["", f"At {best['img_per_s']:.0f} img/s ({best['config']}) the 200 Mimg CIFAR-10 recipe takes {hours:.0f} GPU-hours on this GPU."]
    lines += ["", f"Sampling at {samp[0]['nfe']} NFE (Heun, 18 steps), batch {args.sample_batch}:", "",
              "| precision | img/s | 50k samples (min) |", "|---|---:|---:|"]
    for s in samp:
        lines.append(f"| {s['precision']} | {s['img_per_s']:.0f} | {50000 / s['img_per_s'] / 60:.1f} |")
    lines += ["", f"Machine: {gpu}; torch {torch.__version__} (CUDA {torch.version.cuda}); python {platform.python_version()}."]
    body = "\n".join(lines)
    print("\n" + body)
    if args.write:
        write_subsection(args.results, HEADING, SUBHEADING, body)
        print(f"\nwrote sub-section of {HEADING!r} in {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
