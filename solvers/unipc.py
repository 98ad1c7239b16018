"""UniPC: unified predictor-corrector on the denoiser form (Zhao et al., arXiv 2302.04867).

In ``λ = -log s`` the denoiser form reads ``dx/dλ = D - x`` (see :mod:`solvers.dpm`), whose
exact step is ``x_t = e^{-h} x_s + ∫_0^h e^{-(h-τ)} D dτ`` with the Taylor expansion
``Σ_n h^{n+1} φ_{n+1}(-h) D^{(n)}`` (:mod:`solvers.expint`).  UniPC, data-prediction form
(the paper's Alg. 2 / "UniPC with x0-prediction"; diffusers' ``UniPCMultistepScheduler``,
``predict_x0=True``): with ``m_j = D(x_j, s_j)``, ``h = λ_t - λ_s``, ``r_k = (λ_{s-k} - λ_s)/h``
for the older points and ``D1_k = (m_{s-k} - m_s)/r_k``,

    x_lin = e^{-h} x_s + (1 - e^{-h}) m_s
    UniP-p:  x_t  = x_lin - B(h) Σ_{k<p}  ρ_k D1_k                  (predictor, order p)
    UniC-p:  x_t^c = x_lin - B(h) (Σ_{k<p} ρ^c_k D1_k + ρ^c_p (m_t - m_s)),  m_t = D(x_t, s_t)

where ``ρ`` solve ``R ρ = b``: ``R_{nk} = r_k^{n-1}`` (``r_p = 1`` for the corrector's
``m_t``), ``b_n = -h φ_{n+1}(-h) n!/B(h)`` (so ``-B Σ_k ρ_k D1_k`` reproduces the Taylor
terms ``h^{n+1} φ_{n+1} D^{(n)}`` for ``n < p``); UniP-2 takes ``ρ = 1/2`` and UniC-1
``ρ^c = 1/2`` (the paper's choices).  ``B(h) = -h`` is ``bh1``, ``B(h) = e^{-h} - 1`` is
``bh2`` (the paper's ``B_1``, ``B_2`` with ``hh = -h`` for data prediction).

The corrector costs no evaluation: ``m_t`` is the next step's ``m_s`` (it is evaluated at
the *uncorrected* ``x_t``, as in the paper), so each step is 1 NFE, and UniC raises the
order from ``p`` to ``p + 1``.  The corrector of step ``i - 1 -> i`` runs at the start of
step ``i``, once ``m_i`` is known; the last step's prediction is not corrected (it would
need one more evaluation: the paper and diffusers also stop there).  A grid ending at
``s = 0`` ends with the denoising step ``x <- D(x, s_{K-1})`` of every solver here, which is
what diffusers' final ``σ = 0`` step reduces to (with ``h = ∞`` its update is ``m_s``).
Warm-up: order ``min(order, i + 1)`` for the predictor of step ``i`` and the previous
step's order for its corrector (as diffusers' ``UniPCMultistepScheduler``, whose corrector
at step ``i`` also takes the previous step's order), lowered on a step that reaches more than
twice the λ-span of its history (:func:`solvers.expint.multistep_order`; VP's ``vp-time``
grid ends with one); no lower-order final steps otherwise
(diffusers' ``lower_order_final`` lowers the last steps' order below 15 steps; ours is the
denoising step alone).

The warm-up's order-1/2 steps leave an ``O(h²)`` term only without the corrector.  UniC
raises the first step from order 1 to 2 (local error ``O(h³)``), so with it (the default)
there is no ``O(h²)`` term: on the Gaussian PF-ODE of :func:`solvers.dpm.dpmpp_3m`'s
measurement (σ 80 -> 0.05, σ_data = 1), ``order=2`` measures 3.00 per doubling down to
9e-9 at 2048 steps and ``order=3`` 3.99 down to 2e-11 (its first step's ``O(h³)`` term is
not visible above that); diffusers, correcting the same way, shares this.  The predictor
alone (``corrector=False``) at ``order=3`` is dpmpp-3m's step and keeps its ``O(h²)`` term:
the same errors to two digits, slopes 0.7, 1.4, 1.8 from 3.4e-8 at 256 steps
(``python tests/measured_orders.py``).  diffusers' ``solver_type`` midpoint/heun choice
belongs to its DPM-Solver scheduler (see :func:`solvers.dpm.dpmpp_3m`), not to UniPC.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from ._loop import Run, combine, run_steps
from .base import Solution
from .dpm import denoiser_scales
from .expint import multistep_order, phi
from .spec import Option, takes

__all__ = ["unipc_bh1", "unipc_bh2", "unipc_step", "UniPCState", "unipc_weights"]


def _b(h: float, p: int, bh: str) -> tuple[float, np.ndarray]:
    B = -h if bh == "bh1" else math.expm1(-h)
    return B, np.array([-h * phi(n + 1, -h) * math.factorial(n) / B for n in range(1, p + 1)])


def unipc_weights(lam: Sequence[float], lam_t: float, p: int, bh: str, corrector: bool) -> list[float]:
    """The weights ``c_j`` of the UniPC correction ``-B(h) Σ ρ D1`` as a combination of the data
    predictions: ``x_t = x_lin + Σ_j c_j m_j`` with ``m_j`` at ``lam[j]`` (``lam[0] = λ_s``, newest
    first, ``p`` of them), followed, for the corrector, by ``m_t`` at ``lam_t``.  ``Σ c_j = 0``."""
    h = lam_t - lam[0]
    B, b = _b(h, p, bh)
    r = [(lam[k] - lam[0]) / h for k in range(1, p)] + ([1.0] if corrector else [])
    n = len(r)
    if n == 0:
        rho = np.zeros(0)
    elif corrector and p == 1 or (not corrector and p == 2):
        rho = np.array([0.5])
    else:
        R = np.array([[rk ** j for rk in r] for j in range(n)])
        rho = np.linalg.solve(R, b[:n])
    c = [0.0] * (p + (1 if corrector else 0))
    for k, (rk, rhok) in enumerate(zip(r, rho)):
        j = k + 1 if k < p - 1 else p  # older points 1..p-1, then m_t
        c[j] += -B * rhok / rk
        c[0] += B * rhok / rk
    return c


class UniPCState(NamedTuple):
    """What UniPC carries between steps: the data predictions ``m``, newest first, and the previous
    step's ``x_lin`` (what its corrector corrects once ``m_i`` is known)."""

    history: tuple = ()
    x_lin: Optional[Tensor] = None


def unipc_step(run: Run, i: int, x: Tensor, state: UniPCState, *, order: int, bh: str, corrector: bool):
    """One UniPC step ``s_i -> s_{i+1}`` (module docstring): UniC-q corrects ``x_i`` with ``m_i = D(x_i, s_i)``
    (``q`` the previous step's order; not on the first step), then UniP-p predicts ``x_{i+1}`` from
    ``x_lin = e^{-h} x_i + (1 - e^{-h}) m_i``, ``p = multistep_order(s, i, order)``."""
    s = run.s
    lam = [-math.log(v) if v > 0 else math.inf for v in s]
    m = run.f.denoise(x, run.at(s[i]))
    if i > 0 and corrector:  # c[0..q-1] on m_{i-1}, m_{i-2}, ...; c[q] on m_i
        q = multistep_order(s, i - 1, order)
        corr = unipc_weights([lam[i - 1 - k] for k in range(q)], lam[i], q, bh, corrector=True)
        x = combine(state.x_lin, list(state.history[: len(corr) - 1]) + [m], corr, 1.0)
    history = (m,) + state.history[:order]
    x_lin = torch.lerp(x, m, 1.0 - s[i + 1] / s[i])
    p = multistep_order(s, i, order)
    pred = unipc_weights([lam[i - k] for k in range(p)], lam[i + 1], p, bh, corrector=False)
    return combine(x_lin, history[: len(pred)], pred, 1.0), UniPCState(history, x_lin)


def unipc(bh: str, order: int, corrector: bool, flow, x: Tensor, schedule, **loop) -> Solution:
    """Run :func:`unipc_step` with ``B(h)`` of kind ``bh`` as the solver ``unipc-BH``."""
    name = f"unipc-{bh}"
    return run_steps(functools.partial(unipc_step, order=order, bh=bh, corrector=corrector), flow, x, schedule, name=name,
                     state=UniPCState(), need="denoiser", check=denoiser_scales(name), **loop)


_ORDER = Option("order", int, 2, "predictor order p (UniC raises it to p + 1)", lo=1, hi=3)
_CORRECTOR = Option("corrector", bool, True, "apply UniC (false: the predictor UniP-p alone)")


@takes("unipc-bh1", _ORDER, _CORRECTOR)
def unipc_bh1(flow: Callable[[Tensor, Tensor], Tensor], x: Tensor, schedule: Union[Tensor, Sequence[float]], *, order: int,
              corrector: bool, **loop) -> Solution:
    """UniPC with ``B(h) = h`` (``bh1``; arXiv 2302.04867, Sec. 3.3), 1 NFE per step; order
    ``order + 1`` with the corrector.  See :mod:`solvers.unipc`."""
    return unipc("bh1", order, corrector, flow, x, schedule, **loop)


@takes("unipc-bh2", _ORDER, _CORRECTOR)
def unipc_bh2(flow: Callable[[Tensor, Tensor], Tensor], x: Tensor, schedule: Union[Tensor, Sequence[float]], *, order: int,
              corrector: bool, **loop) -> Solution:
    """UniPC with ``B(h) = e^h - 1`` (``bh2``, diffusers' default; arXiv 2302.04867, Sec. 3.3),
    1 NFE per step; order ``order + 1`` with the corrector.  See :mod:`solvers.unipc`."""
    return unipc("bh2", order, corrector, flow, x, schedule, **loop)
