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

from ..guidance.fit import ClassifierFit, fit_classifier
from ..io import write_json
from ..runfolder import add_overwrite_argument, prepare
from .flags import BATCH, DEPTH, LR, RESOLUTION, SAMPLES, SEED, TRAIN_STEPS, WIDTH, add_process_arguments, process_options

OUTPUTS = ("classifier.pt", "config.json", "metrics.json", "checkpoints/ckpt-*.pt")  # what train-classifier writes


def register(sub) -> None:
    p = sub.add_parser("train-classifier", help="train a noise-conditional classifier for classifier guidance")
    add_process_arguments(p)
    p.add_argument("--ckpt", default=None, help="train for this model's process: a physgen run, an EDM/PFGM++ snapshot (.pkl/.pt) or a diffusers folder (images of its shape)")
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


def run(args) -> int:
    fit = ClassifierFit(
        dataset=args.dataset, process=args.process, process_options=process_options(args), arch=args.arch, hidden=args.hidden,
        depth=args.depth, width=args.width, n_data=args.n_data, resolution=args.resolution, scales=args.scales, steps=args.steps,
        batch=args.batch, lr=args.lr, seed=args.seed, device=args.device, resume=args.resume, ckpt=args.ckpt,
    )
    out = prepare(args.out, "train-classifier", OUTPUTS, overwrite=args.overwrite, resume=args.resume,
                  hint=", continue with --resume").path
    fit.out = str(out)
    clf, metrics, tcfg = fit_classifier(fit, log_stream=sys.stderr)
    write_json(out / "config.json", {**vars(args), "func": None, "resolved_process": clf.process_spec, "train": asdict(tcfg)})
    print("  ".join(f"{k}={v:.3g}" for k, v in metrics.items()))
    print(f"wrote {out}/classifier.pt, config.json, metrics.json")
    return 0
