"""The one dispatcher from ``(process, field)`` to a solver, and the one discretisation.

* :func:`grid` maps ``(process, --steps K, --schedule NAME, --solver)`` to the grid every
  command integrates on (toy, compare-solvers, sample, training grids, nll, experiments):
  ``K`` integration steps of :meth:`physgen.processes.Process.grid`, or, for a solver whose
  row says ``grid="levels"`` (``ald``), ``K`` Langevin levels of the process (its NCSNv2
  plan when ``K`` is not given) followed by the final denoising step to 0.
* :func:`sample` looks the solver up in the table (:data:`solvers.SOLVERS`), splits the
  process's sampling modes (Yukawa's ``birth_death``) from the solver's options (checked
  against the solver's own list), and picks the row that runs: the solver's own where the
  process offers what it needs, or the row a :class:`solvers.offers.Delegating` offer names
  (Yukawa's births flow: ``heun``/``euler`` step the births sampler); otherwise one error
  naming what is missing and which solvers would run.  An offer that is a
  :class:`solvers.offers.CoordinateChange` (the σ form of an affine Gaussian path: VP) maps
  the state and the grid to the solver and the result back.  It refuses to return a result
  that diverged (non-finite, or far outside the prior's scale).

No process name and no solver name appears here: a process declares what it offers, with the
offer types of :mod:`solvers.offers`.
"""
from __future__ import annotations

import sys
from typing import Optional, Sequence

import torch
from torch import Tensor

import solvers
from solvers.afs import FirstCallMean
from solvers.fitted import base_name, is_fitted
from solvers.base import Solution
from solvers.offers import NEED_TABLE, CoordinateChange, Delegating
from solvers.spec import NEEDS, Option, OptionError, parse_options

from solvers.schedules import SCHEDULES, parse_schedule

from .config import parse_steps
from .errors import UserError, unknown_name
from .fitted_solver import fitted_coefficients
from .gits_schedule import GITS, gits_options, gits_schedule
from .noise import SeededNoise
from .optimal_schedule import OPTIMAL, optimal_options, optimal_schedule
from .processes.base import Process, prior_centre
from .schedule_file import FILE_PREFIX, file_schedule, is_file_schedule

__all__ = ["grid", "sample", "sampling_record", "solver_spec", "solver_rows", "format_solver_table", "check_result", "DivergenceError",
           "DIVERGENCE_RATIO", "STRAY_RATIO", "stray_fraction", "pooled_stray_fraction", "warn_strays", "warn_stray_runs",
           "COMMAND_ARGUMENTS", "SAMPLER_FLAGS", "check_sampler_options"]

DIVERGENCE_RATIO = 4.0
"""A result whose median distance from the prior's centre exceeds this multiple of the
prior draws' is refused: generation contracts a wide prior onto the data, so samples far
outside the prior's own scale mean the solver diverged (or the prior does not cover the data)."""

STRAY_RATIO = 0.5
"""A sample farther from the prior's centre than this multiple of the prior draws' median
distance from it is a *stray*; :func:`stray_fraction` counts them.  The median test above
sees only the bulk: a few samples at 100x the data's scale pass it.  Generation contracts
a prior much wider than the data onto the data: with the toy rule σ_max = 10√λ_max a point
4 principal stds from the data's mean is at 0.34 of the prior's median radius in 2-D (less
in more dimensions; measured on the two-mode mixture, the farthest of 5000 data points is
at 0.23, under PFGM's wider z_max at 0.04), and images in [-1, 1] under σ_max = 80 lie
within 0.013 of it.  So a correct sample lies well inside half that radius, and one beyond
it was barely moved from its prior draw (or the prior does not cover the data).  Both are
measured in the data's units (VP's ``x/a``: :meth:`physgen.processes.Process.signal_scale`),
where every process's prior is wide (VP's ``x`` prior, ``b ≈ 1``, is not)."""


COMMAND_ARGUMENTS = {
    "process": "the command's process (--process)", "field": "the command's field", "x0": "the prior draws (--seed)",
    "x": "the prior draws (--seed)", "target": "what the process offers the solver", "method": "--solver",
    "schedule": "--steps and --schedule", "label": "--label", "noise": "the seeded noise of --seed",
    "generator": "the seeded noise of --seed", "return_trajectory": "the command (it records trajectories where it draws them)",
    "from_prior": "the command (an editing method's late start is no prior draw)",
    "coefficients": "the fit of --solver fitted:BASE (physgen.fitted_solver)",
}
"""What a sampling command hands the dispatcher (and the dispatcher a solver) itself, with the
flag that sets it: a sampler option of one of these names would collide with it."""

SAMPLER_FLAGS = {"steps_per_level": "--steps-per-level", "eps": "--eps", "snr": "--snr", "birth_death": "--birth-death",
                 "rtol": "--rtol", "atol": "--atol"}
"""Sampler options with a flag of their own (every other one is ``--sampler-opt KEY=VALUE``)."""


def check_sampler_options(options: dict, where: str = "--sampler-opt") -> dict:
    """``options`` if none of them is one of the :data:`COMMAND_ARGUMENTS` (a :class:`UserError`
    naming it and the flag that sets it otherwise)."""
    for key in options:
        if key in COMMAND_ARGUMENTS:
            raise UserError(f"{where} {key}=...: {key} is not a sampler option; it is set by {COMMAND_ARGUMENTS[key]}")
    return options


def _flag_of(option: str) -> str:
    return f"{SAMPLER_FLAGS[option]} or --sampler-opt {option}=..." if option in SAMPLER_FLAGS else f"--sampler-opt {option}=..."


class DivergenceError(FloatingPointError):
    """A sampler's result is non-finite or far outside the prior's scale (``solution``: what it returned)."""

    solution: Optional[Solution] = None


def solver_spec(method: str) -> solvers.Spec:
    """The table row of ``method``; :class:`UserError` naming the valid ones (or why a withheld one is not offered)."""
    try:
        return solvers.get_solver(method)
    except ValueError:
        if is_fitted(method) and base_name(method) in solvers.SOLVERS:  # fitted:heun, fitted:restart, ...: say why not
            rows = ", ".join(n for n in solvers.SOLVERS if is_fitted(n))
            raise UserError(f"solver {method!r}: coefficients are fitted for the deterministic fixed-step solvers with one field call per "
                            f"step; {base_name(method)!r} is not one (the fitted rows: {rows})") from None
        why = solvers.withheld(method)  # a torchdiffeq method left out of the table: say why
        raise (UserError(why) if why else unknown_name("solver", method, solvers.solver_names())) from None


def grid(process: Process, steps: Optional[int] = None, schedule: Optional[str] = None, *, method: str = "heun",
         dim: Optional[int] = None, field=None, cache_dir=None, shape=None, options: Optional[dict] = None, label=None) -> Tensor:
    """The grid ``method`` integrates on for ``steps`` steps of the named schedule (float64, decreasing).

    ``steps=None`` is the process's default (``default_steps``, 18 for most; for ``ald``, the
    process's NCSNv2 number of levels).
    For ``ald`` (and any solver whose row says ``grid="levels"``) the points are the
    process's Langevin levels (``dim``, the data dimension, decides NCSNv2's rule) plus 0.
    ``schedule`` is a name of :data:`solvers.schedules.SCHEDULES`, optionally with keywords
    (``polyexponential:rho=2``), or ``"optimal"`` (``optimal:n_pilot=64,max_evals=100``): the
    grid fitted to ``method``'s error on ``field`` (:mod:`physgen.optimal_schedule`; ``shape``
    of one sample, default ``(dim,)``, the solver's ``options``, ``label``; cached in ``cache_dir``),
    ``"gits"`` (``gits:n_pilot=N,fine=M``): time steps by dynamic programming over one teacher
    trajectory of ``field`` (:mod:`physgen.gits_schedule`, cached the same way), or
    ``"file:PATH"``: the user's own grid, a JSON list of ``steps + 1`` scales (:mod:`physgen.schedule_file`).
    """
    steps = None if steps is None else parse_steps(steps)  # the library entry's check (a --steps flag passed the same one); nothing below repeats it
    spec = solver_spec(method)
    if is_fitted(method):  # BASE's grid (optimal: fitted for BASE), then the coefficients fitted on it (cached beside it)
        g = grid(process, steps, schedule, method=base_name(method), dim=dim, field=field, cache_dir=cache_dir, shape=shape,
                 options=options, label=label)
        if field is not None and (shape is not None or dim is not None):
            fitted_coefficients(process, field, g, method, sample_fn=sample, shape=shape or (int(dim),), options=options, label=label,
                                cache_dir=cache_dir)
        return g
    if spec.grid == "levels":
        if schedule is not None:
            raise UserError(f"solver {method!r} runs on the process's geometric noise levels; --schedule does not apply (use --steps L for L levels)")
        caps = process.capabilities()
        if any(n not in caps for n in spec.needs):
            raise _missing(spec, process, caps, {})
        if dim is None:
            raise UserError(f"solver {method!r} needs the data dimension to place its levels")
        levels = process.langevin_levels(int(dim), steps)
        return torch.cat([levels.double(), torch.zeros(1, dtype=torch.float64)])
    if str(schedule).partition(":")[0] == OPTIMAL:
        if field is None or (shape is None and dim is None):
            raise UserError("--schedule optimal is fitted to a field: this command does not pass one (use a named schedule)")
        return optimal_schedule(process, field, steps, method=method, sample_fn=sample, shape=shape or (int(dim),), options=options,
                                label=label, cache_dir=cache_dir, **optimal_options(schedule))
    if str(schedule).partition(":")[0] == GITS:
        if field is None or (shape is None and dim is None):
            raise UserError("--schedule gits is fitted to a field's teacher trajectory: this command does not pass one (use a named schedule or file:PATH)")
        return gits_schedule(process, field, steps, sample_fn=sample, shape=shape or (int(dim),), options=options, label=label,
                             cache_dir=cache_dir, **gits_options(schedule))
    if is_file_schedule(schedule):
        return file_schedule(process, schedule, steps)
    if schedule is None:
        return process.grid(steps)
    if str(schedule).partition(":")[0] not in SCHEDULES:
        raise unknown_name("schedule", schedule, [*SCHEDULES, OPTIMAL, GITS, FILE_PREFIX + "PATH"])
    try:
        name, kw = parse_schedule(schedule)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return process.grid(steps, name, **kw)


def _split_modes(process: Process, options: dict) -> tuple[dict, dict]:
    """``(modes for process.offers, solver options)``: the process's declared sampling options, parsed."""
    declared = {o.name for o in process.sampling_options}
    given = {k: v for k, v in options.items() if k in declared}
    try:
        modes = parse_options(process.sampling_options, given, f"process {process.describe()}")
    except OptionError as exc:
        raise UserError(str(exc)) from None
    return modes, {k: v for k, v in options.items() if k not in declared}


def _in_modes(process: Process, modes: dict) -> str:
    """``" in mode 'smc'"``: the process's sampling modes that are not its defaults."""
    set_ = [repr(modes[o.name]) for o in process.sampling_options if modes.get(o.name, o.default) != o.default]
    return f" in mode {', '.join(set_)}" if set_ else ""


def _runs_here(caps) -> list[str]:
    """The rows that run where a process meets the needs ``caps``: those whose needs it meets,
    and those served by an offer of a :class:`solvers.offers.Delegating` type."""
    runs = [n for n, s in solvers.SOLVERS.items() if all(k in caps for k in s.needs) and not n.startswith(solvers.TORCHDIFFEQ_PREFIX)]
    offer_types = [NEED_TABLE[need].protocol for need in sorted(caps)]
    return runs + [n for t in offer_types if isinstance(t, type) and issubclass(t, Delegating) for n in t.serves if n not in runs]


def _route(spec: solvers.Spec, process: Process, offers: dict, caps, modes: dict, options: dict) -> tuple[solvers.Spec, dict]:
    """The row that runs and its options: ``spec`` itself where the process offers what it
    needs; the row a :class:`~solvers.offers.Delegating` offer names where the offer runs or
    serves ``spec`` (Yukawa's births flow: heun/euler step the births sampler, in the
    process's mode); else one error naming what is missing and which solvers would run."""
    for offer in offers.values():
        if isinstance(offer, Delegating) and (spec.name == offer.runs or spec.name in offer.serves):
            try:
                return solvers.get_solver(offer.runs), {**options, **offer.solver_options(spec.name, options)}
            except ValueError as exc:
                raise UserError(str(exc)) from None
    if all(n in caps for n in spec.needs):
        return spec, options
    raise _missing(spec, process, caps, modes)


def _missing(spec: solvers.Spec, process: Process, caps, modes: dict) -> UserError:
    need = next(n for n in spec.needs if n not in caps)
    return UserError(f"solver {spec.name!r} needs {NEEDS[need]}; process {process.describe()}{_in_modes(process, modes)} "
                     f"does not offer it (it offers: {', '.join(sorted(caps))}; solvers that run here: {', '.join(_runs_here(caps))})")


AFS = Option("afs", bool, False, "analytical first step: the first denoiser call, at s_max, replaced by the data's mean (one NFE saved; "
             "one-NFE-per-step denoiser-form solvers, Gaussian kernels)")
"""The one sampler option the dispatcher serves itself, for every eligible row (:mod:`solvers.afs`)."""


def _afs(spec: solvers.Spec, process: Process, caps, options: dict) -> bool:
    """Whether ``afs`` is asked for (popped from ``options``); :class:`UserError` where it has no meaning."""
    if "afs" not in options:
        return False
    try:
        on = parse_options((AFS,), {"afs": options.pop("afs")}, f"solver {spec.name!r}")["afs"]
    except OptionError as exc:
        raise UserError(f"{exc} (given as --sampler-opt afs=...)") from None
    eligible = spec.target == "denoiser" and spec.nfe == 1 and not spec.adaptive and spec.grid == "steps"
    if on and not eligible:
        raise UserError(f"--sampler-opt afs=true replaces the first denoiser call of a one-NFE-per-step denoiser-form solver; "
                        f"{spec.name!r} is not one (dpmpp-2m, dpmpp-3m, ipndm, deis, unipc-bh1/2 are)")
    if on and "gaussian" not in caps:
        raise UserError(f"--sampler-opt afs=true needs a Gaussian kernel, where D(x, s_max) is the data's mean to O(σ_data²/s_max²); "
                        f"process {process.describe()} has none")
    return on


def sample(process: Process, field, x0: Tensor, schedule: Tensor, method: str = "heun", *, noise: Optional[SeededNoise] = None,
           label: Optional[Tensor] = None, from_prior: bool = True, **options) -> Solution:
    """Generate from ``x0`` (drawn at ``schedule[0]``) with the named solver; see the module docstring.

    ``from_prior=False``: ``x0`` is no prior draw (an editing method's solve from a perturbed
    input, :mod:`physgen.editing`), so the divergence check and the stray fraction, which
    measure against the prior draws' spread, do not apply; non-finite results are still refused."""
    spec = solver_spec(method)
    given = dict(options)  # as the command handed them to grid() too: the key of a fitted solver's coefficients
    modes, options = _split_modes(process, options)
    offers, caps = process.offers(field, label, **modes), process.capabilities(**modes)
    spec, options = _route(spec, process, offers, caps, modes, options)
    coefficients = options.pop("coefficients", None) if is_fitted(spec.name) else None
    afs = _afs(spec, process, caps, options)
    try:
        options = spec.check_options(options)
    except OptionError as exc:  # name the flag too: --steps-per-level, --snr, ... or --sampler-opt KEY=VALUE
        flag = f" (given as {_flag_of(exc.option)})" if exc.option else ""
        raise UserError(f"{exc}{flag}") from None
    if spec.stochastic and noise is not None:
        options["noise"] = noise
    if is_fitted(spec.name):  # the fit of a command's grid call (memory or cache), else fitted here on pilot draws
        options["coefficients"] = coefficients if coefficients is not None else fitted_coefficients(
            process, field, schedule, spec.name, sample_fn=sample, shape=x0.shape[1:], options=given, label=label)
    target = offers[spec.target]
    run = FirstCallMean(target, _data_mean(process, x0)) if afs else target
    if isinstance(target, CoordinateChange):  # an offer in coordinates of its own (VP's σ form)
        x, s = target.to_solver(x0, schedule)
        sol = target.from_solver(spec.fn(run, x, s, **options), schedule)
    else:
        sol = spec.fn(run, x0, schedule, **options)
    if afs:
        sol.stats.nfe -= run.saved
        sol.stats.extra["afs"] = True
    sol.stats.extra.update(modes)  # the process's sampling modes (Yukawa's birth_death), recorded with the result
    s_first, s_last = torch.as_tensor(schedule, dtype=torch.float64)[[0, -1]].tolist()
    x_data, x0_data = sol.x / process.signal_scale(s_last), x0 / process.signal_scale(s_first)  # in the data's units
    try:
        check_result(x_data, x0_data if from_prior else None, spec.name, len(schedule) - 1)
    except DivergenceError as exc:
        exc.solution = sol
        raise
    fraction = stray_fraction(x_data, x0_data if from_prior else None)
    if fraction is not None:
        sol.stats.extra["stray_fraction"] = fraction
    return sol


def _data_mean(process: Process, x0: Tensor) -> Tensor:
    """The data's mean the prior is centred on (``prior_mean``; the origin when none), shaped like one sample."""
    return torch.zeros_like(x0[0]) if process.prior_mean is None else prior_centre(process.prior_mean, x0)


def _prior_radii(x: Tensor, x0: Optional[Tensor]) -> Optional[tuple[Tensor, Tensor]]:
    """``(‖x - c‖, r0)``: distances from the prior's centre ``c`` (the coordinate-wise median
    of the prior draws ``x0``) and the draws' median distance ``r0``; ``None`` below 8 samples
    or without prior draws (``x0`` None)."""
    if x0 is None or x.shape[0] < 8 or x.shape != x0.shape:
        return None
    flat = x.detach().reshape(x.shape[0], -1)  # a measure, not a loss (a fitted solver's fit differentiates x)
    f0 = x0.reshape(x0.shape[0], -1).to(flat.dtype)
    centre = f0.median(0).values
    return (flat - centre).norm(dim=1), (f0 - centre).norm(dim=1).median()


def check_result(x: Tensor, x0: Optional[Tensor], solver: str, steps: int) -> None:
    """:class:`DivergenceError` when ``x`` is non-finite, or when its median distance from the
    prior's centre (the coordinate-wise median of ``x0``) exceeds :data:`DIVERGENCE_RATIO`
    times the prior draws' (checked from 8 samples up)."""
    bad = ~torch.isfinite(x.reshape(x.shape[0], -1)).all(1)
    hint = f"take more steps than {steps} (--steps) or another solver"
    if bool(bad.any()):
        raise DivergenceError(f"solver {solver!r} with {steps} steps diverged: {int(bad.sum())} of {x.shape[0]} samples are NaN or Inf; {hint}")
    radii = _prior_radii(x, x0)
    if radii is None:
        return
    r, r0 = radii[0].median(), radii[1]
    if float(r) > DIVERGENCE_RATIO * float(r0) > 0:
        raise DivergenceError(f"solver {solver!r} with {steps} steps diverged: the samples' median distance from the prior's centre "
                              f"is {float(r):.3g}, {float(r / r0):.1f}x the prior's own ({float(r0):.3g}); {hint} "
                              f"(or, if the data lie outside the prior, a larger sigma_max)")


def stray_fraction(x: Tensor, x0: Optional[Tensor]) -> Optional[float]:
    """The fraction of samples ``x`` farther than :data:`STRAY_RATIO` times the prior draws'
    median distance from the prior's centre (both from ``x0``, as in :func:`check_result`);
    ``None`` below 8 samples (no estimate of the prior's scale)."""
    radii = _prior_radii(x, x0)
    if radii is None:
        return None
    r, r0 = radii
    return float((r > STRAY_RATIO * r0).double().mean())


def pooled_stray_fraction(parts: Sequence[tuple[Optional[float], int]]) -> Optional[float]:
    """The stray fraction of several solves ``(fraction or None, number of samples)`` together
    (batches, ranks' chunks); ``None`` when none of them was measured."""
    measured = [(f, n) for f, n in parts if f is not None]
    if not measured:
        return None
    return sum(f * n for f, n in measured) / sum(n for _, n in measured)


def warn_strays(fraction: Optional[float], n: int, stream=None, what: str = "") -> None:
    """One warning line on ``stream`` (stderr) when some of ``n`` samples strayed (fraction > 0);
    ``what`` says which samples (`` of grid.png``, `` on rank 1``)."""
    if not fraction:
        return
    print(f"warning: {round(fraction * n)} of {n} samples{what} ({fraction:.2%}) ended beyond {STRAY_RATIO:g}x the prior's median "
          f"radius from its centre, far from any data (recorded as stray_fraction); more steps, another solver or a wider "
          f"scale range may bring them in", file=stream or sys.stderr, flush=True)


def warn_stray_runs(runs: Sequence[tuple[str, Optional[float]]], stream=None) -> None:
    """One warning line on ``stream`` (stderr) naming the runs of a sweep that left strays
    (``runs``: each run's label and stray fraction, ``None`` where it was not measured)."""
    strayed = [f"{label} {fraction:.2%}" for label, fraction in runs if fraction]
    if strayed:
        print(f"warning: stray samples (beyond {STRAY_RATIO:g}x the prior's median radius from its centre, far from any data; recorded "
              f"as stray_fraction) in {len(strayed)} of {len(runs)} runs: {', '.join(strayed)}", file=stream or sys.stderr, flush=True)


def sampling_record(process: Process, method: str, schedule_name: Optional[str], schedule: Tensor, stats) -> dict:
    """What a sampling command did, for its JSON (``metrics.json``, ``sampling.json``):
    solver, integration steps, schedule name, NFE (measured), the row's NFE per step (a
    number, ``None`` where it varies) and the grid itself."""
    spec = solver_spec(method)
    name = schedule_name or ("levels" if spec.grid == "levels" else process.default_schedule_name)
    s = torch.as_tensor(schedule, dtype=torch.float64).flatten()
    return {"solver": method, "steps": int(s.numel() - 1), "schedule": name, "nfe": int(stats.nfe), "nfe_per_step": spec.nfe,
            "grid": s.tolist()}


def solver_rows(process: Optional[Process] = None, **modes) -> list[dict]:
    """One row per solver of the table: name, needs, order and NFE per step (each number with
    its note, :attr:`solvers.Spec.order_text`), stochastic, adaptive, and (for a process)
    whether it runs there or what is missing."""
    caps = process.capabilities(**modes) if process is not None else None
    runs = _runs_here(caps) if process is not None else []
    rows = []
    for name, spec in solvers.SOLVERS.items():
        row = {"name": name, "needs": " + ".join(spec.needs), "order": spec.order_text, "nfe_per_step": spec.nfe_text,
               "stochastic": spec.stochastic, "adaptive": spec.adaptive, "reference": spec.reference,
               "options": ", ".join(o.name for o in spec.options)}
        if caps is not None:
            missing = [] if name in runs else [n for n in spec.needs if n not in caps]
            row["runs"] = "yes" if not missing else f"no: needs {missing[0]}"
        rows.append(row)
    return rows


def format_solver_table(process: Optional[Process] = None, **modes) -> str:
    """The table ``--list-solvers`` prints."""
    rows = solver_rows(process, **modes)
    cols = ["name", "needs", "order", "nfe_per_step", "stochastic"] + (["runs"] if process is not None else []) + ["options"]
    text = [[str(r[c]) if not isinstance(r[c], bool) else ("yes" if r[c] else "no") for c in cols] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in text)) for i, c in enumerate(cols)]
    head = f"solvers for process {process.describe()}" if process is not None else "solvers"
    lines = [head, "  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(t, widths)) for t in text]
    lines.append("needs: " + "; ".join(f"{k} = {v}" for k, v in NEEDS.items()))
    return "\n".join(lines)
