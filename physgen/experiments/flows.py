"""Flows side by side: EDM, PFGM++, rectified flow, OT-CFM and 2-rectified flow against NFE (issue 22).

On ``moons``, ``8gaussians`` and ``two_mode`` (0.2/0.8 at (∓2, 0), std 0.3) each method samples
with its exact field (moons: the exact field of ``--n-data`` points; the mixtures: the analytic
field) where it has one, and with a toy MLP trained here (``physgen toy``'s training, its
checkpoints in ``DIR/runs``), at 1, 2, 4, 8, 16 and 32 NFE with each of euler, heun, dpmpp-2m
and ipndm (steps = NFE, heun: NFE // 2; a solve that needs more NFE than the budget is left out):

* ``edm``; ``pfgmpp-D4`` and ``pfgmpp-D128`` (PFGM++, arXiv 2302.04265);
* ``rectified-flow`` (arXiv 2209.03003, 2210.02747);
* ``ot-cfm``: rectified flow trained with the minibatch-OT coupling (arXiv 2302.00482; MLP only:
  the coupled field has no closed form);
* ``2-rectified``: ``physgen reflow`` of the rectified-flow MLP (same training steps; MLP only).

Per row (dataset, method, field) the table holds, for every solver and NFE, the sliced W2
against fresh data and the mode weights (each sample counts for the label of its nearest
labelled data point: the two moons, the mixtures' components) with their largest error
against the data's; the row's solver is the one of lowest geometric-mean sliced W2 over 2..32
NFE (the budgets every solver meets), and its numbers are the row's.  The straightness
(:func:`physgen.reflow.straightness`, 100 Euler steps) is measured in each process's own time
variable on a uniform grid: comparable between rows of one process, not across processes.

Writes ``flows.json`` (every number), ``flows.md`` (the rows with their solver),
``w2_vs_nfe.png``, ``modes_vs_nfe.png`` and ``trajectories.png`` (the MLPs' paths from the same
prior draws).  The default budget (600 training steps of 256, 2000 data points, 1000 samples)
is a few minutes; ``--full`` takes ``physgen toy``'s recipe (2000 steps of 512, 10000 points,
2000 samples, 10000 reflow pairs).
"""
from __future__ import annotations

import io
import math
import sys
import time
from pathlib import Path

import torch

from ..compare.problems import load_toy_checkpoint
from ..config import LIMIT_REASONS, MAX_SAMPLES, MAX_STEPS, MAX_TRAIN_STEPS, arg, parse_int, parse_seed
from ..data import load_toy
from ..errors import UserError, unknown_name
from ..io import atomic_write, ensure_dir, save_figure, write_json
from ..metrics import mode_weights, sliced_w2
from ..noise import SeededNoise
from ..reflow import ReflowConfig, run_reflow, straightness_and_paths
from ..sampling import grid, sample
from ..toy import ToyConfig, build_field, toy_data, toy_process

__all__ = ["add_arguments", "run", "run_flows", "METHODS", "DATASETS", "NFES", "SOLVERS", "OUTPUTS"]

OUTPUTS = ("flows.json", "flows.md", "w2_vs_nfe.png", "modes_vs_nfe.png", "trajectories.png", "runs/**/*")
DATASETS = ("moons", "8gaussians", "two_mode")
METHODS = {  # name: (process, process options, has a closed-form field)
    "edm": ("edm", {}, True),
    "pfgmpp-D4": ("pfgmpp", {"D": 4}, True),
    "pfgmpp-D128": ("pfgmpp", {"D": 128}, True),
    "rectified-flow": ("rectified-flow", {}, True),
    "ot-cfm": ("rectified-flow", {"coupling": "ot"}, False),
    "2-rectified": ("rectified-flow", {}, False),
}
NFES = (1, 2, 4, 8, 16, 32)
SOLVERS = ("euler", "heun", "dpmpp-2m", "ipndm")
DEFAULT = {"train_steps": 600, "batch": 256, "n_data": 2000, "n_samples": 1000, "n_pairs": 2000}
FULL = {"train_steps": 2000, "batch": 512, "n_data": 10_000, "n_samples": 2000, "n_pairs": 10_000}
STRAIGHTNESS_STEPS = 100
PATHS, PATH_EVERY = 32, 5  # the paths a row keeps for the figure: 32 of them, every 5th Euler step (and the end)


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="runs/flows", help="output folder")
    count = arg(parse_int, 2, MAX_SAMPLES, LIMIT_REASONS["samples"])
    parser.add_argument("--full", action="store_true", help="physgen toy's recipe: 2000 training steps of 512, 10000 points, 2000 samples")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), help=f"any of {', '.join(DATASETS)}")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), help=f"any of {', '.join(METHODS)}")
    parser.add_argument("--nfe", type=arg(parse_int, 1, MAX_STEPS, LIMIT_REASONS["steps"]), nargs="+", default=list(NFES), help="NFE budgets")
    parser.add_argument("--train-steps", type=arg(parse_int, 1, MAX_TRAIN_STEPS, LIMIT_REASONS["train_steps"]), default=None,
                        help="MLP training steps (default 600; --full 2000)")
    parser.add_argument("--n-data", type=count, default=None, help="data points of the exact fields and the training set")
    parser.add_argument("--n-samples", type=count, default=None, help="samples per solve")
    parser.add_argument("--seed", type=arg(parse_seed), default=0)


def run(args) -> int:
    budget = {**(FULL if args.full else DEFAULT), **{k: v for k, v in (("train_steps", args.train_steps), ("n_data", args.n_data),
                                                                        ("n_samples", args.n_samples)) if v is not None}}
    table = run_flows(args.out, args.datasets, args.methods, sorted(set(args.nfe)), budget, args.seed, log=sys.stderr)
    print(f"wrote {args.out}/flows.json, flows.md, w2_vs_nfe.png, modes_vs_nfe.png, trajectories.png ({len(table['rows'])} rows)")
    return 0


def _check_names(datasets, methods) -> None:
    for d in datasets:
        if d not in DATASETS:
            raise unknown_name("dataset", d, DATASETS)
    for m in methods:
        if m not in METHODS:
            raise unknown_name("method", m, METHODS)
    if "2-rectified" in methods and "rectified-flow" not in methods:
        raise UserError("method 2-rectified is the reflow of the rectified-flow MLP: list rectified-flow too")


def _steps_for(solver: str, nfe: int) -> int:
    return max(1, nfe // 2) if solver == "heun" else nfe


def _solve(process, field, x0, solver: str, nfe: int):
    """The samples of ``solver`` within ``nfe`` evaluations and the NFE used, or ``(None, reason)``."""
    try:
        with torch.no_grad():
            sol = sample(process, field, x0, grid(process, _steps_for(solver, nfe), method=solver), solver)
    except (ValueError, FloatingPointError) as exc:  # a refusal or a divergence is the cell's result
        return None, str(exc).splitlines()[0][:120]
    if sol.stats.nfe > nfe:
        return None, f"needs {sol.stats.nfe} NFE"
    return sol.x, int(sol.stats.nfe)


def _modes(x, data, labels, k: int):
    """Each sample's label: that of its nearest labelled data point (fractions over ``k`` labels)."""
    finite = torch.isfinite(x).all(1)
    nearest = torch.cdist(x[finite].float(), data.float()).argmin(1)
    return (torch.bincount(labels[nearest], minlength=k).double() / x.shape[0]).tolist()


def _row(problem: dict, method: str, field_kind: str, process, field) -> dict:
    """Every solver at every NFE on one field; the row's solver and its numbers; the straightness and paths."""
    x0, reference, nfes = problem["x0"], problem["reference"], problem["nfes"]
    cells = {}
    for solver in SOLVERS:
        for nfe in nfes:
            x, used = _solve(process, field, x0, solver, nfe)
            if x is None:
                cells[f"{solver}@{nfe}"] = {"solver": solver, "nfe_budget": nfe, "skipped": used}
                continue
            modes = _modes(x, problem["data"], problem["labels"], len(problem["weights"]))
            cells[f"{solver}@{nfe}"] = {"solver": solver, "nfe_budget": nfe, "nfe": used, "sliced_w2": sliced_w2(x, reference),
                                        "mode_weights": modes, "mode_error": max(abs(a - b) for a, b in zip(modes, problem["weights"]))}
    best = min(SOLVERS, key=lambda s: _geomean([cells[f"{s}@{n}"].get("sliced_w2") for n in nfes if n >= 2] or [0.0]))
    with torch.no_grad():
        s, paths = straightness_and_paths(process, field, x0[:256], STRAIGHTNESS_STEPS)
    pick = {str(n): cells[f"{best}@{n}"] if "sliced_w2" in cells[f"{best}@{n}"] else cells[f"euler@{n}"] for n in nfes}
    return {"dataset": problem["name"], "method": method, "field": field_kind, "solver": best, "straightness": s,
            "sliced_w2": {n: c.get("sliced_w2") for n, c in pick.items()}, "mode_error": {n: c.get("mode_error") for n, c in pick.items()},
            "solver_at": {n: c["solver"] for n, c in pick.items()}, "cells": cells,
            "paths": torch.cat([paths[::PATH_EVERY], paths[-1:]])[:, :PATHS].float().tolist()}


def _geomean(values) -> float:
    if any(v is None or not math.isfinite(v) for v in values):
        return math.inf
    return math.exp(sum(math.log(max(v, 1e-12)) for v in values) / len(values))


def _problem(name: str, budget: dict, nfes, seed: int) -> dict:
    dataset = load_toy(name)
    config = ToyConfig(dataset=name, n_data=budget["n_data"], n_samples=budget["n_samples"], seed=seed)
    data, labels, reference = toy_data(dataset, config, torch.device("cpu"))  # every one of these sets is labelled
    big = dataset.sample_labelled(100_000, torch.Generator().manual_seed(seed + 7))[1]
    weights = (torch.bincount(big, minlength=dataset.num_classes).double() / big.numel()).tolist()
    return {"name": name, "dataset": dataset, "data": data, "labels": labels, "reference": reference, "weights": weights,
            "nfes": nfes, "seed": seed, "train_data": data}


def _fields(problem: dict, method: str, budget: dict, out: Path):
    """``(field kind, process, field)`` of ``method`` on ``problem``: the closed form where it has one, then the MLP."""
    name, data, dataset = problem["name"], problem["train_data"], problem["dataset"]
    process_name, options, closed = METHODS[method]
    config = ToyConfig(process=process_name, dataset=name, field="mlp", n_data=budget["n_data"], train_steps=budget["train_steps"],
                       batch=budget["batch"], seed=problem["seed"], process_options=dict(options))
    process = toy_process(config, data)
    if closed:  # the mixtures' analytic field where the process has one (not PFGM++ at finite D), else the points' exact field
        field, kind = None, "exact"
        if name != "moons":
            try:
                field, kind = process.analytic_field(dataset.mixture), "analytic"
            except UserError:
                pass
        yield kind, process, process.exact_field(data) if field is None else field
    run_dir = out / "runs" / f"{name}-{method}"
    if method == "2-rectified":
        run_reflow(ReflowConfig(ckpt=str(out / "runs" / f"{name}-rectified-flow"), out=str(run_dir), n_pairs=budget["n_pairs"],
                                train_steps=budget["train_steps"], seed=problem["seed"], n_eval=budget["n_samples"]), log_stream=io.StringIO())
        loaded = load_toy_checkpoint(run_dir)
        yield "mlp", loaded["process"], loaded["field"]
        return
    field, _ = build_field(process, "mlp", dataset, data, None, config, torch.device("cpu"), io.StringIO(), out_dir=run_dir)
    yield "mlp", process, field


def run_flows(out, datasets, methods, nfes, budget: dict, seed: int = 0, log=None) -> dict:
    """The experiment (module docstring); returns the table written to ``flows.json``."""
    _check_names(datasets, methods)
    log, out = log or sys.stderr, ensure_dir(out)
    order = [m for m in METHODS if m in methods]  # 2-rectified after rectified-flow, whose run it reflows
    rows, t0, done, total = [], time.perf_counter(), 0, len(datasets) * len(order)
    for name in datasets:
        problem = _problem(name, budget, nfes, seed)
        for method in order:
            for kind, process, field in _fields(problem, method, budget, out):
                n = budget["n_samples"]
                problem["x0"] = process.sample_prior((n, 2), noise=SeededNoise(seed, range(n)))
                rows.append(_row(problem, method, kind, process, field))
            done += 1
            elapsed = time.perf_counter() - t0
            print(f"[{done}/{total}] {name} {method}: {elapsed:.0f} s, ETA {elapsed / done * (total - done):.0f} s", file=log, flush=True)
    table = {"datasets": list(datasets), "methods": order, "nfe": list(nfes), "solvers": list(SOLVERS), "budget": budget, "seed": seed,
             "solver_rule": "per row: lowest geometric-mean sliced W2 over NFE >= 2; at a budget it cannot meet, euler",
             "straightness_steps": STRAIGHTNESS_STEPS, "rows": rows, "wall_s": time.perf_counter() - t0}
    write_outputs(table, out)
    return table


def write_outputs(table: dict, out: Path) -> None:
    """``flows.json``, ``flows.md`` and the figures from ``table`` alone (so tables of runs over
    separate ``--datasets`` can be joined and drawn together)."""
    write_json(out / "flows.json", table)
    with atomic_write(out / "flows.md", "w") as f:
        f.write(markdown(table))
    plot_against_nfe(table, "sliced_w2", out / "w2_vs_nfe.png", "sliced W2", log_y=True)
    plot_against_nfe(table, "mode_error", out / "modes_vs_nfe.png", "largest mode-weight error")
    plot_paths(table, out / "trajectories.png")


def markdown(table: dict) -> str:
    """The rows: sliced W2 (and the largest mode-weight error) at each NFE with the row's solver."""
    nfes = [str(n) for n in table["nfe"]]
    lines = ["| data | method | field | solver | straightness | " + " | ".join(f"W2 @{n}" for n in nfes) + " | mode err @" + nfes[-1] + " |",
             "|" + "---|" * (6 + len(nfes))]
    for r in table["rows"]:
        w2 = " | ".join("-" if r["sliced_w2"][n] is None else f"{r['sliced_w2'][n]:.3f}" for n in nfes)
        err = r["mode_error"][nfes[-1]]
        lines.append(f"| {r['dataset']} | {r['method']} | {r['field']} | {r['solver']} | {r['straightness']:.3g} | {w2} | "
                     f"{'-' if err is None else f'{err:.3f}'} |")
    return "\n".join(lines) + "\n"


def plot_against_nfe(table: dict, key: str, path: Path, label: str, log_y: bool = False) -> None:
    import matplotlib  # heavy optional dependency: imported only where it is used

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy optional dependency: imported only where it is used

    datasets = table["datasets"]
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 4), squeeze=False)
    colours = dict(zip(table["methods"], plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for ax, name in zip(axes[0], datasets):
        for r in (r for r in table["rows"] if r["dataset"] == name):
            pts = sorted((int(n), v) for n, v in r[key].items() if v is not None)  # JSON sorts the keys as strings
            ax.plot(*zip(*pts), marker="o", ms=3, color=colours[r["method"]], ls="-" if r["field"] == "mlp" else "--",
                    label=f"{r['method']} ({r['field']}, {r['solver']})")
        ax.set_xscale("log", base=2)
        if log_y:
            ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("NFE")
        ax.set_ylabel(label)
        ax.legend(fontsize=6)
    save_figure(fig, path, dpi=110)


def plot_paths(table: dict, path: Path) -> None:
    """One panel per (dataset, method): the MLP's PF-ODE paths (the closed form's where no MLP row was run)."""
    import matplotlib  # heavy optional dependency: imported only where it is used

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy optional dependency: imported only where it is used

    datasets, methods = table["datasets"], table["methods"]
    paths = {(r["dataset"], r["method"], r["field"]): torch.tensor(r["paths"]) for r in table["rows"]}
    fig, axes = plt.subplots(len(datasets), len(methods), figsize=(2.6 * len(methods), 2.6 * len(datasets)), squeeze=False)
    for i, name in enumerate(datasets):
        for j, method in enumerate(methods):
            ax = axes[i][j]
            key = next(((name, method, f) for f in ("mlp", "exact", "analytic") if (name, method, f) in paths), None)
            ax.set_xticks([])
            ax.set_yticks([])
            if key is None:
                continue
            traj = paths[key]
            lim = 2.0 * float(torch.quantile(traj[-1].abs().flatten(), 0.99)) + 1e-6  # the data's region (EDM's prior is far wider)
            for k in range(traj.shape[1]):
                ax.plot(traj[:, k, 0], traj[:, k, 1], lw=0.5, alpha=0.7)
            ax.scatter(traj[-1, :, 0], traj[-1, :, 1], s=3, c="k", zorder=3)
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_title(f"{name} / {method} ({key[2]})", fontsize=7)
    save_figure(fig, path, dpi=100)
