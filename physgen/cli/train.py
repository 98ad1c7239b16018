"""``physgen train``: train an image field (PFGM++, EDM, ...) on a DDPM++ U-Net (in an
autoencoder's latent space, ``--latent``: the ``tiny`` U-Net and a recipe of its own,
:data:`physgen.images.train.LATENT_DEFAULTS`).

Every flag maps onto one field of :class:`physgen.images.train.ImageTrainConfig` (or of its
``train`` :class:`physgen.training.TrainConfig`); precedence: defaults < ``--config FILE``
(TOML/JSON) < flags.  ``--resume DIR`` reads the run's config from its newest checkpoint
and accepts only run-control flags (a new ``--steps``/``--duration-mimg`` total, logging,
checkpointing, sampling, device, precision, compile, micro-batch).  Under ``torchrun`` the
same command trains with DDP on every rank.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch.distributed as dist

from ..config import arg, load_config_file, parse_float, parse_key_values, parse_optional
from ..errors import UserError
from ..runfolder import add_overwrite_argument, prepare
from .flags import (BATCH, COUNT, FRACTION, LR, OPTIONAL_POSITIVE, POSITIVE, RESOLUTION, SAMPLES, SEED, STEPS, TRAIN_STEPS,
                    add_process_arguments, process_options)
from .. import checkpoints
from ..images.train import LATENT_DEFAULTS, ImageTrainConfig, with_default_warmup, check_image_header, config_from_dict, dump_config, run_training
from ..runtime import dist_info

OUTPUTS = ("config.json", "summary.json", "checkpoints/ckpt-*.pt", "samples/grid-*.png")  # what physgen train writes

S = argparse.SUPPRESS


def _kv(text: str):
    """``--unet-opt KEY=VALUE`` (JSON value), one pair."""
    try:
        return next(iter(parse_key_values([text], "--unet-opt").items()))
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None



# flag -> (config key, argparse kwargs); train.* keys live in the [train] table
FLAGS = {
    "--dataset": ("dataset", dict(help="digits | cifar10:PATH | folder:PATH | npz:PATH")),
    "--resolution": ("resolution", dict(type=RESOLUTION, help="resize to this side (default: the data's own)")),
    "--xflip": ("xflip", dict(action=argparse.BooleanOptionalAction, help="random horizontal flips")),
    "--cond": ("cond", dict(action=argparse.BooleanOptionalAction, help="class-conditional network (labels from the data)")),
    "--label-dropout": ("label_dropout", dict(type=FRACTION, help="with --cond: fraction of labels replaced by the null class (default 0.1)")),
    "--cond-drop": ("label_dropout", dict(type=FRACTION, help="alias of --label-dropout (classifier-free guidance)")),
    "--sigma-data": ("sigma_data", dict(type=POSITIVE, help="data standard deviation for the preconditioning (default 0.5; 1 with --latent)")),
    "--arch": ("arch", dict(help="network: U-Net preset tiny, small, ddpmpp (= ddpmpp-cifar10), ddpmpp-ffhq64, or mlp "
                                 "(default: ddpmpp on pixels, tiny with --latent)")),
    "--unet-opt": ("unet", dict(type=_kv, action="append", metavar="KEY=VALUE", help="network preset override, e.g. dropout=0.1, or hidden=1024 for mlp (JSON value)")),
    "--latent": ("latent", dict(metavar="AE", help="train in the latent space of this autoencoder (checkpoint or train-autoencoder run); --dataset: images or an encoded npz")),
    "--device": ("device", dict(help="auto, cpu, cuda, cuda:N (torchrun: cuda:LOCAL_RANK)")),
    "--out": ("out", dict(help="run directory (config, checkpoints, sample grids)")),
    "--sample-every": ("sample_every", dict(type=COUNT, help="write a grid of EMA samples every N steps (0: at the end only)")),
    "--sample-n": ("sample_n", dict(type=SAMPLES, help="images per grid (default 64)")),
    "--sample-steps": ("sample_steps", dict(type=STEPS, help="solver steps for the grids (default 18)")),
    "--sample-solver": ("sample_solver", dict(help="solver for the grids (default heun)")),
    "--sample-seed": ("sample_seed", dict(type=SEED, help="seed of the grid samples")),
    "--steps": ("train.steps", dict(type=TRAIN_STEPS, help="total optimiser steps (clears --duration-mimg)")),
    "--duration-mimg": ("train.duration_mimg", dict(type=POSITIVE, help="total training images in millions (EDM: 200)")),
    "--batch": ("train.batch", dict(type=BATCH, help="global batch over all processes (default 512)")),
    "--micro-batch": ("train.micro_batch", dict(type=BATCH, help="samples per forward pass (gradient accumulation)")),
    "--lr": ("train.lr", dict(type=LR, help="Adam learning rate (default 1e-3)")),
    "--warmup-steps": ("train.warmup_steps", dict(type=COUNT, help="linear lr warm-up in steps (clears --warmup-mimg)")),
    "--warmup-mimg": ("train.warmup_mimg", dict(type=arg(parse_optional(parse_float), 0.0), help="linear lr warm-up in millions of images (default 10)")),
    "--ema-halflife": ("train.ema_halflife", dict(type=POSITIVE, help="EMA half-life in images (default 500000)")),
    "--ema-rampup": ("train.ema_rampup", dict(type=OPTIONAL_POSITIVE, help="EMA ramp-up ratio, or none (default 0.05)")),
    "--grad-clip": ("train.grad_clip", dict(type=OPTIONAL_POSITIVE, help="clip the gradient norm to this, or none (default none)")),
    "--log-every": ("train.log_every", dict(type=TRAIN_STEPS, help="progress line every N steps")),
    "--checkpoint-every": ("train.checkpoint_every", dict(type=COUNT, help="checkpoint every N steps (0: at the end)")),
    "--keep-checkpoints": ("train.keep_checkpoints", dict(type=TRAIN_STEPS, help="keep the last K checkpoints")),
    "--seed": ("train.seed", dict(type=SEED, help="seed of initialisation, data order and noise")),
    "--precision": ("train.precision", dict(choices=["auto", "fp32", "bf16"], help="auto: bf16 autocast on CUDA, fp32 on CPU")),
    "--channels-last": ("train.channels_last", dict(action=argparse.BooleanOptionalAction, help="channels_last memory format (default on)")),
    "--compile": ("train.compile", dict(action=argparse.BooleanOptionalAction, help="torch.compile the network")),
    "--max-minutes": ("train.max_minutes", dict(type=OPTIONAL_POSITIVE, help="stop (with a checkpoint) after this wall time; resume to continue")),
}
PROCESS_KEYS = ("process", "D", "sigma_min", "sigma_max")
RESUMABLE = {
    "train.steps", "train.duration_mimg", "train.log_every", "train.checkpoint_every", "train.keep_checkpoints",
    "train.max_minutes", "train.compile", "train.precision", "train.channels_last", "train.micro_batch",
    "sample_every", "sample_n", "sample_steps", "sample_solver", "sample_seed", "device",
}


def register(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train an image model (PFGM++, EDM, ...) on a U-Net; DDP under torchrun",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    p.add_argument("--config", default=None, metavar="FILE", help="TOML or JSON config (fields of ImageTrainConfig, [train] table)")
    p.add_argument("--resume", default=None, metavar="DIR", help="continue the run in DIR from its newest checkpoint (optionally with a new --steps)")
    p.add_argument("--dump-config", default=None, metavar="FILE", help="write the resolved config (.toml/.json) and exit")
    add_process_arguments(p)
    p.set_defaults(process=None)
    for flag, (_, kw) in FLAGS.items():
        p.add_argument(flag, default=S, **kw)
    add_overwrite_argument(p)
    p.set_defaults(func=run)


def given_overrides(args) -> dict:
    """Dotted config keys -> values for the flags given on the command line."""
    out = {}
    for flag, (key, _) in FLAGS.items():
        dest = flag[2:].replace("-", "_")
        if hasattr(args, dest):
            value = getattr(args, dest)
            out[key] = dict(value) if key == "unet" else value
    popts = process_options(args)
    for key in PROCESS_KEYS:
        if key == "process":
            if args.process is not None:
                out["process"] = args.process
        elif popts.get(key) is not None:
            out[key] = popts[key]
    extra = {k: v for k, v in popts.items() if k not in PROCESS_KEYS and v is not None}
    if extra:
        out["process_options"] = extra
    return out


def apply_overrides(base: dict, given: dict) -> dict:
    d = json.loads(json.dumps(base))  # deep copy (inf is already "inf")
    d.setdefault("train", {})
    for key, value in given.items():
        if key.startswith("train."):
            d["train"][key[6:]] = value
        elif key in ("unet", "process_options"):
            d[key] = {**d.get(key, {}), **value}
        else:
            d[key] = float("inf") if key == "D" and value == float("inf") else value
    if "train.steps" in given and "train.duration_mimg" not in given:
        d["train"]["duration_mimg"] = None
    return d


def resolve_config(args):
    """(config, resume target or False) from --resume / --config / flags."""
    given = given_overrides(args)
    if args.resume:
        if args.config:
            raise UserError("--resume takes the run's config from its checkpoint; drop --config")
        found = checkpoints.find(args.resume, kind="train", check=check_image_header)  # the newest usable one; skipped ones are reported
        ckpt_path = found.path
        run_dir = Path(args.resume) if Path(args.resume).is_dir() else ckpt_path.parent.parent
        meta = found.header.meta.get("image")
        if not meta or not isinstance(meta.get("config"), dict):
            raise UserError(f"{str(ckpt_path)!r} is not an image checkpoint written by physgen train")
        base = dict(meta["config"])
        if "out" in given and Path(given.pop("out")).resolve() != run_dir.resolve():
            raise UserError("--out must be the --resume directory (or omitted)")
        fixed = sorted(k for k in given if k not in RESUMABLE and _differs(base, k, given[k]))
        if fixed:
            flag = next((f for f, (key, _) in FLAGS.items() if key == fixed[0]), "--" + fixed[0].replace("_", "-"))
            raise UserError(f"{flag} cannot change when resuming (the run's config is in its checkpoint); allowed: --steps, --duration-mimg, --log-every, --checkpoint-every, --keep-checkpoints, --max-minutes, --sample-*, --device, --precision, --compile, --channels-last, --micro-batch")
        base["out"] = str(run_dir)
        config = config_from_dict(apply_overrides(base, given), where=f"checkpoint {ckpt_path}")
        return config, ckpt_path
    raw = load_config_file(args.config) if args.config else {}
    base = config_from_dict(raw, where=args.config).to_dict() if args.config else ImageTrainConfig().to_dict()
    if "latent" in given or base.get("latent"):
        given = {**latent_defaults(base), **given}
    d = apply_overrides(base, given)
    user_keys = set(raw.get("train") or {}) | {k[6:] for k in given if k.startswith("train.")}  # the latent recipe's count as given
    d["train"] = with_default_warmup(d["train"], user_keys)
    return config_from_dict(d, where=args.config or "command line"), False


def latent_defaults(base: dict) -> dict:
    """:data:`LATENT_DEFAULTS` for the keys ``base`` (the defaults, or a config file) leaves at the
    pixel defaults: a latent run's recipe, below a config file's values and the flags."""
    pixel = ImageTrainConfig().to_dict()
    return {key: value for key, value in LATENT_DEFAULTS.items() if _current(base, key) == _current(pixel, key)}


def _current(d: dict, key: str):
    return d.get("train", {}).get(key[6:]) if key.startswith("train.") else d.get(key)


def _differs(base: dict, key: str, value) -> bool:
    cur = _current(base, key)
    if isinstance(cur, dict) and isinstance(value, dict):
        return any(cur.get(k) != v for k, v in value.items())
    if key == "D":
        return str(cur) != str(value) and not (cur == "inf" and value == float("inf"))
    return cur != value


def run(args) -> int:
    config, resume = resolve_config(args)
    if args.dump_config:
        dump_config(config, args.dump_config)
        print(f"wrote {args.dump_config}")
        return 0
    if dist_info().is_main:  # only rank 0 writes
        prepare(config.out, "train", OUTPUTS, overwrite=args.overwrite, resume=bool(resume), hint=f", continue with --resume {config.out}")
    try:
        result = run_training(config, resume=resume, log_stream=sys.stderr)
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    if result.checkpoint is not None:
        print(f"step {result.step}: wrote {result.checkpoint} and {Path(config.out) / 'samples'}/grid-{result.step:08d}.png")
    return 0
