"""Exact-field throughput and memory (issue 2).

1. Rate: 10k queries x 10k data points in 2-D, the exact EDM denoiser, as a fraction of
   the rate of the equivalent matmul (``X @ Y.T``, the [10k, 10k] product of the same
   operands) on the same machine and threads.  Target >= 0.5.
2. Memory: 100k x 100k in a subprocess; peak resident memory (ru_maxrss) must stay
   under 4 GiB.

    python benchmarks/bench_exact_field.py [--device cpu|cuda] [--threads N] [--skip-large]
"""
from __future__ import annotations

import argparse
import platform
import resource
import subprocess
import sys
import time

import torch


def timeit(fn, repeat=5):
    fn()
    times = []
    for _ in range(repeat):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


def large(n: int, device: str) -> None:
    from physgen.processes import EDM

    g = torch.Generator(device=device).manual_seed(0)
    pts = torch.randn(n, 2, generator=g, device=device)
    x = torch.randn(n, 2, generator=g, device=device)
    t = time.perf_counter()
    d = EDM().exact_field(pts)(x, torch.full((n,), 0.5, device=device))
    assert torch.isfinite(d).all()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    print(f"{n}x{n}: {time.perf_counter() - t:.1f} s, peak RSS {rss:.2f} GiB")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--skip-large", action="store_true")
    ap.add_argument("--large", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.large:
        large(args.large, args.device)
        return
    from physgen.processes import EDM

    g = torch.Generator(device=args.device).manual_seed(0)
    pts = torch.randn(args.n, 2, generator=g, device=args.device)
    x = torch.randn(args.n, 2, generator=g, device=args.device)
    s = torch.full((args.n,), 0.5, device=args.device)
    field = EDM().exact_field(pts)
    t_field = timeit(lambda: field(x, s))
    t_mm = timeit(lambda: x @ pts.T)
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, device {args.device}, threads {args.threads}")
    print(f"| n | exact field s | matmul s | rate ratio (matmul time / field time) |")
    print(f"|---|---|---|---|")
    print(f"| {args.n}x{args.n} | {t_field:.4f} | {t_mm:.4f} | {t_mm / t_field:.2f} |")
    if not args.skip_large:
        subprocess.run([sys.executable, __file__, "--large", "100000", "--device", args.device, "--threads", str(args.threads)], check=True)


if __name__ == "__main__":
    main()
