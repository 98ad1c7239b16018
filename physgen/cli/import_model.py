"""``physgen import PATH --out RUN``: an EDM / PFGM++ snapshot (``.pkl``, ``.pt``) read once by the
restricted reader (nothing in it runs), or a diffusers ``UNet2DModel`` folder (+ its
``scheduler_config.json``), written as a physgen model folder, ``RUN/model.safetensors`` +
``RUN/model.header`` (the checksummed physgen checkpoint header, :mod:`physgen.pretrained.convert`),
so later commands (``--ckpt RUN``) never open the pickle or the diffusers folder.  Same process,
network and weights (bit for bit).  An imported diffusers model still needs the diffusers extra
to run: physgen's own U-Net cannot represent ``UNet2DModel``.
"""
from __future__ import annotations

from pathlib import Path

from ..pretrained import load
from ..pretrained.convert import HEADER, WEIGHTS, save_model
from ..runfolder import add_overwrite_argument, prepare

OUTPUTS = (WEIGHTS, HEADER)  # what import writes


def register(sub) -> None:
    p = sub.add_parser("import", help="convert an EDM/PFGM++ snapshot (.pkl/.pt) or a diffusers UNet2DModel folder once into a physgen model folder (safetensors weights)")
    p.add_argument("path", help="the snapshot (network-snapshot-*.pkl or a PFGM++ .pt, read as data, nothing in it runs) or a diffusers UNet2DModel folder with its scheduler_config.json")
    p.add_argument("--out", required=True, help="the model folder to write (use it as --ckpt)")
    add_overwrite_argument(p)
    p.set_defaults(func=run)


def run(args) -> int:
    model = load(args.path)  # before --out is touched: a file that cannot be read leaves nothing behind
    out = prepare(args.out, "import", OUTPUTS, overwrite=args.overwrite).path
    save_model(model, Path(out))
    print(f"wrote {out}/{WEIGHTS} and {HEADER}: {model.process.describe()}, samples {'x'.join(str(v) for v in model.shape)}, "
          f"{model.num_classes} classes (use --ckpt {out})")
    return 0
