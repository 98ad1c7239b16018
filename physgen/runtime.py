"""Where and how a run executes: device, DDP, precision, CPU threads, progress lines and seeds.

One home for what every command needs before it touches a tensor:

* :func:`resolve_device` -- ``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` (under ``torchrun`` a bare
  ``cuda`` is ``cuda:LOCAL_RANK``);
* :func:`dist_info` / :func:`init_distributed` -- this process's place in a ``torchrun`` job
  and joining its process group (NCCL on CUDA, gloo on CPU);
* :func:`resolve_precision` -- the autocast dtype of ``auto`` / ``fp32`` / ``bf16``;
* :func:`set_threads` -- torch's intra-op threads, bounded by the CPUs this process may use;
* :class:`Progress` -- a periodic log line with rate and ETA;
* :func:`mix_seed` -- the one seed mixer: ``(seed, step, index) -> 63-bit seed`` for the
  per-sample noise blocks (:class:`physgen.noise.SeededNoise`) and the training chunks
  (:func:`physgen.training.train`).
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Iterator, Optional

import torch
import torch.distributed as dist

from .errors import UserError

__all__ = [
    "DistInfo",
    "dist_info",
    "init_distributed",
    "resolve_device",
    "resolve_precision",
    "PRECISIONS",
    "available_cpus",
    "set_threads",
    "Progress",
    "mix_seed",
    "SEED_STREAMS",
    "initial_weights",
]

PRECISIONS = ("auto", "fp32", "bf16")


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


def _env_int(name: str, default: str) -> int:
    text = os.environ.get(name, default)
    try:
        return int(text)
    except ValueError:
        raise UserError(f"bad torchrun environment: {name}={text!r} is not an integer") from None


def dist_info() -> DistInfo:
    """From the initialised process group, else from ``torchrun``'s environment variables
    (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), else a single process."""
    local = _env_int("LOCAL_RANK", "0")
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local)
    world = _env_int("WORLD_SIZE", "1")
    rank = _env_int("RANK", "0")
    if world < 1 or not 0 <= rank < world:
        raise UserError(f"bad torchrun environment: RANK={rank}, WORLD_SIZE={world}")
    return DistInfo(rank, world, local)


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``; a bare ``cuda`` (or
    ``auto`` on a CUDA machine) is ``cuda:LOCAL_RANK`` (``cuda:0`` outside ``torchrun``)."""
    name = str(name or "auto").strip()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        index = name[5:]
        if index and not index.isdigit():
            raise UserError(f"unknown device {name!r}; valid: auto, cpu, cuda, cuda:N")
        if not torch.cuda.is_available():
            raise UserError(f"device {name!r} asked for, but CUDA is not available here; use --device cpu")
        count = max(torch.cuda.device_count(), 1)
        if not index:
            return torch.device(f"cuda:{local_rank % count}")
        if int(index) >= count:
            raise UserError(f"device {name!r}: this machine has {count} CUDA device(s) (cuda:0 .. cuda:{count - 1})")
        return torch.device(f"cuda:{int(index)}")
    raise UserError(f"unknown device {name!r}; valid: auto, cpu, cuda, cuda:N")


def init_distributed(device: str = "auto") -> tuple[DistInfo, torch.device]:
    """Join the process group when started by ``torchrun`` (``WORLD_SIZE > 1``): NCCL on
    CUDA, gloo on CPU, rendezvous from the environment (``MASTER_ADDR``/``MASTER_PORT``,
    multi-node included).  Returns this process's :class:`DistInfo` and device."""
    info = dist_info()
    dev = resolve_device(device, info.local_rank)
    if info.world_size > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", init_method="env://")
        info = dist_info()
    return info, dev


def resolve_precision(precision: str, device) -> Optional[torch.dtype]:
    """The autocast dtype for ``precision`` on ``device`` (``None``: plain fp32).

    ``auto`` and ``bf16`` give bf16 autocast on CUDA devices that support it; on CPU every
    choice is fp32 (CPU bf16 autocast is slower than fp32 for these networks).
    """
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if precision == "fp32" or torch.device(device).type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else None


# --------------------------------------------------------------------------- threads


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def set_threads(n: int, flag: str = "--threads") -> None:
    """Set torch's intra-op threads (``0``: keep torch's default).

    Bounded by :func:`available_cpus`: more threads than cores only slow torch down, and a
    huge count (``--threads 1000000``) aborts the OpenMP runtime.  Small toy networks and
    fields run several times faster on one thread than on two shared ones (measured: 18k vs
    1k samples/s training the demo MLP on a loaded 2-core VM), hence the toy default of 1.
    """
    limit = available_cpus()
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= limit:
        raise UserError(f"{flag} must be an integer in [0, {limit}] (the CPUs available here; 0: torch's default), got {n!r}")
    if n:
        torch.set_num_threads(n)


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


# --------------------------------------------------------------------------- seeds

_M64 = (1 << 64) - 1
_M63 = (1 << 63) - 1
_GOLDEN = 0x9E3779B97F4A7C15  # 2^64 / golden ratio: spreads consecutive seeds over 64 bits
_STEP = 0xBF58476D1CE4E5B9  # SplitMix64's multipliers, one per coordinate
_INDEX = 0x94D049BB133111EB
_TRAIN_OFFSET = 0x2545F4914F6CDD1D

SEED_STREAMS = ("noise", "train")


def mix_seed(seed: int, step: int, index: int, *, stream: str) -> int:
    """A 63-bit generator seed for ``(seed, step, index)``; ``stream`` names the salt.

    Both streams start from the same linear map over 64-bit words,

        h = seed·φ + (step+1)·c₁ + (index+1)·c₂ + salt   (mod 2⁶⁴),

    with φ = 0x9E3779B97F4A7C15 and SplitMix64's constants c₁, c₂, then differ in salt and
    finaliser, because files already depend on each (changing either would change every
    sample and every resumed run):

    * ``"noise"`` (:class:`physgen.noise.SeededNoise`, index = block of 1024 samples):
      salt 0, finaliser ``h ^= h >> 31``;
    * ``"train"`` (:func:`physgen.training.train`, index = micro-batch chunk): salt
      0x2545F4914F6CDD1D and SplitMix64's two-round finaliser
      ``h ^= h >> 29; h *= 0xD6E8FEB86659FD93; h ^= h >> 32``.

    The result is ``h mod 2⁶³`` (a valid ``torch.Generator.manual_seed`` argument).
    """
    if stream == "noise":
        h = (int(seed) * _GOLDEN + (step + 1) * _STEP + (index + 1) * _INDEX) & _M64
        h ^= h >> 31
    elif stream == "train":
        h = (int(seed) * _GOLDEN + (step + 1) * _STEP + (index + 1) * _INDEX + _TRAIN_OFFSET) & _M64
        h ^= h >> 29
        h = (h * 0xD6E8FEB86659FD93) & _M64
        h ^= h >> 32
    else:
        raise ValueError(f"unknown seed stream {stream!r}; valid: {', '.join(SEED_STREAMS)}")
    return h & _M63


@contextlib.contextmanager
def initial_weights(seed: int) -> Iterator[None]:
    """Build a network inside this block and its initial weights depend on ``seed`` alone.

    ``torch.nn`` layers draw their initialisation from torch's global generator, which a
    run's ``--seed`` does not otherwise touch, so two identical runs would start from
    different weights.  Inside the block the global CPU (and CUDA) generators are seeded
    with ``seed``; on leaving, the caller's generator states are restored
    (``torch.random.fork_rng``), so building a network neither depends on nor changes what
    the caller drew before.  Every command that builds a network (``toy --field mlp``,
    ``nll``/``compare-solvers`` with an MLP, ``train-classifier``, ``train``, the latent
    autoencoder) builds it here.  The seed is the run's own (as ``physgen train`` has
    always used for the U-Net), so image runs keep their initial weights.
    """
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield
