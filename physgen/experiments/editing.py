"""Editing: each method's x1 given x0 = c against the closed-form conditional, for every process, against NFE.

Issue 23's measurement.  On two Gaussian mixtures, the issue's two-mode mixture
``0.3 N((-1,-1.5), 0.5² I) + 0.7 N((1,1.5), 0.5² I)`` (observed at ``c ∈ {0, 0.5}``) and
``8gaussians`` (``c ∈ {0, 2}``), the coordinate ``x0`` is observed and each editing method of
:mod:`physgen.editing` samples ``x1`` (:func:`physgen.editing.condition.sample_conditioned`,
the code behind ``physgen toy --condition``).  The yardstick is the closed form
(:func:`physgen.editing.conditional_mixture`): a Gaussian mixture in ``x1`` with the same
means and variances and new weights.  Per (data, c, process, method, steps) the table holds
the KS distance of the ``x1`` samples to it and the weight of each conditional *mode* (the
components grouped by their ``x1`` mean; a sample counts for the nearest mode mean) against
the closed form's, and the NFE.

Processes: edm, vp, pfgmpp with D = 4, 128, inf, and yukawa (m = 1).  Where the process has
an analytic mixture field (edm, vp, pfgmpp D = inf) it is used; PFGM++ at finite D and
Yukawa have none, so they run on the exact field of ``--n-points`` draws of the mixture
(column ``field``), whose own conditional differs from the closed form by the draws' finite
number (measured by the same methods on edm with that exact field, ``field = exact``).
SMC and RePaint's jumps need the process's Gaussian transition: for PFGM++ at finite D and
Yukawa they are refused, and the refusal's reason is the row (``refused``).

Writes ``editing.csv``, ``summary.json`` (the rows and the closed forms), ``ks_vs_nfe.png``
and ``weight_error_vs_nfe.png``, and the digits inpainting figure ``digits_inpainting.png``
with its record ``digits_inpainting.json`` (:mod:`.editing_digits`: each method on the bottom
half of a few digits, with ``--digits-ckpt RUN`` or a tiny model trained offline into
``OUT/digits-model``).  ``--parts table,digits`` picks what to run (default both).  The
default table (1000 samples, 1000 points, 10/25/50/100 steps, 448 rows) took 26-35 minutes on
one thread of a 2-core machine shared with other work; ``--quick`` (300 samples, 500 points,
10 and 40 steps; a 20-step digits model) 1 to 2 minutes.
"""
from __future__ import annotations

import argparse
import csv
import io
import math
import sys
import time
from pathlib import Path

import torch

from ..config import LIMIT_REASONS, MAX_SAMPLES, arg, parse_int, parse_seed
from ..data import load_toy
from ..data.mixture import GaussianMixture
from ..editing import conditional_mixture, ks_statistic
from ..editing.condition import CONDITION_METHODS, Condition, sample_conditioned
from ..errors import UserError
from ..io import atomic_write, ensure_dir, save_figure, write_json
from ..processes import data_defaults, make_process
from .editing_digits import DIGITS_OUTPUTS, DIGITS_STEPS, add_digits_arguments, digits_inpainting, digits_model

__all__ = ["add_arguments", "run", "mode_weights", "PROCESSES", "DATASETS"]

TABLE_OUTPUTS = ("editing.csv", "summary.json", "ks_vs_nfe.png", "weight_error_vs_nfe.png")
OUTPUTS = TABLE_OUTPUTS + DIGITS_OUTPUTS
PARTS = ("table", "digits")
QUICK_DIGITS_STEPS = 20

ISSUE_MIXTURE = GaussianMixture([[-1.0, -1.5], [1.0, 1.5]], [0.5, 0.5], [0.3, 0.7])
DATASETS = {"two-mode": (lambda: ISSUE_MIXTURE, (0.0, 0.5)), "8gaussians": (lambda: load_toy("8gaussians").mixture, (0.0, 2.0))}
PROCESSES = {"edm": ("edm", {}), "vp": ("vp", {}), "pfgmpp-D4": ("pfgmpp", {"D": 4}), "pfgmpp-D128": ("pfgmpp", {"D": 128}),
             "pfgmpp-Dinf": ("pfgmpp", {"D": math.inf}), "yukawa": ("yukawa", {"m": 1.0})}
STEPS = (10, 25, 50, 100)
QUICK_STEPS = (10, 40)
MIN_MODE_WEIGHT = 1e-3
"""Conditional modes lighter than this are not counted (:func:`mode_weights`).  8gaussians'
conditionals have modes of weight 6e-15 to 6e-8 next to real ones (left out); the two-mode
mixture at x0 = 0.5 has a real mode of weight 0.0078 whose over-weighting (blend puts about
0.2 there) is the bias the column must show: at 0.01 it was left out and every method read
0.008 there."""
COLUMNS = ("dataset", "c", "process", "field", "method", "steps", "nfe", "ks", "weight_error", "mode_weights", "closed_weights",
           "wall_s", "refused")


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="runs/editing", help="output folder")
    count = arg(parse_int, 8, MAX_SAMPLES, LIMIT_REASONS["samples"])
    parser.add_argument("--n-samples", type=count, default=1000, help="samples (SMC: particles) per row")
    parser.add_argument("--n-points", type=count, default=1000, help="mixture draws of the exact fields (PFGM++ at finite D, Yukawa)")
    parser.add_argument("--seed", type=arg(parse_seed), default=0)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 300 samples, 500 points, steps 10 and 40, a 20-step digits model")
    parser.add_argument("--parts", type=_parts, default=PARTS, help="what to run, comma-separated: table (the toy measurement), "
                        "digits (the inpainting figure); default both")
    add_digits_arguments(parser)


def _parts(text: str) -> tuple:
    parts = tuple(dict.fromkeys(p.strip() for p in str(text).split(",")))
    bad = [p for p in parts if p not in PARTS]
    if bad or not parts:
        raise argparse.ArgumentTypeError(f"parts are table and/or digits (comma-separated), got {text!r}")
    return parts


def mode_weights(x1: torch.Tensor, closed: GaussianMixture, least: float = MIN_MODE_WEIGHT) -> tuple[list, list, list]:
    """``(mode means, sample fractions, closed-form weights)``: the conditional's components
    grouped by their mean (equal within 1e-6), modes of weight below ``least`` left out (an
    ``e^-16`` mode 0.8 from a real one would take that one's tail), each sample given to the
    nearest remaining mode mean."""
    means, weights = [], []
    for mu, w in zip(closed.means[:, 0].tolist(), closed.weights.tolist()):
        k = next((i for i, m in enumerate(means) if abs(m - mu) < 1e-6), None)
        if k is None:
            means.append(mu)
            weights.append(w)
        else:
            weights[k] += w
    kept = [k for k, w in enumerate(weights) if w >= least]
    means, weights = [means[k] for k in kept], [weights[k] for k in kept]
    nearest = (x1.double().reshape(-1, 1) - torch.tensor(means, dtype=torch.float64)).abs().argmin(1)
    fractions = torch.bincount(nearest, minlength=len(means)).double() / max(1, x1.numel())
    return means, fractions.tolist(), weights


def _fields(mixture: GaussianMixture, n_points: int, seed: int):
    """``(label, process, field kind, field)`` for every process (module docstring) and edm on the exact field."""
    data = mixture.sample(20000, torch.Generator().manual_seed(seed)).float()
    points = mixture.sample(n_points, torch.Generator().manual_seed(seed + 1)).float()
    out = []
    for label, (name, options) in PROCESSES.items():
        process = make_process(name, **data_defaults(name, data, options))
        try:
            out.append((label, process, "analytic", process.analytic_field(mixture)))
        except UserError:  # no closed-form mixture field for this kernel
            out.append((label, process, "exact", process.exact_field(points)))
    edm = out[0][1]
    out.append(("edm", edm, "exact", edm.exact_field(points)))  # what the finite point set alone costs
    return out


def _row(dataset: str, c: float, label: str, kind: str, process, field, method: str, steps: int, n: int, seed: int,
         closed: GaussianMixture, fill: torch.Tensor) -> dict:
    row = dict(dataset=dataset, c=c, process=label, field=kind, method=method, steps=steps)
    t0 = time.perf_counter()
    try:
        with torch.no_grad():
            sol = sample_conditioned(process, field, Condition(((0, c),), method=method), n, fill, steps=steps, seed=seed)
    except UserError as exc:  # SMC and RePaint's jumps need a Gaussian transition
        return {**row, "refused": str(exc)}
    x1 = sol.x[:, 1].cpu()
    _, got, want = mode_weights(x1, closed)
    return {**row, "nfe": int(sol.stats.nfe), "ks": ks_statistic(x1, closed),
            "weight_error": max(abs(a - b) for a, b in zip(got, want)), "mode_weights": [round(v, 4) for v in got],
            "closed_weights": [round(v, 4) for v in want], "wall_s": round(time.perf_counter() - t0, 2), "refused": ""}


def run(args) -> int:
    out = ensure_dir(args.out)
    if "digits" in args.parts:  # first: its model is the resumable part of the run
        steps = args.digits_steps or (QUICK_DIGITS_STEPS if args.quick else DIGITS_STEPS)
        digits_inpainting(digits_model(out, args.digits_ckpt, steps), out, args.digits_images, args.seed)
    elif args.digits_ckpt is not None or args.digits_steps is not None:
        raise UserError("--digits-ckpt and --digits-steps make the digits figure: add digits to --parts")
    if "table" in args.parts:
        _run_table(args, out)
    return 0


def _run_table(args, out: Path) -> None:
    n, n_points, step_list = (300, 500, QUICK_STEPS) if args.quick else (args.n_samples, args.n_points, STEPS)
    rows, closed_forms = [], {}
    total = len(DATASETS) * 2 * (len(PROCESSES) + 1) * len(CONDITION_METHODS) * len(step_list)
    t0 = time.perf_counter()
    for dataset, (make_mixture, values) in DATASETS.items():
        mixture = make_mixture()
        fields = _fields(mixture, n_points, args.seed)
        fill = (mixture.weights[:, None] * mixture.means).sum(0).float()  # SDEdit's input: the data's mean, as physgen toy
        for c in values:
            closed = conditional_mixture(mixture, [0], [c])
            closed_forms[f"{dataset} x0={c:g}"] = closed.to_dict()
            for label, process, kind, field in fields:
                for method in CONDITION_METHODS:
                    for steps in step_list:
                        rows.append(_row(dataset, c, label, kind, process, field, method, steps, n, args.seed, closed, fill))
                        done = len(rows)
                        rate = done / (time.perf_counter() - t0)
                        print(f"[{done}/{total}] {dataset} x0={c:g} {label}/{kind} {method} {steps} steps: "
                              f"{rows[-1].get('ks', 'refused')}  ({rate:.2f} rows/s, ETA {(total - done) / rate:.0f} s)",
                              file=sys.stderr, flush=True)
    _write_csv(out / "editing.csv", rows)
    write_json(out / "summary.json", {"rows": rows, "closed_forms": closed_forms, "n_samples": n, "n_points": n_points,
                                      "steps": list(step_list), "seed": args.seed})
    _plot(rows, "ks", "KS distance of x1 to the closed-form conditional", out / "ks_vs_nfe.png")
    _plot(rows, "weight_error", "largest mode-weight error", out / "weight_error_vs_nfe.png")
    print(_table(rows))


def _write_csv(path: Path, rows: list) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_write(path, "w") as f:
        f.write(buf.getvalue())


def _table(rows: list) -> str:
    """Markdown: each (process, field, method) at its largest step count, KS and weight error per (data, c)."""
    keys = list(dict.fromkeys((r["dataset"], r["c"]) for r in rows))
    lines = ["| process | field | method | NFE | " + " | ".join(f"{d} x0={c:g}: KS / w-err" for d, c in keys) + " |",
             "|---|---|---|---|" + "---|" * len(keys)]
    largest = max(r["steps"] for r in rows)
    for proc, kind, method in dict.fromkeys((r["process"], r["field"], r["method"]) for r in rows):
        sel = {(r["dataset"], r["c"]): r for r in rows if (r["process"], r["field"], r["method"], r["steps"]) == (proc, kind, method, largest)}
        first = next(iter(sel.values()))
        if first["refused"]:
            lines.append(f"| {proc} | {kind} | {method} | - | " + " | ".join("refused" for _ in keys) + " |")
            continue
        cells = [f"{sel[k]['ks']:.3f} / {sel[k]['weight_error']:.3f}" for k in keys]
        lines.append(f"| {proc} | {kind} | {method} | {first['nfe']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plot(rows: list, key: str, ylabel: str, path: Path) -> None:
    import matplotlib  # heavy optional dependency: imported only where it is used

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy optional dependency: imported only where it is used

    panels = list(dict.fromkeys((r["process"], r["field"]) for r in rows))
    cases = list(dict.fromkeys((r["dataset"], r["c"]) for r in rows))
    fig, axes = plt.subplots(len(cases), len(panels), figsize=(2.6 * len(panels), 2.3 * len(cases)), squeeze=False, sharey=True)
    for i, case in enumerate(cases):
        for j, panel in enumerate(panels):
            ax = axes[i, j]
            for method in CONDITION_METHODS:
                sel = [r for r in rows if (r["dataset"], r["c"]) == case and (r["process"], r["field"]) == panel
                       and r["method"] == method and not r["refused"]]
                if sel:  # one colour per method in every panel, also where another method was refused
                    ax.plot([r["nfe"] for r in sel], [r[key] for r in sel], "o-", ms=3, label=method,
                            color=f"C{CONDITION_METHODS.index(method)}")
            ax.set_xscale("log")
            ax.set_title(f"{panel[0]} ({panel[1]})\n{case[0]} x0={case[1]:g}", fontsize=7)
            ax.tick_params(labelsize=6)
            if j == 0:
                ax.set_ylabel(ylabel, fontsize=6)
            if i == len(cases) - 1:
                ax.set_xlabel("NFE", fontsize=6)
    axes[0, 0].legend(fontsize=6)
    save_figure(fig, path, dpi=110)
    plt.close(fig)
