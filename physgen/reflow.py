"""Reflow's pieces (rectified flow, Liu et al., arXiv 2209.03003, §2.3 and Alg. 1).

* :func:`straightness`: the mean squared deviation of the velocity from the straight line
  joining each path's ends (physgen's direction: from ``t_max`` down to ``t_eps``),

      S(X) = 1/T ∫_{t_eps}^{t_max} E‖ẋ_t - (x_{t_max} - x_{t_eps})/T‖² dt,   T = t_max - t_eps,

  (their Def. 2.4 up to the normalisation by ``T``), measured on Euler trajectories of the
  PF-ODE on a uniform grid in ``t`` (each Euler step's velocity is the field's at its start).
  ``S = 0`` exactly when every path is a straight line traversed at constant speed.
* :func:`reflow_pairs`: the (noise, sample) pairs ``(x_{t_max}, x_{t_eps})`` that a trained
  flow and a solver produce from prior draws; training rectified flow on them is the
  ``k+1``-rectified flow (not yet a command: the issue's ``physgen reflow`` remains).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .processes.base import Process
from .sampling import grid, sample

__all__ = ["straightness", "reflow_pairs"]


def straightness(process: Process, field, x0: Tensor, steps: int = 100) -> float:
    """``S`` of the PF-ODE paths from the prior draws ``x0`` (module docstring), Euler, ``steps`` uniform steps."""
    points = grid(process, steps, "uniform", method="euler")
    traj = sample(process, field, x0, points, "euler", return_trajectory=True).stats.trajectory.double()
    dt = (points[1:] - points[:-1]).to(traj.dtype)  # negative: t decreases
    velocity = (traj[1:] - traj[:-1]) / dt.reshape(-1, *[1] * (traj.dim() - 1))
    chord = (traj[-1] - traj[0]) / float(points[-1] - points[0])
    sq = (velocity - chord[None]).reshape(steps, x0.shape[0], -1).pow(2).sum(-1)  # [K, B]
    weights = (-dt / (-dt).sum()).reshape(-1, 1)
    return float((weights * sq).sum(0).mean())


def reflow_pairs(process: Process, field, n: int, method: str = "heun", steps: Optional[int] = None, *,
                 generator: Optional[torch.Generator] = None, shape: tuple = (2,)) -> tuple[Tensor, Tensor]:
    """``(z, y)``: ``n`` prior draws and the samples the solver takes them to (Alg. 1, step 1)."""
    z = process.sample_prior((n, *shape), generator=generator)
    y = sample(process, field, z, grid(process, steps, method=method), method).x
    return z, y
