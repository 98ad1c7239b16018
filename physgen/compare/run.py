"""The solver comparison: every solver at every budget on one :class:`~physgen.compare.problems.Problem`.

For each (solver, budget) the engine records

* ``nfe``: field evaluations counted at the field by the solver (``stats.nfe``; steps never
  stand in for it);
* ``error_vs_reference``: the RMS over samples of the per-sample L2 distance between the
  solver's end point and a reference solution of the same ODE from the same start point,

      error = sqrt( (1/n) Σ_i ‖x_i - x_i^ref‖² )          (in data space);

  the reference is a tight-tolerance adaptive solve in float64: per-sample
  :func:`solvers.dopri5` with ``rtol = atol = 1e-9`` (default) on the same field cast to
  float64, from the same ``x0`` (cast to float64), over the same span.  A schedule that ends
  at ``s = 0`` ends with the same final Euler step in every solver (for the denoiser form
  ``x <- D(x, s_min)``), and the reference ends with it too, so both solve the same problem.
  References are cached per span (first scale, last positive scale, ends at 0); with
  ``check_reference`` a second reference at 10x the tolerance estimates the reference's own
  error (``reference_error``: it bounds the smallest error that means anything).
  Generation goes through :func:`physgen.sampling.sample`, so a process with its own
  generation path (Yukawa's transport flow) is compared on that path, reference included;
* ``sliced_w2``, ``mmd`` (and the problem's other metrics): sample quality against held-out data;
* ``stray_fraction``: the fraction of samples left far from any data
  (:data:`physgen.sampling.STRAY_RATIO`; also for each reference), with one warning line
  on stderr naming the runs where it is not 0;
* ``wall_s``: wall time of the solve (device synchronised), metrics excluded.

Adaptive solvers (``dopri5``, torchdiffeq's adaptive methods) have no step count: their
budget ``K`` maps to the tolerance ``rtol = atol = min(0.1, 100 / K^5)`` (K = 4: 0.098,
8: 3.1e-3, 16: 9.5e-5, 32: 3.0e-6, 64: 9.3e-8).  A fifth-order method's error per step
scales like ``h^5``, so this tolerance makes its step count grow roughly like ``K`` and puts it
on the same NFE axis as the fixed-step solvers.

Stochastic samplers (rows of :data:`solvers.SOLVERS` marked stochastic) join when the
process offers what they need: they do not solve the ODE, so their ``error_vs_reference`` is
NaN, but they get the metrics, NFE and wall time; their noise is the problem's per-sample
seeded noise.  Whether a solver is adaptive, stochastic or runs on the process is read
from its table row and the process's capabilities, nowhere else.
"""
from __future__ import annotations

import csv
import io
import math
import sys
import time
from dataclasses import asdict, dataclass, field as dc_field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor

import solvers

from ..errors import UserError
from ..io import atomic_write, ensure_dir, save_figure, write_json
from ..sampling import DivergenceError, check_result, pooled_stray_fraction, sample, solver_spec, warn_stray_runs
from .problems import Problem

__all__ = [
    "DEFAULT_SOLVERS",
    "DEFAULT_STOCHASTIC",
    "DEFAULT_STEPS",
    "Row",
    "Comparison",
    "adaptive_tolerance",
    "is_adaptive",
    "is_stochastic",
    "resolve_solvers",
    "rms_error",
    "reference_solve",
    "compare",
    "write_outputs",
    "markdown_table",
    "CSV_COLUMNS",
]

DEFAULT_SOLVERS = ("euler", "heun", "midpoint", "rk4", "lms", "dpm2", "dpmpp-2m", "dpmpp-3m", "unipc-bh2", "deis", "ipndm", "dopri5")
DEFAULT_STOCHASTIC = ("euler-maruyama", "pc", "edm-sde", "ddpm")
DEFAULT_STEPS = (4, 8, 16, 32, 64)
REFERENCE_TOL = 1e-9
CSV_COLUMNS = ("solver", "kind", "steps", "nfe", "error_vs_reference", "sliced_w2", "mmd", "wall_s", "tol", "steps_taken", "rejected",
               "status")


# --------------------------------------------------------------------------- solver kinds


def adaptive_tolerance(steps: int) -> float:
    """The tolerance an adaptive solver gets for the budget ``steps``: ``min(0.1, 100/steps^5)``."""
    return min(0.1, 100.0 / float(steps) ** 5)


def is_adaptive(name: str) -> bool:
    """Step-size-controlled solvers (their budget is a tolerance): the table says."""
    return solvers.get_solver(name).adaptive


def is_stochastic(name: str) -> bool:
    """A sampler that does not solve the ODE (it draws noise): the table says."""
    return solvers.get_solver(name).stochastic


def kind_of(name: str) -> str:
    return "stochastic" if is_stochastic(name) else "adaptive" if is_adaptive(name) else "ode"


def resolve_solvers(names: Optional[Sequence[str]], process) -> tuple[list[str], bool]:
    """``(names, explicit)``: the user's list (validated: unknown names list the valid ones)
    or, for ``None``, the defaults; ``["all"]`` is every solver of the table, except
    torchdiffeq's.  (Defaults that cannot run on the process are skipped by the preflight,
    with the reason.)"""
    valid = solvers.solver_names()
    if names is None or list(names) == ["all"]:
        pool = [n for n in valid if not n.startswith(solvers.TORCHDIFFEQ_PREFIX)] if names else [*DEFAULT_SOLVERS, *DEFAULT_STOCHASTIC]
        return [n for n in pool if n in valid], False
    out: list[str] = []
    for n in names:
        solver_spec(n)  # an unknown name: one line listing the valid ones
        if n not in out:
            out.append(n)
    return out, True


# --------------------------------------------------------------------------- rows


@dataclass
class Row:
    solver: str
    kind: str
    steps: int
    nfe: int
    error_vs_reference: float
    metrics: dict
    wall_s: float
    tol: Optional[float] = None
    steps_taken: Optional[int] = None
    rejected: Optional[int] = None
    nfe_total: Optional[int] = None
    status: str = "ok"  # or "diverged: <why>" (the row's error and metrics are then NaN)

    @property
    def sliced_w2(self) -> float:
        return float(self.metrics.get("sliced_w2", math.nan))

    @property
    def mmd(self) -> float:
        return float(self.metrics.get("mmd", math.nan))

    def as_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k != "metrics"}
        d.update(self.metrics)
        return d


@dataclass
class Comparison:
    """The rows, the reference runs (one per span), the metric floor and what was skipped."""

    rows: list[Row]
    references: list[dict]
    problem: dict
    floor: Optional[dict] = None
    skipped: dict = dc_field(default_factory=dict)
    settings: dict = dc_field(default_factory=dict)

    def row(self, solver: str, steps: int) -> Row:
        for r in self.rows:
            if r.solver == solver and r.steps == steps:
                return r
        raise KeyError((solver, steps))

    def solvers(self) -> list[str]:
        return list(dict.fromkeys(r.solver for r in self.rows))


# --------------------------------------------------------------------------- solving


def rms_error(x: Tensor, ref: Tensor) -> float:
    """``sqrt(mean_i ‖x_i - ref_i‖²)`` in float64 (NaN if any sample is not finite)."""
    d = (x.reshape(x.shape[0], -1).to(torch.float64) - ref.reshape(ref.shape[0], -1).to(torch.float64).to(x.device))
    return float(d.pow(2).sum(1).mean().sqrt())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _solve(problem: Problem, field, x0: Tensor, schedule: Tensor, method: str, options: dict) -> tuple[Tensor, dict, float]:
    """Solve on the whole batch, or in chunks of ``problem.batch``; returns (x, stats, wall).

    With chunks, ``nfe`` is the largest per-chunk NFE (the batch solve's NFE for fixed
    steps) and ``nfe_total`` the sum.
    """
    n = x0.shape[0]
    size = problem.batch or n
    outs, nfes, steps_taken, rejected, strays = [], [], [], 0, []
    _sync(x0.device)
    t0 = time.perf_counter()
    with torch.no_grad():
        for start in range(0, n, size):
            sl = slice(start, min(n, start + size))
            noise = problem.noise if size >= n else problem.noise.subset(sl)
            label = None if problem.label is None else problem.label[sl]
            sol = sample(problem.process, field, x0[sl], schedule, method, noise=noise, label=label, **options)
            outs.append(sol.x)
            nfes.append(int(sol.stats.nfe))
            steps_taken.append(int(sol.stats.steps))
            rejected += int(sol.stats.rejected)
            strays.append((sol.stats.extra.get("stray_fraction"), sol.x.shape[0]))
    _sync(x0.device)
    wall = time.perf_counter() - t0
    x = outs[0] if len(outs) == 1 else torch.cat(outs)
    return x, {"nfe": max(nfes), "nfe_total": sum(nfes), "steps_taken": max(steps_taken), "rejected": rejected,
               "stray_fraction": pooled_stray_fraction(strays)}, wall


def _span_key(schedule: Tensor) -> tuple:
    s = schedule.tolist()
    ends_at_zero = s[-1] == 0.0
    last = s[-2] if ends_at_zero else s[-1]
    return (round(s[0], 12), round(last, 12), ends_at_zero)


def reference_solve(problem: Problem, schedule: Tensor, rtol: float = REFERENCE_TOL, atol: float = REFERENCE_TOL,
                    options: Optional[dict] = None) -> tuple[Tensor, dict]:
    """The float64 dopri5 solution over ``schedule``'s span (its endpoints; a final
    ``s = 0`` step is the same Euler step the solvers take).  Of ``options`` it takes only the
    process's sampling modes (the path generation follows): options meant for the compared
    solvers (a dopri5 row's ``max_steps`` or ``first_step``) never reach the reference."""
    s = schedule.tolist()
    span = [s[0], s[-2], 0.0] if s[-1] == 0.0 and len(s) > 2 else [s[0], s[-1]]
    field64 = problem.reference_field()
    x0 = problem.x0.to(torch.float64)
    modes = {o.name for o in problem.process.sampling_options}
    opts = {**{k: v for k, v in (options or {}).items() if k in modes}, "rtol": rtol, "atol": atol}
    x, stats, wall = _solve(problem, field64, x0, torch.tensor(span, dtype=torch.float64), "dopri5", opts)
    return x, {"span": span, "rtol": rtol, "atol": atol, "wall_s": wall, **stats}


def _fmt(v: Any, spec: str = ".3g") -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "nan" if math.isnan(v) else format(v, spec)
    return str(v)


def _measure(problem: Problem, name: str, steps: int, options: dict, references: dict, reference_tol: tuple, say: Callable[[str], None],
             tag: str) -> tuple[Row, list]:
    """One (solver, budget) cell: its grid, its reference (the float64 solve on the same span,
    shared by the cells of that span through ``references``), the solve, its error and metrics;
    a divergence is a row of NaNs with its status."""
    kind = kind_of(name)
    opts = options_for(name, options, problem.process)
    schedule = problem.schedule(steps, name, opts)
    tol = None
    if kind == "adaptive":
        tol = adaptive_tolerance(steps)
        opts.setdefault("rtol", tol)
        opts.setdefault("atol", tol)
    ref = None
    if kind != "stochastic":
        key = _span_key(schedule)
        if key not in references:
            references[key] = _reference(problem, schedule, *reference_tol, options, say)
        ref = references[key][0]
    try:
        x, stats, wall = _solve(problem, problem.field, problem.x0, schedule, name, opts)
    except DivergenceError as exc:  # a data point of the comparison, recorded as such (NaN error and metrics)
        st = exc.solution.stats
        row = Row(name, kind, int(steps), int(st.nfe), math.nan, {m: math.nan for m in problem.metric_names}, math.nan,
                  tol=tol, steps_taken=int(st.steps), rejected=int(st.rejected), nfe_total=int(st.nfe),
                  status=f"diverged: {exc}")
        say(f"{tag} nfe={row.nfe:<5} DIVERGED")
        return row, schedule.tolist()
    err = rms_error(x, ref) if ref is not None and ref.shape == x.shape else math.nan
    metrics = {**problem.metrics(x), "stray_fraction": stats["stray_fraction"]}
    row = Row(name, kind, int(steps), stats["nfe"], err, metrics, wall, tol=tol, steps_taken=stats["steps_taken"],
              rejected=stats["rejected"], nfe_total=stats["nfe_total"])
    say(f"{tag} nfe={row.nfe:<5} error={_fmt(err, '.3e'):<9} "
        f"sliced_w2={_fmt(row.sliced_w2, '.4f')}  mmd={_fmt(row.mmd, '.2e')}  {wall:.2f} s")
    return row, schedule.tolist()


def compare(
    problem: Problem,
    solver_names: Optional[Sequence[str]],
    budgets: Sequence[int] = DEFAULT_STEPS,
    *,
    ref_rtol: float = REFERENCE_TOL,
    ref_atol: float = REFERENCE_TOL,
    check_reference: bool = True,
    options: Optional[dict] = None,
    log: Optional[Callable[[str], None]] = None,
) -> Comparison:
    """Run every solver at every budget; see the module docstring for what is measured.

    ``solver_names=None`` takes the defaults; a default that cannot run on this problem
    (e.g. DPM-Solver on a flow without a denoiser) is skipped and recorded in
    ``Comparison.skipped``, while a solver named explicitly that cannot run is a
    :class:`UserError`.  Each solver is first tried on two samples at the smallest budget,
    so such errors come before any long solve.
    """
    say = log or (lambda line: None)
    budgets = _check_budgets(budgets)
    if not (ref_rtol > 0 and ref_atol > 0):
        raise UserError(f"reference tolerances must be > 0, got rtol={ref_rtol}, atol={ref_atol}")
    options = dict(options or {})
    names, explicit = resolve_solvers(solver_names, problem.process)
    _check_options(options, names, problem.process)
    names, skipped = _preflight(problem, names, budgets[0], options, explicit)
    if not names:
        raise UserError(f"no solver can run on this problem ({'; '.join(f'{k}: {v}' for k, v in skipped.items())})")
    say(f"problem: {getattr(problem, 'title', problem.process.name)}, {problem.n_samples} samples on {problem.device}; "
        f"solvers: {', '.join(names)}; steps: {', '.join(map(str, budgets))}")
    for name, why in skipped.items():
        say(f"skipped {name}: {why}")

    references: dict[tuple, tuple[Tensor, dict]] = {}
    floor = problem.metric_floor()
    rows: list[Row] = []
    total = len(names) * len(budgets)
    i = 0
    used: dict[str, dict[str, list]] = {name: {} for name in names}  # the grid each (solver, budget) integrated on
    for name in names:
        for steps in budgets:
            i += 1
            tag = f"[{i:>{len(str(total))}}/{total}] {name:<14} steps={steps:<4}"
            row, schedule = _measure(problem, name, steps, options, references, (ref_rtol, ref_atol, check_reference), say, tag)
            used[name][str(steps)] = schedule
            rows.append(row)
    refs = [{**info, "metrics": metrics} for _, info, metrics in references.values()]
    _warn_strays(rows, refs)
    # the grid of each budget (physgen.sampling.grid); a schedule fitted per solver (optimal) gives each solver its own
    grids = {str(b): used[names[0]][str(b)] for b in budgets}
    per_solver = any(used[n] != grids for n in names)
    settings = {"solvers": names, "steps": list(budgets), "grids": None if per_solver else grids, "ref_rtol": ref_rtol, "ref_atol": ref_atol, "options": options,
                "adaptive_tolerance": "min(0.1, 100 / steps^5)", "error": "sqrt(mean_i ||x_i - x_ref_i||^2)"}
    if per_solver:
        settings["solver_grids"] = used
    return Comparison(rows, refs, problem.describe(), floor, skipped, settings)


def _warn_strays(rows: Sequence[Row], refs: Sequence[dict]) -> None:
    """One warning line on stderr naming the runs (and references) that left stray samples."""
    runs = [(f"{r.solver}@{r.steps}", r.metrics.get("stray_fraction")) for r in rows]
    warn_stray_runs(runs + [(f"reference over {_fmt(ref['span'][0])}..{_fmt(ref['span'][-1])}", ref.get("stray_fraction")) for ref in refs])


def _reference(problem, schedule, rtol, atol, check, options, say):
    say(f"reference: dopri5 in float64, rtol={rtol:g} atol={atol:g}, span {_fmt(schedule[0].item())} -> "
        f"{_fmt(schedule[-1].item())} ...")
    ref, info = reference_solve(problem, schedule, rtol, atol, options)
    check_result(ref, problem.x0, "dopri5 (the float64 reference)", len(schedule) - 1)
    if check:
        loose, _ = reference_solve(problem, schedule, rtol * 10, atol * 10, options)
        info["reference_error"] = rms_error(loose, ref)
    metrics = problem.metrics(ref)
    say(f"reference: {info['nfe']} NFE, {info['wall_s']:.1f} s" + (f", error estimate {info['reference_error']:.1e}" if check else "")
        + f", sliced_w2={_fmt(metrics.get('sliced_w2'), '.4f')}")
    return ref, info, metrics


def options_for(name: str, options: dict, process) -> dict:
    """The part of the shared ``options`` that solver ``name`` takes, plus the process's sampling modes."""
    own = {o.name for o in solvers.get_solver(name).options} | {o.name for o in process.sampling_options}
    return {k: v for k, v in options.items() if k in own}


def _check_options(options: dict, names: Sequence[str], process) -> None:
    """Every option must be taken by one of the solvers compared (or be a process sampling mode)."""
    taken = {o.name for o in process.sampling_options}
    for n in names:
        taken |= {o.name for o in solvers.get_solver(n).options}
    unused = sorted(set(options) - taken)
    if unused:
        raise UserError(f"option {unused[0]!r} is taken by none of the solvers compared ({', '.join(names)})")


def _check_budgets(budgets: Sequence[int]) -> list[int]:
    out = []
    for b in budgets:
        if isinstance(b, bool) or not isinstance(b, int) or b <= 0:
            raise UserError(f"--steps must be positive integers, got {b!r}")
        if b not in out:
            out.append(b)
    if not out:
        raise UserError("--steps needs at least one budget")
    return sorted(out)


def _preflight(problem: Problem, names: list[str], steps: int, options: dict, explicit: bool) -> tuple[list[str], dict]:
    """Try each solver on two samples; errors name the solver (explicit) or skip it (defaults)."""
    k = min(2, problem.n_samples)
    x0 = problem.x0[:k]
    noise = problem.noise.subset(slice(0, k))
    label = None if problem.label is None else problem.label[:k]
    ok, skipped = [], {}
    for name in names:
        opts = options_for(name, options, problem.process)
        schedule = problem.schedule(steps, name, opts)
        if is_adaptive(name):
            opts.setdefault("rtol", 1e-2)
            opts.setdefault("atol", 1e-2)
        try:
            with torch.no_grad():
                sample(problem.process, problem.field, x0, schedule, name, noise=noise, label=label, **opts)
        except DivergenceError:
            pass  # it runs, and diverges at this budget: a row of the comparison
        except (ValueError, TypeError, NotImplementedError) as e:
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            if explicit:
                raise UserError(f"solver {name!r} cannot run on process {problem.process.name!r}: {why}") from None
            skipped[name] = why
            continue
        ok.append(name)
    return ok, skipped


# --------------------------------------------------------------------------- outputs


def metric_columns(comparison: Comparison) -> list[str]:
    extra = []
    for r in comparison.rows:
        for k in r.metrics:
            if k not in CSV_COLUMNS and k not in extra:
                extra.append(k)
    return [*CSV_COLUMNS, "nfe_total", *extra]


def csv_text(comparison: Comparison) -> str:
    cols = metric_columns(comparison)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in comparison.rows:
        d = r.as_dict()
        w.writerow([_csv_value(d.get(c)) for c in cols])
    return buf.getvalue()


def _csv_value(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "nan" if math.isnan(v) else repr(v)
    return str(v)


def markdown_table(comparison: Comparison) -> str:
    head = "| solver | steps | NFE | error vs reference | sliced W2 | MMD | wall (s) |"
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|"]
    for r in comparison.rows:
        steps = f"{r.steps} (tol {r.tol:.1e})" if r.tol is not None else str(r.steps)
        err = "—" if math.isnan(r.error_vs_reference) else f"{r.error_vs_reference:.3e}"
        lines.append(f"| {r.solver} | {steps} | {r.nfe} | {err} | {r.sliced_w2:.4f} | {r.mmd:.2e} | {r.wall_s:.3f} |")
    for ref in comparison.references:
        m = ref["metrics"]
        est = "—" if "reference_error" not in ref else f"~{ref['reference_error']:.1e}"
        lines.append(f"| reference (dopri5 float64, tol {ref['rtol']:.0e}) | | {ref['nfe']} | {est} | "
                     f"{m.get('sliced_w2', math.nan):.4f} | {m.get('mmd', math.nan):.2e} | {ref['wall_s']:.3f} |")
    if comparison.floor:
        f = comparison.floor
        lines.append(f"| held-out data vs data (metric floor) | | | | {f.get('sliced_w2', math.nan):.4f} | {f.get('mmd', math.nan):.2e} | |")
    return "\n".join(lines)


def write_outputs(comparison: Comparison, out, title: str = "") -> list[Path]:
    """``results.csv``, ``results.json``, ``error_vs_nfe.png``, ``quality_vs_nfe.png``, ``time_vs_nfe.png``."""
    out = ensure_dir(out)
    with atomic_write(out / "results.csv", "w") as f:
        f.write(csv_text(comparison))
    write_json(out / "results.json", {"problem": comparison.problem, "settings": comparison.settings,
                                       "rows": [_json_row(r) for r in comparison.rows],
                                       "references": [_json_row(r) for r in comparison.references],
                                       "metric_floor": comparison.floor, "skipped": comparison.skipped})
    paths = [out / "results.csv", out / "results.json"]
    paths += plot_comparison(comparison, out, title)
    return paths


def _json_row(r: Any) -> dict:
    d = r.as_dict() if isinstance(r, Row) else dict(r)
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def plot_comparison(comparison: Comparison, out: Path, title: str = "") -> list[Path]:
    """The three log-log figures, one line per solver (stochastic samplers dashed, adaptive dotted)."""
    import matplotlib  # heavy optional dependency: imported only where it is used

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy optional dependency: imported only where it is used

    by_solver: dict[str, list[Row]] = {}
    for r in comparison.rows:
        by_solver.setdefault(r.solver, []).append(r)
    cmap = plt.get_cmap("tab10" if len(by_solver) <= 10 else "tab20")
    styles = {name: dict(color=cmap(i % cmap.N), marker="osD^v<>ph*"[i % 10],
                         linestyle={"stochastic": "--", "adaptive": ":"}.get(rows[0].kind, "-"))
              for i, (name, rows) in enumerate(by_solver.items())}
    suffix = f": {title}" if title else ""

    def draw(ax, value, *, deterministic_only=False, symlog=False):
        """Plot ``value(row)`` against NFE; log axes (``symlog`` y for values that may be <= 0)."""
        shown = []
        for name, rows in by_solver.items():
            if deterministic_only and rows[0].kind == "stochastic":
                continue
            pts = sorted((r.nfe, value(r)) for r in rows if r.nfe > 0 and value(r) is not None and math.isfinite(value(r)))
            pts = [(n, v) for n, v in pts if symlog or v > 0]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name, lw=1.4, ms=4, **styles[name])
                shown += [abs(v) for _, v in pts if v != 0]
        ax.set_xscale("log")
        _nfe_ticks(ax, [r.nfe for r in comparison.rows if r.nfe > 0])
        if symlog:  # the unbiased MMD estimate is often slightly negative near 0
            ax.set_yscale("symlog", linthresh=10 ** math.floor(math.log10(max(min(shown or [1e-4]), 1e-12))))
        else:
            ax.set_yscale("log")
        ax.set_xlabel("NFE (counted at the field)")
        ax.grid(True, which="both", alpha=0.3)

    paths = []
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    draw(ax, lambda r: r.error_vs_reference, deterministic_only=True)
    est = [ref["reference_error"] for ref in comparison.references if ref.get("reference_error") is not None]
    ax.set_ylabel("RMS per-sample L2 error vs reference")
    ax.set_title(f"error vs NFE{suffix}", fontsize=9)
    ref_note = f"reference: dopri5 float64, tol {comparison.references[0]['rtol']:.0e}" if comparison.references else None
    if ref_note and est:
        ref_note += f", own error ~{max(est):.0e}"
    ax.legend(fontsize=7, ncol=2, title=ref_note, title_fontsize=7)
    save_figure(fig, out / "error_vs_nfe.png", dpi=120)
    paths.append(out / "error_vs_nfe.png")

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    for ax, key, label, symlog in ((axes[0], "sliced_w2", "sliced W2 to held-out data", False),
                                   (axes[1], "mmd", "MMD² (unbiased) to held-out data, symlog axis", True)):
        draw(ax, lambda r, k=key: r.metrics.get(k), symlog=symlog)
        for j, ref in enumerate(comparison.references):
            v = ref["metrics"].get(key)
            if v is not None and math.isfinite(v) and (symlog or v > 0):
                ax.axhline(v, color="black", lw=0.9, ls="-.", label="reference ODE solution" if j == 0 else None)
        v = (comparison.floor or {}).get(key)
        if v is not None and math.isfinite(v) and (symlog or v > 0):
            ax.axhline(v, color="grey", lw=0.9, ls=":", label="held-out data vs data (floor)")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=7, ncol=2)
    fig.suptitle(f"sample quality vs NFE{suffix}", fontsize=9)
    save_figure(fig, out / "quality_vs_nfe.png", dpi=120)
    paths.append(out / "quality_vs_nfe.png")

    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    draw(ax, lambda r: r.wall_s)
    ax.set_ylabel("wall time of the solve (s)")
    ax.set_title(f"time vs NFE{suffix}", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    save_figure(fig, out / "time_vs_nfe.png", dpi=120)
    paths.append(out / "time_vs_nfe.png")
    return paths


def _nfe_ticks(ax, nfes) -> None:
    """Plain-number NFE ticks at powers of two (log axes label minor ticks with overlapping mantissas)."""
    from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter  # heavy optional dependency: imported only where it is used

    if not nfes:
        return
    lo, hi = min(nfes), max(nfes)
    ticks = [2 ** k for k in range(0, 20) if lo / 1.5 <= 2 ** k <= hi * 1.5] or [lo, hi]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())


def stderr_log(prefix: str = "compare-solvers") -> Callable[[str], None]:
    def log(line: str) -> None:
        print(f"{prefix}: {line}", file=sys.stderr, flush=True)

    return log
