"""Solver overhead benchmark (not a test).

For each fixed-step solver: wall time of one solve of ``--n`` 2-D points with a small MLP
field at ``--steps`` steps (EDM schedule ending at 0), divided by ``NFE x`` the measured
time of one call of that field on the batch.  1.00 means the solver adds nothing to the
field's cost.  Then Heun three ways on the same denoiser field: ours, torchdiffeq's
fixed-grid ``heun2`` (the same method) and a plain k-diffusion-style inline loop.

    python benchmarks/bench_solvers.py [--device cuda] [--n 10000] [--steps 18] [--write]

``--write`` puts the table into ``benchmarks/RESULTS.md`` under
``## Solver overhead (issue 2/6)`` (only that section is replaced).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import solvers  # noqa: E402
from benchlib import interleaved, machine, paired_ratio, timeit, write_section  # noqa: E402

HEADING = "## Solver overhead (issue 2/6)"
FIXED = ["euler", "midpoint", "heun", "rk3", "rk4", "lms", "dpm2", "dpmpp-2m", "dpmpp-3m", "dpmpp-2s", "unipc-bh1", "unipc-bh2", "deis",
         "ipndm", "dpm-fast"]


class MLP(nn.Module):
    """``(x [B,2], s [B]) -> [B,2]``: 3 -> 256 -> 256 -> 256 -> 2 with SiLU (input: x and log s)."""

    def __init__(self, width: int = 256):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(3, width), nn.SiLU(),
            nn.Linear(width, width), nn.SiLU(),
            nn.Linear(width, width), nn.SiLU(),
            nn.Linear(width, 2),
        )

    def forward(self, x, s):
        return self.net(torch.cat([x, s.log()[:, None]], dim=1))


class FreeField:
    """A field that costs (almost) nothing: returns a fixed tensor of the right shape.

    Solving with it measures the solver's own work (Python, scale bookkeeping, the
    elementwise updates) without the field."""

    def __init__(self, like):
        self.out = torch.zeros_like(like)

    def __call__(self, x, s):
        return self.out


class DenoiserFlow:
    """``dx/ds = (x - D(x, s))/s`` with ``D`` the MLP."""

    def __init__(self, net):
        self.denoise = net

    def __call__(self, x, s):
        return (x - self.denoise(x, s)) / s[:, None]


NOTES = """
How to read this.  "Measured" divides two wall times taken seconds apart, so on a shared
machine it carries the load noise of the MLP time (on the 2-core VM below, shared by several
jobs, single MLP calls vary by +-20%, and the column scatters on both sides of 1).  The last
column measures the solver's own work directly: the same solve with a field that returns a
fixed tensor (Python, scale bookkeeping and the elementwise updates), divided by NFE x the
MLP time; it is insensitive to load.  "Own time" in the Heun table is measured the same way
(free denoiser, same flow wrapper): torchdiffeq's fixed-grid loop (0-d time tensors,
per-step interpolation bookkeeping, time reversal by negating the field) and the plain loop
(a `sigma * ones` tensor per evaluation, extra temporaries, and `sigmas[i + 1] == 0`, which
is a device sync on a GPU) do more work per step than ours; with a field this size that
work is still small next to the field on a CPU."""


def plain_heun_loop(denoise, x, sigmas):
    """Heun (EDM Alg. 1) written inline, k-diffusion style: sigmas on the device, the
    per-sample scale built each step as ``sigma * ones``, ``d = (x - D) / sigma[:, None]``."""
    ones = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i] * ones, sigmas[i + 1] * ones
        d = (x - denoise(x, s)) / s[:, None]
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x2 = x + d * dt
            d2 = (x2 - denoise(x2, s_next)) / s_next[:, None]
            x = x + (d + d2) / 2 * dt
    return x


def run(args) -> str:
    device = torch.device(args.device)
    torch.manual_seed(0)
    net = MLP().to(device).eval()
    flow = DenoiserFlow(net)
    x0 = torch.randn(args.n, 2, device=device) * 80.0
    sched = solvers.edm_schedule(args.steps, 0.002, 80.0)
    s_b = torch.full((args.n,), 1.0, device=device)
    out = []
    with torch.inference_mode():
        t_net = timeit(lambda: net(x0, s_b), device, args.repeats, inner=20)
        t_flow = timeit(lambda: flow(x0, s_b), device, args.repeats, inner=20)
        out.append(f"Field: MLP 3->256->256->256->2 (SiLU) on x and log s, batch {args.n} x 2, float32, "
                   f"schedule `edm_schedule({args.steps}, 0.002, 80)` ({args.steps} steps, the last to 0 by Euler).  "
                   f"One MLP call: {t_net * 1e6:.1f} us; one velocity call (x - D)/s: {t_flow * 1e6:.1f} us.  "
                   f"Overhead ratio: median over {args.repeats} runs of (solve time) / (time of NFE back-to-back MLP calls "
                   f"measured right after it), after warm-up.\n")
        out.append("| solver | NFE | field called | solve time (ms) | NFE x MLP time (ms) | overhead ratio (measured) "
                   "| solver's own time (ms) | overhead ratio (1 + own / (NFE x MLP)) |")
        out.append("|---|---:|---|---:|---:|---:|---:|---:|")
        # RK/LMS methods call the velocity field (the MLP itself); DPM methods call denoise (the MLP).
        velocity = net
        free_v, free_d = FreeField(x0), DenoiserFlow(FreeField(x0))
        rows = [(name, {}) for name in FIXED] + [("dopri5", {"rtol": 1e-3, "atol": 1e-3}), ("dpm-adaptive", {"rtol": 1e-3, "atol": 1e-3})]
        for name, opts in rows:
            dpm = solvers.get_solver(name).target == "denoiser"
            field, free = (flow, free_d) if dpm else (velocity, free_v)
            nfe = solvers.solve(field, x0, sched, method=name, **opts).stats.nfe
            ratio, t, tf = paired_ratio(lambda: solvers.solve(field, x0, sched, method=name, **opts),
                                        lambda: net(x0, s_b), nfe, device, args.repeats)
            if solvers.get_solver(name).adaptive:  # the free field has other dynamics: its step count would differ
                own = float("nan")
            else:
                own = timeit(lambda: solvers.solve(free, x0, sched, method=name), device, args.repeats)
            label = f"{name} (rtol=atol=1e-3, informative)" if opts else name
            out.append(f"| {label} | {nfe} | {'denoise = MLP' if dpm else 'MLP'} | {t * 1e3:.2f} | {nfe * tf * 1e3:.2f} | "
                       f"{ratio:.3f} | {own * 1e3:.3f} | {1 + own / (nfe * tf):.4f} |")

        out.append("\nHeun on the denoiser flow `(x - D)/s`, three implementations (same NFE):\n")
        out.append("| implementation | NFE | wall time (ms) | ratio to ours | own time, free field (ms) | own-time ratio to ours |")
        out.append("|---|---:|---:|---:|---:|---:|")
        sig_dev = sched.to(device=device, dtype=x0.dtype)
        t_ours, t_td, t_plain = interleaved(
            [lambda: solvers.heun(flow, x0, sched),
             lambda: solvers.solve(flow, x0, sched, method="torchdiffeq:heun2"),
             lambda: plain_heun_loop(net, x0, sig_dev)],
            device, args.repeats)
        free = FreeField(x0)
        free_flow = DenoiserFlow(free)
        o_ours, o_td, o_plain = interleaved(
            [lambda: solvers.heun(free_flow, x0, sched),
             lambda: solvers.solve(free_flow, x0, sched, method="torchdiffeq:heun2"),
             lambda: plain_heun_loop(free, x0, sig_dev)],
            device, max(args.repeats, 15))
        nfe = 2 * args.steps - 1
        ref = solvers.heun(flow, x0, sched).x
        diff_td = (solvers.solve(flow, x0, sched, method="torchdiffeq:heun2").x - ref).abs().max().item()
        diff_plain = (plain_heun_loop(net, x0, sig_dev) - ref).abs().max().item()
        out.append(f"| solvers.heun | {nfe} | {t_ours * 1e3:.2f} | 1.000 | {o_ours * 1e3:.3f} | 1.00 |")
        out.append(f"| torchdiffeq heun2 (fixed grid, via adapter) | {nfe} | {t_td * 1e3:.2f} | {t_td / t_ours:.3f} "
                   f"| {o_td * 1e3:.3f} | {o_td / o_ours:.2f} |")
        out.append(f"| plain inline loop (sigmas on device) | {nfe} | {t_plain * 1e3:.2f} | {t_plain / t_ours:.3f} "
                   f"| {o_plain * 1e3:.3f} | {o_plain / o_ours:.2f} |")
        out.append(f"\nMax |difference| of the results vs ours: torchdiffeq {diff_td:.1e}, plain loop {diff_plain:.1e}.")
        out.append(NOTES)
        out.append(f"\nMachine: {machine(device)}; load average at the end (1/5/15 min): "
                   f"{' / '.join(f'{v:.1f}' for v in os.getloadavg())}.")
    return "\n".join(out)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--steps", type=int, default=18)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    p.add_argument("--results", type=Path, default=Path(__file__).resolve().parent / "RESULTS.md")
    args = p.parse_args(argv)
    table = run(args)
    print(table)
    if args.write:
        write_section(args.results, HEADING, table)
        print(f"\nwrote section {HEADING!r} of {args.results}")


if __name__ == "__main__":
    main()
