"""PFGM++ training-step benchmark (not a test): kernel draw + loss + backward + Adam step.

For the toy MLP (``MLP(2, hidden=256, depth=3)``, batch 4096) and the tiny U-Net
(``build_unet("tiny", 16, 1)``, batch 64 of 1x16x16) and several ``D``: the median wall
time of a full training step, samples per second, and the share of the step spent drawing
the perturbation (``sample_scales`` + ``kernel.sample_offsets``, timed alone on the same
shapes; target < 2%).  ``D = inf`` is EDM's Gaussian draw, for reference.

    python benchmarks/bench_pfgmpp_train.py [--device cuda] [--repeats 15] [--write]

``--write`` puts the table into ``benchmarks/RESULTS.md`` under
``## PFGM++ training step (issue 3)`` (only that section is added or replaced).
"""
from __future__ import annotations

import argparse
import math
import platform
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import timeit  # noqa: E402
from physgen.nets.mlp import MLP  # noqa: E402
from physgen.processes.pfgmpp import PFGMpp  # noqa: E402

SECTION = "## PFGM++ training step (issue 3)"


def bench(name, make_net, shape, Ds, device, repeats):
    rows = []
    g = torch.Generator(device=device).manual_seed(0)
    y = torch.randn(shape, generator=g, device=device).clamp(-1, 1)
    for D in Ds:
        process = PFGMpp(D=D, sigma_max=80.0, sigma_data=0.5)
        torch.manual_seed(0)
        field = process.precondition(make_net()).to(device)
        opt = torch.optim.Adam(field.parameters(), lr=1e-4)

        def step():
            loss = process.loss(field, y, generator=g).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        def draw():
            s = process.sample_scales(shape[0], generator=g, device=device)
            return process.kernel.sample_offsets(shape, s, g, device, y.dtype)

        t_step = timeit(step, device, repeats, warmup=3)
        t_draw = timeit(draw, device, max(repeats, 30), warmup=3)
        rows.append((name, math.prod(shape[1:]), shape[0], "inf" if D == math.inf else str(D), t_step * 1e3, shape[0] / t_step, t_draw * 1e3, 100 * t_draw / t_step))
        print(f"  {name} D={rows[-1][3]}: step {t_step * 1e3:.2f} ms, draw {t_draw * 1e3:.3f} ms ({rows[-1][7]:.2f}%)", file=sys.stderr, flush=True)
    return rows


def machine(device) -> str:
    cpu = ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        keep = ("Model name", "CPU(s)", "Thread(s) per core")
        cpu = "; ".join(" ".join(line.split()) for line in out.splitlines() if line.split(":")[0].strip() in keep)
    except (OSError, subprocess.SubprocessError):
        cpu = platform.processor()
    gpu = f"; GPU: {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    try:
        load = subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip().split("load average:")[-1].strip()
    except (OSError, subprocess.SubprocessError):
        load = "?"
    return (f"python {platform.python_version()}, torch {torch.__version__}, device `{device}`{gpu}; {cpu}; "
            f"torch threads: {torch.get_num_threads()}; load average at the end (1, 5, 15 min): {load}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--D", default="1,128,2048,inf", help="comma-separated D values")
    ap.add_argument("--toy-batch", type=int, default=4096)
    ap.add_argument("--unet-batch", type=int, default=64)
    ap.add_argument("--write", action="store_true", help="write the table into benchmarks/RESULTS.md")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    Ds = [math.inf if v.strip() == "inf" else int(v) for v in args.D.split(",")]

    rows = bench("toy MLP 2-256x3-2", lambda: MLP(2, hidden=256, depth=3), (args.toy_batch, 2), Ds, device, args.repeats)
    unet_path = Path(__file__).resolve().parents[1] / "physgen" / "nets" / "unet.py"
    if unet_path.exists():
        from physgen.nets.unet import build_unet

        net_name = "tiny U-Net 1x16x16"
        rows += bench(net_name, lambda: build_unet("tiny", 16, 1), (args.unet_batch, 1, 16, 16), Ds, device, max(5, args.repeats // 3))

    lines = [
        SECTION,
        "",
        "One PFGM++ training step = draw σ (log-normal) and the kernel offset (`b/(1-b)` as a ratio of two "
        "Gamma draws from `physgen.random`, a direction on the sphere), EDM-preconditioned denoiser loss, "
        "backward, Adam step.  `draw` is `sample_scales` + `kernel.sample_offsets` timed alone on the same "
        "shape; *share* = draw / step (target < 2%).  D = inf is EDM's Gaussian draw (reference).  Medians "
        f"over {args.repeats} steps (U-Net: {max(5, args.repeats // 3)}) after 3 warm-up steps.",
        "",
        "| network | N | batch | D | step (ms) | samples/s | draw (ms) | draw share |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]:.2f} | {r[5]:.0f} | {r[6]:.3f} | {r[7]:.2f}% |")
    lines += ["", f"Machine: {machine(device)}.  Reproduce: `OMP_NUM_THREADS=1 python benchmarks/bench_pfgmpp_train.py "
              f"--device {device.type} --write`" + ("" if device.type == "cuda" else " (CPU only: no GPU was lent to the "
              "session that wrote this; `--device cuda` times the same device-side draw on a GPU)") + ".", ""]
    table = "\n".join(lines)
    print(table)
    if args.write:
        path = Path(__file__).resolve().parent / "RESULTS.md"
        text = path.read_text() if path.exists() else "# Benchmark results\n"
        if SECTION in text:
            start = text.index(SECTION)
            nxt = text.find("\n## ", start + len(SECTION))
            text = text[:start] + table + ("\n" + text[nxt + 1 :] if nxt >= 0 else "")
        else:
            text = text.rstrip("\n") + "\n\n" + table
        path.write_text(text)
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
