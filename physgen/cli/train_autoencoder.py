"""``physgen train-autoencoder``: train a KL autoencoder (issue 25) with the same run folder,
checkpoints, resume, EMA, DDP and progress as ``physgen train``.

``physgen train-autoencoder --dataset D --out AE`` trains the autoencoder preset
(``--preset digits``: 16x16 -> 4x4x4) on ``D`` (loaded at the preset's resolution; the last
16 images held out for the reconstruction grids) and leaves ``AE/autoencoder.pt``, which
``physgen encode --ae AE`` and ``physgen train --latent AE`` read.  ``--resume AE`` continues
the run from its newest checkpoint (only run-control flags may change).  Under ``torchrun``
the same command trains with DDP on every rank.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch.distributed as dist

from .. import checkpoints
from ..config import config_from_dict
from ..errors import UserError
from ..latent.run import AutoencoderRunConfig, run_autoencoder_training, run_config_of
from ..nets.autoencoder import AE_PRESETS, RECONSTRUCTION_LOSSES
from ..runfolder import add_overwrite_argument, prepare
from ..runtime import dist_info
from .flags import BATCH, COUNT, LR, NONNEGATIVE, OPTIONAL_POSITIVE, POSITIVE, SEED, TRAIN_STEPS

OUTPUTS = ("config.json", "summary.json", "autoencoder.pt", "checkpoints/ckpt-*.pt", "samples/recon-*.png")

S = argparse.SUPPRESS
# flag -> (config key, argparse kwargs); train.* keys are the TrainConfig's
FLAGS = {
    "--dataset": ("dataset", dict(help="digits | cifar10:PATH | folder:PATH | npz:PATH (default digits)")),
    "--preset": ("preset", dict(choices=list(AE_PRESETS), help="autoencoder preset (default digits)")),
    "--beta": ("beta", dict(type=NONNEGATIVE, help="weight of the KL term (default 1e-6)")),
    "--recon": ("recon", dict(choices=list(RECONSTRUCTION_LOSSES), help="reconstruction loss (default l1)")),
    "--disc-weight": ("disc_weight", dict(type=NONNEGATIVE, help="weight of the PatchGAN hinge term (default 0: no discriminator)")),
    "--disc-start": ("disc_start", dict(type=COUNT, help="optimiser step at which the discriminator starts (default 0)")),
    "--out": ("out", dict(help="run directory (config, checkpoints, reconstruction grids, autoencoder.pt)")),
    "--device": ("device", dict(help="auto, cpu, cuda, cuda:N (torchrun: cuda:LOCAL_RANK)")),
    "--steps": ("train.steps", dict(type=TRAIN_STEPS, help="total optimiser steps (default 1000)")),
    "--batch": ("train.batch", dict(type=BATCH, help="global batch over all processes (default 64)")),
    "--micro-batch": ("train.micro_batch", dict(type=BATCH, help="images per forward pass (gradient accumulation)")),
    "--lr": ("train.lr", dict(type=LR, help="Adam learning rate (default 2e-3)")),
    "--warmup-steps": ("train.warmup_steps", dict(type=COUNT, help="linear lr warm-up in steps (default 100)")),
    "--ema-halflife": ("train.ema_halflife", dict(type=POSITIVE, help="EMA half-life in images (default 5000)")),
    "--grad-clip": ("train.grad_clip", dict(type=OPTIONAL_POSITIVE, help="clip the gradient norm to this, or none (default none)")),
    "--log-every": ("train.log_every", dict(type=TRAIN_STEPS, help="progress line every N steps")),
    "--checkpoint-every": ("train.checkpoint_every", dict(type=COUNT, help="checkpoint every N steps (0: at the end)")),
    "--keep-checkpoints": ("train.keep_checkpoints", dict(type=TRAIN_STEPS, help="keep the last K checkpoints")),
    "--seed": ("train.seed", dict(type=SEED, help="seed of initialisation, data order and posterior draws")),
    "--precision": ("train.precision", dict(choices=["auto", "fp32", "bf16"], help="auto: bf16 autocast on CUDA, fp32 on CPU")),
    "--max-minutes": ("train.max_minutes", dict(type=OPTIONAL_POSITIVE, help="stop (with a checkpoint) after this wall time; resume to continue")),
}
RESUMABLE = {"train.steps", "train.log_every", "train.checkpoint_every", "train.keep_checkpoints", "train.max_minutes",
             "train.precision", "train.micro_batch", "device"}


def register(sub) -> None:
    p = sub.add_parser("train-autoencoder", help="train a KL autoencoder (for physgen encode / train --latent); DDP under torchrun",
                       description=__doc__.split("\n\n")[1] if __doc__ else None)
    p.add_argument("--resume", default=None, metavar="DIR", help="continue the run in DIR from its newest checkpoint (optionally with a new --steps)")
    for flag, (_, kw) in FLAGS.items():
        p.add_argument(flag, default=S, **kw)
    add_overwrite_argument(p)
    p.set_defaults(func=run)


def _given(args) -> dict:
    return {key: getattr(args, flag[2:].replace("-", "_")) for flag, (key, _) in FLAGS.items()
            if hasattr(args, flag[2:].replace("-", "_"))}


def _apply(base: dict, given: dict) -> dict:
    d = {**base, "train": dict(base.get("train", {}))}
    for key, value in given.items():
        if key.startswith("train."):
            d["train"][key[6:]] = value
        else:
            d[key] = value
    return d


def resolve_config(args) -> tuple[AutoencoderRunConfig, object]:
    """(config, resume target or False) from --resume and the flags."""
    given = _given(args)
    if not args.resume:
        return config_from_dict(AutoencoderRunConfig, _apply({}, given), "command line"), False
    found = checkpoints.find(args.resume, kind="train", check=run_config_of)
    run_dir = Path(args.resume) if Path(args.resume).is_dir() else found.path.parent.parent
    base = run_config_of(found.header).to_dict()
    if "out" in given and Path(given.pop("out")).resolve() != run_dir.resolve():
        raise UserError("--out must be the --resume directory (or omitted)")
    current = {**base, **{f"train.{k}": v for k, v in base["train"].items()}}
    fixed = sorted(k for k, v in given.items() if k not in RESUMABLE and current.get(k) != v)
    if fixed:
        flag = next(f for f, (key, _) in FLAGS.items() if key == fixed[0])
        raise UserError(f"{flag} cannot change when resuming (the run's config is in its checkpoint); allowed: --steps, "
                        f"--log-every, --checkpoint-every, --keep-checkpoints, --max-minutes, --precision, --micro-batch, --device")
    base["out"] = str(run_dir)
    return config_from_dict(AutoencoderRunConfig, _apply(base, given), f"checkpoint {str(found.path)!r}"), found.path


def run(args) -> int:
    config, resume = resolve_config(args)
    if dist_info().is_main:  # only rank 0 writes
        prepare(config.out, "train-autoencoder", OUTPUTS, overwrite=args.overwrite, resume=bool(resume),
                hint=f", continue with --resume {config.out}")
    try:
        result = run_autoencoder_training(config, resume=resume, log_stream=sys.stderr)
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    print(f"step {result.step}: wrote {Path(config.out) / 'autoencoder.pt'} (checkpoints in {Path(config.out) / 'checkpoints'})")
    return 0
