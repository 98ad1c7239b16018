"""``physgen sample``: images from a checkpoint (self-describing: nothing else is read).

``--ckpt`` is anything :func:`physgen.pretrained.load` reads: a physgen checkpoint or run
directory, an EDM / PFGM++ snapshot (``.pkl``, ``.pt``; nothing in it runs) or a diffusers
``UNet2DModel`` folder.

``--out FILE.png`` writes one grid of ``--n`` samples; ``--out DIR`` writes ``--n`` PNGs
``DIR/{index:06d}.png``.  Under ``torchrun`` each rank writes its contiguous block of
indices (no process group is needed); sample ``i`` is seeded by ``(--seed, i)`` alone, so
the files do not depend on the number of ranks or the batch size.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ..config import LIMIT_REASONS, MAX_SAMPLES, arg, parse_int
from ..errors import UserError
from ..guidance.wrappers import check_guidance_flags
from ..io import write_json
from ..runfolder import add_overwrite_argument, join, prepare, prepare_file
from .flags import (BATCH, LABEL, SAMPLES, SEED, add_guidance_arguments, add_sampler_arguments, guidance_transform,
                    sampler_options, sampling_steps)
from ..images.generate import sample_grid, sample_to_dir
from ..pretrained import load
from ..runtime import dist_info, resolve_device
from ..sampling import format_solver_table

OUTPUTS = ("sampling.json", "[0-9][0-9][0-9][0-9][0-9][0-9]*.png")  # what sample --out DIR writes


def register(sub) -> None:
    p = sub.add_parser("sample", help="sample images from a checkpoint: a grid PNG or a folder of PNGs (sharded under torchrun)")
    p.add_argument("--ckpt", default=None, help="physgen checkpoint or run directory (its newest checkpoint), EDM/PFGM++ snapshot (.pkl/.pt) or diffusers folder")
    p.add_argument("--n", type=SAMPLES, default=64, help="number of samples")
    add_sampler_arguments(p)  # --solver --steps --schedule --rtol --atol --levels --steps-per-level --eps --snr --sampler-opt ...
    p.add_argument("--out", default=None, help="FILE.png for a grid (with sampling.json beside it), or a DIR for one PNG per sample")
    p.add_argument("--seed", type=SEED, default=0, help="sample i uses the noise of (seed, i)")
    p.add_argument("--start", type=arg(parse_int, 0, MAX_SAMPLES * 100, LIMIT_REASONS["samples"]), default=0, help="first sample index (write disjoint sets from several runs)")
    p.add_argument("--batch", type=BATCH, default=256, help="samples per forward pass")
    p.add_argument("--label", type=LABEL, default=None, help="class to sample (class-conditional checkpoints)")
    p.add_argument("--raw", action="store_true", help="use the raw training weights instead of the EMA")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (torchrun: cuda:LOCAL_RANK)")
    p.add_argument("--precision", default="fp32", choices=["auto", "fp32", "bf16"], help="bf16/auto: bf16 autocast on CUDA")
    p.add_argument("--nrow", type=arg(parse_int, 1, MAX_SAMPLES), default=None, help="grid: images per row")
    p.add_argument("--skip-existing", action="store_true", help="DIR: do not redo batches whose PNGs exist")
    p.add_argument("--ae", default=None, help="latent runs: the autoencoder, where it moved (must match the run's recorded checksum)")
    add_guidance_arguments(p, cond_drop=False)  # --guidance cfg|classifier --w --guidance-interval --classifier-ckpt
    add_overwrite_argument(p)
    p.set_defaults(func=run)


def _prepare_out(args, info) -> None:
    """Refuse (or, with --overwrite, clear) another run's outputs; lock the folder (rank 0)."""
    out = Path(args.out)
    if out.suffix.lower() == ".png":
        if info.is_main:  # the grid and its record
            prepare_file(out, "sample", overwrite=args.overwrite)
            prepare_file(out.parent / "sampling.json", "sample", overwrite=args.overwrite)
        return
    first, stop = args.start, args.start + args.n

    def ours(path: Path) -> bool:  # a PNG this run writes (other ranks may be writing it now)
        return path.suffix == ".png" and path.stem.isdigit() and first <= int(path.stem) < stop

    if info.is_main:  # args.out as given: an empty --out is refused there (Path("") would be the current folder)
        prepare(args.out, "sample", OUTPUTS, overwrite=args.overwrite, resume=args.skip_existing, conflicts=ours, keep=ours,
                sweep=info.world_size == 1, hint=" (or --skip-existing to finish them)", resume_flag="--skip-existing")
    else:
        join(out, "sample")


def run(args) -> int:
    if args.list_solvers:
        print(format_solver_table(load(args.ckpt).process) if args.ckpt else format_solver_table())
        return 0
    if args.ckpt is None or args.out is None:
        raise UserError("physgen sample needs --ckpt and --out (or --list-solvers)")
    if args.n < 1:
        raise UserError(f"--n must be >= 1, got {args.n}")
    check_guidance_flags(args.guidance, args.w, args.guidance_interval, args.classifier_ckpt)  # before any work
    options = sampler_options(args)
    info = dist_info()
    device = resolve_device(args.device, info.local_rank)
    _prepare_out(args, info)
    model = load(args.ckpt, device=device, ema=not args.raw, ae=args.ae)  # a latent run: with its checked decoder
    out = Path(args.out)
    kw = dict(seed=args.seed, solver=args.solver, steps=sampling_steps(args), schedule=args.schedule, batch=args.batch,
              device=device, sampler_options=options, precision=args.precision, label=args.label,
              schedule_cache=out.parent if out.suffix.lower() == ".png" else out,  # --schedule optimal caches its grids by the output
              decode=model.decode)

    transform = guidance_transform(args, model.process, device)  # physgen/guidance: the wrapper counts the network evaluations
    if transform is not None:
        kw["field_transform"] = transform
    if out.suffix.lower() == ".png":
        if not info.is_main:
            return 0  # a grid is one file: rank 0 draws it
        if args.start:
            raise UserError("--start applies to a DIR output, not a grid")
        path, _, record = sample_grid(model.process, model.field, args.n, out, model.shape, nrow=args.nrow, log_stream=sys.stderr, **kw)
        write_json(path.parent / "sampling.json", {**_metadata(args, model), **record, "image": path.name, "n": args.n})
        print(f"wrote {path} and {path.parent / 'sampling.json'}: {args.n} samples, {record['nfe']} NFE each ({model.process.name}, {_origin(model)})")
        if "field_transform" in kw:
            print(kw["field_transform"].summary())
        return 0
    summary = sample_to_dir(model.process, model.field, args.n, out, model.shape, rank=info.rank, world_size=info.world_size,
                            start=args.start, skip_existing=args.skip_existing, metadata=_metadata(args, model), log_stream=sys.stderr, **kw)
    rate = summary["written"] / max(summary["wall_s"], 1e-9)
    print(f"rank {info.rank}/{info.world_size}: wrote {summary['written']} PNGs to {out} (skipped {summary['skipped']}), "
          f"{summary['nfe_per_sample']} NFE each, {rate:.1f} img/s")
    return 0


def _origin(model) -> str:
    return f"step {model.step}" if model.step is not None else f"{model.format} {model.path.name}"


def _metadata(args, model) -> dict:
    return {"checkpoint": str(model.path), "format": model.format, "step": model.step, "process": {"name": model.process.name}, "seed": args.seed,
            "label": args.label, "ema": not args.raw, "precision": args.precision}
