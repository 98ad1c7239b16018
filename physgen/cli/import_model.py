"""``physgen import PATH --out RUN``: an EDM / PFGM++ snapshot (``.pkl``, ``.pt``) read once by the
restricted reader (nothing in it runs) and written as a physgen model folder,
``RUN/model.safetensors`` + ``RUN/model.json`` (:mod:`physgen.pretrained.convert`), so later
commands (``--ckpt RUN``) never open the pickle.  Same process, network and weights (bit for bit).
"""
from __future__ import annotations

from pathlib import Path

from ..pretrained import load
from ..pretrained.convert import DESCRIPTION, WEIGHTS, save_model
from ..runfolder import add_overwrite_argument, prepare

OUTPUTS = (WEIGHTS, DESCRIPTION)  # what import writes


def register(sub) -> None:
    p = sub.add_parser("import", help="convert an EDM/PFGM++ snapshot (.pkl/.pt) once into a physgen model folder (safetensors weights)")
    p.add_argument("path", help="the snapshot: network-snapshot-*.pkl or a PFGM++ .pt (read as data, nothing in it runs)")
    p.add_argument("--out", required=True, help="the model folder to write (use it as --ckpt)")
    add_overwrite_argument(p)
    p.set_defaults(func=run)


def run(args) -> int:
    model = load(args.path)  # before --out is touched: a file that cannot be read leaves nothing behind
    out = prepare(args.out, "import", OUTPUTS, overwrite=args.overwrite).path
    save_model(model, Path(out))
    print(f"wrote {out}/{WEIGHTS} and {DESCRIPTION}: {model.process.describe()}, samples {'x'.join(str(v) for v in model.shape)}, "
          f"{model.num_classes} classes (use --ckpt {out})")
    return 0
