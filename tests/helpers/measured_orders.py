"""The solver table's orders and NFE per step, measured (tests/solvers/test_spec_orders.py checks the
rows against them; ``python tests/helpers/measured_orders.py`` prints the table in benchmarks/RESULTS.md).

The problem: the closed-form Gaussian probability-flow ODE (:class:`toy_fields.GaussianPF`)::

    dx/dσ = (x - D(x, σ))/σ,   D = mu + c²/(c² + σ²)(x - mu),   x(σ) = mu + (x0 - mu) sqrt((c² + σ²)/(c² + σ0²)),

data N(0.5, c²) with ``c = 0.5, 1, 2`` (one per sample, so σ_max/σ_data = 40 to 160), from
σ = 80 (EDM's σ_max; x0 ~ N(0, 80²)) to σ = 0.05 on a grid uniform in ``log σ``; the error is
the largest ``|x_K - x(0.05)|`` over the batch.  Every deterministic row runs on it, and so
does the deterministic member of a stochastic row (:data:`DETERMINISTIC_MEMBER`).

* Fixed-step rows: the order is the least-squares slope of ``log error`` against ``log K``
  over the row's step counts (:data:`WINDOWS`; errors between about 1e-2 and 1e-8).  The
  multistep rows that start with lower-order steps are fitted before their warm-up's
  ``O(h²)`` term takes over (16-128 steps) and, separately, in that tail (:data:`TAILS`).
* Adaptive rows: the order of the step they propagate, from its local error: one step of
  size ``h`` (``first_step``, or ``h_init`` in ``λ = -log σ``, with tolerances so loose that
  it is accepted) from σ0 falls as ``h^(p+1)``.
* NFE per step: counted at the field, over ``K`` steps (fixed-step rows) or as the NFE of two
  accepted steps less that of one (adaptive rows).

The flow is linear in ``x``: some methods do better on it than their order (midpoint 3;
the 5th-order Dormand-Prince step 7.9), so a row's order is checked as a lower bound.
"""
from __future__ import annotations

import math
import re
import sys
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torchdiffeq

import solvers
from toy_fields import GaussianPF, UnitGaussianVE

S_MAX, S_MIN = 80.0, 0.05
C = (0.5, 1.0, 2.0)

DETERMINISTIC_MEMBER = {  # the options that make a stochastic row deterministic
    "euler-ancestral": {"eta": 0.0}, "dpm2-ancestral": {"eta": 0.0}, "dpmpp-sde": {"eta": 0.0}, "dpmpp-2m-sde": {"eta": 0.0},
    "dpmpp-3m-sde": {"eta": 0.0}, "edm-sde": {"s_churn": 0.0}, "births": {"mode": "off"},
}
_BEFORE_TAIL = (16, 32, 64, 128)
WINDOWS = {  # step counts where the row's error lies in about 1e-2 .. 1e-8 (default: DEFAULT_WINDOW)
    "rk4": _BEFORE_TAIL, "rk4-38": _BEFORE_TAIL, "torchdiffeq:rk4": _BEFORE_TAIL,
    "lms": _BEFORE_TAIL, "dpmpp-3m": _BEFORE_TAIL, "deis": _BEFORE_TAIL, "dpmpp-3m-sde": _BEFORE_TAIL,
    "dpm-fast": (24, 48, 96, 192),  # budgets 0 mod 3: orders 3, ..., 3, 2, 1
}
DEFAULT_WINDOW = (32, 64, 128, 256)
TAILS = {"lms": (2048, 4096, 8192)}  # step counts where a warm-up's O(h²) term dominates (default: DEFAULT_TAIL)
DEFAULT_TAIL = (512, 1024, 2048)
_BIG_STEPS = (4.0, (2.0, 1.5, 1.0, 0.75))  # (σ0, step sizes), binary fractions: σ0 - h is exact
LOCAL_STEPS = {"dopri5": _BIG_STEPS, "torchdiffeq:dopri5": _BIG_STEPS, "torchdiffeq:dopri8": _BIG_STEPS,
               "dpm-adaptive": (2.0, (0.25, 0.125, 0.0625, 0.03125))}  # steps in λ
DEFAULT_LOCAL = (2.0, (0.5, 0.25, 0.125, 0.0625))


def deterministic_rows() -> list[str]:
    """The rows with an order to measure: the deterministic ones and the deterministic members
    of stochastic ones."""
    return [n for n, spec in solvers.SOLVERS.items()  # fitted:BASE is BASE at its default (neutral) coefficients, bit for bit: tests/solvers/test_fitted.py
            if (not spec.stochastic or n in DETERMINISTIC_MEMBER) and not solvers.is_fitted(n)]


def tail_order(name: str):
    """The order a row's note gives below some error (``"... 2 below error ~1e-6 ..."``), or None."""
    found = re.search(r"(\d+) below error", solvers.get_solver(name).order_note)
    return int(found.group(1)) if found else None


def slope(xs, errs) -> float:
    """Least-squares slope of ``-log err`` against ``log x``."""
    return float(-np.polyfit(np.log(xs), np.log(errs), 1)[0])


def _solve(name: str, flow, x0, grid, **options):
    target = flow.joint if name == "births" else flow
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchdiffeq's adams: "Functional iteration did not converge"
        sol = solvers.solve(target, x0, grid, method=name, **{**DETERMINISTIC_MEMBER.get(name, {}), **options})
    assert sol.stats.nfe == flow.calls, (name, sol.stats.nfe, flow.calls)  # the solver's count is the field's
    return sol


def error(name: str, K: int, c=C, **options) -> float:
    """The reference problem's error with ``K`` steps (``c``: the data's std, one per sample)."""
    flow = GaussianPF(0.5, c)
    x0 = torch.randn(12, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * S_MAX
    sol = _solve(name, flow, x0, solvers.log_uniform_schedule(K + 1, S_MIN, S_MAX), **options)
    return float((sol.x - flow.exact(x0, S_MAX, S_MIN)).abs().max())


def one_step(name: str, s0: float, h: float, steps: int = 1) -> tuple[float, int]:
    """``(error, NFE)`` of ``steps`` accepted adaptive steps of size ``h`` from ``s0``."""
    flow = GaussianPF(0.5, C)
    x0 = flow.mu + torch.randn(12, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * s0
    if name == "dpm-adaptive":  # its steps are in λ = -log σ
        s1, opts = s0 * math.exp(-h * steps), {"h_init": h}
    else:
        s1, opts = s0 - h * steps, {"first_step": h}
    sol = _solve(name, flow, x0, [s0, s1], rtol=1.0, atol=1.0, **opts)  # the loosest tolerances the options take: every step of these sizes is accepted
    return float((sol.x - flow.exact(x0, s0, s1)).abs().max()), flow.calls


@dataclass
class Measured:
    name: str
    order: float  # nan where the error did not fall
    xs: tuple  # step counts, or step sizes for adaptive rows
    errors: list


def measure(name: str, window=None) -> Measured:
    """The measured order of row ``name`` (module docstring); ``window`` overrides its step counts."""
    if solvers.get_solver(name).adaptive:
        s0, hs = LOCAL_STEPS.get(name, DEFAULT_LOCAL)
        errs = [one_step(name, s0, h)[0] for h in hs]
        return Measured(name, -slope(hs, errs) - 1.0, hs, errs)
    Ks = window or WINDOWS.get(name, DEFAULT_WINDOW)
    errs = [error(name, K) for K in Ks]
    ok = all(math.isfinite(e) and 0 < e < 1e3 for e in errs)
    return Measured(name, slope(Ks, errs) if ok else math.nan, Ks, errs)


def counted_nfe_per_step(name: str, K: int = 6) -> float:
    """NFE per step counted at the field: over ``K`` steps of a grid that does not end at 0
    (every need offered by the unit Gaussian), or two adaptive steps less one."""
    if solvers.get_solver(name).adaptive:
        s0, hs = LOCAL_STEPS.get(name, DEFAULT_LOCAL)
        return float(one_step(name, s0, hs[-1], 2)[1] - one_step(name, s0, hs[-1], 1)[1])
    flow = GaussianPF(0.5, C) if name == "births" else UnitGaussianVE()
    x0 = torch.randn(6, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    grid = solvers.log_uniform_schedule(K + 1, S_MIN, 10.0)
    opts = {"generator": torch.Generator().manual_seed(0)} if solvers.get_solver(name).stochastic else {}
    flow.calls = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        solvers.solve(flow.joint if name == "births" else flow, x0, grid, method=name, **opts)
    return flow.calls / K


def torchdiffeq_directly(method: str, K: int, grid: str = "log") -> float:
    """The reference problem's error with torchdiffeq's own ``method`` (no adapter in between)
    on ``K`` steps of a log-uniform or a uniform grid."""
    flow = GaussianPF(0.5, C)
    x0 = torch.randn(12, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * S_MAX
    t = solvers.log_uniform_schedule(K + 1, S_MIN, S_MAX) if grid == "log" else torch.linspace(S_MAX, S_MIN, K + 1, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y = torchdiffeq.odeint(lambda s, x: flow(x, s.expand(x.shape[0])), x0, t, method=method)[-1]
    return float((y - flow.exact(x0, S_MAX, S_MIN)).abs().max())


def main() -> int:
    print(f"Gaussian PF-ODE, data N(0.5, c²), c = {C}, σ {S_MAX:g} -> {S_MIN:g}, log-uniform grid; max error over the batch")
    print("| solver | claimed | measured | where | errors | NFE/step claimed | counted |")
    print("|---|---|---|---|---|---|---|")
    for name in deterministic_rows():
        spec, m = solvers.get_solver(name), measure(name)
        where = (f"1 step from σ={LOCAL_STEPS.get(name, DEFAULT_LOCAL)[0]:g}, h = " if spec.adaptive else "K = ") + ", ".join(f"{x:g}" for x in m.xs)
        nfe = "-" if spec.nfe is None else f"{spec.nfe:g}"
        print(f"| {name} | {spec.order_text} | {m.order:.2f} | {where} | {' '.join(f'{e:.1e}' for e in m.errors)} | {nfe} "
              f"| {counted_nfe_per_step(name):.3g} |")
    print("\nthe warm-up tail: | solver | the note's order | measured | K | errors |")
    for name in deterministic_rows():
        if tail_order(name) is not None:
            m = measure(name, TAILS.get(name, DEFAULT_TAIL))
            print(f"| {name} | {tail_order(name)} | {m.order:.2f} | {', '.join(map(str, m.xs))} | {' '.join(f'{e:.1e}' for e in m.errors)} |")
    print("\ndpm-fast by budget mod 3: | budgets | measured | errors |")
    for Ks in ((24, 48, 96, 192), (25, 49, 97, 193), (26, 50, 98, 194)):
        m = measure("dpm-fast", Ks)
        print(f"| {', '.join(map(str, Ks))} ({Ks[0] % 3} mod 3) | {m.order:.2f} | {' '.join(f'{e:.1e}' for e in m.errors)} |")
    print("\ntorchdiffeq called directly: | method | grid | errors at K = 32, 64, 128, 256 | slope |")
    for method in ("rk4", "implicit_adams", "explicit_adams"):
        for grid in ("log", "uniform"):
            e = [torchdiffeq_directly(method, K, grid) for K in (32, 64, 128, 256)]
            print(f"| {method} | {grid} | {' '.join(f'{v:.1e}' for v in e)} | {slope((32, 64, 128, 256), e):.2f} |")
    warm_up()
    return 0


WARM_UP = (("dpmpp-3m", {}), ("deis", {}), ("unipc-bh2", {}), ("unipc-bh2", {"order": 3}), ("unipc-bh2", {"order": 3, "corrector": False}))


def warm_up(Ks=(16, 32, 64, 128, 256, 512, 1024, 2048)) -> None:
    """Where the multistep rows' warm-up term shows: the slope per doubling of ``K`` down to
    small errors, for σ_data = 1 alone and for the reference problem's three."""
    print(f"\nwarm-up: slope per doubling of K = {', '.join(map(str, Ks))}; errors")
    for c in (1.0, C):
        for name, options in WARM_UP:
            e = [error(name, K, c, **options) for K in Ks]
            slopes = " ".join(f"{math.log2(e[i] / e[i + 1]):.2f}" for i in range(len(Ks) - 1))
            print(f"| c = {c} | {name} {options or ''} | {slopes} | {' '.join(f'{v:.1e}' for v in e)} |")


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(main())
