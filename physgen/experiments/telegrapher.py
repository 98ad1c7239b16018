"""Telegrapher (Kac flows): the kernel's shape, a ladder of a from ballistic to diffusive, the prior's mismatch, quality per NFE against EDM.

The damped wave equation as a generative process (Duong, Chemseddine, Friz, Steidl,
arXiv 2506.20641; GenPhys's dissipative fix of the wave equation, arXiv 2304.02637), run
end to end with exact fields of a point set:

1. ``kernel``: the 1-D Kac law at a few t (``a = c = 1``): its two atoms, the Bessel density
   inside the light cone, a histogram of the exact sampler, and the Gaussian of the same
   variance (the diffusive limit);
2. ``ladder``: on the two-mode mixture ``0.2 N((-2,0), 0.3²) + 0.8 N((2,0), 0.3²)`` (a point
   set with exactly 20% on the left), for ``a`` from ballistic (``a L/c ≪ 1`` at the data
   scale ``L ≈ 2``) to diffusive, at ``c = 1``: the left-mode weight and sliced W2 to fresh
   data after ``--steps`` and ``--fine-steps`` DPM-Solver++(2M) steps, samples and
   trajectories;
3. ``prior``: the mismatch between the prior (the Kac law at ``t_max`` around the data mean,
   and its Gaussian limit ``N(mean, σ_max²)``) and the true marginal ``p_data * k_{t_max}``:
   per-coordinate KS and W1/σ_max computed from the CDFs (no sampling noise), at the
   process default ``σ_max = 80`` and at the toy pipeline's (the data's largest pairwise
   distance);
4. ``nfe``: quality per NFE against EDM on the same points, same σ range, same solvers
   (DPM-Solver++(2M) and Heun): sliced W2 to fresh data and the left-weight error.

Writes ``ladder.csv``, ``prior.csv``, ``nfe.csv``, ``summary.md`` and the figures
``kernel.png``, ``ladder.png``, ``nfe.png`` (matplotlib Agg).  The default takes about 10
minutes on 2 shared CPU cores; ``--quick`` is a smoke test.
"""
from __future__ import annotations

import csv
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from physgen.config import arg, parse_seed
from physgen.sampling import grid, sample, warn_stray_runs
from physgen.errors import UserError
from physgen.noise import SeededNoise
from physgen.metrics import mode_weights, sliced_w2
from physgen.processes import make_process
from physgen.kernels.kac import kac_log_density, kac_variance, kac_offsets
from physgen.io import atomic_write, ensure_dir, write_json, save_figure

__all__ = ["add_arguments", "run", "run_experiment"]

OUTPUTS = ("ladder.csv", "prior.csv", "nfe.csv", "summary.md", "config.json", "kernel.png", "ladder.png", "nfe.png")  # into --out
CENTERS = torch.tensor([[-2.0, 0.0], [2.0, 0.0]])


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="runs/telegrapher", help="output folder")
    parser.add_argument("--a-values", default="0.1,0.3,1,3,10", help="comma-separated flip rates a of the ladder (c = --c)")
    parser.add_argument("--c", type=float, default=1.0, help="Kac speed of the ladder")
    parser.add_argument("--nfe-a", default="1,10", help="comma-separated a of the quality-per-NFE comparison")
    parser.add_argument("--nfe", default="6,10,18,30,50", help="comma-separated step counts of the comparison")
    parser.add_argument("--sigma-max", type=float, default=80.0, help="σ_max of every sampling run (the process default)")
    parser.add_argument("--n-data", type=int, default=1000, help="points in each exact field")
    parser.add_argument("--n-particles", type=int, default=2000, help="samples per run")
    parser.add_argument("--steps", type=int, default=18, help="DPM-Solver++(2M) steps of the ladder")
    parser.add_argument("--fine-steps", type=int, default=60, help="the ladder's fine run (0: skip)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test, numbers are noisy)")
    parser.add_argument("--seed", type=arg(parse_seed), default=0)


def _numbers(text: str, flag: str, integer: bool = False) -> list:
    try:
        vals = [(int if integer else float)(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{flag} must be comma-separated {'integers' if integer else 'numbers'}, got {text!r}") from None
    if not vals or any(not (v > 0 and math.isfinite(v)) for v in vals):
        raise UserError(f"{flag} must be positive, got {text!r}")
    return vals


def _stratified(n: int, g: torch.Generator) -> torch.Tensor:
    """``n`` points of the two-mode mixture with exactly ``round(0.2 n)`` in the left mode."""
    n_left = round(0.2 * n)
    eps = 0.3 * torch.randn(n, 2, generator=g)
    return torch.cat([CENTERS[0].expand(n_left, 2), CENTERS[1].expand(n - n_left, 2)]) + eps


def _sample(process, field, n, steps, solver, seed, trajectory=False, shift=None):
    x0 = process.sample_prior((n, 2), noise=SeededNoise(seed, range(n)))
    if shift is not None:
        x0 = x0 + shift
    t0 = time.perf_counter()
    with torch.no_grad():
        sol = sample(process, field, x0, grid(process, steps, method=solver), solver, return_trajectory=trajectory)
    return sol, time.perf_counter() - t0


def _quality(x, reference) -> dict:
    finite = torch.isfinite(x).all(1)
    return {"left": float(mode_weights(x, CENTERS)[0]), "sliced_w2": sliced_w2(x[finite], reference), "nonfinite": int((~finite).sum())}


def _ladder(args, points, reference, log) -> tuple[list, dict]:
    rows, samples = [], {}
    for a in args.a_values:
        p = make_process("telegrapher", a=a, c=args.c, sigma_max=args.sigma_max, prior_mean=points.mean(0).tolist())
        field = p.exact_field(points)
        for steps in [args.steps] + ([args.fine_steps] if args.fine_steps else []):
            sol, wall = _sample(p, field, args.n_particles, steps, "dpmpp-2m", args.seed, trajectory=steps == args.steps)
            q = _quality(sol.x, reference)
            sigma_data_scale = 2.0  # the modes' half distance: a t at σ = L decides ballistic vs diffusive
            at_data = a * p.t_of_sigma(sigma_data_scale)
            rows.append({"a": a, "c": args.c, "aL_over_c": a * 2.0 / args.c, "at_at_sigma_2": at_data, "steps": steps, "nfe": sol.stats.nfe, **q,
                         "stray_fraction": sol.stats.extra.get("stray_fraction"), "wall_s": wall})
            if steps == args.steps:
                samples[a] = (sol.x, sol.stats.trajectory)
            print(f"  ladder a={a:<5g} c={args.c:g} steps={steps:<3d} left={q['left']:.3f} sw2={q['sliced_w2']:.3f} ({wall:.1f}s)", file=log, flush=True)
    return rows, samples


def _kac_cdf(a: float, c: float, t: float):
    """The 1-D Kac law's CDF at time ``t`` as a function of ``δ`` (tabulated, atoms included)."""
    tt = torch.tensor(t, dtype=torch.float64)
    ct = c * t
    half = min(ct, 14.0 * math.sqrt(float(kac_variance(tt, a, c))))  # the continuous part's bulk
    grid = torch.linspace(-half, half, 40001, dtype=torch.float64)
    dens = kac_log_density(grid, tt, a, c).exp()
    cum = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(0.5 * (dens[1:] + dens[:-1]) * (grid[1:] - grid[:-1]), 0)])
    atom = math.exp(-a * t) / 2

    def cdf(delta: torch.Tensor) -> torch.Tensor:
        inner = atom + torch.from_numpy(np.interp(delta.numpy(), grid.numpy(), cum.numpy()))
        return torch.where(delta < -ct, 0.0, torch.where(delta >= ct, 1.0, inner))

    return cdf


def _prior_mismatch(args, points, log) -> list:
    """Per-coordinate distance from the prior to the true marginal ``p_data * k_{t_max}``, from CDFs.

    KS = sup_x |F_true − F_prior| and W1 = ∫ |F_true − F_prior| dx (divided by σ_max), the
    worse of the two coordinates; ``F_true(x) = mean_j F_kac(x − y_j)``.  No sampling noise.
    """
    toy_sigma_max = float(torch.cdist(points[:2000].double(), points[:2000].double()).max())
    mean = points.double().mean(0)
    rows = []
    for a in sorted({min(args.a_values), 1.0, max(args.a_values)}):
        for sigma_max, which in ((args.sigma_max, "process default"), (toy_sigma_max, "toy default (largest pairwise distance)")):
            p = make_process("telegrapher", a=a, c=args.c, sigma_max=sigma_max)
            cdf = _kac_cdf(a, args.c, p.t_max)
            row = {"a": a, "c": args.c, "sigma_max": sigma_max, "which": which, "t_max": p.t_max, "a_t_max": a * p.t_max}
            ks, w1 = {"kac": 0.0, "gaussian": 0.0}, {"kac": 0.0, "gaussian": 0.0}
            for i in range(points.shape[1]):
                y = points[:, i].double()
                lo, hi = float(y.min()) - 8 * sigma_max, float(y.max()) + 8 * sigma_max
                x = torch.linspace(lo, hi, 4001, dtype=torch.float64)
                truth = torch.stack([cdf(x - yj) for yj in y]).mean(0)
                priors = {"kac": cdf(x - mean[i]), "gaussian": 0.5 * torch.erfc(-(x - mean[i]) / (sigma_max * math.sqrt(2)))}
                for name, f in priors.items():
                    diff = (truth - f).abs()
                    ks[name] = max(ks[name], float(diff.max()))
                    w1[name] = max(w1[name], float(torch.trapezoid(diff, x)) / sigma_max)
            row.update(kac_ks=ks["kac"], gaussian_ks=ks["gaussian"], kac_w1_over_sigma=w1["kac"], gaussian_w1_over_sigma=w1["gaussian"])
            rows.append(row)
            print(f"  prior a={a:g} σ_max={sigma_max:.3g} (a t_max = {a * p.t_max:.3g}): KS kac {ks['kac']:.3g} gaussian {ks['gaussian']:.3g}; "
                  f"W1/σ kac {w1['kac']:.3g} gaussian {w1['gaussian']:.3g}", file=log, flush=True)
    return rows


def _nfe_comparison(args, points, reference, log) -> list:
    rows = []
    runs = [("edm", None)] + [("telegrapher", a) for a in args.nfe_a]
    for name, a in runs:
        opts = {"sigma_max": args.sigma_max}
        if name == "telegrapher":
            opts.update(a=a, c=args.c, prior_mean=points.mean(0).tolist())
        p = make_process(name, **opts)
        field = p.exact_field(points)
        for solver in ("dpmpp-2m", "heun"):
            for steps in args.nfe:
                # EDM's prior is centred at 0; centre it on the data mean as the telegrapher's is (its ODE is
                # translation-equivariant): at σ_max = 80 the offset alone put 0.207 instead of 0.200 on the left
                shift = points.mean(0) if name == "edm" else None
                sol, wall = _sample(p, field, args.n_particles, steps, solver, args.seed, shift=shift)
                q = _quality(sol.x, reference)
                rows.append({"process": name, "a": a if a is not None else float("nan"), "solver": solver, "steps": steps, "nfe": sol.stats.nfe,
                             **q, "left_error": abs(q["left"] - 0.2), "stray_fraction": sol.stats.extra.get("stray_fraction"), "wall_s": wall})
                print(f"  nfe {name:11s} a={a if a is not None else '-'!s:<4} {solver:8s} nfe={sol.stats.nfe:<3d} left={q['left']:.3f} sw2={q['sliced_w2']:.3f} ({wall:.1f}s)", file=log, flush=True)
    return rows


def run_experiment(args, log=None) -> dict:
    log = log or sys.stderr
    out = ensure_dir(args.out)
    args.a_values = _numbers(args.a_values, "--a-values")
    args.nfe_a = _numbers(args.nfe_a, "--nfe-a")
    args.nfe = _numbers(args.nfe, "--nfe", integer=True)
    if not (args.c > 0 and math.isfinite(args.c)):
        raise UserError(f"--c must be a positive number, got {args.c}")
    if args.quick:
        args.n_data, args.n_particles = min(args.n_data, 100), min(args.n_particles, 200)
        args.steps, args.fine_steps = min(args.steps, 6), min(args.fine_steps, 10)
        args.a_values, args.nfe_a, args.nfe = args.a_values[::2], args.nfe_a[:1], args.nfe[:2]
    for name in ("n_data", "n_particles", "steps"):
        if getattr(args, name) < 2:
            raise UserError(f"--{name.replace('_', '-')} must be >= 2, got {getattr(args, name)}")
    t_start = time.perf_counter()
    g = torch.Generator().manual_seed(args.seed)
    points = _stratified(args.n_data, g)
    reference = _stratified(max(args.n_particles, 500), torch.Generator().manual_seed(args.seed + 1))
    print("kernel shape", file=log)
    _kernel_figure(out / "kernel.png")
    print("ladder of a (two-mode mixture, target 0.2 on the left):", file=log)
    ladder, samples = _ladder(args, points, reference, log)
    print("prior mismatch:", file=log)
    prior = _prior_mismatch(args, points, log)
    print("quality per NFE, telegrapher vs EDM:", file=log)
    nfe = _nfe_comparison(args, points, reference, log)
    wall = time.perf_counter() - t_start
    warn_stray_runs([(f"ladder a={r['a']:g} steps={r['steps']}", r["stray_fraction"]) for r in ladder]
                    + [(f"{r['process']} a={r['a']:g} {r['solver']}@{r['steps']}", r["stray_fraction"]) for r in nfe], log)
    for name, rows in (("ladder", ladder), ("prior", prior), ("nfe", nfe)):
        _write_csv(out / f"{name}.csv", rows)
    _ladder_figure(out / "ladder.png", samples, points, args)
    _nfe_figure(out / "nfe.png", nfe)
    with atomic_write(out / "summary.md", "w") as f:
        f.write(_summary(ladder, prior, nfe, args, wall))
    write_json(out / "config.json", {k: v for k, v in vars(args).items() if k != "func"})
    print(f"wrote {out}/ladder.csv, prior.csv, nfe.csv, summary.md, kernel.png, ladder.png, nfe.png ({wall:.0f}s)", file=log)
    return {"ladder": ladder, "prior": prior, "nfe": nfe, "wall_s": wall}


def run(args) -> int:
    run_experiment(args)
    return 0


def _write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    with atomic_write(path, "w") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


def _plt():
    import matplotlib  # heavy optional dependency: imported only where it is used

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy optional dependency: imported only where it is used

    return plt


def _kernel_figure(path: Path, a: float = 1.0, c: float = 1.0, times=(0.25, 1.0, 4.0)) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, len(times), figsize=(4.2 * len(times), 3.6))
    g = torch.Generator().manual_seed(0)
    for ax, t in zip(axes, times):
        ct = c * t
        tt = torch.tensor(t, dtype=torch.float64)
        grid = torch.linspace(-ct, ct, 801, dtype=torch.float64)[1:-1]
        dens = kac_log_density(grid, tt, a, c).exp()  # the continuous part: mass 1 − e^{−at}
        n = 100_000
        draws, atom = kac_offsets((n,), torch.full((n,), t, dtype=torch.float64), a, c, g, dtype=torch.float64, return_atoms=True)
        bins = 80
        ax.hist(draws[~atom].numpy(), bins=bins, range=(-ct, ct), weights=np.full(int((~atom).sum()), bins / (2 * ct * n)), alpha=0.35,
                color="tab:blue", label="sampler, continuous part")
        ax.plot(grid, dens, color="tab:blue", label="Bessel density inside the cone")
        var = float(kac_variance(tt, a, c))
        xs = torch.linspace(-1.3 * ct, 1.3 * ct, 400, dtype=torch.float64)
        ax.plot(xs, torch.exp(-0.5 * xs**2 / var) / math.sqrt(2 * math.pi * var), "k--", lw=1, label="Gaussian, same variance")
        top = ax.get_ylim()[1]
        mass = math.exp(-a * t) / 2
        ax.vlines([-ct, ct], 0, top, colors="tab:red", lw=2.5, label=f"atoms at ±ct: mass {mass:.3f} each")
        ax.set(title=f"Kac law, a = {a:g}, c = {c:g}, t = {t:g} (at = {a * t:g})", xlabel="δ = X_t − X_0", ylim=(0, top))
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def _ladder_figure(path: Path, samples: dict, points, args) -> None:
    plt = _plt()
    keys = list(samples)
    fig, axes = plt.subplots(2, len(keys), figsize=(3.2 * len(keys), 6.4), squeeze=False)
    for j, a in enumerate(keys):
        x, traj = samples[a]
        left = float((x[:, 0] < 0).double().mean())
        ax = axes[0, j]
        ax.scatter(points[:, 0], points[:, 1], s=1, c="0.75")
        ax.scatter(x[:, 0], x[:, 1], s=2, c=np.where(x[:, 0].numpy() < 0, "tab:orange", "tab:blue"))
        ax.set(title=f"a = {a:g} (aL/c = {2 * a / args.c:g}): left {left:.2f}", xlim=(-4, 4), ylim=(-3, 3), aspect="equal")
        ax = axes[1, j]
        if traj is not None:
            tr = traj[:, :40]
            for i in range(tr.shape[1]):
                ax.plot(tr[:, i, 0], tr[:, i, 1], lw=0.6, alpha=0.7)
            ax.scatter(tr[-1, :, 0], tr[-1, :, 1], s=6, c="k", zorder=3)
        ax.set(title="trajectories (prior → data)", xlim=(-8, 8), ylim=(-6, 6), aspect="equal")
    fig.suptitle(f"telegrapher, exact field of {points.shape[0]} points, c = {args.c:g}, {args.steps} DPM-Solver++(2M) steps: ballistic (left) to diffusive (right)")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def _nfe_figure(path: Path, rows: list) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    def key(r):  # EDM has no a (NaN, which is never equal to itself)
        return r["process"], _a_text(r["a"]), r["solver"]

    for run in sorted({key(r) for r in rows}):
        proc, a, solver = run
        rr = [r for r in rows if key(r) == run]
        label = f"{proc}{'' if a == '-' else ' a=' + a} {solver}"
        style = "--" if proc == "edm" else "-"
        axes[0].plot([r["nfe"] for r in rr], [r["sliced_w2"] for r in rr], style, marker="o", label=label)
        axes[1].plot([r["nfe"] for r in rr], [max(r["left_error"], 1e-3) for r in rr], style, marker="o", label=label)
    axes[0].set(xscale="log", yscale="log", xlabel="NFE", ylabel="sliced W2 to fresh data", title="quality per NFE (exact fields, same points)")
    axes[1].set(xscale="log", yscale="log", xlabel="NFE", ylabel="|left weight − 0.2| (floored at 1e-3)", title="mode weight error")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def _a_text(a: float) -> str:
    return "-" if math.isnan(a) else f"{a:g}"


def _summary(ladder, prior, nfe, args, wall) -> str:
    lines = ["# Telegrapher (Kac flows) experiment", "", f"Exact fields of {args.n_data} points of the two-mode mixture (exactly 20% left), "
             f"{args.n_particles} samples per run, σ_max = {args.sigma_max:g}, c = {args.c:g}; {wall:.0f} s in all.", "",
             "## Ladder of a (DPM-Solver++(2M)); target 0.200 on the left", "",
             "| a | aL/c | at at σ = 2 | steps | NFE | left | sliced W2 |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['a']:g} | {r['aL_over_c']:.3g} | {r['at_at_sigma_2']:.3g} | {r['steps']} | {r['nfe']} | {r['left']:.3f} | {r['sliced_w2']:.3f} |" for r in ladder]
    lines += ["", "## Prior mismatch to the true marginal p_data * k_{t_max} (per coordinate, the worse one; from CDFs)", "",
              "| a | σ_max | which | a t_max | KS, Kac law at the mean | KS, Gaussian at the mean | W1/σ_max, Kac | W1/σ_max, Gaussian |",
              "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['a']:g} | {r['sigma_max']:.3g} | {r['which']} | {r['a_t_max']:.4g} | {r['kac_ks']:.2g} | {r['gaussian_ks']:.2g} | "
              f"{r['kac_w1_over_sigma']:.2g} | {r['gaussian_w1_over_sigma']:.2g} |" for r in prior]
    lines += ["", "## Quality per NFE against EDM (same points, same σ range)", "", "| process | a | solver | NFE | left | sliced W2 |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['process']} | {_a_text(r['a'])} | {r['solver']} | {r['nfe']} | {r['left']:.3f} | {r['sliced_w2']:.3f} |" for r in nfe]
    lines += ["", f"Command: `physgen experiment telegrapher --out DIR{' --quick' if args.quick else ''}`.", ""]
    return "\n".join(lines)
