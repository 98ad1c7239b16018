"""``physgen train-classifier``: a noise-conditional classifier ``p(y | x, s)`` for classifier guidance.

The classifier is trained on the process's *own* perturbations (``process.perturb`` at
``s ~ process.sample_scales``), so it matches the kernel it will guide (Dhariwal & Nichol,
arXiv 2105.05233).  Toy sets (``8gaussians``, ``pinwheel``, FILE.npz with y, FILE.json)
get an MLP; image sets (``digits``, ``cifar10:PATH``, ``folder:PATH``, ``npz:PATH``) a small
CNN.  Writes ``OUT/classifier.pt`` (use it with ``physgen toy|sample --guidance classifier
--classifier-ckpt``), ``OUT/config.json``, ``OUT/metrics.json`` (held-out accuracy at several
scales) and resumable checkpoints in ``OUT/checkpoints``.
"""
from __future__ import annotations

import sys
from dataclasses import asdict

import torch

from ..errors import UserError, unknown_name
from ..runfolder import add_overwrite_argument, prepare
from .flags import (BATCH, DEPTH, LR, RESOLUTION, SAMPLES, SEED, TRAIN_STEPS, WIDTH, add_process_arguments, process_options)
from ..guidance import make_classifier, save_classifier
from ..io import write_json
from ..processes import data_defaults, make_process
from ..runtime import resolve_device
from ..sampling import grid
from ..training import SCALE_LAWS, TrainConfig, classifier_accuracy, train_classifier
from ..images.data import load_image_dataset
from ..data import load_toy

OUTPUTS = ("classifier.pt", "config.json", "metrics.json", "checkpoints/ckpt-*.pt")  # what train-classifier writes

IMAGE_PREFIXES = ("cifar10:", "folder:", "npz:")


def register(sub) -> None:
    p = sub.add_parser("train-classifier", help="train a noise-conditional classifier for classifier guidance")
    add_process_arguments(p)
    p.add_argument("--dataset", default="8gaussians", help="a labelled toy set (8gaussians, pinwheel, moons, FILE.npz, FILE.json) or digits, cifar10:PATH, folder:PATH, npz:PATH")
    p.add_argument("--arch", default="auto", help="auto (mlp for toys, cnn for images), mlp, cnn")
    p.add_argument("--hidden", type=WIDTH, default=256, help="mlp width")
    p.add_argument("--depth", type=DEPTH, default=3, help="mlp residual blocks")
    p.add_argument("--width", type=WIDTH, default=32, help="cnn base channels")
    p.add_argument("--n-data", type=SAMPLES, default=10_000, help="toy sets: number of training points")
    p.add_argument("--resolution", type=RESOLUTION, default=None, help="images: resize to this side")
    p.add_argument("--scales", default="mixed", help="training scales: mixed (default: half the process's law, half log-uniform over its sampling range), process, log-uniform")
    p.add_argument("--steps", type=TRAIN_STEPS, default=2000)
    p.add_argument("--batch", type=BATCH, default=512)
    p.add_argument("--lr", type=LR, default=2e-3)
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--out", default="runs/classifier")
    add_overwrite_argument(p)
    p.set_defaults(func=run)


def _is_image(spec: str) -> bool:
    return spec == "digits" or spec.startswith(IMAGE_PREFIXES)


def run(args) -> int:
    for name in ("steps", "batch", "n_data", "hidden", "depth", "width"):
        if getattr(args, name) <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    if args.scales not in SCALE_LAWS:
        raise unknown_name("--scales", args.scales, SCALE_LAWS)
    device = resolve_device(args.device)
    out = prepare(args.out, "train-classifier", OUTPUTS, overwrite=args.overwrite, resume=args.resume,
                  hint=", continue with --resume").path
    g = torch.Generator(device=device).manual_seed(args.seed)
    if _is_image(args.dataset):
        ds = load_image_dataset(args.dataset, args.resolution)
        if ds.labels is None or ds.num_classes < 2:
            raise UserError(f"dataset {args.dataset!r} has no class labels to train a classifier on")
        data, labels = ds.images.to(device), ds.labels.to(device)
        perm = torch.randperm(data.shape[0], generator=torch.Generator().manual_seed(args.seed)).to(device)
        n_val = max(1, data.shape[0] // 10)
        val_x, val_y, data, labels = data[perm[:n_val]], labels[perm[:n_val]], data[perm[n_val:]], labels[perm[n_val:]]
        num_classes = ds.num_classes
        popts = {k: v for k, v in process_options(args).items() if v is not None}
    else:
        ds = load_toy(args.dataset)
        data, labels = ds.sample_labelled(args.n_data, g, device=device)  # UserError for unlabelled sets
        val_x, val_y = ds.sample_labelled(2000, torch.Generator(device=device).manual_seed(args.seed + 7), device=device)
        num_classes = int(ds.num_classes)
        popts = data_defaults(args.process, data, process_options(args))  # as `physgen toy` does
    process = make_process(args.process, **popts)
    classifier = make_classifier(process, data.shape[1:], num_classes, arch=args.arch, hidden=args.hidden, depth=args.depth,
                                 width=args.width, sigma_data=getattr(process, "sigma_data", 0.5)).to(device)
    tcfg = TrainConfig(steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed, log_every=max(1, args.steps // 10))

    def batch(n: int, gen: torch.Generator):
        idx = torch.randint(0, data.shape[0], (n,), generator=gen, device=gen.device)
        return data[idx], labels[idx]

    result = train_classifier(process, classifier, batch, tcfg, scales=args.scales, out_dir=out, resume=args.resume, device=device,
                              log_stream=sys.stderr)
    clf = result.ema.eval()
    sd = float(getattr(process, "sigma_data", 0.5))
    scales = [float(s) for s in grid(process, 5)[:-1].flip(0)] if not process.ends_at_zero else [0.1 * sd, 0.5 * sd, sd, 2 * sd, 4 * sd]
    acc = classifier_accuracy(clf, process, val_x, val_y, scales, generator=torch.Generator(device=device).manual_seed(args.seed + 11))
    metrics = {**acc, "final_loss": sum(result.losses[-20:]) / max(1, len(result.losses[-20:])), "steps": result.step}
    save_classifier(out / "classifier.pt", clf, dataset=args.dataset, num_classes=num_classes)
    write_json(out / "config.json", {**vars(args), "func": None, "resolved_process": clf.process_spec, "train": asdict(tcfg)})
    write_json(out / "metrics.json", metrics)
    print("  ".join(f"{k}={v:.3g}" for k, v in metrics.items()))
    print(f"wrote {out}/classifier.pt, config.json, metrics.json")
    return 0
