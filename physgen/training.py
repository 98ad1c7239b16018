"""Training loop shared by toy and image fields: Adam with warm-up, EMA, progress, atomic
checkpoints and exact resume.

Loss: ``process.loss(field, y)`` (the process owns the objective).  EMA (EDM, arXiv
2206.00364, App. F): after each step ``θ_ema ← β θ_ema + (1-β) θ`` with
``β = 0.5^(batch / h)`` and half-life ``h = min(ema_halflife, ema_rampup · samples_seen)``
in samples, so early averages do not remember the random initialisation.

A checkpoint is a plain dict of state dicts (model, EMA, optimiser, generator and torch
RNG states, step, loss history), written atomically as ``checkpoints/ckpt-<step>.pt``;
the last ``keep_checkpoints`` are kept.  ``resume=True`` continues from the newest one and
reproduces an uninterrupted run bit for bit on CPU.
"""
from __future__ import annotations

import copy
import math
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import Tensor, nn

from .errors import UserError
from .io import save_torch

__all__ = ["TrainConfig", "TrainResult", "train", "latest_checkpoint", "Progress"]

BatchFn = Callable[[int, torch.Generator], tuple[Tensor, Optional[Tensor]]]


@dataclass
class TrainConfig:
    steps: int = 2000
    batch: int = 512
    lr: float = 2e-3
    warmup_steps: int = 100
    ema_halflife: float = 50_000.0  # in samples
    ema_rampup: Optional[float] = 0.05
    grad_clip: Optional[float] = 1.0
    log_every: int = 200
    checkpoint_every: int = 0  # 0: only at the end (when an out dir is given)
    keep_checkpoints: int = 2
    seed: int = 0

    def __post_init__(self):
        for name in ("steps", "batch", "log_every", "keep_checkpoints"):
            if int(getattr(self, name)) <= 0:
                raise UserError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("warmup_steps", "checkpoint_every"):
            if int(getattr(self, name)) < 0:
                raise UserError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise UserError(f"lr must be a positive number, got {self.lr}")
        if not self.ema_halflife > 0:
            raise UserError(f"ema_halflife must be > 0, got {self.ema_halflife}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise UserError(f"grad_clip must be > 0 or None, got {self.grad_clip}")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        bad = sorted(set(d) - known)
        if bad:
            raise UserError(f"unknown training config key(s) {bad}; valid: {', '.join(sorted(known))}")
        return cls(**d)


@dataclass
class TrainResult:
    field: nn.Module
    ema: nn.Module
    losses: list[float]
    step: int


class Progress:
    """A periodic log line with rate and ETA (stderr by default)."""

    def __init__(self, total: int, unit: str = "samples", every: int = 200, stream=None, start: int = 0):
        self.total, self.unit, self.every, self.stream = total, unit, every, stream or sys.stderr
        self.t0, self.start = time.perf_counter(), start

    def update(self, step: int, per_step: int, **values: float) -> None:
        if step % self.every and step != self.total:
            return
        elapsed = time.perf_counter() - self.t0
        done = step - self.start
        rate = done / elapsed if elapsed > 0 else float("nan")
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        vals = "  ".join(f"{k} {v:.4g}" for k, v in values.items())
        eta_s = time.strftime("%H:%M:%S", time.gmtime(eta)) if math.isfinite(eta) else "?"
        print(f"step {step}/{self.total}  {vals}  {rate * per_step:.0f} {self.unit}/s  ETA {eta_s}", file=self.stream, flush=True)


def latest_checkpoint(out_dir) -> Optional[Path]:
    d = Path(out_dir) / "checkpoints"
    ckpts = sorted(d.glob("ckpt-*.pt")) if d.is_dir() else []
    return ckpts[-1] if ckpts else None


def _ema_update(ema: nn.Module, model: nn.Module, beta: float) -> None:
    with torch.no_grad():
        e = [p for p in ema.parameters()]
        m = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(e, m, 1.0 - beta)
        for be, bm in zip(ema.buffers(), model.buffers()):
            be.copy_(bm)


def train(
    process,
    field: nn.Module,
    sample_batch: BatchFn,
    config: TrainConfig,
    *,
    out_dir=None,
    resume: bool = False,
    device=None,
    log_stream=None,
    on_step: Optional[Callable[[int, nn.Module], None]] = None,
) -> TrainResult:
    """Train ``field`` on ``process.loss`` with batches from ``sample_batch(n, generator)``."""
    device = torch.device(device or next(field.parameters()).device)
    field = field.to(device)
    ema = copy.deepcopy(field).requires_grad_(False)
    opt = torch.optim.Adam(field.parameters(), lr=config.lr)
    gen = torch.Generator(device=device)
    gen.manual_seed(config.seed)
    losses: list[float] = []
    step = 0
    if resume:
        ckpt_path = latest_checkpoint(out_dir) if out_dir is not None else None
        if ckpt_path is None:
            raise UserError(f"--resume: no checkpoint found in {str(Path(out_dir) / 'checkpoints') if out_dir else '(no out dir)'}")
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        field.load_state_dict(ckpt["model"])
        ema.load_state_dict(ckpt["ema"])
        opt.load_state_dict(ckpt["optimizer"])
        gen.set_state(ckpt["generator"].cpu() if device.type == "cpu" else ckpt["generator"])
        torch.set_rng_state(ckpt["torch_rng"].cpu())
        losses = list(ckpt["losses"])
        step = int(ckpt["step"])

    def save(step: int) -> None:
        if out_dir is None:
            return
        d = Path(out_dir) / "checkpoints"
        state = {
            "step": step,
            "model": field.state_dict(),
            "ema": ema.state_dict(),
            "optimizer": opt.state_dict(),
            "generator": gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "losses": losses,
            "config": asdict(config),
            "process": {"name": process.name, **process.config()},
        }
        save_torch(d / f"ckpt-{step:08d}.pt", state)
        for old in sorted(d.glob("ckpt-*.pt"))[: -config.keep_checkpoints]:
            old.unlink(missing_ok=True)

    progress = Progress(config.steps, every=config.log_every, stream=log_stream, start=step)
    pending: list[Tensor] = []
    field.train()
    while step < config.steps:
        for group in opt.param_groups:
            group["lr"] = config.lr * min(1.0, (step + 1) / max(config.warmup_steps, 1))
        y, label = sample_batch(config.batch, gen)
        loss = process.loss(field, y, generator=gen, label=label).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip is not None:
            nn.utils.clip_grad_norm_(field.parameters(), config.grad_clip)
        opt.step()
        step += 1
        seen = step * config.batch
        halflife = config.ema_halflife if config.ema_rampup is None else min(config.ema_halflife, config.ema_rampup * seen)
        _ema_update(ema, field, 0.5 ** (config.batch / max(halflife, 1e-8)))
        pending.append(loss.detach())
        if step % config.log_every == 0 or step == config.steps:
            chunk = torch.stack(pending).tolist()  # one sync per log interval
            pending.clear()
            if not all(math.isfinite(v) for v in chunk):
                raise FloatingPointError(f"training loss became non-finite at step {step} (lr={config.lr}); lower --lr")
            losses.extend(chunk)
            progress.update(step, config.batch, loss=sum(chunk) / len(chunk))
        if on_step is not None:
            on_step(step, ema)
        if config.checkpoint_every and step % config.checkpoint_every == 0 and step < config.steps:
            losses.extend(torch.stack(pending).tolist()) if pending else None
            pending.clear()
            save(step)
    save(step)
    field.eval()
    ema.eval()
    return TrainResult(field=field, ema=ema, losses=losses, step=step)
