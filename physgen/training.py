"""Training loop shared by toy and image fields: Adam with warm-up, EMA, mixed precision,
gradient accumulation, DDP, progress, atomic checkpoints and exact resume.

Loss: ``process.loss(field, y)`` (the process owns the objective).  One optimiser step
minimises the mean loss over the *global* batch of ``batch`` samples:

    L = (1/B) Σ_i ℓ_i,   ∇L = (1/W) Σ_ranks (1/A) Σ_chunks ∇ mean_chunk(ℓ)

where the global batch is cut into ``B/m`` chunks of ``m = micro_batch`` samples (one
forward/backward each), ``W`` processes (DDP) take ``A = B/(W m)`` consecutive chunks
each, and DDP averages the rank gradients.  With equal chunks this is exactly the
gradient of the global mean.

Randomness is keyed by position, not by process: the loss noise (scales, kernel draws)
and the global RNG (dropout) of chunk ``c`` at step ``t`` are seeded with
``mix(seed, t, c)``, and data come from one generator (or :class:`ImageSampler`) that
every rank advances identically.  Hence, for a fixed ``micro_batch``, a step does not
depend on the number of processes (a 2-process DDP step equals a 1-process step on the
global batch, tested), and resuming needs no RNG state beyond the data stream.  The
global RNG is restored when training returns (``torch.random.fork_rng``).

Learning rate: linear warm-up ``lr · min(1, (t+1)/warmup)`` (``warmup_steps``, or
``warmup_mimg`` million images).  EMA (EDM, arXiv 2206.00364, App. F): after each step
``θ_ema ← β θ_ema + (1-β) θ`` with ``β = 0.5^(B / h)`` and half-life
``h = min(ema_halflife, ema_rampup · samples_seen)`` in samples, so early averages do not
remember the random initialisation.  The EMA is identical on every rank (DDP keeps the
parameters identical).  ``precision="auto"`` uses bf16 autocast on CUDA (fp32 on CPU);
``channels_last`` and ``compile`` are opt-in speed-ups.

A checkpoint is a plain dict of state dicts (model, EMA, optimiser, data generator and
image-sampler states, RNG states, step, loss history, config, the process and any
``checkpoint_meta``), written atomically by rank 0 as ``checkpoints/ckpt-<step>.pt``;
the last ``keep_checkpoints`` are kept.  ``resume=True`` continues from the newest one
(``config.steps`` may be a new total) and reproduces an uninterrupted run bit for bit on
CPU.
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor, nn

from .errors import UserError
from .io import save_torch

__all__ = [
    "TrainConfig",
    "TrainResult",
    "train",
    "latest_checkpoint",
    "load_checkpoint_file",
    "Progress",
    "DistInfo",
    "dist_info",
    "init_distributed",
    "resolve_device",
    "resolve_precision",
    "chunk_seed",
    "PRECISIONS",
]

BatchFn = Callable[[int, torch.Generator], tuple[Tensor, Optional[Tensor]]]
PRECISIONS = ("auto", "fp32", "bf16")
CHECKPOINT_FORMAT = "physgen-train/2"


@dataclass
class TrainConfig:
    """Optimisation settings (one field per CLI flag).

    ``steps`` is the total number of optimiser steps unless ``duration_mimg`` (millions of
    training images) is given, which sets ``total_steps = ceil(duration_mimg·1e6 / batch)``.
    ``warmup_mimg`` likewise overrides ``warmup_steps``.  ``batch`` is the global batch
    (all processes); ``micro_batch`` the samples per forward pass (gradient accumulation;
    default ``batch / world_size``).  ``precision``: ``auto`` (bf16 autocast on CUDA, fp32
    on CPU), ``fp32`` or ``bf16`` (CUDA only; fp32 on CPU).  ``max_minutes`` stops early
    (with a checkpoint) at the first log interval past the budget; resume continues.
    """

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
    duration_mimg: Optional[float] = None
    warmup_mimg: Optional[float] = None
    micro_batch: Optional[int] = None
    precision: str = "auto"
    channels_last: bool = False
    compile: bool = False
    max_minutes: Optional[float] = None

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
        if self.ema_rampup is not None and not self.ema_rampup > 0:
            raise UserError(f"ema_rampup must be > 0 or None, got {self.ema_rampup}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise UserError(f"grad_clip must be > 0 or None, got {self.grad_clip}")
        if self.duration_mimg is not None and not (self.duration_mimg > 0 and math.isfinite(self.duration_mimg)):
            raise UserError(f"duration_mimg must be a positive number or None, got {self.duration_mimg}")
        if self.warmup_mimg is not None and not (self.warmup_mimg >= 0 and math.isfinite(self.warmup_mimg)):
            raise UserError(f"warmup_mimg must be >= 0 or None, got {self.warmup_mimg}")
        if self.micro_batch is not None:
            if int(self.micro_batch) <= 0 or self.batch % int(self.micro_batch):
                raise UserError(f"micro_batch must be > 0 and divide batch={self.batch}, got {self.micro_batch}")
        if self.precision not in PRECISIONS:
            raise UserError(f"unknown precision {self.precision!r}; valid: {', '.join(PRECISIONS)}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise UserError(f"max_minutes must be > 0 or None, got {self.max_minutes}")

    @property
    def total_steps(self) -> int:
        """``steps``, or ``ceil(duration_mimg · 1e6 / batch)`` when a duration is given."""
        if self.duration_mimg is not None:
            return max(1, math.ceil(self.duration_mimg * 1e6 / self.batch))
        return int(self.steps)

    @property
    def warmup(self) -> int:
        """Warm-up length in steps (``warmup_mimg`` converted, else ``warmup_steps``)."""
        if self.warmup_mimg is not None:
            return math.ceil(self.warmup_mimg * 1e6 / self.batch)
        return int(self.warmup_steps)

    @classmethod
    def from_dict(cls, d: dict, where: str = "training config") -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        bad = sorted(set(d) - known)
        if bad:
            raise UserError(f"unknown {where} key(s) {bad}; valid: {', '.join(sorted(known))}")
        return cls(**d)


@dataclass
class TrainResult:
    field: nn.Module
    ema: nn.Module
    losses: list[float]
    step: int
    stopped_early: bool = False
    checkpoint: Optional[Path] = None


# --------------------------------------------------------------------------- devices / DDP


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a ``torchrun`` job (``rank 0 of 1`` when alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info() -> DistInfo:
    """From the initialised process group, else from ``torchrun``'s environment variables
    (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), else a single process."""
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world < 1 or not 0 <= rank < world:
        raise UserError(f"bad torchrun environment: RANK={rank}, WORLD_SIZE={world}")
    return DistInfo(rank, world, local)


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``; under torchrun a bare
    ``cuda``/``auto`` becomes ``cuda:LOCAL_RANK``."""
    name = str(name or "auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"device {name!r} asked for, but CUDA is not available here; use --device cpu")
        if name == "cuda":
            name = f"cuda:{local_rank % max(torch.cuda.device_count(), 1)}"
        return torch.device(name)
    if name != "cpu":
        raise UserError(f"unknown device {name!r}; valid: auto, cpu, cuda, cuda:N")
    return torch.device("cpu")


def init_distributed(device: str = "auto") -> tuple[DistInfo, torch.device]:
    """Join the process group when started by ``torchrun`` (``WORLD_SIZE > 1``): NCCL on
    CUDA, gloo on CPU, rendezvous from the environment (``MASTER_ADDR``/``MASTER_PORT``,
    multi-node included).  Returns this process's :class:`DistInfo` and device."""
    import torch.distributed as dist

    info = dist_info()
    dev = resolve_device(device, info.local_rank)
    if info.world_size > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", init_method="env://")
        info = dist_info()
    return info, dev


def resolve_precision(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype for ``precision`` on ``device`` (``None``: plain fp32)."""
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if precision == "fp32" or torch.device(device).type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else None


# --------------------------------------------------------------------------- progress


class Progress:
    """A periodic log line with loss, rate (``unit``/s), samples seen and ETA (stderr by
    default; ``enabled=False`` prints nothing, e.g. on ranks other than 0)."""

    def __init__(self, total: int, unit: str = "samples", every: int = 200, stream=None, start: int = 0, enabled: bool = True):
        self.total, self.unit, self.every, self.stream = total, unit, every, stream or sys.stderr
        self.t0, self.start, self.enabled = time.perf_counter(), start, enabled

    def update(self, step: int, per_step: int, force: bool = False, **values: float) -> None:
        if not self.enabled or (step % self.every and step != self.total and not force):
            return
        elapsed = time.perf_counter() - self.t0
        done = step - self.start
        rate = done / elapsed if elapsed > 0 else float("nan")
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        vals = "  ".join(f"{k} {v:.4g}" for k, v in values.items())
        eta_s = time.strftime("%H:%M:%S", time.gmtime(eta)) if math.isfinite(eta) and eta < 8.6e6 else "?"
        seen = step * per_step
        seen_s = f"{seen / 1e6:.2f}M" if seen >= 1e6 else (f"{seen / 1e3:.1f}k" if seen >= 1e4 else str(seen))
        print(
            f"step {step}/{self.total}  {vals}  {rate * per_step:.0f} {self.unit}/s  seen {seen_s}  ETA {eta_s}",
            file=self.stream,
            flush=True,
        )


# --------------------------------------------------------------------------- checkpoints


def latest_checkpoint(out_dir) -> Optional[Path]:
    d = Path(out_dir) / "checkpoints"
    ckpts = sorted(d.glob("ckpt-*.pt")) if d.is_dir() else []
    return ckpts[-1] if ckpts else None


def load_checkpoint_file(path, map_location="cpu") -> dict:
    """Read a checkpoint written by :func:`train` (tensors, numbers, strings only:
    ``weights_only=True``, so a checkpoint cannot run code)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {str(path)!r} does not exist")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True, mmap=True)
    except Exception as exc:  # zip / pickle errors differ by torch version
        raise UserError(f"cannot read checkpoint {str(path)!r}: {exc}") from exc
    if not isinstance(obj, dict) or "model" not in obj or "step" not in obj:
        raise UserError(f"{str(path)!r} is not a physgen training checkpoint (no 'model'/'step')")
    return obj


_MIX = 0x9E3779B97F4A7C15


def chunk_seed(seed: int, step: int, chunk: int) -> int:
    """Seed of the randomness of chunk ``chunk`` at step ``step`` (a 63-bit mix)."""
    h = (int(seed) * _MIX + (step + 1) * 0xBF58476D1CE4E5B9 + (chunk + 1) * 0x94D049BB133111EB + 0x2545F4914F6CDD1D) & ((1 << 64) - 1)
    h ^= h >> 29
    h = (h * 0xD6E8FEB86659FD93) & ((1 << 64) - 1)
    h ^= h >> 32
    return h & ((1 << 63) - 1)


class _EmaUpdate:
    """``θ_ema ← β θ_ema + (1-β) θ`` (one fused lerp over all parameters); buffers are copied.

    The tensor lists are collected once, when built: walking ``parameters()`` and
    ``buffers()`` of both modules every step cost about 4% of a demo-size MLP step.  Build
    it after the last change of the modules' tensors (device, memory format); in-place
    updates (optimiser steps, ``load_state_dict``) keep the lists valid.
    """

    def __init__(self, ema: nn.Module, model: nn.Module):
        self.ema_params = list(ema.parameters())
        self.model_params = [p.detach() for p in model.parameters()]
        self.buffers = list(zip(ema.buffers(), model.buffers()))

    def __call__(self, beta: float) -> None:
        with torch.no_grad():
            torch._foreach_lerp_(self.ema_params, self.model_params, 1.0 - beta)
            for be, bm in self.buffers:
                be.copy_(bm)


class _FieldView:
    """What ``process.loss`` sees: calls go through the (DDP / compiled) training module,
    attributes (``kind``, ``num_classes``, ...) come from the plain field."""

    def __init__(self, module: Callable, field: nn.Module):
        self._module, self._field = module, field

    def __call__(self, *args, **kwargs):
        return self._module(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._field, name)


def _is_stream(obj) -> bool:
    return all(callable(getattr(obj, a, None)) for a in ("next", "state_dict", "load_state_dict"))


def _seed_global(seed: int, device: torch.device) -> None:
    torch.random.default_generator.manual_seed(seed)
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.manual_seed(seed)


# --------------------------------------------------------------------------- train


def train(
    process,
    field: nn.Module,
    sample_batch: Union[BatchFn, Any],
    config: TrainConfig,
    *,
    out_dir=None,
    resume: Union[bool, str, os.PathLike] = False,
    device=None,
    log_stream=None,
    on_step: Optional[Callable[[int, nn.Module], Optional[bool]]] = None,
    checkpoint_meta: Optional[dict] = None,
    unit: str = "samples",
) -> TrainResult:
    """Train ``field`` on ``process.loss``; returns the field, its EMA and the loss history.

    ``sample_batch`` is either ``sample_batch(n, generator) -> (y, label)``, called for the
    *global* batch each step (each rank keeps its slice), or a stream with ``next()``,
    ``state_dict()`` and ``load_state_dict()`` (an :class:`physgen.images.ImageSampler`
    built with this rank and world size and ``batch_size = batch / world_size``), whose
    state goes into the checkpoints.  Under an initialised ``torch.distributed`` process
    group the field is wrapped in DDP; only rank 0 prints and writes files.

    ``resume``: ``True`` continues from the newest checkpoint in ``out_dir``, a path from
    that checkpoint file.  ``on_step(step, ema)`` runs after every step on every rank;
    returning ``True`` stops training (it must then return ``True`` on every rank).
    ``checkpoint_meta`` is stored in every checkpoint under ``"meta"`` (make it
    self-describing: what network, data and process to rebuild).
    """
    import torch.distributed as dist

    device = torch.device(device) if device is not None else next(field.parameters()).device
    info = dist_info() if (dist.is_available() and dist.is_initialized()) else DistInfo()
    rank, world = info.rank, info.world_size
    total = config.total_steps
    if config.batch % world:
        raise UserError(f"batch={config.batch} must be divisible by the number of processes ({world})")
    local = config.batch // world
    micro = int(config.micro_batch or local)
    if micro > local or local % micro:
        raise UserError(f"micro_batch={micro} must divide the per-process batch {local} (batch {config.batch} over {world} processes)")
    accum = local // micro
    stream = sample_batch if _is_stream(sample_batch) else None
    if stream is not None and getattr(stream, "batch_size", local) != local:
        raise UserError(f"the image sampler draws {stream.batch_size} per process but the per-process batch is {local}")
    amp_dtype = resolve_precision(config.precision, device)

    field = field.to(device)
    if config.channels_last:
        field = field.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(field).requires_grad_(False).eval()
    # fused Adam on CUDA (one kernel for all parameters); the reference loop elsewhere
    opt = torch.optim.Adam(field.parameters(), lr=config.lr, **({"fused": True} if device.type == "cuda" else {}))
    gen = torch.Generator(device=device)
    gen.manual_seed(config.seed)
    losses: list[float] = []
    step = 0
    resumed_from: Optional[Path] = None
    if resume:
        if isinstance(resume, (str, os.PathLike)) and Path(resume).is_file():
            ckpt_path: Optional[Path] = Path(resume)
        else:
            ckpt_path = latest_checkpoint(out_dir) if out_dir is not None else None
        if ckpt_path is None:
            where = str(Path(out_dir) / "checkpoints") if out_dir is not None else "(no out dir)"
            raise UserError(f"--resume: no checkpoint found in {where}")
        ckpt = load_checkpoint_file(ckpt_path)
        field.load_state_dict(ckpt["model"])
        ema.load_state_dict(ckpt["ema"])
        opt.load_state_dict(ckpt["optimizer"])
        try:
            gen.set_state(ckpt["generator"].cpu())
        except RuntimeError as exc:
            raise UserError(f"checkpoint {str(ckpt_path)!r}: its data generator was saved on another device type ({exc})") from None
        if stream is not None and ckpt.get("sampler") is not None:
            stream.load_state_dict(ckpt["sampler"])
        losses = [float(v) for v in ckpt["losses"]]
        step = int(ckpt["step"])
        resumed_from = ckpt_path
        del ckpt
    start_step = step

    module: Callable = field
    ddp_module = None
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ddp_module = DDP(field, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False)
        module = ddp_module
        if resumed_from is None:  # DDP broadcast rank 0's initial parameters: start the EMA there
            ema.load_state_dict(field.state_dict())
    if config.compile:
        module = torch.compile(module)
    view = _FieldView(module, field)

    last_ckpt: list[Optional[Path]] = [resumed_from]

    def save(at: int) -> None:
        if out_dir is None or rank != 0:
            return
        d = Path(out_dir) / "checkpoints"
        state = {
            "format": CHECKPOINT_FORMAT,
            "step": at,
            "model": field.state_dict(),
            "ema": ema.state_dict(),
            "optimizer": opt.state_dict(),
            "generator": gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "sampler": stream.state_dict() if stream is not None else None,
            "losses": list(losses),
            "config": asdict(config),
            "process": {"name": process.name, **process.config()},
            "world_size": world,
            "meta": checkpoint_meta or {},
        }
        path = d / f"ckpt-{at:08d}.pt"
        save_torch(path, state)
        last_ckpt[0] = path
        for old in sorted(d.glob("ckpt-*.pt"))[: -config.keep_checkpoints]:
            old.unlink(missing_ok=True)

    progress = Progress(total, unit=unit, every=config.log_every, stream=log_stream, start=step, enabled=rank == 0)
    t_start = time.perf_counter()
    pending: list[Tensor] = []

    def flush() -> tuple[list[float], bool]:
        """Average the pending losses over ranks (one sync); also agree on the time limit."""
        over = config.max_minutes is not None and time.perf_counter() - t_start > 60.0 * config.max_minutes
        vals = torch.stack(pending).float() if pending else torch.zeros(0, device=device)
        pending.clear()
        if world > 1:
            both = torch.cat([vals, torch.tensor([float(over)], device=vals.device)])
            dist.all_reduce(both)
            vals, over = both[:-1] / world, bool(both[-1] > 0)
        chunk = vals.tolist()
        if not all(math.isfinite(v) for v in chunk):
            raise FloatingPointError(f"training loss became non-finite at step {step} (lr={config.lr}); lower --lr")
        losses.extend(chunk)
        return chunk, over

    warmup = max(config.warmup, 1)
    ema_update = _EmaUpdate(ema, field)
    noise_gen = torch.Generator(device=device)
    stopped = False
    fork_devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    field.train()
    with torch.random.fork_rng(devices=fork_devices, device_type=device.type if device.type == "cuda" else "cuda"):
        while step < total and not stopped:
            for group in opt.param_groups:
                group["lr"] = config.lr * min(1.0, (step + 1) / warmup)
            if stream is not None:
                y, label = stream.next()
            else:
                y, label = sample_batch(config.batch, gen)
                if world > 1:
                    y = y[rank * local : (rank + 1) * local]
                    label = None if label is None else label[rank * local : (rank + 1) * local]
            y = y.to(device, non_blocking=True)
            label = None if label is None else label.to(device, non_blocking=True)
            opt.zero_grad(set_to_none=True)
            step_loss: Optional[Tensor] = None
            for a in range(accum):
                part = slice(a * micro, (a + 1) * micro)
                yc = y[part] if accum > 1 else y
                lc = None if label is None else (label[part] if accum > 1 else label)
                if config.channels_last and yc.ndim == 4:
                    yc = yc.contiguous(memory_format=torch.channels_last)
                seed = chunk_seed(config.seed, step, rank * accum + a)
                noise_gen.manual_seed(seed)
                _seed_global(seed, device)
                no_sync = ddp_module.no_sync() if (ddp_module is not None and a < accum - 1) else contextlib.nullcontext()
                with no_sync:
                    with torch.autocast(device_type=device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                        loss = process.loss(view, yc, generator=noise_gen, label=lc).float().mean()
                    (loss / accum).backward()
                part_loss = loss.detach() / accum
                step_loss = part_loss if step_loss is None else step_loss + part_loss
            if config.grad_clip is not None:
                nn.utils.clip_grad_norm_(field.parameters(), config.grad_clip)
            opt.step()
            step += 1
            seen = step * config.batch
            halflife = config.ema_halflife if config.ema_rampup is None else min(config.ema_halflife, config.ema_rampup * seen)
            ema_update(0.5 ** (config.batch / max(halflife, 1e-8)))
            pending.append(step_loss)
            if step % config.log_every == 0 or step == total:
                chunk, over = flush()
                progress.update(step, config.batch, force=True, loss=sum(chunk) / max(len(chunk), 1))
                if over:
                    stopped = True
                    if rank == 0:
                        print(f"stopping at step {step}: --max-minutes {config.max_minutes} reached; resume to continue", file=log_stream or sys.stderr, flush=True)
            if on_step is not None and on_step(step, ema):
                stopped = True
            if config.checkpoint_every and step % config.checkpoint_every == 0 and step < total and not stopped:
                if pending:
                    flush()
                save(step)
        if pending:
            flush()
    if step != start_step or resumed_from is None:
        save(step)
    field.eval()
    ema.eval()
    return TrainResult(field=field, ema=ema, losses=losses, step=step, stopped_early=stopped and step < total, checkpoint=last_ckpt[0])
