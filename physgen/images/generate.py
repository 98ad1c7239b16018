"""Image generation from a trained field: batched, per-sample seeded, sharded over ranks.

Sample ``i`` starts from the prior draw of :class:`physgen.noise.SeededNoise` ``(seed, i)``
and every stochastic step of the sampler uses the same per-sample noise, so sample ``i``
is the same image whatever the batch size, the number of ranks, or the order in which
the samples are drawn.  Sharding is therefore only a partition of the index range:
rank ``r`` of ``W`` takes the contiguous block ``[n r / W, n (r+1) / W)`` (plus ``start``)
and writes ``{index:06d}.png`` files that never collide.

Class-conditional fields take ``label`` (one class for all, or one per index).  Anything
that changes the field used for sampling (classifier-free guidance, Ho & Salimans,
arXiv 2207.12598: ``D_w = D(x|∅) + w (D(x|c) - D(x|∅))``) plugs in through
``field_transform(field) -> field``, applied once before sampling; the sampler only sees
the returned field estimator.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ..errors import UserError
from ..io import ensure_dir, write_json
from ..noise import SeededNoise
from ..sampling import grid, pooled_stray_fraction, sample, sampling_record, warn_strays
from .data import save_image_grid, save_pngs
from ..runtime import resolve_precision

__all__ = ["shard", "label_tensor", "generate", "sample_grid", "sample_to_dir"]

Labels = Union[None, int, Sequence[int], Tensor]


def shard(n: int, rank: int = 0, world_size: int = 1, start: int = 0) -> range:
    """Global sample indices of rank ``rank`` of ``world_size``: a contiguous block of the
    ``n`` indices ``start .. start+n-1`` (sizes differ by at most one)."""
    if n < 0:
        raise UserError(f"number of samples must be >= 0, got {n}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise UserError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    return range(start + n * rank // world_size, start + n * (rank + 1) // world_size)


def label_tensor(label: Labels, n: int, device, num_classes: int) -> Optional[Tensor]:
    """``None``, one class for all ``n`` samples, or one per sample, as a long tensor;
    checked against the field's ``num_classes`` (0 = unconditional)."""
    if label is None:
        return None
    if num_classes <= 0:
        raise UserError("--label needs a class-conditional checkpoint (trained with --cond); this one is unconditional")
    t = torch.as_tensor(label, dtype=torch.long)
    if t.ndim == 0:
        t = t.expand(n)
    if t.shape != (n,):
        raise UserError(f"labels must be one class or one per sample ({n}), got shape {list(t.shape)}")
    if bool(((t < -1) | (t >= num_classes)).any()):
        raise UserError(f"--label must be in [0, {num_classes}) (or -1 for the null class)")
    return t.to(device)


def generate(
    process,
    field,
    indices: Sequence[int],
    shape: Sequence[int],
    *,
    seed: int = 0,
    solver: str = "heun",
    steps: Optional[int] = None,
    schedule: Union[None, str, Tensor] = None,
    label: Labels = None,
    batch: int = 256,
    device=None,
    sampler_options: Optional[Dict[str, Any]] = None,
    precision: str = "fp32",
    field_transform: Optional[Callable[[Any], Any]] = None,
    schedule_cache=None,
    decode: Optional[Callable[[Tensor], Tensor]] = None,
) -> Iterator[Tuple[List[int], Tensor, Any]]:
    """Yield ``(indices, images [b, *shape] float32 in data space, solver stats)`` per batch.

    ``indices`` are global sample indices (they pick the seeds); ``label`` is ``None``,
    a class, or one class per entry of ``indices``.  ``steps``/``schedule`` go through
    :func:`physgen.sampling.grid` (the one discretisation of every command).
    ``precision="bf16"`` runs the field under bf16 autocast on CUDA (fp32 elsewhere).
    ``schedule_cache`` is where ``schedule="optimal"`` caches its grids.  ``decode`` maps the
    solver's end points to images (a latent run's decoder, :func:`physgen.latent.data.latent_decoder`).
    """
    if batch < 1:
        raise UserError(f"batch must be >= 1, got {batch}")
    indices = [int(i) for i in indices]
    device = torch.device(device) if device is not None else next(field.parameters()).device
    num_classes = int(getattr(field, "num_classes", 0))
    labels = label_tensor(label, len(indices), device, num_classes) if label is not None else None
    use = field_transform(field) if field_transform is not None else field
    sched = schedule if isinstance(schedule, Tensor) else grid(process, steps, schedule, method=solver, dim=int(torch.Size(shape).numel()),
                                                               field=use, cache_dir=schedule_cache, shape=tuple(shape),
                                                               options=sampler_options, label=label)
    amp = resolve_precision(precision, device)
    for lo in range(0, len(indices), batch):
        idx = indices[lo : lo + batch]
        noise = SeededNoise(seed, idx)
        x0 = process.sample_prior((len(idx), *shape), noise=noise, device=device)
        lab = None if labels is None else labels[lo : lo + batch]
        with torch.no_grad(), torch.autocast(device_type=device.type, dtype=amp or torch.float32, enabled=amp is not None):
            sol = sample(process, use, x0, sched, solver, noise=noise, label=lab, **(sampler_options or {}))
        x = sol.x.float()
        yield idx, decode(x) if decode is not None else x, sol.stats


def _grid_for(process, field, shape, kwargs: Dict[str, Any]) -> Tuple[Tensor, Optional[str], str]:
    """The grid a call of :func:`generate` with ``kwargs`` integrates on (it is then passed as a tensor)."""
    solver, steps, schedule = kwargs.get("solver", "heun"), kwargs.pop("steps", None), kwargs.get("schedule")
    if isinstance(schedule, Tensor):
        return schedule, None, solver
    transform = kwargs.get("field_transform")
    kwargs["schedule"] = grid(process, steps, schedule, method=solver, dim=int(torch.Size(shape).numel()),
                              field=transform(field) if transform is not None else field, cache_dir=kwargs.get("schedule_cache"),
                              shape=tuple(shape), options=kwargs.get("sampler_options"), label=kwargs.get("label"))
    return kwargs["schedule"], schedule, solver


def _with_strays(record: Dict[str, Any], parts: List[Tuple[Optional[float], int]], what: str, log_stream=None) -> Dict[str, Any]:
    """The record with ``stray_fraction`` over all batches (``parts``: each batch's fraction and
    size; :func:`physgen.sampling.stray_fraction`), and one warning line when it is not 0."""
    fraction = pooled_stray_fraction(parts)
    warn_strays(fraction, sum(n for f, n in parts if f is not None), log_stream, what)
    return {**record, "stray_fraction": fraction}


def sample_grid(process, field, n: int, path, shape, *, nrow: Optional[int] = None, log_stream=None,
                **kwargs) -> Tuple[Path, Tensor, Dict[str, Any]]:
    """Samples ``0 .. n-1`` tiled into one PNG at ``path``; returns the path, the images and
    the sampling record (:func:`physgen.sampling.sampling_record`: solver, steps, schedule, NFE;
    and ``stray_fraction`` over all batches, with one warning line on ``log_stream`` when not 0)."""
    sched, name, solver = _grid_for(process, field, shape, kwargs)
    images, stats, strays = [], None, []
    for idx, x, stats in generate(process, field, range(n), shape, **kwargs):
        images.append(x.cpu())
        strays.append((stats.extra.get("stray_fraction"), len(idx)))
    x = torch.cat(images)
    record = _with_strays(sampling_record(process, solver, name, sched, stats), strays, f" of {Path(path).name}", log_stream)
    return save_image_grid(x.clamp(-1, 1), path, nrow=nrow), x, record


def sample_to_dir(
    process,
    field,
    n: int,
    out_dir,
    shape,
    *,
    rank: int = 0,
    world_size: int = 1,
    start: int = 0,
    skip_existing: bool = False,
    batch: int = 256,
    metadata: Optional[Dict[str, Any]] = None,
    log_stream=None,
    **kwargs,
) -> Dict[str, Any]:
    """Write this rank's shard of samples ``start .. start+n-1`` as ``{index:06d}.png`` in
    ``out_dir``; rank 0 also writes ``sampling.json`` (the settings and the sampling record:
    solver, steps, schedule, NFE, and ``stray_fraction`` over the samples rank 0 generated
    now; every rank warns in one line about its own strays).  With ``skip_existing`` a batch whose PNGs all exist is
    not generated again (resume an interrupted run).  Returns counts, the record and wall
    time of this rank."""
    out = ensure_dir(out_dir)
    mine = list(shard(n, rank, world_size, start))
    sched, name, solver = _grid_for(process, field, shape, kwargs)
    todo: List[int] = []
    for lo in range(0, len(mine), batch):
        idx = mine[lo : lo + batch]
        if skip_existing and all((out / f"{i:06d}.png").is_file() for i in idx):
            continue
        todo.extend(idx)
    label = kwargs.pop("label", None)
    if label is not None and not isinstance(label, int):
        lab_all = torch.as_tensor(label)
        if lab_all.ndim:  # one label per global index start..start+n-1
            label = lab_all[torch.as_tensor(todo, dtype=torch.long) - start]
    t0 = time.perf_counter()
    written, stats, strays = 0, None, []
    for idx, x, stats in generate(process, field, todo, shape, batch=batch, label=label, **kwargs):
        strays.append((stats.extra.get("stray_fraction"), len(idx)))
        # consecutive indices -> one save_pngs call per run of consecutive indices
        runs: List[Tuple[int, int]] = []
        for j, i in enumerate(idx):
            if runs and idx[runs[-1][0]] + (j - runs[-1][0]) == i:
                runs[-1] = (runs[-1][0], j + 1)
            else:
                runs.append((j, j + 1))
        for a, b in runs:
            save_pngs(x[a:b].clamp(-1, 1), out, start_index=idx[a])
        written += len(idx)
        if log_stream is not None:
            rate = written / max(time.perf_counter() - t0, 1e-9)
            eta = (len(todo) - written) / max(rate, 1e-9)
            print(f"rank {rank}: {written}/{len(todo)} samples  {rate:.1f} img/s  ETA {eta:.0f} s  NFE {stats.nfe}", file=log_stream, flush=True)
    record = sampling_record(process, solver, name, sched, stats) if stats is not None else {"solver": solver, "schedule": name}
    record = _with_strays(record, strays, f" on rank {rank}" if world_size > 1 else "", log_stream)
    if rank == 0:
        write_json(out / "sampling.json", {**(metadata or {}), **record, "n": n, "start": start, "world_size": world_size})
    return {"rank": rank, "indices": [mine[0], mine[-1] + 1] if mine else [], "written": written, "skipped": len(mine) - len(todo),
            "nfe_per_sample": record.get("nfe", 0), "record": record, "wall_s": time.perf_counter() - t0}
