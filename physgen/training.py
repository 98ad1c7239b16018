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

A checkpoint (:mod:`physgen.checkpoints`, kind ``"train"``) holds the state dicts (model,
EMA, optimiser, data generator and image-sampler states, RNG states, step, loss history,
config, the process and any ``checkpoint_meta``, which with the process is also its
header's ``meta``), written atomically by rank 0 as ``checkpoints/ckpt-<step>.pt``; the last
``keep_checkpoints`` are kept.  ``resume=True`` continues from the newest one that verifies
(newer damaged ones are skipped and reported; ``config.steps`` may be a new total) and
reproduces an uninterrupted run bit for bit on CPU.  A run with an out dir first removes
the temporary files of killed writers in it.
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from . import checkpoints
from .config import LIMIT_REASONS, MAX_BATCH, MAX_LR, MAX_TRAIN_STEPS, config_from_dict, parse_float, parse_int, parse_optional, parse_seed
from .errors import UserError, unknown_name
from .processes import Process, process_from_record
from .runtime import PRECISIONS, DistInfo, Progress, dist_info, mix_seed, resolve_precision

__all__ = ["TrainConfig", "TrainResult", "Trainer", "train", "rebuild_field", "ClassifierObjective", "SCALE_LAWS", "train_classifier", "classifier_accuracy"]

BatchFn = Callable[[int, torch.Generator], tuple[Tensor, Optional[Tensor]]]
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
        reason = LIMIT_REASONS["train_steps"]
        self.steps = parse_int(self.steps, "steps", 1, MAX_TRAIN_STEPS, reason)
        self.batch = parse_int(self.batch, "batch", 1, MAX_BATCH, LIMIT_REASONS["batch"])
        self.log_every = parse_int(self.log_every, "log_every", 1)
        self.keep_checkpoints = parse_int(self.keep_checkpoints, "keep_checkpoints", 1)
        self.warmup_steps = parse_int(self.warmup_steps, "warmup_steps", 0, MAX_TRAIN_STEPS, reason)
        self.checkpoint_every = parse_int(self.checkpoint_every, "checkpoint_every", 0)
        self.seed = parse_seed(self.seed, "seed")
        self.lr = parse_float(self.lr, "lr", 0.0, MAX_LR, lo_open=True, why=LIMIT_REASONS["lr"])
        self.ema_halflife = parse_float(self.ema_halflife, "ema_halflife", 0.0, lo_open=True)
        positive_or_none = parse_optional(parse_float)
        for name in ("ema_rampup", "grad_clip", "duration_mimg", "max_minutes"):
            setattr(self, name, positive_or_none(getattr(self, name), name, 0.0, lo_open=True))
        self.warmup_mimg = positive_or_none(self.warmup_mimg, "warmup_mimg", 0.0)
        if self.micro_batch is not None:
            self.micro_batch = parse_int(self.micro_batch, "micro_batch", 1, self.batch)
            if self.batch % self.micro_batch:
                raise UserError(f"micro_batch must be > 0 and divide batch={self.batch}, got {self.micro_batch}")
        if self.precision not in PRECISIONS:
            raise UserError(f"unknown precision {self.precision!r}; valid: {', '.join(PRECISIONS)}")
        if self.duration_mimg is not None and self.total_steps > MAX_TRAIN_STEPS:
            raise UserError(f"duration_mimg {self.duration_mimg} at batch {self.batch} is {self.total_steps} steps, over {MAX_TRAIN_STEPS} ({reason})")

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
        """From a dict: unknown keys and wrongly typed values name the key."""
        return config_from_dict(cls, d, where)


@dataclass
class TrainResult:
    field: nn.Module
    ema: nn.Module
    losses: list[float]
    step: int
    stopped_early: bool = False
    checkpoint: Optional[Path] = None


_TRAIN_KEYS = ("model", "ema", "optimizer", "generator", "losses", "step")


def _resume_checkpoint(resume, out_dir, log) -> "checkpoints.Checkpoint":
    """The checkpoint ``resume`` names: a file (verified), else the newest checkpoint of
    ``out_dir`` that verifies (newer damaged ones are skipped and reported on ``log``)."""
    if isinstance(resume, (str, os.PathLike)) and Path(resume).is_file():
        target = Path(resume)
    elif out_dir is not None:
        target = Path(out_dir)
        if not checkpoints.list_checkpoints(target):
            raise UserError(f"--resume: no checkpoint found in {str(target / 'checkpoints')}")
    else:
        raise UserError("--resume: no checkpoint found (no out dir)")
    found = checkpoints.find(target, kind="train", log=log)
    ckpt = checkpoints.read(found.path, kind="train", log=log)
    missing = [k for k in _TRAIN_KEYS if k not in ckpt.payload]
    if missing:
        raise UserError(f"checkpoint {str(found.path)!r} is not a complete training checkpoint (no {', '.join(missing)})")
    return ckpt


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


class Trainer:
    """One training run: its state (field, EMA, optimiser, data generator or stream, step, loss
    history) and the parts of a step as methods, each readable alone.

    :func:`train` is the driver: ``Trainer(...)``, :meth:`restore` when resuming, :meth:`run`.
    :meth:`run` wraps the field (DDP under ``torch.distributed``, ``torch.compile``) and loops
    :meth:`step` (one optimiser step over the global batch: warm-up, accumulation with
    ``no_sync``, clipping, EMA), :meth:`flush` (the loss history, agreed over ranks),
    :meth:`sample_grid` (every ``sample_every`` steps) and :meth:`save` (a checkpoint).
    ``process`` is anything with ``name``, ``config()`` and ``loss(field, y, generator=, label=)``
    (a process, :class:`ClassifierObjective`, :class:`physgen.latent.run.AutoencoderObjective`);
    ``adam_betas``: Adam's ``(beta1, beta2)`` (LDM's autoencoders use ``(0.5, 0.9)``).
    ``extra_state``: an object with ``state_dict()`` / ``load_state_dict(d, path)`` whose state rides
    in each checkpoint (the autoencoder's discriminator and its optimiser), so resuming restores it.
    """

    def __init__(self, process, field: nn.Module, sample_batch: Union[BatchFn, Any], config: TrainConfig, *, out_dir=None,
                 device=None, log_stream=None, checkpoint_meta: Optional[dict] = None, unit: str = "samples",
                 sample_grid: Optional[Callable[[int, nn.Module], None]] = None, sample_every: int = 0,
                 adam_betas: tuple[float, float] = (0.9, 0.999), extra_state: Optional[Any] = None):
        self.extra_state = extra_state
        self.process, self.config, self.out_dir, self.log_stream, self.unit = process, config, out_dir, log_stream, unit
        self.checkpoint_meta = checkpoint_meta or {}
        self.grid_writer, self.sample_every = sample_grid, sample_every
        self.device = torch.device(device) if device is not None else next(field.parameters()).device
        info = dist_info() if (dist.is_available() and dist.is_initialized()) else DistInfo()
        self.rank, self.world = info.rank, info.world_size
        if config.batch % self.world:
            raise UserError(f"batch={config.batch} must be divisible by the number of processes ({self.world})")
        self.local = config.batch // self.world
        self.micro = int(config.micro_batch or self.local)
        if self.micro > self.local or self.local % self.micro:
            raise UserError(f"micro_batch={self.micro} must divide the per-process batch {self.local} (batch {config.batch} over {self.world} processes)")
        self.accum = self.local // self.micro
        self.sample_batch = sample_batch
        self.stream = sample_batch if _is_stream(sample_batch) else None
        if self.stream is not None and getattr(self.stream, "batch_size", self.local) != self.local:
            raise UserError(f"the image sampler draws {self.stream.batch_size} per process but the per-process batch is {self.local}")
        self.amp_dtype = resolve_precision(config.precision, self.device)

        field = field.to(self.device)
        if config.channels_last:
            field = field.to(memory_format=torch.channels_last)
        self.field = field
        self.ema = copy.deepcopy(field).requires_grad_(False).eval()
        # fused Adam on CUDA (one kernel for all parameters); the reference loop elsewhere
        self.opt = torch.optim.Adam(field.parameters(), lr=config.lr, betas=adam_betas, **({"fused": True} if self.device.type == "cuda" else {}))
        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(config.seed)
        self.losses: list[float] = []
        self.completed = 0  # optimiser steps done
        self.resumed_from: Optional[Path] = None
        self.last_checkpoint: Optional[Path] = None
        self.pending: list[Tensor] = []  # step losses not yet in the history (one sync per log interval)
        self.ddp_module = None
        if out_dir is not None and self.rank == 0:
            checkpoints.sweep_temporaries(out_dir)  # what killed writers left behind

    def restore(self, resume: Union[bool, str, os.PathLike]) -> None:
        """Continue from a checkpoint (``True``: the newest in ``out_dir`` that verifies; a path:
        that file): weights, EMA, optimiser, data generator or stream, step and loss history."""
        ckpt = _resume_checkpoint(resume, self.out_dir, (self.log_stream or sys.stderr) if self.rank == 0 else None)
        path, state = ckpt.path, ckpt.payload
        checkpoints.load_state(self.field, state["model"], path=path, what="model weights")
        checkpoints.load_state(self.ema, state["ema"], path=path, what="EMA weights")
        try:
            self.opt.load_state_dict(state["optimizer"])
            self.gen.set_state(state["generator"].cpu())
        except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UserError(f"checkpoint {str(path)!r}: its optimiser or data-generator state does not fit this run ({str(exc).splitlines()[0]})") from None
        if self.stream is not None and state.get("sampler") is not None:
            self.stream.load_state_dict(state["sampler"])
        if self.extra_state is not None:
            self.extra_state.load_state_dict(state.get("extra"), path)
        self.losses = [float(v) for v in state["losses"]]
        self.completed = int(state["step"])
        self.resumed_from = self.last_checkpoint = path

    def _wrap(self) -> None:
        """The module the loss calls: DDP around the field over several processes (the EMA then
        starts from rank 0's broadcast parameters, unless resumed), compiled when asked."""
        module: Callable = self.field
        if self.world > 1:
            dev = self.device
            self.ddp_module = DDP(self.field, device_ids=[dev.index] if dev.type == "cuda" else None, broadcast_buffers=False)
            module = self.ddp_module
            if self.resumed_from is None:
                self.ema.load_state_dict(self.field.state_dict())
        if self.config.compile:
            module = torch.compile(module)
        self.view = _FieldView(module, self.field)
        self.ema_update = _EmaUpdate(self.ema, self.field)
        self.noise_gen = torch.Generator(device=self.device)

    def _batch(self) -> tuple[Tensor, Optional[Tensor]]:
        """This rank's slice of the global batch, on the device."""
        if self.stream is not None:
            y, label = self.stream.next()
        else:
            y, label = self.sample_batch(self.config.batch, self.gen)
            if self.world > 1:
                lo, hi = self.rank * self.local, (self.rank + 1) * self.local
                y, label = y[lo:hi], None if label is None else label[lo:hi]
        y = y.to(self.device, non_blocking=True)
        return y, None if label is None else label.to(self.device, non_blocking=True)

    def step(self) -> None:
        """One optimiser step on the global batch: warm-up learning rate, ``accum`` chunks of
        ``micro`` samples (each seeded by its position; DDP syncs on the last), clipping,
        Adam, EMA.  The step's mean loss joins :attr:`pending`."""
        config, device, accum = self.config, self.device, self.accum
        for group in self.opt.param_groups:
            group["lr"] = config.lr * min(1.0, (self.completed + 1) / max(config.warmup, 1))
        y, label = self._batch()
        self.opt.zero_grad(set_to_none=True)
        step_loss: Optional[Tensor] = None
        for a in range(accum):
            part = slice(a * self.micro, (a + 1) * self.micro)
            yc = y[part] if accum > 1 else y
            lc = None if label is None else (label[part] if accum > 1 else label)
            if config.channels_last and yc.ndim == 4:
                yc = yc.contiguous(memory_format=torch.channels_last)
            seed = mix_seed(config.seed, self.completed, self.rank * accum + a, stream="train")
            self.noise_gen.manual_seed(seed)
            _seed_global(seed, device)
            no_sync = self.ddp_module.no_sync() if (self.ddp_module is not None and a < accum - 1) else contextlib.nullcontext()
            with no_sync:
                with torch.autocast(device_type=device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
                    loss = self.process.loss(self.view, yc, generator=self.noise_gen, label=lc).float().mean()
                (loss / accum).backward()
            part_loss = loss.detach() / accum
            step_loss = part_loss if step_loss is None else step_loss + part_loss
        if config.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.field.parameters(), config.grad_clip)
        self.opt.step()
        self.completed += 1
        seen = self.completed * config.batch
        halflife = config.ema_halflife if config.ema_rampup is None else min(config.ema_halflife, config.ema_rampup * seen)
        self.ema_update(0.5 ** (config.batch / max(halflife, 1e-8)))
        self.pending.append(step_loss)

    def flush(self) -> tuple[list[float], bool]:
        """Average the pending losses over ranks (one sync) into the history; also agree on the
        time limit (``max_minutes``)."""
        config = self.config
        over = config.max_minutes is not None and time.perf_counter() - self.t_start > 60.0 * config.max_minutes
        vals = torch.stack(self.pending).float() if self.pending else torch.zeros(0, device=self.device)
        self.pending.clear()
        if self.world > 1:
            both = torch.cat([vals, torch.tensor([float(over)], device=vals.device)])
            dist.all_reduce(both)
            vals, over = both[:-1] / self.world, bool(both[-1] > 0)
        chunk = vals.tolist()
        if not all(math.isfinite(v) for v in chunk):
            raise FloatingPointError(f"training loss became non-finite at step {self.completed} (lr={config.lr}); lower --lr")
        self.losses.extend(chunk)
        return chunk, over

    def save(self) -> None:
        """A checkpoint of everything :meth:`restore` reads (rank 0, with an out dir); the last
        ``keep_checkpoints`` are kept."""
        if self.out_dir is None or self.rank != 0:
            return
        process = {"name": self.process.name, **self.process.config()}
        state = {
            "format": CHECKPOINT_FORMAT,
            "step": self.completed,
            "model": self.field.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.opt.state_dict(),
            "generator": self.gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "sampler": self.stream.state_dict() if self.stream is not None else None,
            "losses": list(self.losses),
            "config": asdict(self.config),
            "process": process,
            "world_size": self.world,
            "meta": self.checkpoint_meta,
        }
        if self.extra_state is not None:
            state["extra"] = self.extra_state.state_dict()
        meta = {"process": process, "world_size": self.world, **self.checkpoint_meta}
        self.last_checkpoint = checkpoints.save(self.out_dir, state, kind="train", step=self.completed, meta=meta,
                                                keep_last=self.config.keep_checkpoints)

    def sample_grid(self) -> None:
        """The sample grid of the EMA at this step (rank 0; ``sample_grid`` given)."""
        if self.grid_writer is not None and self.rank == 0:
            self.grid_writer(self.completed, self.ema)

    def _grid_due(self) -> bool:
        return bool(self.sample_every) and self.completed % self.sample_every == 0

    def run(self, on_step: Optional[Callable[[int, nn.Module], Optional[bool]]] = None) -> TrainResult:
        """Steps up to ``config.total_steps`` (or until ``on_step`` or ``max_minutes`` stops it),
        logging every ``log_every``, then a final checkpoint and sample grid."""
        config, total, start = self.config, self.config.total_steps, self.completed
        self._wrap()
        progress = Progress(total, unit=self.unit, every=config.log_every, stream=self.log_stream, start=start, enabled=self.rank == 0)
        self.t_start = time.perf_counter()
        stopped = False
        dev = self.device
        fork_devices = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
        self.field.train()
        with torch.random.fork_rng(devices=fork_devices, device_type=dev.type if dev.type == "cuda" else "cuda"):
            while self.completed < total and not stopped:
                self.step()
                step = self.completed
                if step % config.log_every == 0 or step == total:
                    chunk, over = self.flush()
                    progress.update(step, config.batch, force=True, loss=sum(chunk) / max(len(chunk), 1))
                    if over:
                        stopped = True
                        if self.rank == 0:
                            print(f"stopping at step {step}: --max-minutes {config.max_minutes} reached; resume to continue",
                                  file=self.log_stream or sys.stderr, flush=True)
                if self._grid_due():
                    self.sample_grid()
                if on_step is not None and on_step(step, self.ema):
                    stopped = True
                if config.checkpoint_every and step % config.checkpoint_every == 0 and step < total and not stopped:
                    if self.pending:
                        self.flush()
                    self.save()
            if self.pending:
                self.flush()
        if self.completed != start or self.resumed_from is None:
            self.save()
        self.field.eval()
        self.ema.eval()
        if not self._grid_due():
            self.sample_grid()
        return TrainResult(field=self.field, ema=self.ema, losses=self.losses, step=self.completed,
                           stopped_early=stopped and self.completed < total, checkpoint=self.last_checkpoint)


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
    sample_grid: Optional[Callable[[int, nn.Module], None]] = None,
    sample_every: int = 0,
) -> TrainResult:
    """Train ``field`` on ``process.loss``; returns the field, its EMA and the loss history.

    ``sample_batch`` is either ``sample_batch(n, generator) -> (y, label)``, called for the
    *global* batch each step (each rank keeps its slice), or a stream with ``next()``,
    ``state_dict()`` and ``load_state_dict()`` (an :class:`physgen.images.data.ImageSampler`
    built with this rank and world size and ``batch_size = batch / world_size``), whose
    state goes into the checkpoints.  Under an initialised ``torch.distributed`` process
    group the field is wrapped in DDP; only rank 0 prints and writes files.

    ``resume``: ``True`` continues from the newest checkpoint in ``out_dir``, a path from
    that checkpoint file.  ``sample_grid(step, ema)`` runs on rank 0 every ``sample_every``
    steps and once at the end (if the last step was not one).  ``on_step(step, ema)`` runs
    after every step on every rank; returning ``True`` stops training (it must then return
    ``True`` on every rank).  ``checkpoint_meta`` is stored in every checkpoint under
    ``"meta"`` (make it self-describing: what network, data and process to rebuild).
    """
    trainer = Trainer(process, field, sample_batch, config, out_dir=out_dir, device=device, log_stream=log_stream,
                      checkpoint_meta=checkpoint_meta, unit=unit, sample_grid=sample_grid, sample_every=sample_every)
    if resume:
        trainer.restore(resume)
    return trainer.run(on_step)


def rebuild_field(ckpt: checkpoints.Checkpoint, net: torch.nn.Module, *, weights: str, device: Any = "cpu") -> tuple[Process, torch.nn.Module]:
    """The one rebuild of a trained field from a checkpoint: the process its ``"process"`` entry
    records (:func:`physgen.processes.process_from_record`), its preconditioning around ``net``
    (built by the caller from the sizes the checkpoint records: an MLP, a U-Net), the ``weights``
    state dict (``"ema"`` or ``"model"``) loaded strictly, moved to ``device``, in eval mode and
    frozen: the reader of what :meth:`Trainer.save` writes.  ``physgen sample``/``nll``/
    ``compare-solvers --ckpt`` and :mod:`physgen.pretrained` all come through here."""
    process = process_from_record(ckpt.payload.get("process"), f"checkpoint {str(ckpt.path)!r}")
    field_ = process.precondition(net)
    checkpoints.load_state(field_, ckpt.payload.get(weights), path=ckpt.path, what=f"{weights} weights")
    field_.to(device).eval().requires_grad_(False)
    return process, field_


# --------------------------------------------------------------------------- classifiers
# The training objective of the noise-conditional classifiers of classifier guidance
# (:mod:`physgen.guidance.classifier`): a process stand-in for :func:`train`.

SCALE_LAWS = ("mixed", "process", "log-uniform")


class ClassifierObjective:
    """Stands in for a process in :func:`physgen.training.train`: cross-entropy of the classifier
    on ``x ~ p_s(x | y)`` drawn with the process's own kernel (``process.perturb``).

    Scales ``s``: ``process`` = ``process.sample_scales`` (the field's training law);
    ``log-uniform`` over the sampling range ``[s_min, s_max]``; ``mixed`` (default) = half of
    each.  Why mixed: guidance acts at every step of the schedule and the shift multiplies the
    classifier's gradient by ``σ²``, so errors at the largest scales, which EDM's log-normal
    law (``ln σ ~ N(-1.2, 1.2²)``) almost never trains, are magnified the most (measured on 8
    Gaussians, MLP, 400 steps: the shift error at ``σ_max`` fell from 72% to 24% of the
    Bayes-classifier shift, unchanged at ``σ ≤ 4``).
    """

    def __init__(self, process, scales: str = "mixed"):
        if scales not in SCALE_LAWS:
            raise unknown_name("classifier scale law", scales, SCALE_LAWS)
        self.process, self.scales = process, scales
        self.name = process.name

    def config(self) -> dict:
        return self.process.config()

    def sample_scales(self, n: int, generator=None, device=None) -> Tensor:
        proc = self.process
        s = proc.sample_scales(n, generator=generator, device=device).double()
        if self.scales == "process":
            return s
        lo, hi = math.log(proc.s_min), math.log(proc.s_max)
        u = torch.exp(lo + (hi - lo) * torch.rand(n, generator=generator, device=device, dtype=torch.float64))
        if self.scales == "log-uniform":
            return u
        return torch.where(torch.arange(n, device=u.device) % 2 == 0, s, u)

    def loss(self, classifier, y: Tensor, *, generator=None, label: Optional[Tensor] = None) -> Tensor:
        if label is None:
            raise UserError("training a classifier needs labelled data")
        s = self.sample_scales(y.shape[0], generator=generator, device=y.device).to(y.dtype)
        x = self.process.perturb(y, s, generator=generator)
        return F.cross_entropy(classifier(x, s).float(), label.long(), reduction="none")


def train_classifier(process, classifier: nn.Module, sample_batch, config, *, scales: str = "mixed", out_dir=None,
                     resume: bool = False, device=None, log_stream=None):
    """Train ``classifier`` with :func:`physgen.training.train` (Adam, EMA, checkpoints, resume).

    ``sample_batch(n, generator) -> (y, labels)``; ``scales``: see :class:`ClassifierObjective`.
    Returns the ``TrainResult`` (``.ema`` is the classifier to use); checkpoints for resuming
    go to ``out_dir/checkpoints``.
    """
    return train(ClassifierObjective(process, scales), classifier, sample_batch, config, out_dir=out_dir, resume=resume,
                 device=device, log_stream=log_stream)


@torch.no_grad()
def classifier_accuracy(classifier, process, y: Tensor, labels: Tensor, sigmas: Sequence[float], *, generator=None) -> dict[str, float]:
    """Accuracy on ``x ~ p_s(x | y)`` at each scale in ``sigmas`` (keys ``acc@<s>``)."""
    out = {}
    for sv in sigmas:
        s = torch.full((y.shape[0],), float(sv), device=y.device, dtype=y.dtype)
        x = process.perturb(y, s, generator=generator)
        pred = classifier(x, s).argmax(1)
        out[f"acc@{sv:g}"] = float((pred == labels.to(pred.device)).double().mean())
    return out
