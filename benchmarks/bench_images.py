"""Image throughput benchmark (not a test): training img/s of the DDPM++ CIFAR-10 U-Net
(``ddpmpp-cifar10``, 55.7M parameters, 3x32x32) at batch 512 with PFGM++ (D=2048), in

* ``reference``       an official-style EDM/PFGM++ loop (:func:`benchlib.reference_train`),
                      fp32 with TF32 off as EDM trains, on the same network, init and data,
* ``fp32-notf32``     physgen in plain float32 with TF32 off (the reference's arithmetic),
* ``fp32``            physgen in float32 with torch's defaults (cuDNN's TF32 convolutions),
* ``bf16+cl``         bf16 autocast + channels_last,
* ``bf16+cl+compile`` the same under ``torch.compile``,

the physgen ones through the real training loop (:func:`physgen.training.train`: EMA,
clipping off, Adam fused), and sampling img/s at 35 NFE (Heun, 18 steps) in fp32 and
bf16 autocast.  The data are random tensors already on the GPU (throughput does not
depend on them); every configuration starts from the same initial weights.

    python benchmarks/bench_images.py [--batch 512] [--steps 30] [--warmup 10] [--write]

Without CUDA it prints why and exits 0 (nothing to measure: the CPU numbers of a 56M
U-Net would say nothing about a GPU run).  ``--write`` replaces its sub-section of
``## Images (issue 7)`` in ``benchmarks/RESULTS.md`` (nothing else).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import edm_grid, interleaved, reference_heun_sampler, report_subsection, reference_train, sync  # noqa: E402

HEADING = "## Images (issue 7)"
SUBHEADING = "### Throughput: DDPM++ CIFAR-10 U-Net, training and sampling"

CONFIGS = {
    "reference": dict(reference=True, tf32=False),
    "fp32-notf32": dict(precision="fp32", channels_last=False, compile=False, tf32=False),
    "fp32": dict(precision="fp32", channels_last=False, compile=False),
    "bf16+cl": dict(precision="bf16", channels_last=True, compile=False),
    "bf16+cl+compile": dict(precision="bf16", channels_last=True, compile=True),
}


@contextlib.contextmanager
def tf32_mode(enabled: Optional[bool]):
    """TF32 for cuBLAS matmuls and cuDNN convolutions on (True) or off (False); None: as is."""
    if enabled is None or not torch.cuda.is_available():
        yield
        return
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = bool(enabled)
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def pfgmpp_process(D=2048):
    from physgen.processes import make_process

    return make_process("pfgmpp", D=D)


def measure_train(name: str, *, arch: str = "ddpmpp-cifar10", resolution: int = 32, channels: int = 3, batch: int = 512,
                  micro_batch: Optional[int] = None, steps: int = 30, warmup: int = 10, device="cuda", D=2048, lr: float = 1e-3,
                  lr_warmup_steps: int = 10, seed: int = 0, before_timing: Optional[Callable[[], None]] = None) -> dict:
    """One training configuration of :data:`CONFIGS`: ``warmup`` untimed steps (compile happens
    there), then ``steps`` timed ones.  Returns img/s, ms/step, the warm-up time, peak memory
    and the loss of every step.  ``before_timing()`` runs once between the two (e.g. to wait
    for the GPU to be free) and is not timed."""
    from physgen.nets.unet import build_unet
    from physgen.training import TrainConfig, train

    opts = dict(CONFIGS[name])
    device = torch.device(device)
    reference, tf32 = opts.pop("reference", False), opts.pop("tf32", None)
    process = pfgmpp_process(D)
    torch.manual_seed(seed)  # the same initial weights for every configuration
    net = build_unet(arch, resolution, channels)
    field = process.precondition(net).to(device)
    g = torch.Generator(device=device).manual_seed(seed)
    data = torch.rand(8 * batch, channels, resolution, resolution, device=device, generator=g) * 2 - 1
    total = warmup + steps
    marks: dict = {}

    def mark(step: int) -> None:
        if step == warmup:
            sync(device)
            marks["warm"] = time.perf_counter()
            if before_timing is not None:
                before_timing()
        if step in (warmup, total):
            sync(device)
            marks[step] = time.perf_counter()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    with tf32_mode(tf32):
        if reference:
            pick = torch.Generator(device=device).manual_seed(seed + 1)
            losses = reference_train(field, lambda n: data[torch.randint(0, data.shape[0], (n,), device=device, generator=pick)],
                                     steps=total, batch=batch, micro_batch=micro_batch or batch, lr=lr, D=float(D),
                                     warmup_images=lr_warmup_steps * batch, ema_halflife_images=500_000.0, seed=seed, on_step=mark)
        else:
            def sample_batch(n, gen):
                return data[torch.randint(0, data.shape[0], (n,), device=device, generator=gen)], None

            cfg = TrainConfig(steps=total, batch=batch, micro_batch=micro_batch, lr=lr, warmup_steps=lr_warmup_steps,
                              ema_halflife=500_000.0, grad_clip=None, log_every=max(total, 10), seed=seed, **opts)
            result = train(process, field, sample_batch, cfg, device=device, log_stream=open(os.devnull, "w"),
                           on_step=lambda step, ema: mark(step))
            losses = result.losses
            del result
    dt = marks[total] - marks[warmup]
    out = {"config": name, "img_per_s": steps * batch / dt, "ms_per_step": 1000 * dt / steps, "warmup_s": marks["warm"] - t0,
           "peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan"),
           "losses": [float(v) for v in losses], "final_loss": float(losses[-1]), "batch": batch, "micro_batch": micro_batch or batch,
           "n_params": sum(p.numel() for p in net.parameters())}
    del field, net, data
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def sampling_field(arch: str, resolution: int, channels: int, device, seed: int = 0):
    """``(process, field)``: PFGM++ D=2048 and a fresh preconditioned U-Net in eval mode.

    An untrained network: the cost per NFE does not depend on the weights, but the
    zero-initialised output layer gets small random weights so the work is not trivially zero."""
    from physgen.nets.unet import build_unet

    torch.manual_seed(seed)
    process = pfgmpp_process()
    field = process.precondition(build_unet(arch, resolution, channels)).to(device).eval().requires_grad_(False)
    with torch.no_grad():
        field.net.out_conv.weight.normal_(0, 1e-3)
    return process, field


def measure_sampling(*, arch: str = "ddpmpp-cifar10", resolution: int = 32, channels: int = 3, batch: int = 512, repeats: int = 3,
                     steps: int = 18, device="cuda", seed: int = 0) -> dict:
    """Heun at ``2 steps - 1`` NFE on the process's schedule: ``solvers.solve`` in fp32 and under
    bf16 autocast, against :func:`benchlib.reference_heun_sampler` (float64 state, host sync
    per step) on the same network and latents, interleaved.  Latents: ``N(0, s_max²)``
    (a stand-in for the prior draw; the cost does not depend on it)."""
    import solvers

    device = torch.device(device)
    process, field = sampling_field(arch, resolution, channels, device, seed)
    sched = edm_grid(process, steps)
    g = torch.Generator(device=device).manual_seed(seed)
    x0 = torch.randn(batch, channels, resolution, resolution, device=device, generator=g) * float(sched[0])
    flow = process.flow(field)

    def ours(precision: str):
        amp = torch.bfloat16 if precision == "bf16" and device.type == "cuda" else None
        with torch.no_grad(), torch.autocast(device_type=device.type, dtype=amp or torch.float32, enabled=amp is not None):
            return solvers.solve(flow, x0, sched, method="heun")

    def reference():
        with torch.no_grad():
            return reference_heun_sampler(field, x0, sched)

    sol = ours("fp32")
    diff = (sol.x.double() - reference()).abs().max().item()
    t_fp32, t_bf16, t_ref = interleaved([lambda: ours("fp32"), lambda: ours("bf16"), reference], device, repeats)
    rate = {"fp32": batch / t_fp32, "bf16": batch / t_bf16, "reference": batch / t_ref}
    return {"nfe": sol.stats.nfe, "batch": batch, "img_per_s": rate, "max_abs_diff_fp32_vs_reference": diff,
            "ratio_to_reference": {k: rate[k] / rate["reference"] for k in ("fp32", "bf16")}}


def train_table(rows: list, reference: Optional[dict]) -> list[str]:
    """Markdown rows for :func:`measure_train` results (``error`` rows say why they failed)."""
    lines = ["| config | img/s | ratio to reference | ms/step | peak memory (GiB) | warm-up incl. compile (s) | mean loss (timed steps) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['config']} | failed: {r['error']} | | | | | |")
            continue
        ratio = f"{r['img_per_s'] / reference['img_per_s']:.2f}" if reference else ""
        timed = r["losses"][-max(1, len(r["losses"]) - int(r.get("warmup", 0))):]
        lines.append(f"| {r['config']} | {r['img_per_s']:.0f} | {ratio} | {r['ms_per_step']:.1f} | {r['peak_mem_gib']:.1f} | "
                     f"{r['warmup_s']:.1f} | {sum(timed) / len(timed):.4f} |")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--micro-batch", type=int, default=None, help="gradient accumulation chunk (if 512 does not fit)")
    p.add_argument("--steps", type=int, default=30, help="timed training steps")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps first (compile happens here)")
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"subset of {','.join(CONFIGS)}")
    p.add_argument("--sample-batch", type=int, default=512)
    p.add_argument("--sample-batches", type=int, default=3, help="timed sampling batches per implementation (interleaved)")
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
            r = measure_train(name, arch=args.arch, batch=args.batch, micro_batch=args.micro_batch, steps=args.steps,
                              warmup=args.warmup, device=device)
            r["warmup"] = args.warmup
        except Exception as exc:  # e.g. compile unavailable: report, keep going
            r = {"config": name, "error": f"{type(exc).__name__}: {exc}".splitlines()[0][:200]}
        rows.append(r)
        print({k: v for k, v in r.items() if k != "losses"}, flush=True)
    samp = measure_sampling(arch=args.arch, batch=args.sample_batch, repeats=args.sample_batches, device=device)
    print(samp, flush=True)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU smoke run ({platform.processor() or platform.machine()}), not a measurement"
    ok = [r for r in rows if "error" not in r]
    ref = next((r for r in ok if r["config"] == "reference"), None)
    lines = [
        f"Training: `{args.arch}` U-Net ({ok[0]['n_params'] / 1e6:.1f}M params), " if ok else f"Training: `{args.arch}` U-Net, ",
    ]
    lines[0] += (f"3x32x32, global batch {args.batch}" + (f" (micro-batch {args.micro_batch})" if args.micro_batch else "")
                 + f", PFGM++ D=2048 loss, Adam + EMA; physgen through `physgen.training.train`, the reference through "
                 f"`benchlib.reference_train`; {args.steps} timed steps after {args.warmup} warm-up steps.")
    lines += [""] + train_table(rows, ref)
    physgen_ok = [r for r in ok if r["config"] != "reference"]
    if physgen_ok:
        best = max(physgen_ok, key=lambda r: r["img_per_s"])
        hours = 200e6 / best["img_per_s"] / 3600
        lines += ["", f"At {best['img_per_s']:.0f} img/s ({best['config']}) the 200 Mimg CIFAR-10 recipe takes {hours:.0f} GPU-hours on this GPU."]
    lines += ["", f"Sampling at {samp['nfe']} NFE (Heun, 18 steps), batch {args.sample_batch}; reference: float64 state, host sync per step "
              f"(max |difference| of the fp32 results {samp['max_abs_diff_fp32_vs_reference']:.1e}):", "",
              "| sampler | img/s | ratio to reference | 50k samples (min) |", "|---|---:|---:|---:|"]
    for k, v in samp["img_per_s"].items():
        ratio = samp["ratio_to_reference"].get(k, 1.0)
        lines.append(f"| {'physgen ' + k if k != 'reference' else 'reference (edm_sampler style)'} | {v:.0f} | {ratio:.2f} | {50000 / v / 60:.1f} |")
    lines += ["", f"Machine: {gpu}; torch {torch.__version__} (CUDA {torch.version.cuda}); python {platform.python_version()}."]
    return report_subsection("\n".join(lines), args.write, args.results, HEADING, SUBHEADING)


if __name__ == "__main__":
    sys.exit(main())
