"""Guidance: class hit rate and sample quality against the guidance scale w, for EDM and PFGM++ (two D), on 8 Gaussians and digits.

Classifier-free guidance (Ho & Salimans, arXiv 2207.12598) and classifier guidance
(Dhariwal & Nichol, arXiv 2105.05233) as implemented in :mod:`physgen.guidance`.

* **Shift exactness** (no training): with the Bayes-optimal classifier of a labelled point
  set, classifier guidance at ``w = 1`` is the exact conditional field for Gaussian kernels
  and an approximation for PFGM++ (error falls like ``1/D``) and Yukawa (falls with ``m z``).
  The mean relative error ``‖D_guided - D(x|y)‖ / ‖D(x|y) - D(x)‖`` is measured over
  ``x ~ p_σ(x | y)`` ("on class", where a guided sampler goes) and ``x ~ p_σ(x)`` ("any x")
  -> ``shift_error.csv``, ``shift_error.png``.
* **8 Gaussians** (label = mode): per process a conditional MLP field trained with label
  dropout and a noise-conditional MLP classifier trained on the process's own kernel; for
  each ``w``: fraction of samples whose nearest mode is the requested one, the mean over
  classes of the sliced W2 distance to fresh data of the class, and the within-class spread
  relative to the data's (CFG with w > 1 sharpens classes, so the spread falls below 1).
  ``--exact`` adds the exact fields of a point set with their Bayes classifiers.
* **digits** (sklearn 8x8, label = digit): the same with an MLP field on the 64 pixels and a
  small CNN classifier; hits are judged by a logistic-regression classifier trained on the
  clean digits, quality by the mean over classes of the MMD to the real digits of the class.

Writes ``guidance.csv`` (one row per dataset, process, field, guidance, w), ``shift_error.csv``,
``summary.json`` and the figures ``shift_error.png``, ``toy_guidance.png``,
``toy_samples.png``, ``digits_guidance.png``, ``digits_samples.png``.  The default run takes
about 5 minutes on 2 CPU cores; ``--quick`` shrinks it to about one, and the ``--*-steps``,
``--n-*`` flags grow it.
"""
from __future__ import annotations

import csv
import io
import math
import sys
import time
from pathlib import Path

import torch

from physgen.config import arg, parse_seed
from physgen.sampling import grid, warn_stray_runs
from physgen.data import load_toy
from physgen.guidance import BayesClassifier, ClassifierGuidance, make_classifier, ClassifierFreeGuidance, sample_guided, bayes_classifier
from physgen.processes import EDM, make_process, data_defaults
from physgen.processes.pfgmpp import PFGMpp
from physgen.processes.yukawa import Yukawa
from physgen.io import save_figure, atomic_write, ensure_dir, write_json
from physgen.nets.mlp import MLP
from physgen.training import TrainConfig, train, train_classifier
from physgen.noise import SeededNoise
from physgen.metrics import sliced_w2, default_bandwidths, mmd
from physgen.images.data import load_digits
from physgen.errors import UserError
from physgen.runtime import initial_weights, resolve_device

__all__ = ["add_arguments", "run", "shift_errors"]

# what the experiment writes into --out
OUTPUTS = ("shift_error.csv", "shift_error.png", "toy_guidance.png", "toy_samples.png", "digits_guidance.png", "digits_samples.png",
           "guidance.csv", "summary.json")


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="runs/guidance", help="output folder")
    parser.add_argument("--D", type=int, nargs="+", default=[4, 128], help="PFGM++ extra dimensions (besides EDM)")
    parser.add_argument("--w", type=float, nargs="+", default=None, help="guidance scales (default 0 0.5 1 2 4 8; --quick: 0 1 4)")
    parser.add_argument("--datasets", nargs="+", default=["8gaussians", "digits"], choices=["8gaussians", "digits"])
    parser.add_argument("--field-steps", type=int, default=1000, help="training steps of each conditional field (toy)")
    parser.add_argument("--digits-field-steps", type=int, default=1000, help="training steps of each digits field")
    parser.add_argument("--classifier-steps", type=int, default=300, help="training steps of each noise classifier")
    parser.add_argument("--hidden", type=int, default=128, help="toy MLP width (fields and classifiers)")
    parser.add_argument("--digits-hidden", type=int, default=192, help="digits MLP field width")
    parser.add_argument("--n-per-class", type=int, default=100, help="toy samples per class")
    parser.add_argument("--digits-per-class", type=int, default=30, help="digit samples per class")
    parser.add_argument("--steps", type=int, default=18, help="Heun steps (35 flow calls)")
    parser.add_argument("--cond-drop", type=float, default=0.1, help="label dropout of the conditional fields")
    parser.add_argument("--cg-base", default="unconditional", choices=["unconditional", "null"],
                        help="field under classifier guidance: a separately trained unconditional MLP (default) or the conditional MLP's null label")
    parser.add_argument("--exact", action="store_true", help="also guide the exact fields of a toy point set")
    parser.add_argument("--n-exact", type=int, default=1000, help="points of the exact fields")
    parser.add_argument("--no-shift-error", action="store_true", help="skip the shift-exactness table")
    parser.add_argument("--quick", action="store_true", help="a ~1 minute smoke run (fewer steps, samples and scales)")
    parser.add_argument("--seed", type=arg(parse_seed), default=0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, auto")


# --------------------------------------------------------------------- shift exactness
def _queries(proc, pts, lab, scale, n, g, on_class, num_classes, z_of=None):
    s = torch.full((n,), float(scale), dtype=torch.float64)
    if z_of is not None:
        s = z_of(s)
    j = torch.randint(0, pts.shape[0], (n,), generator=g)
    x = proc.perturb(pts[j], s, generator=g)
    y = lab[j] if on_class else torch.randint(0, num_classes, (n,), generator=g)
    return x, s, y


def shift_errors(n_points: int = 600, n_queries: int = 200, seed: int = 0, Ds=(4, 8, 32, 128, 512, 2048, math.inf),
                 ms=(0.3, 1.0, 3.0, 10.0, 30.0, 100.0), sigmas=(0.25, 1.0, 4.0)) -> list[dict]:
    """Relative error of the classifier-guided exact field (Bayes classifier, w = 1) on 8 Gaussians."""
    g = torch.Generator().manual_seed(seed)
    pts, lab = load_toy("8gaussians").sample_labelled(n_points, g, dtype=torch.float64)
    cases = [("pfgmpp", D, (EDM() if D == math.inf else PFGMpp(D=D))) for D in Ds]
    cases += [("yukawa", m, Yukawa(m=m)) for m in ms]
    rows = []
    for family, param, proc in cases:
        field = proc.exact_field(pts, lab)
        guided = ClassifierGuidance(field, proc, BayesClassifier.from_field(field), 1.0)
        for sigma in sigmas:
            for on_class in (True, False):
                gq = torch.Generator().manual_seed(seed + 17)
                z_of = getattr(proc, "z_of_sigma", None) if family == "yukawa" else None
                x, s, y = _queries(proc, pts, lab, sigma, n_queries, gq, on_class, 8, z_of)
                cond, uncond = field(x, s, y), field(x, s)
                err = float((guided(x, s, y) - cond).norm(dim=1).mean() / (cond - uncond).norm(dim=1).mean())
                rows.append({"family": family, "D": param if family == "pfgmpp" else "", "m": param if family == "yukawa" else "",
                             "sigma": sigma, "mz": float(proc.m * s[0]) if family == "yukawa" else "", "queries": "on_class" if on_class else "any_x",
                             "exact_formula": guided.exact, "rel_error": err})
    return rows


def _plot_shift_errors(rows, path) -> None:
    import matplotlib  # heavy optional dependency: imported only where it is used

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy optional dependency: imported only where it is used

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for q, ls in (("on_class", "-"), ("any_x", "--")):
        for sigma in sorted({r["sigma"] for r in rows}):
            pf = [r for r in rows if r["family"] == "pfgmpp" and r["queries"] == q and r["sigma"] == sigma and r["D"] != math.inf]
            if pf:
                axes[0].loglog([r["D"] for r in pf], [max(r["rel_error"], 1e-16) for r in pf], ls, marker="o", label=f"σ={sigma:g}, x {q.replace('_', ' ')}")
            yk = [r for r in rows if r["family"] == "yukawa" and r["queries"] == q and r["sigma"] == sigma]
            if yk:
                axes[1].loglog([r["mz"] for r in yk], [max(r["rel_error"], 1e-16) for r in yk], ls, marker="o", label=f"σ(z)={sigma:g}, x {q.replace('_', ' ')}")
    axes[0].set_xlabel("D (PFGM++ extra dimensions)")
    axes[1].set_xlabel("m z (Yukawa)")
    for ax, title in zip(axes, ("PFGM++: σ² ∇log p(y|x,σ) vs exact", "Yukawa: σ(z)² ∇log p(y|x,z) vs exact")):
        ax.set_ylabel("relative error of the guided denoiser")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, which="both")
        if ax.lines:
            ax.legend(fontsize=7)
    fig.suptitle("classifier guidance with the Bayes classifier, w = 1 (exact for Gaussian kernels: error ~1e-16)")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


# ----------------------------------------------------------------------- training bits
def _train_field(process, data, labels, num_classes, *, steps, hidden, depth, cond_drop, seed, device, lr=2e-3, batch=512):
    """A conditional MLP field with label dropout, or (``num_classes = 0``) an unconditional one."""
    dim = int(data[0].numel())
    with initial_weights(seed):
        net = MLP(dim, hidden=hidden, depth=depth, num_classes=num_classes)
    field = process.precondition(net).to(device)

    def sample_batch(n, g):
        idx = torch.randint(0, data.shape[0], (n,), generator=g, device=g.device)
        if num_classes == 0:
            return data[idx], None
        drop = torch.rand(n, generator=g, device=g.device) < cond_drop
        return data[idx], torch.where(drop, torch.full_like(labels[idx], num_classes), labels[idx])

    cfg = TrainConfig(steps=steps, batch=batch, lr=lr, seed=seed, log_every=max(1, steps // 4), warmup_steps=min(100, steps // 5))
    return train(process, field, sample_batch, cfg, device=device, log_stream=io.StringIO()).ema.eval().requires_grad_(False)


def _train_classifier(process, data, labels, num_classes, *, steps, seed, device, arch, hidden=64, width=16, batch=512, lr=2e-3):
    with initial_weights(seed + 1):  # the classifier's seed (as its training's)
        clf = make_classifier(process, data.shape[1:], num_classes, arch=arch, hidden=hidden, depth=2, width=width,
                              sigma_data=getattr(process, "sigma_data", 0.5)).to(device)

    def sample_batch(n, g):
        idx = torch.randint(0, data.shape[0], (n,), generator=g, device=g.device)
        return data[idx], labels[idx]

    cfg = TrainConfig(steps=steps, batch=batch, lr=lr, seed=seed + 1, log_every=max(1, steps // 4), warmup_steps=min(50, steps // 5))
    return train_classifier(process, clf, sample_batch, cfg, device=device, log_stream=io.StringIO()).ema.eval().requires_grad_(False)


def _processes(Ds, data):
    flat = data.reshape(data.shape[0], -1)
    out = [("edm", "", make_process("edm", **data_defaults("edm", flat, {})))]

    opts = data_defaults("edm", flat, {})
    for D in Ds:
        out.append((f"pfgmpp-D{D}", D, PFGMpp(D=D, **opts)))
    return out


def _guided_samples(process, field, guidance, w, labels, shape, *, steps, seed, classifier=None):
    n = labels.shape[0]
    if guidance == "cfg":
        guided = ClassifierFreeGuidance(field, w)
    else:
        guided = ClassifierGuidance(field, process, classifier, w)
    noise = SeededNoise(seed, range(n))
    x0 = process.sample_prior((n, *shape), noise=noise, device=labels.device)
    with torch.no_grad():
        sol = sample_guided(process, guided, x0, grid(process, steps), "heun", noise=noise, label=labels)
    return sol.x, sol.stats


# --------------------------------------------------------------------------- 8 Gaussians
def run_toy(args, device, log) -> tuple[list[dict], dict]:
    ds = load_toy("8gaussians")
    g = torch.Generator().manual_seed(args.seed)
    data, labels = ds.sample_labelled(10_000, g)
    data, labels = data.to(device), labels.to(device)
    means = ds.mixture.means.to(device, torch.float32)
    data_std = float(ds.mixture.stds[0])
    k = 8
    ref_x, ref_y = ds.sample_labelled(8000, torch.Generator().manual_seed(args.seed + 99))
    targets = torch.arange(k, device=device).repeat_interleave(args.n_per_class)
    rows, keep = [], {}
    for name, D, proc in _processes(args.D, data):
        variants = []
        t0 = time.perf_counter()
        field = _train_field(proc, data, labels, k, steps=args.field_steps, hidden=args.hidden, depth=3, cond_drop=args.cond_drop,
                             seed=args.seed, device=device)
        base = field if args.cg_base == "null" else _train_field(proc, data, labels, 0, steps=args.field_steps, hidden=args.hidden,
                                                                 depth=3, cond_drop=0.0, seed=args.seed, device=device)
        clf = _train_classifier(proc, data, labels, k, steps=args.classifier_steps, seed=args.seed, device=device, arch="mlp", hidden=args.hidden)
        log(f"8gaussians {name}: trained fields and classifier in {time.perf_counter() - t0:.0f}s")
        variants.append(("mlp", {"cfg": field, "classifier": base}, clf))
        if args.exact:
            pts, pl = ds.sample_labelled(args.n_exact, torch.Generator().manual_seed(args.seed + 5))
            ex = proc.exact_field(pts.to(device), pl.to(device))
            variants.append(("exact", {"cfg": ex, "classifier": ex}, bayes_classifier(ex)))
        for fname, fields, c in variants:
            for guidance in ("cfg", "classifier"):
                for w in args.w:
                    x, stats = _guided_samples(proc, fields[guidance], guidance, w, targets, (2,), steps=args.steps, seed=args.seed, classifier=c)
                    x = x.float()
                    nearest = torch.cdist(x, means).argmin(1)
                    hit = float((nearest == targets).double().mean())
                    sw2, spread = [], []
                    for cls in range(k):
                        xs = x[targets == cls]
                        sw2.append(sliced_w2(xs.cpu(), ref_x[ref_y == cls][:2000].float(), n_projections=64))
                        own = xs[nearest[targets == cls] == cls]
                        if own.shape[0] > 2:
                            spread.append(float((own - means[cls]).pow(2).sum(1).mean().sqrt()) / (math.sqrt(2) * data_std))
                    row = {"dataset": "8gaussians", "process": name, "D": D, "field": fname, "guidance": guidance, "w": w,
                           "hit_rate": hit, "class_sliced_w2": sum(sw2) / k, "spread_ratio": sum(spread) / max(1, len(spread)),
                           "class_mmd": "", "nfe": stats.nfe, "flow_evaluations": stats.extra.get("flow_evaluations"),
                           "classifier_evaluations": stats.extra.get("classifier_evaluations"),
                           "stray_fraction": stats.extra.get("stray_fraction")}
                    rows.append(row)
                    log(f"  {name:>12} {fname:>5} {guidance:>10} w={w:<4g} hit={hit:.3f} sw2={row['class_sliced_w2']:.3f} spread={row['spread_ratio']:.2f} nfe={stats.nfe}")
                    if fname == "mlp" and guidance == "cfg":
                        keep[(name, w)] = (x.cpu(), targets.cpu())
    return rows, keep


# --------------------------------------------------------------------------------- digits
def run_digits(args, device, log) -> tuple[list[dict], dict]:
    from sklearn.linear_model import LogisticRegression  # heavy optional dependency: imported only where it is used

    ds = load_digits()
    data, labels = ds.images.to(device), ds.labels.to(device)
    k = ds.num_classes
    flat = ds.images.reshape(len(ds.images), -1).numpy()
    judge = LogisticRegression(max_iter=3000).fit(flat, ds.labels.numpy())
    targets = torch.arange(k, device=device).repeat_interleave(args.digits_per_class)
    real = {c: ds.images[ds.labels == c].reshape(-1, 64).double() for c in range(k)}
    bands = {c: default_bandwidths(real[c]) for c in range(k)}
    rows, keep = [], {}
    for name, D, proc in _processes(args.D, data):
        t0 = time.perf_counter()
        kw = dict(steps=args.digits_field_steps, hidden=args.digits_hidden, depth=3, seed=args.seed, device=device, lr=1e-3, batch=256)
        field = _train_field(proc, data, labels, k, cond_drop=args.cond_drop, **kw)
        fields = {"cfg": field, "classifier": field if args.cg_base == "null" else _train_field(proc, data, labels, 0, cond_drop=0.0, **kw)}
        clf = _train_classifier(proc, data, labels, k, steps=args.classifier_steps, seed=args.seed, device=device, arch="cnn",
                                width=16, batch=256)
        log(f"digits {name}: trained fields and classifier in {time.perf_counter() - t0:.0f}s")
        for guidance in ("cfg", "classifier"):
            for w in args.w:
                x, stats = _guided_samples(proc, fields[guidance], guidance, w, targets, (1, 8, 8), steps=args.steps, seed=args.seed, classifier=clf)
                x = x.float().clamp(-1, 1).cpu()
                pred = torch.from_numpy(judge.predict(x.reshape(len(x), -1).numpy()))
                hit = float((pred == targets.cpu()).double().mean())
                m = [mmd(x[targets.cpu() == c].reshape(-1, 64).double(), real[c], bandwidths=bands[c]) for c in range(k)]
                row = {"dataset": "digits", "process": name, "D": D, "field": "mlp", "guidance": guidance, "w": w, "hit_rate": hit,
                       "class_sliced_w2": "", "spread_ratio": "", "class_mmd": sum(m) / k, "nfe": stats.nfe,
                       "flow_evaluations": stats.extra.get("flow_evaluations"), "classifier_evaluations": stats.extra.get("classifier_evaluations"),
                           "stray_fraction": stats.extra.get("stray_fraction")}
                rows.append(row)
                log(f"  {name:>12} {guidance:>10} w={w:<4g} hit={hit:.3f} mmd={row['class_mmd']:.4f} nfe={stats.nfe}")
                keep[(name, guidance, w)] = x
    return rows, keep


# ---------------------------------------------------------------------------------- figures
def _plot_curves(rows, dataset, quality_key, quality_label, path) -> None:
    import matplotlib  # heavy optional dependency: imported only where it is used

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy optional dependency: imported only where it is used

    rows = [r for r in rows if r["dataset"] == dataset]
    procs = list(dict.fromkeys(r["process"] for r in rows))
    fig, axes = plt.subplots(2, len(procs), figsize=(3.6 * len(procs), 6.2), squeeze=False, sharey="row")
    styles = {("mlp", "cfg"): ("C0", "-"), ("mlp", "classifier"): ("C1", "-"), ("exact", "cfg"): ("C0", ":"), ("exact", "classifier"): ("C1", ":")}
    for j, proc in enumerate(procs):
        for (fname, guidance), (color, ls) in styles.items():
            sel = sorted((r for r in rows if r["process"] == proc and r["field"] == fname and r["guidance"] == guidance), key=lambda r: r["w"])
            if not sel:
                continue
            lab = f"{guidance} ({fname})"
            axes[0, j].plot([r["w"] for r in sel], [r["hit_rate"] for r in sel], ls, color=color, marker="o", ms=3, label=lab)
            axes[1, j].plot([r["w"] for r in sel], [r[quality_key] for r in sel], ls, color=color, marker="o", ms=3, label=lab)
        axes[0, j].set_title(proc)
        axes[1, j].set_xlabel("guidance scale w")
        for ax in axes[:, j]:
            ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("fraction in requested class")
    axes[1, 0].set_ylabel(quality_label)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"{dataset}: guidance scale vs class hit rate and sample quality")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def _plot_toy_samples(keep, ws, path) -> None:
    import matplotlib  # heavy optional dependency: imported only where it is used

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy optional dependency: imported only where it is used

    procs = list(dict.fromkeys(p for p, _ in keep))
    ws = [w for w in ws if any((p, w) in keep for p in procs)]
    fig, axes = plt.subplots(len(procs), len(ws), figsize=(2.3 * len(ws), 2.3 * len(procs)), squeeze=False)
    for i, proc in enumerate(procs):
        for j, w in enumerate(ws):
            ax = axes[i, j]
            x, t = keep[(proc, w)]
            ax.scatter(x[:, 0], x[:, 1], c=t, cmap="tab10", s=2, vmin=0, vmax=9)
            ax.set_xlim(-4.5, 4.5)
            ax.set_ylim(-4.5, 4.5)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"CFG w={w:g}", fontsize=9)
            if j == 0:
                ax.set_ylabel(proc, fontsize=9)
    fig.suptitle("8 Gaussians, colour = requested mode (MLP field, classifier-free guidance)")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def _plot_digit_samples(keep, ws, per_class, path) -> None:
    import matplotlib  # heavy optional dependency: imported only where it is used

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy optional dependency: imported only where it is used

    keys = [key for key in keep if key[0] == "edm"] or list(keep)
    guidances = list(dict.fromkeys(g for _, g, _ in keys))
    proc = keys[0][0]
    ws = [w for w in ws if all((proc, g, w) in keep for g in guidances)]
    show = min(4, per_class)
    fig, axes = plt.subplots(len(guidances), len(ws), figsize=(1.7 * len(ws), 3.8 * len(guidances)), squeeze=False)
    for i, guidance in enumerate(guidances):
        for j, w in enumerate(ws):
            x = keep[(proc, guidance, w)].reshape(10, per_class, 8, 8)[:, :show]  # [class, sample, 8, 8]
            tile = x.permute(0, 2, 1, 3).reshape(10 * 8, show * 8)
            axes[i, j].imshow(tile.numpy(), cmap="gray_r", vmin=-1, vmax=1)
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
            if i == 0:
                axes[i, j].set_title(f"w={w:g}", fontsize=9)
            if j == 0:
                axes[i, j].set_ylabel(guidance, fontsize=9)
    fig.suptitle(f"digits ({proc}): rows of a tile = requested digit 0..9")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def _write_csv(path, rows) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with atomic_write(path, "w") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


# ------------------------------------------------------------------------------------ run
def run(args) -> int:
    if args.quick:
        args.field_steps, args.digits_field_steps, args.classifier_steps = min(args.field_steps, 400), min(args.digits_field_steps, 400), min(args.classifier_steps, 150)
        args.n_per_class, args.digits_per_class = min(args.n_per_class, 40), min(args.digits_per_class, 10)
        args.steps = min(args.steps, 12)
    if args.w is None:
        args.w = [0.0, 1.0, 4.0] if args.quick else [0.0, 0.5, 1.0, 2.0, 4.0, 8.0]
    for name in ("field_steps", "digits_field_steps", "classifier_steps", "n_per_class", "digits_per_class", "steps", "hidden", "digits_hidden"):
        if getattr(args, name) <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    if any(D <= 0 for D in args.D):
        raise UserError(f"--D values must be positive integers, got {args.D}")
    if any(not math.isfinite(w) for w in args.w):
        raise UserError(f"--w values must be finite, got {args.w}")
    device = resolve_device(args.device)
    out = ensure_dir(args.out)
    t_start = time.perf_counter()

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    summary: dict = {"args": {k: v for k, v in vars(args).items() if k != "func"}}
    if not args.no_shift_error:
        t0 = time.perf_counter()
        srows = shift_errors(seed=args.seed, n_queries=100 if args.quick else 200)
        _write_csv(out / "shift_error.csv", srows)
        _plot_shift_errors(srows, out / "shift_error.png")
        summary["shift_error_on_class_sigma1"] = {
            f"{r['family']}:{r['D'] if r['family'] == 'pfgmpp' else r['m']}": r["rel_error"] for r in srows if r["queries"] == "on_class" and r["sigma"] == 1.0}
        log(f"shift errors in {time.perf_counter() - t0:.0f}s: " + ", ".join(f"{k}={v:.2g}" for k, v in summary["shift_error_on_class_sigma1"].items()))
    rows: list[dict] = []
    if "8gaussians" in args.datasets:
        trows, keep = run_toy(args, device, log)
        rows += trows
        _plot_curves(rows, "8gaussians", "class_sliced_w2", "class-conditional sliced W2", out / "toy_guidance.png")
        _plot_toy_samples(keep, args.w, out / "toy_samples.png")
    if "digits" in args.datasets:
        drows, keep = run_digits(args, device, log)
        rows += drows
        _plot_curves(rows, "digits", "class_mmd", "class-conditional MMD", out / "digits_guidance.png")
        _plot_digit_samples(keep, args.w, args.digits_per_class, out / "digits_samples.png")
    if rows:
        warn_stray_runs([(f"{r['dataset']} {r['process']} {r['field']} {r['guidance']} w={r['w']:g}", r["stray_fraction"]) for r in rows])
        _write_csv(out / "guidance.csv", rows)
    summary["rows"] = rows
    summary["wall_s"] = time.perf_counter() - t_start
    write_json(out / "summary.json", summary)
    log(f"wrote {out}/guidance.csv, shift_error.csv, summary.json and figures in {summary['wall_s']:.0f}s")
    return 0
