"""Exact-field throughput and memory (issues 2 and 13).

1. Rate: 10k queries x 10k data points in 2-D, the exact EDM denoiser, as a fraction of
   the rate of the equivalent matmul (``X @ Y.T``, the [10k, 10k] product of the same
   operands) on the same machine and threads.  Target >= 0.5.
2. Scaling (issue 13): the rate at 10k x ``--p-large`` (100k) points against the rate at
   10k x 10k and against a naive block implementation (the augmented GEMM, ``torch.softmax``
   and ``w @ Y`` on ``[rows, P]`` blocks of the same size), at sigma = 0.5 and at a small
   sigma where most relative weights underflow; ``--baseline REV`` adds the exact field
   of git revision ``REV`` (its ``physgen/fields/exact.py``) to the same interleaved runs.
3. Memory: 100k x 100k in a subprocess; peak resident memory (ru_maxrss) must stay
   under 4 GiB.

    python benchmarks/bench_exact_field.py [--device cpu|cuda] [--threads N] [--skip-large]
        [--skip-scaling] [--baseline REV] [--sigmas 0.5,0.05]
"""
from __future__ import annotations

import argparse
import importlib.util
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import interleaved, timeit  # noqa: E402


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


def naive_blocks(x, points, s, chunk_elems: int):
    """The obvious code in the same block size: rows of ``chunk_elems // P`` queries, the
    augmented GEMM, ``torch.softmax`` and ``w @ Y`` (no weight floor, no streaming)."""
    from physgen.processes import EDM

    prof = EDM().exact_field(points).log_profile
    xa = prof.augment(x, s)
    ya = torch.cat([points, (points * points).sum(1, keepdim=True)], dim=1)
    rows = max(1, chunk_elems // points.shape[0])
    return torch.cat([torch.softmax(xa[r:r + rows] @ ya.T, dim=1) @ points for r in range(0, x.shape[0], rows)])


def load_baseline(rev: str):
    """``posterior_mean`` and ``GaussianProfile`` of ``physgen/fields/exact.py`` at git revision ``rev``."""
    root = Path(__file__).resolve().parents[1]
    src = subprocess.run(["git", "-C", str(root), "show", f"{rev}:physgen/fields/exact.py"], check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "exact_baseline.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("physgen.fields._exact_baseline", path)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "physgen.fields"  # its relative imports (.labels) resolve against the current package
    spec.loader.exec_module(module)
    return module


def scaling(args) -> list[str]:
    """Interleaved rates (M pairs/s) at q x p and q x p_large, ours / naive / baseline."""
    from physgen.fields.exact import DEFAULT_CHUNK_ELEMS
    from physgen.processes import EDM

    device = torch.device(args.device)
    g = torch.Generator(device=device).manual_seed(0)
    q = args.n
    pts_large = torch.randn(args.p_large, 2, generator=g, device=device)
    pts_small = pts_large[: args.n]
    x = torch.randn(q, 2, generator=g, device=device)
    base = load_baseline(args.baseline) if args.baseline else None
    lines = [f"| sigma | implementation | {q}x{args.n} (M pairs/s, best of {args.repeats}) | {q}x{args.p_large} (M pairs/s) | large / small |",
             "|---:|---|---:|---:|---:|"]
    for sigma in (float(v) for v in args.sigmas.split(",")):
        s = torch.full((q,), sigma, device=device)
        impls = {"physgen (this tree)": lambda pts: EDM().exact_field(pts)(x, s),
                 "naive blocks (softmax, same block size)": lambda pts: naive_blocks(x, pts, s, DEFAULT_CHUNK_ELEMS)}
        if base is not None:
            prof = base.GaussianProfile(EDM().coefficients)
            impls[f"physgen at {args.baseline}"] = lambda pts: base.posterior_mean(x, pts, s, prof)
        fns = [(lambda f=f, pts=pts: f(pts)) for f in impls.values() for pts in (pts_small, pts_large)]
        times = interleaved(fns, device, args.repeats, stat=min)  # best of the interleaved runs: the load of a shared machine only adds time
        ref = EDM().exact_field(pts_large.double())(x.double(), s.double())
        for k, name in enumerate(impls):
            t_small, t_large = times[2 * k], times[2 * k + 1]
            r_small, r_large = q * args.n / t_small / 1e6, q * args.p_large / t_large / 1e6
            err = (impls[name](pts_large).double() - ref).abs().max().item()
            lines.append(f"| {sigma:g} | {name} (max err vs float64 {err:.1e}) | {r_small:.0f} | {r_large:.0f} | {r_large / r_small:.2f} |")
        print("\n".join(lines[-len(impls):]), flush=True)
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--skip-large", action="store_true")
    ap.add_argument("--skip-scaling", action="store_true")
    ap.add_argument("--p-large", type=int, default=100_000)
    ap.add_argument("--sigmas", default="0.5,0.05")
    ap.add_argument("--baseline", default=None, help="git revision whose exact field joins the scaling runs")
    ap.add_argument("--repeats", type=int, default=3)
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
    t_field = timeit(lambda: field(x, s), args.device, 5, warmup=1)
    t_mm = timeit(lambda: x @ pts.T, args.device, 5, warmup=1)
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, device {args.device}, threads {args.threads}")
    print(f"| n | exact field s | matmul s | rate ratio (matmul time / field time) |")
    print(f"|---|---|---|---|")
    print(f"| {args.n}x{args.n} | {t_field:.4f} | {t_mm:.4f} | {t_mm / t_field:.2f} |")
    if not args.skip_scaling:
        print("\n".join(scaling(args)))
    if not args.skip_large:
        subprocess.run([sys.executable, __file__, "--large", "100000", "--device", args.device, "--threads", str(args.threads)], check=True)


if __name__ == "__main__":
    main()
