"""Reflow (rectified flow, Liu et al., arXiv 2209.03003, §2.3 and Alg. 1): straighten a trained flow
by retraining it on the (noise, sample) pairs it produces itself.

* :func:`straightness`: the mean squared deviation of the velocity from the straight line
  joining each path's ends (physgen's direction: from ``t_max`` down to ``t_eps``),

      S(X) = 1/T ∫_{t_eps}^{t_max} E‖ẋ_t - (x_{t_max} - x_{t_eps})/T‖² dt,   T = t_max - t_eps,

  (their Def. 2.4 up to the normalisation by ``T``), measured on Euler trajectories of the
  PF-ODE on a uniform grid in ``t`` (each Euler step's velocity is the field's at its start).
  ``S = 0`` exactly when every path is a straight line traversed at constant speed.
* :func:`reflow_pairs`: the (noise, sample) pairs ``(x_{t_max}, x_{t_eps})`` that a trained
  flow and a deterministic solver produce from prior draws (Alg. 1, step 1).
* :func:`run_reflow` (``physgen reflow --ckpt RUN --n-pairs N --out RUN2``): draws the pairs
  with RUN's trained toy MLP, then minimises the velocity regression of the same path on
  them (Alg. 1, step 2; the ``k+1``-rectified flow),

      L(θ) = E_{t ~ U[t_eps, t_max], (z, y) ~ pairs} ‖u_θ(a(t) y + b(t) z, t) - (a'(t) y + b'(t) z)‖²,

  with ``z = (x_{t_max} - a(t_max) μ)/b(t_max)`` the path's noise of each prior draw (``μ`` the
  prior's centre), so that ``a(t_max) y + b(t_max) z`` is the draw up to ``a(t_max)(y - μ)``
  (``a(t_max) = 10⁻³`` for rectified flow).  The network starts from RUN's EMA weights by
  default (``init="run"``: reflow as fine-tuning of the previous flow; ``"fresh"``: the toy's
  seeded initialisation).  RUN2 is a toy run folder like RUN (its checkpoints record the MLP,
  the process and ``meta.reflow.k``), so reflow can take it again (3-rectified flow).
"""
from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from . import checkpoints
from .compare.problems import load_toy_checkpoint
from .config import LIMIT_REASONS, MAX_LR, MAX_SAMPLES, MAX_STEPS, MAX_TRAIN_STEPS, parse_float, parse_int, parse_seed
from .data import load_toy
from .errors import UserError, unknown_name
from .io import ensure_dir, save_figure, save_npy, write_json
from .metrics import sliced_w2
from .processes.base import Process
from .processes.flow_matching import FlowMatchingPath
from .runtime import initial_weights, resolve_device
from .sampling import grid, sample, solver_spec
from .toy import REFERENCE_SEED_OFFSET
from .training import TrainConfig, train
from .nets.mlp import MLP

__all__ = ["straightness", "straightness_and_paths", "reflow_pairs", "path_noise", "PairRegression", "ReflowConfig", "run_reflow", "evaluate_flow", "eval_draws", "reference_points", "INITS", "EULER_NFE", "OUTPUTS"]

INITS = ("run", "fresh")
EULER_NFE = (1, 2, 4)  # the few-step Euler budgets the metrics record before and after
OUTPUTS = ("config.json", "pairs.npy", "metrics.json", "trajectories.png", "checkpoints/ckpt-*.pt")  # what physgen reflow writes


def straightness(process: Process, field, x0: Tensor, steps: int = 100) -> float:
    """``S`` of the PF-ODE paths from the prior draws ``x0`` (module docstring), Euler, ``steps`` uniform steps."""
    return float(straightness_and_paths(process, field, x0, steps)[0])


def straightness_and_paths(process: Process, field, x0: Tensor, steps: int) -> tuple[float, Tensor]:
    """:func:`straightness` and the Euler paths it was measured on (``[steps + 1, B, ...]``)."""
    grid_ = grid(process, steps, "uniform", method="euler")
    traj = sample(process, field, x0, grid_, "euler", return_trajectory=True).stats.trajectory.double()
    dt = (grid_[1:] - grid_[:-1]).to(traj.dtype)  # negative: t decreases
    velocity = (traj[1:] - traj[:-1]) / dt.reshape(-1, *[1] * (traj.dim() - 1))
    chord = (traj[-1] - traj[0]) / float(grid_[-1] - grid_[0])
    sq = (velocity - chord[None]).reshape(steps, x0.shape[0], -1).pow(2).sum(-1)  # [K, B]
    weights = (-dt / (-dt).sum()).reshape(-1, 1)
    return float((weights * sq).sum(0).mean()), traj


def reflow_pairs(process: Process, field, n: int, method: str = "heun", steps: Optional[int] = None, *,
                 generator: Optional[torch.Generator] = None, shape: tuple = (2,), schedule: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """``(z, y)``: ``n`` prior draws and the samples the solver takes them to (Alg. 1, step 1)."""
    z = process.sample_prior((n, *shape), generator=generator)
    with torch.no_grad():
        y = sample(process, field, z, grid(process, steps, method=method) if schedule is None else schedule, method).x
    return z, y


def path_noise(process: FlowMatchingPath, x_start: Tensor) -> Tensor:
    """The path's noise ``z`` of prior draws ``x_start = b(t_max) z + a(t_max) μ`` (module docstring)."""
    a, b = (float(v) for v in process.coefficients(torch.tensor([process.s_max], dtype=torch.float64)))
    centre = 0.0 if process.prior_mean is None else torch.as_tensor(process.prior_mean, dtype=x_start.dtype).reshape(1, -1)
    return (x_start - a * centre) / b


class PairRegression:
    """Stands in for the process in :func:`physgen.training.train`: the velocity regression of
    ``process``'s path on fixed pairs (a batch is ``[B, 2, ...]``: the noise ``z`` then the sample
    ``y``), times ``t ~ U[t_eps, t_max]``.  Checkpoints record ``process`` itself (name and config),
    so the retrained field rebuilds as any flow of that process."""

    def __init__(self, process: FlowMatchingPath):
        self.process, self.name = process, process.name

    def config(self) -> dict:
        return self.process.config()

    def loss(self, field, pairs: Tensor, *, generator=None, label=None) -> Tensor:
        z, y = pairs[:, 0], pairs[:, 1]
        t = self.process.sample_scales(y.shape[0], generator=generator, device=y.device).to(y.dtype)
        return self.process.regression(field, y, z, t, label)


@dataclass
class ReflowConfig:
    """``physgen reflow``'s options (one field per flag).  ``steps``/``schedule``: the solver's grid
    for the pairs (``None``: the process's default, 18 steps); ``train_steps``, ``batch``, ``lr``:
    ``None`` takes RUN's own (the same training budget per stage); ``n_eval`` prior draws measure
    the straightness on ``straightness_steps`` Euler steps and the few-step Euler samples."""

    ckpt: str
    out: str
    n_pairs: int = 10_000
    solver: str = "heun"
    steps: Optional[int] = None
    schedule: Optional[str] = None
    train_steps: Optional[int] = None
    batch: Optional[int] = None
    lr: Optional[float] = None
    init: str = "run"
    seed: int = 0
    n_eval: int = 2000
    straightness_steps: int = 100
    checkpoint_every: int = 0
    resume: bool = False
    device: str = "auto"

    def __post_init__(self):
        self.n_pairs = parse_int(self.n_pairs, "--n-pairs", 2, MAX_SAMPLES, LIMIT_REASONS["samples"])
        self.n_eval = parse_int(self.n_eval, "--n-eval", 2, MAX_SAMPLES, LIMIT_REASONS["samples"])
        self.straightness_steps = parse_int(self.straightness_steps, "--straightness-steps", 1, MAX_STEPS, LIMIT_REASONS["steps"])
        if self.train_steps is not None:
            self.train_steps = parse_int(self.train_steps, "--train-steps", 1, MAX_TRAIN_STEPS, LIMIT_REASONS["train_steps"])
        if self.lr is not None:
            self.lr = parse_float(self.lr, "--lr", 0.0, MAX_LR, lo_open=True, why=LIMIT_REASONS["lr"])
        self.checkpoint_every = parse_int(self.checkpoint_every, "--checkpoint-every", 0, MAX_TRAIN_STEPS)
        self.seed = parse_seed(self.seed, "--seed")
        if self.init not in INITS:
            raise unknown_name("init", self.init, INITS)
        if solver_spec(self.solver).stochastic:
            raise UserError(f"reflow draws its pairs with an ODE solver (the flow's deterministic coupling); solver {self.solver!r} is stochastic")


def _source(config: ReflowConfig, device) -> dict:
    """RUN's trained flow: ``load_toy_checkpoint``'s dict, refused unless its process is a flow-matching path."""
    loaded = load_toy_checkpoint(config.ckpt, device=device)
    process = loaded["process"]
    if not isinstance(process, FlowMatchingPath):
        raise UserError(f"--ckpt {config.ckpt!r} holds a {process.name!r} field; reflow retrains a flow-matching process "
                        "(rectified-flow, fm-vp, fm-cosine, interpolant)")
    return loaded


def _pairs(config: ReflowConfig, process, field, dim: int, out: Path, log) -> Tensor:
    """The ``[N, 2, dim]`` pairs (path noise, sample): read back from ``pairs.npy`` when resuming, else drawn and saved."""
    path = out / "pairs.npy"
    if config.resume and path.is_file():
        try:
            pairs = torch.from_numpy(np.load(path, allow_pickle=False)).float()
        except (ValueError, OSError) as exc:
            raise UserError(f"{str(path)!r} is not a readable .npy array ({exc}); start again without --resume") from None
        if pairs.shape != (config.n_pairs, 2, dim) or not bool(torch.isfinite(pairs).all()):
            raise UserError(f"{str(path)!r} holds {tuple(pairs.shape)} pairs, not ({config.n_pairs}, 2, {dim}) finite ones; start again without --resume")
        return pairs
    schedule = grid(process, config.steps, config.schedule, method=config.solver, dim=dim)
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(config.seed)
    z, y = reflow_pairs(process, field, config.n_pairs, config.solver, generator=g, shape=(dim,), schedule=schedule)
    pairs = torch.stack([path_noise(process, z), y], 1).float()
    print(f"physgen reflow: drew {config.n_pairs} pairs with {config.solver} ({len(schedule) - 1} steps) in {time.perf_counter() - t0:.1f} s",
          file=log, flush=True)
    save_npy(path, pairs.numpy())
    return pairs


def evaluate_flow(process, field, x0: Tensor, reference: Optional[Tensor], steps: int) -> tuple[dict, Tensor]:
    """Straightness and the sliced W2 of Euler at :data:`EULER_NFE` (against ``reference``), and the paths."""
    with torch.no_grad():
        s, traj = straightness_and_paths(process, field, x0, steps)
        w2 = {}
        if reference is not None:
            for nfe in EULER_NFE:
                x = sample(process, field, x0, grid(process, nfe, method="euler"), "euler").x
                w2[str(nfe)] = sliced_w2(x, reference)
    return {"straightness": s, "sliced_w2_euler": w2}, traj


def eval_draws(process, n: int, dim: int, seed: int) -> Tensor:
    """The prior draws on which reflow measures a flow (``seed + 1``: not the pairs' draws)."""
    return process.sample_prior((n, dim), generator=torch.Generator().manual_seed(seed + 1))


def reference_points(meta: dict, n: int, seed: int) -> Optional[Tensor]:
    """Fresh points of RUN's dataset (``None`` where it cannot be read back, e.g. a file since moved)."""
    name = (meta.get("toy") or {}).get("dataset")
    try:
        dataset = load_toy(name)
    except (ValueError, OSError, TypeError):
        return None
    return dataset.sample(n, torch.Generator().manual_seed(seed + REFERENCE_SEED_OFFSET))


def run_reflow(config: ReflowConfig, log_stream=None) -> dict:
    """``physgen reflow``: the module docstring's Alg. 1 with RUN's flow; writes RUN2 (``config.out``)
    and returns its metrics (``straightness_before``/``_after``, Euler's sliced W2 at few NFE)."""
    log = log_stream or sys.stderr
    device = resolve_device(config.device)
    loaded = _source(config, device)
    process, teacher, dim, meta = loaded["process"], loaded["field"], loaded["dim"], loaded["meta"]
    source_cfg = _source_train_config(loaded["path"])
    tcfg = TrainConfig(steps=config.train_steps or source_cfg.get("steps", 2000), batch=config.batch or source_cfg.get("batch", 512),
                       lr=config.lr or source_cfg.get("lr", 5e-3), seed=config.seed, checkpoint_every=config.checkpoint_every,
                       log_every=max(1, (config.train_steps or source_cfg.get("steps", 2000)) // 10))
    out = ensure_dir(config.out)
    if config.resume and not checkpoints.list_checkpoints(out):
        raise UserError(f"--resume: no checkpoint found in {str(out / 'checkpoints')}; start the reflow without --resume")
    k = int((meta.get("reflow") or {}).get("k", 1)) + 1
    t_start = time.perf_counter()
    pairs = _pairs(config, process, teacher, dim, out, log).to(device)

    net_spec = {key: v for key, v in (meta.get("toy") or {}).get("net", {}).items() if key != "kind"}
    with initial_weights(config.seed):
        net = MLP(**net_spec)
    student = process.precondition(net).to(device)
    if config.init == "run":
        student.load_state_dict(teacher.state_dict())
    student.requires_grad_(True)
    toy_meta = {"toy": {**(meta.get("toy") or {}), "net": net.spec()}}  # RUN's data, the same network
    record = {"k": k, "from": str(loaded["path"]), "n_pairs": config.n_pairs, "solver": config.solver, "steps": config.steps,
              "schedule": config.schedule, "init": config.init}

    def batch(n: int, g: torch.Generator):
        return pairs[torch.randint(0, pairs.shape[0], (n,), generator=g, device=g.device)], None

    print(f"physgen reflow: training the {k}-rectified flow ({process.name}) on {config.n_pairs} pairs, {tcfg.total_steps} steps",
          file=log, flush=True)
    result = train(PairRegression(process), student, batch, tcfg, out_dir=out, resume=config.resume, device=device, log_stream=log,
                   checkpoint_meta={**toy_meta, "reflow": record})

    x0 = eval_draws(process, config.n_eval, dim, config.seed).to(device)
    reference = reference_points(meta, config.n_eval, config.seed)
    before, traj_before = evaluate_flow(process, teacher, x0, reference, config.straightness_steps)
    after, traj_after = evaluate_flow(process, result.ema, x0, reference, config.straightness_steps)
    tail = result.losses[-max(1, len(result.losses) // 10):]
    metrics = {**record, "process": process.name, "straightness_before": before["straightness"], "straightness_after": after["straightness"],
               "straightness_steps": config.straightness_steps, "n_eval": config.n_eval,
               "sliced_w2_euler_before": before["sliced_w2_euler"], "sliced_w2_euler_after": after["sliced_w2_euler"],
               "reference": None if reference is None else (meta.get("toy") or {}).get("dataset"),
               "train_steps": result.step, "final_loss": sum(tail) / len(tail), "checkpoint": str(result.checkpoint),
               "wall_s": time.perf_counter() - t_start}
    write_json(out / "config.json", {**asdict(config), "resolved": {"process": {"name": process.name, **process.config()},
                                                                    "train": asdict(tcfg), "k": k, "device": str(device)}})
    write_json(out / "metrics.json", metrics)
    plot_paths(traj_before.float().cpu(), traj_after.float().cpu(), out / "trajectories.png", k, before["straightness"], after["straightness"])
    return metrics


def _source_train_config(path) -> dict:
    """RUN's training settings (``steps``, ``batch``, ``lr``) as its checkpoint records them ({} if none)."""
    cfg = checkpoints.read(path, log=None).payload.get("config")
    return {key: cfg[key] for key in ("steps", "batch", "lr") if isinstance(cfg, dict) and key in cfg}


def plot_paths(before: Tensor, after: Tensor, path: Path, k: int, s_before: float, s_after: float, n_paths: int = 64) -> None:
    """Two panels: the ``k-1``-rectified flow's PF-ODE paths and the ``k``-rectified flow's, from the same prior draws."""
    import matplotlib  # heavy optional dependency: imported only where it is used

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy optional dependency: imported only where it is used

    fig, axes = plt.subplots(1, 2, figsize=(9, 4.5), sharex=True, sharey=True)
    lim = float(torch.quantile(after[-1].abs().flatten(), 0.99)) * 1.6 + 1e-6
    for ax, traj, name, s in ((axes[0], before, f"{k - 1}-rectified", s_before), (axes[1], after, f"{k}-rectified", s_after)):
        for i in range(min(n_paths, traj.shape[1])):
            ax.plot(traj[:, i, 0], traj[:, i, 1], lw=0.6, alpha=0.7)
        ax.scatter(traj[-1, :n_paths, 0], traj[-1, :n_paths, 1], s=5, c="k", zorder=3)
        ax.set_title(f"{name} flow: straightness {s:.3g}")
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
    save_figure(fig, path, dpi=110)

