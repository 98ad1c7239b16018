"""``physgen encode``: a dataset to a latents file with a trained KL autoencoder (issue 25).

``physgen encode --ae AE --dataset D --out latents.npz`` encodes every image of ``D``
(loaded at the autoencoder's resolution) to its posterior mean (``--mode sample``: one
draw per image, seeded by ``--seed``), scales the latents to unit variance and writes them
with the scale factor and the autoencoder's path and sha256 (:mod:`physgen.latent.encode`).
The file is ``npz:`` data for ``physgen train``.
"""
from __future__ import annotations

import sys

from ..errors import UserError
from ..latent.encode import LATENT_MODES, encode_dataset
from ..runfolder import add_overwrite_argument, prepare_file
from ..runtime import resolve_device
from .flags import BATCH, SEED

OUTPUTS = ("the --out latents file",)  # what encode writes


def register(sub) -> None:
    p = sub.add_parser("encode", help="encode an image dataset to a latents file with a trained autoencoder")
    p.add_argument("--ae", required=True, help="an autoencoder checkpoint or a physgen train-autoencoder run folder")
    p.add_argument("--dataset", default="digits", help="digits, cifar10:PATH, folder:PATH, npz:PATH (loaded at the autoencoder's resolution)")
    p.add_argument("--split", default="train", choices=["train", "test"], help="cifar10: the train or test batches")
    p.add_argument("--mode", default="mean", choices=list(LATENT_MODES), help="the posterior mean, or one draw per image")
    p.add_argument("--seed", type=SEED, default=0, help="--mode sample: the draws' seed")
    p.add_argument("--batch", type=BATCH, default=256)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--out", default="latents.npz", help="the latents file (.npz)")
    add_overwrite_argument(p)
    p.set_defaults(func=run)


def run(args) -> int:
    if not str(args.out).lower().endswith(".npz"):
        raise UserError(f"--out must end in .npz, got {args.out!r}")
    prepare_file(args.out, "encode", overwrite=args.overwrite)
    info = encode_dataset(args.ae, args.dataset, args.out, mode=args.mode, seed=args.seed, batch=args.batch,
                          device=resolve_device(args.device), split=args.split, log=sys.stderr)
    c, h, w = info.latent_shape
    print(f"wrote {args.out}: {info.count} latents {c}x{h}x{w} of {info.dataset} ({info.mode}), scale factor {info.scale_factor:.6g}")
    return 0
