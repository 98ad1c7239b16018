"""CPU side-by-side measurements of issue 13 (not a test): the EMA and attention fixes, and the
parity of physgen's loops with the official-style ones.

1. EMA: the update as it was (walk ``parameters()`` / ``buffers()`` of both modules each
   step) against :class:`physgen.training._EmaUpdate` (lists kept), on the demo-size MLP
   (2 -> 128 x 3 -> 2), and the saving as a share of one demo training step (batch 256).
2. Attention: the U-Net's attention as it was (strided q/k/v from an einops view) against
   the channels-contiguous layout, forward + backward, on the attention block alone and on
   the whole ``small`` U-Net.
3. Training step: ``physgen.training.train`` (fp32) against ``benchlib.reference_train``
   (the EDM / PFGM++ loop) on the same network, init and data, alternating runs.
4. Sampling: Heun (35 NFE) through ``solvers.solve`` against 35 back-to-back forwards of the
   same field, and the solver's own work (a free field) against ``benchlib.reference_heun_sampler``'s.

    OMP_NUM_THREADS=1 python benchmarks/bench_parity.py [--repeats 7] [--write]

All pairs run interleaved in one process, one thread; ``--write`` puts the tables under
``## CPU parity and the three losses (issue 13)`` in ``benchmarks/RESULTS.md``.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import FreeDenoiser, edm_grid, interleaved, machine, paired_ratio, reference_heun_sampler, write_section  # noqa: E402

HEADING = "## CPU parity and the three losses (issue 13)"
CPU = torch.device("cpu")


def ema(args) -> list[str]:
    from physgen.nets.mlp import MLP
    from physgen.processes import EDM
    from physgen.training import TrainConfig, _EmaUpdate, train

    torch.manual_seed(0)
    field = EDM().precondition(MLP(2, hidden=128, depth=3))
    shadow = copy.deepcopy(field)
    kept = _EmaUpdate(shadow, field)

    def walked(beta: float) -> None:  # the update before issue 13, verbatim in effect
        with torch.no_grad():
            torch._foreach_lerp_([p for p in shadow.parameters()], [p.detach() for p in field.parameters()], 1.0 - beta)
            for be, bm in zip(shadow.buffers(), field.buffers()):
                be.copy_(bm)

    calls = 500
    t_walk, t_kept = interleaved([lambda: [walked(0.999) for _ in range(calls)], lambda: [kept(0.999) for _ in range(calls)]],
                                 CPU, args.repeats)
    data = torch.randn(10_000, 2, generator=torch.Generator().manual_seed(1))
    stamps: list[float] = []
    cfg = TrainConfig(steps=60, batch=256, lr=1e-3, warmup_steps=10, log_every=60)
    train(EDM(), EDM().precondition(MLP(2, hidden=128, depth=3)),
          lambda n, g: (data[torch.randint(0, data.shape[0], (n,), generator=g)], None), cfg, device=CPU,
          log_stream=open(os.devnull, "w"), on_step=lambda step, e: stamps.append(time.perf_counter()))
    step = statistics.median(b - a for a, b in zip(stamps[10:], stamps[11:]))
    per_walk, per_kept = t_walk / calls, t_kept / calls
    return [
        "EMA update on the demo-size MLP (2 -> 128 x 3 -> 2, "
        f"{sum(p.numel() for p in field.parameters())} parameters), {calls} updates per timing, interleaved:", "",
        "| update | us per step | share of a demo training step |", "|---|---:|---:|",
        f"| walk both modules every step (before) | {per_walk * 1e6:.1f} | {per_walk / step:.1%} |",
        f"| tensor lists kept (`_EmaUpdate`) | {per_kept * 1e6:.1f} | {per_kept / step:.1%} |",
        "", f"Saving: {(per_walk - per_kept) * 1e6:.1f} us per step = {(per_walk - per_kept) / step:.1%} of a demo training step "
        f"(median step {step * 1e3:.2f} ms: EDM loss, batch 256, Adam, fp32).",
    ]


def strided_attention(self, qkv):
    """The U-Net attention before issue 13: q/k/v as einops views whose channel stride is H*W, which
    every fused SDPA kernel refuses (``sdp_utils``: "last dimension ... stride 1"), so SDPA ran its math path."""
    import torch.nn.functional as F
    from einops import rearrange

    q, k, v = rearrange(qkv, "b (three n c) h w -> three b n (h w) c", three=3, n=self.num_heads)
    return rearrange(F.scaled_dot_product_attention(q, k, v), "b n (h w) c -> b (n c) h w", h=qkv.shape[-2])


def measure_attention(device, *, batch: int, channels: int, resolution: int, repeats: int, bf16: bool = False) -> dict:
    """Forward + backward of one attention block's ``softmax(q k^T/sqrt(d)) v``, strided (before) vs
    channels-contiguous (after), NCHW and channels_last, interleaved; times in seconds."""
    from physgen.nets.unet import ResBlock

    device = torch.device(device)
    torch.manual_seed(0)
    blk = ResBlock(channels, channels, 4 * channels, attention=True).to(device)
    amp = bf16 and device.type == "cuda"
    out = {}
    for layout in ("nchw", "channels_last"):
        qkv = torch.randn(batch, 3 * channels, resolution, resolution, device=device)
        if layout == "channels_last":
            qkv = qkv.contiguous(memory_format=torch.channels_last)
        qkv.requires_grad_(True)

        def run(fn):
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
                y = fn(blk, qkv)
            y.float().square().mean().backward()

        before, after = interleaved([lambda: run(strided_attention), lambda: run(ResBlock._attention)], device, repeats)
        out[layout] = {"strided_s": before, "contiguous_s": after, "speedup": before / after}
    return out


def attention(args) -> list[str]:
    from physgen.nets.unet import ResBlock, build_unet

    contiguous = ResBlock._attention
    block = measure_attention(CPU, batch=16, channels=128, resolution=16, repeats=args.repeats)
    net = build_unet("small", 32, 3)
    x, c = torch.randn(8, 3, 32, 32), torch.rand(8)

    def whole(fn):
        ResBlock._attention = fn
        try:
            net(x, c).square().mean().backward()
        finally:
            ResBlock._attention = contiguous

    w_old, w_new = interleaved([lambda: whole(strided_attention), lambda: whole(contiguous)], CPU, args.repeats)
    rows = [f"| attention of one block, 16 x 384 x 16 x 16 ({layout}) | {r['strided_s'] * 1e3:.1f} | {r['contiguous_s'] * 1e3:.1f} | {r['speedup']:.3f} |"
            for layout, r in block.items()]
    return [
        "U-Net attention, forward + backward, interleaved (strided: SDPA's math path; contiguous: its fused CPU kernel):", "",
        "| workload | strided q/k/v (before) (ms) | contiguous channels (ms) | before / after |", "|---|---:|---:|---:|",
        *rows,
        f"| whole `small` U-Net, batch 8 x 3 x 32 x 32 | {w_old * 1e3:.1f} | {w_new * 1e3:.1f} | {w_old / w_new:.3f} |",
    ]


def training(args) -> list[str]:
    from bench_images import measure_train

    rows: dict = {"reference": [], "fp32": []}
    for _ in range(args.rounds):
        for name in rows:
            r = measure_train(name, arch="tiny", resolution=16, batch=64, steps=args.train_steps, warmup=2, device=CPU)
            rows[name].append(r["ms_per_step"])
    ref, ours = statistics.median(rows["reference"]), statistics.median(rows["fp32"])
    return [
        f"Training step, `tiny` U-Net 3 x 16 x 16, batch 64, PFGM++ D = 2048, fp32; {args.rounds} alternating runs of "
        f"{args.train_steps} timed steps (after 2) each, medians:", "",
        "| loop | ms per step | ratio to the reference |", "|---|---:|---:|",
        f"| reference (`benchlib.reference_train`: EDM / PFGM++ loop) | {ref:.1f} | 1.000 |",
        f"| physgen (`physgen.training.train`) | {ours:.1f} | {ours / ref:.3f} |",
    ]


def sampling(args) -> list[str]:
    import solvers
    from bench_images import sampling_field

    process, field = sampling_field("tiny", 16, 3, CPU)
    sched = edm_grid(process, 18)
    x0 = torch.randn(64, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * float(sched[0])
    s_b = torch.ones(64)
    flow = process.flow(field)
    free = FreeDenoiser(x0)
    free_flow = process.flow(free)
    with torch.no_grad():
        nfe = solvers.solve(flow, x0, sched, method="heun").stats.nfe
        ratio, t_solve, t_field = paired_ratio(lambda: solvers.solve(flow, x0, sched, method="heun"), lambda: field(x0, s_b), nfe, CPU, args.repeats)
        ratio_ref, t_ref, _ = paired_ratio(lambda: reference_heun_sampler(field, x0, sched), lambda: field(x0, s_b), nfe, CPU, args.repeats)
        own, own_ref = interleaved([lambda: solvers.solve(free_flow, x0, sched, method="heun"), lambda: reference_heun_sampler(free, x0, sched)],
                                   CPU, max(args.repeats, 15))
    return [
        f"Heun, {nfe} NFE on PFGM++'s default schedule (18 steps), `tiny` U-Net field 3 x 16 x 16, batch 64:", "",
        "| sampler | solve (ms) | solve / (NFE x forward) | own time, free field (ms) | own-time ratio to the reference |",
        "|---|---:|---:|---:|---:|",
        f"| physgen `solvers.solve(..., method=\"heun\")` | {t_solve * 1e3:.1f} | {ratio:.3f} | {own * 1e3:.2f} | {own / own_ref:.2f} |",
        f"| reference (`benchlib.reference_heun_sampler`, float64 state) | {t_ref * 1e3:.1f} | {ratio_ref:.3f} | {own_ref * 1e3:.2f} | 1.00 |",
        "", f"One forward: {t_field * 1e3:.2f} ms.",
    ]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--rounds", type=int, default=5, help="alternating training runs per loop")
    p.add_argument("--train-steps", type=int, default=6)
    p.add_argument("--parts", default="ema,attention,training,sampling")
    p.add_argument("--write", action="store_true")
    p.add_argument("--results", type=Path, default=Path(__file__).resolve().parent / "RESULTS.md")
    args = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    parts = {"ema": ema, "attention": attention, "training": training, "sampling": sampling}
    lines: list[str] = []
    for name in args.parts.split(","):
        part = parts[name](args) + [""]
        print("\n".join(part), flush=True)
        lines += part
    lines.append(f"Machine: {machine(CPU)}; load average at the end (1/5/15 min): {' / '.join(f'{v:.1f}' for v in os.getloadavg())}.  "
                 f"Command: `OMP_NUM_THREADS=1 python benchmarks/bench_parity.py{' --write' if args.write else ''}`.")
    body = "\n".join(lines)
    print("\n" + body)
    if args.write:
        write_section(args.results, HEADING, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
