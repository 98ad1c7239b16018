"""``physgen export MODEL --format safetensors --out DIR``: a physgen model folder (written by
``physgen import``), a physgen training run (a run folder: its newest valid checkpoint, or one
checkpoint file; its **EMA** weights, what ``physgen sample --ckpt`` uses), an EDM / PFGM++
snapshot or a diffusers folder as ``DIR/model.safetensors`` (the network's state dict, readable
by any safetensors tool) + ``DIR/model.header`` (the checksummed physgen header: process,
network and preconditioning, :mod:`physgen.pretrained.convert`).  ``--format diffusers`` writes
a diffusers folder (``config.json``, ``diffusion_pytorch_model.safetensors``,
``scheduler_config.json``) for a model read from a diffusers folder or imported from one, and
refuses every other model in one line: physgen's U-Nets are EDM's layouts (SongUNet,
DhariwalUNet), with no ``UNet2DModel`` counterpart.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..pretrained import load
from ..pretrained.convert import EXPORT_FORMATS, HEADER, WEIGHTS, save_model
from ..pretrained.diffusers import DIFFUSERS_OUTPUTS, check_exportable, save_diffusers
from ..runfolder import add_overwrite_argument, prepare

OUTPUTS = {"safetensors": (WEIGHTS, HEADER), "diffusers": DIFFUSERS_OUTPUTS}  # what each --format writes


def register(sub) -> None:
    p = sub.add_parser("export", help="write a model (physgen model folder, physgen training run (EMA weights), EDM/PFGM++ snapshot or diffusers folder) as safetensors weights + a physgen header for other tools")
    p.add_argument("model", help="a physgen model folder (physgen import), a physgen training run or checkpoint (its EMA weights) or an EDM/PFGM++ snapshot")
    p.add_argument("--format", default="safetensors", help=f"{', '.join(EXPORT_FORMATS)} (diffusers: only a model read from a diffusers folder or imported from one)")
    p.add_argument("--out", required=True, help="the folder to write")
    add_overwrite_argument(p)
    p.set_defaults(func=run)


def run(args) -> int:
    if args.format not in EXPORT_FORMATS:
        raise UserError(f"--format {args.format!r} is not supported; choose {', '.join(EXPORT_FORMATS)}")
    model = load(args.model)
    if Path(args.out).resolve() == Path(args.model).resolve():
        raise UserError(f"--out {args.out!r} is the model itself; choose another folder")
    if args.format == "diffusers":
        check_exportable(model)  # EDM / PFGM++ layouts: one line, before --out is touched
    out = prepare(args.out, "export", OUTPUTS[args.format], overwrite=args.overwrite).path
    (save_diffusers if args.format == "diffusers" else save_model)(model, Path(out))
    print(f"wrote {out}/{' and '.join(OUTPUTS[args.format])} ({model.process.describe()})")
    return 0
