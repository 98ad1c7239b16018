"""D-sweep: PFGM++ robustness and ease of training against D (1 ... 2048, inf = EDM) on a 2-D toy, sklearn digits and a 1000-dim set.

Tests the claim of PFGM++ (Xu et al. 2023, arXiv 2302.04265, §5-6.2): smaller ``D``
(heavier-tailed kernels) makes sampling more robust to perturbations, larger ``D`` makes the
network easier to train, with ``D → ∞`` recovering diffusion (EDM).

For each data set and each ``D`` an MLP neural field is trained with PFGM++'s objective
(EDM's loss with the Student-t kernel, :class:`physgen.processes.pfgmpp.PFGMpp`) for a fixed
budget, then sampled with Heun on EDM's schedule, unperturbed and under the three §6.2
perturbations of :mod:`physgen.robustness`:

* noise ``x += α σ ε`` after every step, ``α ∈ --alphas`` (paper: 0, 0.1, 0.2);
* fewer steps, ``--few-steps`` (baseline ``--steps``);
* post-training weight quantisation to ``--bits`` bits (paper: 5 to 9).

Quality is the sliced Wasserstein-2 distance between samples and held-out data (and, for
the unperturbed sampler, the MMD); *degradation* is the sliced W2 under a perturbation minus
the unperturbed one (same prior noise).  Ease of training is the unperturbed quality (and
the final training loss) after the fixed budget.  A trend with D is reported only when its
rank correlation is at least 0.5 in size and its spread across D exceeds half the metric's
noise floor (the sliced W2 between two independent data samples of the same size); ``D``
that failed to train are left out of the robustness trends.

Data sets (``--dims``): ``toy`` = the 2-D set named by ``--dataset``; ``digits`` = sklearn's
8x8 digits scaled to ``[-1, 1]`` and flattened (64 dims, 1797 images: 80% train, 20%
held out); ``hd`` = two clusters (weights 0.3/0.7) in a 10-dim latent, mapped into 1000
dims by a fixed random matrix with orthonormal columns.

**Scales from the data.**  ``sigma_data`` = the per-coordinate std of the training set;
``sigma_max`` = its largest pairwise distance (NCSNv2, arXiv 2006.09011, technique 1: the
prior must cover any two points; PFGM++'s prior radius is then ``r_max = σ_max √D``, the
same ``σ_max`` for every ``D`` as in the paper); EDM's ``σ_min = 0.002`` and
``P_mean = -1.2`` are for ``σ_data = 0.5``, so ``σ_min = 0.002 σ_data/0.5`` and
``P_mean = -1.2 + ln(σ_data/0.5)``.

Writes ``results.csv`` (one row per data set, D and setting), ``d_sweep.png`` and
``summary.md`` (which says whether the claim held here).  The default takes a few minutes
on 2 CPU cores; ``--train-steps``, ``--dims``, ``--D-values`` shrink it.
"""
from __future__ import annotations

import csv
import io
import math
import sys
import time
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

from physgen.sampling import warn_stray_runs, sample
from physgen.config import arg, parse_seed, parse_D
from physgen.errors import UserError, unknown_name
from physgen.data import load_toy
from physgen.nets.mlp import MLP
from physgen.training import TrainConfig, train as train_loop
from physgen.metrics import mmd, sliced_w2
from physgen.noise import SeededNoise
from physgen.robustness import budget_schedule, quantize_weights, sample_with_noise
from physgen.io import save_figure, ensure_dir, atomic_write
from physgen.processes.pfgmpp import PFGMpp
from physgen.runtime import initial_weights, resolve_device

__all__ = ["add_arguments", "run", "make_dataset", "parse_D_values", "spearman"]

DEFAULT_D = "1,4,16,64,128,2048,inf"
OUTPUTS = ("results.csv", "d_sweep.png", "summary.md")  # what the experiment writes into --out
DIMS = ("toy", "digits", "hd")


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="runs/d_sweep", help="output folder")
    parser.add_argument("--dataset", default="8gaussians", help="the 2-D toy set of the 'toy' run (physgen toy --dataset names)")
    parser.add_argument("--dims", default="toy,digits,hd", help="comma-separated data sets: toy, digits, hd")
    parser.add_argument("--D-values", dest="D_values", default=DEFAULT_D, help=f"comma-separated D (positive integers or inf); default {DEFAULT_D}")
    parser.add_argument("--train-steps", type=int, default=600, help="training steps per (data set, D): the fixed budget")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--hidden", type=int, default=None, help="MLP width (default: 128 for toy, 256 otherwise)")
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--steps", type=int, default=18, help="Heun schedule points of the unperturbed sampler (2*steps-1 NFE)")
    parser.add_argument("--alphas", default="0.1,0.2", help="noise-injection strengths α (besides 0)")
    parser.add_argument("--few-steps", default="5,8,12", help="reduced step counts")
    parser.add_argument("--bits", default="5,6,7,8,9", help="weight-quantisation bit widths")
    parser.add_argument("--n-samples", type=int, default=600, help="samples per setting (digits: at most its held-out size)")
    parser.add_argument("--seed", type=arg(parse_seed), default=0)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for torch (default 1: these small MLPs are bound by per-op overhead, and on a "
                             "shared 2-core machine two threads ran 2-4x slower than one)")


# ------------------------------------------------------------------------------ parsing
def parse_D_values(text: str) -> list:
    values = [v.strip() for v in str(text).split(",") if v.strip()]
    if not values:
        raise UserError("--D-values needs at least one value")
    return [parse_D(v, "--D-values: each D") for v in values]


def _parse_list(text: str, cast, name: str, lo=None) -> list:
    out = []
    for v in (s.strip() for s in str(text).split(",")):
        if not v:
            continue
        try:
            x = cast(v)
        except ValueError:
            raise UserError(f"--{name}: not a number: {v!r}") from None
        if lo is not None and not x >= lo:
            raise UserError(f"--{name}: values must be >= {lo}, got {x}")
        out.append(x)
    return out


def _label(D) -> str:
    return "inf" if D == math.inf else str(int(D))


# ------------------------------------------------------------------------------ data
def make_dataset(kind: str, toy_name: str, seed: int, n_train: int = 8000, n_test: int = 1000) -> tuple[str, Tensor, Tensor]:
    """``(name, train [n, d], held_out [m, d])`` float32 for ``kind`` in :data:`DIMS`."""
    g = torch.Generator().manual_seed(seed)
    if kind == "toy":
        ds = load_toy(toy_name)
        if ds.dim != 2:
            raise UserError(f"--dataset must be a 2-D set, {toy_name!r} has {ds.dim} dims")
        train = ds.sample(n_train, g)
        test = ds.sample(n_test, torch.Generator().manual_seed(seed + 1_000_003))
        return f"toy:{toy_name}", train, test
    if kind == "digits":
        from sklearn.datasets import load_digits  # heavy optional dependency: imported only where it is used

        x = torch.from_numpy(load_digits().data).float() / 8.0 - 1.0  # pixels 0..16 -> [-1, 1]
        perm = torch.randperm(x.shape[0], generator=g)
        cut = int(0.8 * x.shape[0])
        return "digits", x[perm[:cut]], x[perm[cut:]]
    if kind == "hd":
        latent_dim, dim = 10, 1000
        basis, _ = torch.linalg.qr(torch.randn(dim, latent_dim, generator=torch.Generator().manual_seed(12345)))

        def draw(n, gen):
            which = (torch.rand(n, generator=gen) < 0.3).float()
            centre = torch.zeros(n, latent_dim)
            centre[:, 0] = torch.where(which > 0, -3.0, 3.0)
            return (centre + 0.5 * torch.randn(n, latent_dim, generator=gen)) @ basis.T

        return "hd-1000", draw(n_train, g), draw(n_test, torch.Generator().manual_seed(seed + 1_000_003))
    raise unknown_name("d-sweep data set", kind, DIMS)


def data_scales(train: Tensor) -> dict:
    """``sigma_data``, ``sigma_max``, ``sigma_min``, ``p_mean`` from the data (module docstring)."""
    sub = train[:2000].double()
    sd = float(sub.std())
    return {"sigma_data": sd, "sigma_max": float(torch.cdist(sub, sub).max()), "sigma_min": 0.002 * sd / 0.5,
            "p_mean": -1.2 + math.log(sd / 0.5)}


# ------------------------------------------------------------------------------ statistics
def spearman(a: list, b: list) -> float:
    """Spearman rank correlation (average ranks for ties); NaN when undefined."""
    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(v):
            j = i
            while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r

    pairs = [(x, y) for x, y in zip(a, b) if math.isfinite(y)]
    if len(pairs) < 3:
        return float("nan")
    ra, rb = ranks([p[0] for p in pairs]), ranks([p[1] for p in pairs])
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va, vb = sum((x - ma) ** 2 for x in ra), sum((y - mb) ** 2 for y in rb)
    return cov / math.sqrt(va * vb) if va > 0 and vb > 0 else float("nan")


# ------------------------------------------------------------------------------ one (data set, D)
def _train_field(process, train: Tensor, args, hidden: int, device, seed: int):
    with initial_weights(seed):
        field = process.precondition(MLP(train.shape[1], hidden=hidden, depth=args.depth)).to(device)
    data = train.to(device)

    def batch(n, g):
        return data[torch.randint(0, data.shape[0], (n,), generator=g, device=g.device)], None

    cfg = TrainConfig(steps=args.train_steps, batch=args.batch, lr=args.lr, warmup_steps=min(100, max(1, args.train_steps // 10)),
                      log_every=max(1, args.train_steps), seed=seed)
    result = train_loop(process, field, batch, cfg, device=device, log_stream=io.StringIO())
    tail = result.losses[-max(1, len(result.losses) // 10):]
    return result.ema, sum(tail) / len(tail)


def _evaluate(process, field, test: Tensor, args, device, alphas, few_steps, bits, seed: int) -> list[dict]:
    n = min(args.n_samples, test.shape[0])
    ref = test[:n].to(device)
    noise = SeededNoise(seed, range(n))
    x0 = process.sample_prior((n, test.shape[1]), noise=noise, device=device)
    rows = []

    def measure(kind, value, fld, steps, alpha=0.0):
        with torch.no_grad():
            sched = budget_schedule(process, steps)
            if alpha > 0:
                sol = sample_with_noise(process, fld, x0, sched, "heun", alpha=alpha, noise=SeededNoise(seed + 7, range(n)))
            else:
                sol = sample(process, fld, x0, sched, "heun")
        x = sol.x
        finite = torch.isfinite(x).all(1)
        sw = sliced_w2(x[finite], ref) if int(finite.sum()) >= 2 else float("nan")
        # MMD (costly in 1000 dims) for the unperturbed quality only; robustness uses sliced W2
        mm = mmd(x[finite], ref) if kind == "baseline" and int(finite.sum()) >= 2 else float("nan")
        rows.append({"perturbation": kind, "value": value, "nfe": sol.stats.nfe, "sliced_w2": sw, "mmd": mm,
                     "nonfinite": int((~finite).sum()), "stray_fraction": sol.stats.extra.get("stray_fraction")})  # None: noisy_solve

    measure("baseline", 0, field, args.steps)
    for a in alphas:
        measure("alpha", a, field, args.steps, alpha=a)
    for k in few_steps:
        measure("steps", k, field, k)
    for b in bits:
        measure("bits", b, quantize_weights(field, b), args.steps)
    base = rows[0]["sliced_w2"]
    for r in rows:
        r["degradation"] = r["sliced_w2"] - base
    return rows


# ------------------------------------------------------------------------------ reporting
def _plot(rows: list[dict], datasets: list[str], Ds: list, path: Path, floors: Optional[dict] = None) -> None:
    import matplotlib  # heavy optional dependency: imported only where it is used

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy optional dependency: imported only where it is used

    cols = ("baseline", "alpha", "steps", "bits")
    titles = {"baseline": "quality after the budget (sliced W2, log)", "alpha": "degradation: noise α (symlog)",
              "steps": "degradation: fewer Heun steps (symlog)", "bits": "degradation: k-bit weights (symlog)"}
    fig, axes = plt.subplots(len(datasets), 4, figsize=(18, 3.6 * len(datasets)), squeeze=False)
    xs = list(range(len(Ds)))
    labels = [_label(D) for D in Ds]
    for i, ds in enumerate(datasets):
        for j, kind in enumerate(cols):
            ax = axes[i][j]
            sub = [r for r in rows if r["dataset"] == ds and r["perturbation"] == kind]
            for value in sorted({r["value"] for r in sub}):
                ys = []
                for D in Ds:
                    hit = [r for r in sub if r["D"] == _label(D) and r["value"] == value]
                    ys.append(hit[0]["sliced_w2" if kind == "baseline" else "degradation"] if hit else float("nan"))
                name = {"baseline": "unperturbed", "alpha": f"α={value}", "steps": f"{value} steps", "bits": f"{value} bits"}[kind]
                ax.plot(xs, ys, marker="o", label=name)
            ax.set_xticks(xs)
            ax.set_xticklabels(labels)
            ax.set_xlabel("D")
            if kind == "baseline":
                ax.set_yscale("log")  # a D that failed to train would flatten the others
            else:
                ax.axhline(0.0, color="grey", lw=0.6)
                floor = (floors or {}).get(ds)
                if floor:  # linear within ±floor/10, logarithmic beyond
                    ax.set_yscale("symlog", linthresh=floor / 10)
            ax.set_title(f"{ds}: {titles[kind]}", fontsize=9)
            ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def _trend(Ds_sorted: list[str], values: dict, order: dict) -> tuple[float, float]:
    """(Spearman rho of rank(D) vs value, spread max - min) over the D present in ``values``."""
    keys = [k for k in Ds_sorted if k in values and math.isfinite(values[k])]
    if not keys:
        return float("nan"), float("nan")
    vals = [values[k] for k in keys]
    return spearman([order[k] for k in keys], vals), max(vals) - min(vals)


def _verdicts(rows: list[dict], datasets: list[str], Ds: list, floors: dict) -> dict:
    """Per data set: trends of degradation (robustness) and unperturbed quality (training) with D.

    A trend counts when ``|rho| >= 0.5`` *and* its spread across D exceeds half the noise
    floor of the metric (the sliced W2 between two independent data samples of the size
    compared).  D whose unperturbed sliced W2 is worse than ``2 x best + floor`` failed to
    train within the budget; their degradations are measured from a failed baseline, so
    they are left out of the robustness trends (not out of the training trend).
    """
    labels = [_label(D) for D in sorted(Ds)]
    order = {k: i for i, k in enumerate(labels)}
    stats = {}
    for ds in datasets:
        sub = [r for r in rows if r["dataset"] == ds]
        base = {r["D"]: r["sliced_w2"] for r in sub if r["perturbation"] == "baseline"}
        finite = [v for v in base.values() if math.isfinite(v)]
        best = min(finite) if finite else float("nan")
        failed = [k for k in labels if k in base and not (base[k] <= 2 * best + floors[ds])]
        st = {"floor": floors[ds], "failed": failed}
        for kind in ("alpha", "steps", "bits"):
            per_D: dict = {}
            for r in sub:
                if r["perturbation"] == kind and r["D"] not in failed:
                    per_D.setdefault(r["D"], []).append(r["degradation"])
            st[kind] = _trend(labels, {k: sum(v) / len(v) for k, v in per_D.items()}, order)
        st["quality"] = _trend(labels, base, order)
        st["loss"] = _trend(labels, {r["D"]: r["final_loss"] for r in sub if r["perturbation"] == "baseline"}, order)
        stats[ds] = st
    return stats


def _word(trend: tuple, floor: float, larger_value_means_claim: bool) -> str:
    rho, spread = trend
    if not math.isfinite(rho):
        return "undetermined"
    if abs(rho) < 0.5 or not spread > 0.5 * floor:
        return "no clear trend"
    return "held" if (rho > 0) == larger_value_means_claim else "reversed"


def _summary(rows: list[dict], datasets: list[str], Ds: list, stats: dict, args, wall: float, scales: dict) -> str:
    head = ["# D-sweep: PFGM++ robustness and ease of training against D", ""]
    head.append(f"Budget: {args.train_steps} training steps (batch {args.batch}, lr {args.lr}) per (data set, D), one seed; "
                f"Heun with {args.steps} schedule points ({2 * args.steps - 1} NFE) unperturbed; wall time {wall / 60:.1f} min.")
    head.append("Quality: sliced W2 between samples and held-out data (lower is better); degradation = perturbed minus "
                "unperturbed sliced W2 (same prior noise).  Trend: Spearman rank correlation with D (inf ranked largest); it "
                "counts when |rho| >= 0.5 and its spread across D exceeds half the metric's noise floor (the sliced W2 between "
                "two independent data samples of the same size).  D that failed to train (unperturbed sliced W2 above "
                "2 x best + floor) are left out of the robustness trends.")
    body = []
    rob_votes, train_votes = [], []
    for ds in datasets:
        st, sc = stats[ds], scales[ds]
        body += [f"## {ds}", ""]
        body.append(f"sigma_data = {sc['sigma_data']:.3g}, sigma_max = {sc['sigma_max']:.3g} (largest pairwise distance); "
                    f"noise floor of the sliced W2 = {st['floor']:.4f}"
                    + (f"; failed to train: D = {', '.join(st['failed'])}" if st["failed"] else ""))
        body.append("")
        first = [r for r in rows if r["dataset"] == ds and r["D"] == _label(Ds[0])]
        cols = [f"{r['perturbation']}={r['value']}" for r in first if r["perturbation"] != "baseline"]
        line = "| D | final loss | sliced W2 | MMD | " + " | ".join(cols) + " |"
        body += [line, "|" + "---|" * (line.count("|") - 1)]
        for D in Ds:
            sub = [r for r in rows if r["dataset"] == ds and r["D"] == _label(D)]
            b = sub[0]
            body.append(f"| {_label(D)} | {b['final_loss']:.4g} | {b['sliced_w2']:.4f} | {b['mmd']:.4f} | "
                        + " | ".join(f"{r['degradation']:+.3f}" for r in sub[1:]) + " |")
        body.append("")
        for kind, name in (("alpha", "noise injection"), ("steps", "fewer steps"), ("bits", "weight quantisation")):
            w = _word(st[kind], st["floor"], True)
            rob_votes.append(w)
            body.append(f"- robustness to {name}: degradation vs D rho = {st[kind][0]:+.2f}, spread {st[kind][1]:.4f} "
                        f"-> smaller D more robust: **{w}**")
        w = _word(st["quality"], st["floor"], False)
        train_votes.append(w)
        body.append(f"- ease of training: unperturbed sliced W2 vs D rho = {st['quality'][0]:+.2f}, spread {st['quality'][1]:.4f} "
                    f"-> larger D better after the budget: **{w}** (final loss vs D rho = {st['loss'][0]:+.2f}; the losses "
                    "of different kernels are not strictly comparable)")
        body.append("")

    def overall(votes):
        held, rev = votes.count("held"), votes.count("reversed")
        if held and not rev and held >= len(votes) / 2:
            return "held"
        if rev and not held and rev >= len(votes) / 2:
            return "was reversed"
        return "did not clearly hold"

    failures = "; ".join(f"{ds}: D = {', '.join(stats[ds]['failed'])}" for ds in datasets if stats[ds]["failed"])
    loss_down = sum(1 for ds in datasets if stats[ds]["loss"][0] <= -0.5)
    verdict = (f"**Verdict here.** Smaller D more robust: **{overall(rob_votes)}** ({rob_votes.count('held')} of {len(rob_votes)} "
               f"perturbation x data-set trends agree, {rob_votes.count('reversed')} reversed, the rest within noise).  "
               f"Larger D trains more easily: **{overall(train_votes)}** ({train_votes.count('held')} of {len(train_votes)} "
               f"data sets agree on sample quality, {train_votes.count('reversed')} reversed; the final loss falls with D on "
               f"{loss_down} of {len(datasets)}).  "
               + (f"Failed to train within the budget: {failures}.  " if failures else "")
               + "Small MLPs, small budgets, one seed: read the tables, not only the words.")
    return "\n".join(head + ["", verdict, ""] + body) + "\n"


# ------------------------------------------------------------------------------ main
def run(args) -> int:
    """Run the sweep (see the module docstring); subnormal floats are flushed to zero meanwhile."""
    # heavy-tailed kernels (small D) feed huge inputs to the MLP, and SiLU then produces
    # subnormal floats, which x86 CPUs process many times slower: flush them to zero

    if int(args.threads) <= 0:
        raise UserError(f"--threads must be > 0, got {args.threads}")
    threads = torch.get_num_threads()
    torch.set_num_threads(int(args.threads))
    torch.set_flush_denormal(True)
    try:
        return _run(args)
    finally:
        torch.set_flush_denormal(False)
        torch.set_num_threads(threads)


def _run(args) -> int:
    Ds = parse_D_values(args.D_values)
    kinds = [k.strip() for k in str(args.dims).split(",") if k.strip()]
    for k in kinds:
        if k not in DIMS:
            raise UserError(f"unknown --dims entry {k!r}; valid: {', '.join(DIMS)}")
    if not kinds:
        raise UserError("--dims needs at least one of: " + ", ".join(DIMS))
    alphas = _parse_list(args.alphas, float, "alphas", lo=0.0)
    few_steps = [int(v) for v in _parse_list(args.few_steps, int, "few-steps", lo=2)]
    bits = [int(v) for v in _parse_list(args.bits, int, "bits", lo=2)]
    for name in ("train_steps", "batch", "steps", "n_samples", "depth"):
        if int(getattr(args, name)) <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    if args.steps < 2:
        raise UserError(f"--steps must be >= 2, got {args.steps}")
    device = resolve_device(args.device)
    out = ensure_dir(args.out)

    t_start = time.perf_counter()
    total = len(kinds) * len(Ds)
    done = 0
    rows: list[dict] = []
    datasets: list[str] = []
    scales: dict = {}
    floors: dict = {}
    log = sys.stderr
    print(f"[d-sweep] {len(kinds)} data set(s) x {len(Ds)} D = {total} trainings of {args.train_steps} steps on {device}", file=log, flush=True)
    for kind in kinds:
        name, train, test = make_dataset(kind, args.dataset, args.seed)
        datasets.append(name)
        sc = data_scales(train)
        scales[name] = sc
        n_eval = min(args.n_samples, test.shape[0])

        floors[name] = sliced_w2(train[-n_eval:], test[:n_eval])  # two independent samples of the data
        hidden = args.hidden or (128 if kind == "toy" else 256)
        for D in Ds:
            t0 = time.perf_counter()
            process = PFGMpp(D=D, sigma_min=sc["sigma_min"], sigma_max=sc["sigma_max"], sigma_data=sc["sigma_data"], p_mean=sc["p_mean"])
            field, final_loss = _train_field(process, train, args, hidden, device, args.seed)
            t_train = time.perf_counter() - t0
            res = _evaluate(process, field, test, args, device, alphas, few_steps, bits, args.seed + 1)
            for r in res:
                r.update(dataset=name, D=_label(D), final_loss=final_loss, train_s=t_train)
            rows.extend(res)
            done += 1
            elapsed = time.perf_counter() - t_start
            eta = elapsed / done * (total - done)
            print(f"[d-sweep] {done}/{total} {name} D={_label(D)}: loss {final_loss:.4g}, trained in {t_train:.1f} s, "
                  f"sliced W2 {res[0]['sliced_w2']:.4f} (worst perturbed {max(r['sliced_w2'] for r in res):.4f}); "
                  f"elapsed {elapsed / 60:.1f} min, ETA {eta / 60:.1f} min", file=log, flush=True)

    wall = time.perf_counter() - t_start
    warn_stray_runs([(f"{r['dataset']} D={r['D']} {r['perturbation']}={r['value']}", r["stray_fraction"]) for r in rows], log)
    fields = ["dataset", "D", "perturbation", "value", "nfe", "sliced_w2", "mmd", "degradation", "nonfinite", "stray_fraction", "final_loss",
              "train_s"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})

    with atomic_write(out / "results.csv", "w") as f:
        f.write(buf.getvalue())
    _plot(rows, datasets, Ds, out / "d_sweep.png", floors)
    stats = _verdicts(rows, datasets, Ds, floors)
    with atomic_write(out / "summary.md", "w") as f:
        f.write(_summary(rows, datasets, Ds, stats, args, wall, scales))
    print(f"[d-sweep] done in {wall / 60:.1f} min; wrote {out}/results.csv, d_sweep.png, summary.md", file=log, flush=True)
    return 0
