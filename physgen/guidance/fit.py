"""``physgen train-classifier``'s pipeline: a noise-conditional classifier ``p(y | x, s)`` for
classifier guidance, trained on the process's *own* perturbations (``process.perturb`` at the
scales of ``scales``: :class:`physgen.training.ClassifierObjective`), so that it matches the
kernel it will guide (Dhariwal & Nichol, arXiv 2105.05233).

Toy sets get an MLP and are split by seed (``n_data`` training points, 2000 held-out ones);
image sets (``digits``, ``cifar10:PATH``, ``folder:PATH``, ``npz:PATH``) a small CNN, with a
tenth of the images held out.  :func:`fit_classifier` is the one call the command makes.
With ``ckpt`` (a physgen run, an EDM / PFGM++ snapshot or a diffusers folder, read by
:func:`physgen.pretrained.load`) the process is that model's, with its parameters, so the
classifier guides that model; the images must have the model's shape.
"""
from __future__ import annotations

from dataclasses import dataclass, field as dc_field
from pathlib import Path
from typing import Optional, TextIO

import torch
from torch import Tensor

from ..config import LIMIT_REASONS, MAX_DEPTH, MAX_SAMPLES, MAX_WIDTH, parse_int
from ..data import load_toy
from ..errors import UserError, unknown_name
from ..images.data import load_image_dataset
from ..io import write_json
from ..processes import data_defaults, make_process
from ..pretrained import load as load_pretrained
from ..runtime import initial_weights, resolve_device
from ..sampling import grid
from ..training import SCALE_LAWS, TrainConfig, classifier_accuracy, train_classifier
from .classifier import NoiseClassifier, make_classifier, save_classifier

__all__ = ["ClassifierFit", "fit_classifier", "IMAGE_PREFIXES"]

IMAGE_PREFIXES = ("cifar10:", "folder:", "npz:")


@dataclass
class ClassifierFit:
    """What ``physgen train-classifier`` trains (flag ``--n-data`` = field ``n_data``)."""

    dataset: str = "8gaussians"
    process: str = "edm"
    process_options: dict = dc_field(default_factory=dict)
    arch: str = "auto"  # mlp for toys, cnn for images
    hidden: int = 256
    depth: int = 3
    width: int = 32
    n_data: int = 10_000
    resolution: Optional[int] = None
    scales: str = "mixed"
    steps: int = 2000
    batch: int = 512
    lr: float = 2e-3
    seed: int = 0
    device: str = "auto"
    out: Optional[str] = None  # checkpoints, classifier.pt, metrics.json
    resume: bool = False
    ckpt: Optional[str] = None  # a model (physgen.pretrained.load) whose process the classifier is trained on

    def __post_init__(self):
        for name, hi, why in (("n_data", MAX_SAMPLES, "samples"), ("hidden", MAX_WIDTH, "width"), ("depth", MAX_DEPTH, "depth"),
                              ("width", MAX_WIDTH, "width")):
            setattr(self, name, parse_int(getattr(self, name), f"--{name.replace('_', '-')}", 1, hi, LIMIT_REASONS[why]))
        if self.scales not in SCALE_LAWS:
            raise unknown_name("--scales", self.scales, SCALE_LAWS)
        resolve_device(self.device)  # a device this machine lacks: refused before anything is written

    @property
    def is_image(self) -> bool:
        return self.dataset == "digits" or self.dataset.startswith(IMAGE_PREFIXES)


def _labelled_data(fit: ClassifierFit, device) -> tuple[Tensor, Tensor, Tensor, Tensor, int, dict]:
    """``(x, y, x_held_out, y_held_out, num_classes, process_options)``: toy options over the
    data's defaults (as ``physgen toy``), image options as given."""
    if fit.is_image:
        ds = load_image_dataset(fit.dataset, fit.resolution)
        if ds.labels is None or ds.num_classes < 2:
            raise UserError(f"dataset {fit.dataset!r} has no class labels to train a classifier on")
        data, labels = ds.images.to(device), ds.labels.to(device)
        perm = torch.randperm(data.shape[0], generator=torch.Generator().manual_seed(fit.seed)).to(device)
        n_val = max(1, data.shape[0] // 10)
        popts = {k: v for k, v in fit.process_options.items() if v is not None}
        return data[perm[n_val:]], labels[perm[n_val:]], data[perm[:n_val]], labels[perm[:n_val]], ds.num_classes, popts
    ds = load_toy(fit.dataset)
    data, labels = ds.sample_labelled(fit.n_data, torch.Generator(device=device).manual_seed(fit.seed), device=device)  # UserError for unlabelled sets
    val_x, val_y = ds.sample_labelled(2000, torch.Generator(device=device).manual_seed(fit.seed + 7), device=device)
    return data, labels, val_x, val_y, int(ds.num_classes), data_defaults(fit.process, data, fit.process_options)


def _process_of(ckpt: str, shape: tuple, popts: dict):
    """The process of the model at ``ckpt``, for data of ``shape`` (its samples' shape)."""
    if popts:
        flags = ", ".join("--" + k.replace("_", "-") for k in sorted(popts))
        raise UserError(f"process options ({flags}) come from --ckpt; drop them")
    model = load_pretrained(ckpt)
    if tuple(model.shape) != shape:
        raise UserError(f"--ckpt {ckpt!r} makes samples of shape {list(model.shape)} but the dataset's are {list(shape)}; "
                        f"pass --resolution or a dataset of that shape")
    return model.process


def fit_classifier(fit: ClassifierFit, log_stream: Optional[TextIO] = None) -> tuple[NoiseClassifier, dict, TrainConfig]:
    """Train the classifier (resumable checkpoints in ``fit.out``), measure its held-out
    accuracy at five scales of the process's range, and write ``classifier.pt`` and
    ``metrics.json`` into ``fit.out``.  Returns the EMA classifier, the metrics and the
    optimisation settings used."""
    device = resolve_device(fit.device)
    data, labels, val_x, val_y, num_classes, popts = _labelled_data(fit, device)
    process = make_process(fit.process, **popts) if fit.ckpt is None else _process_of(fit.ckpt, tuple(data.shape[1:]), popts)
    with initial_weights(fit.seed):
        classifier = make_classifier(process, data.shape[1:], num_classes, arch=fit.arch, hidden=fit.hidden, depth=fit.depth,
                                     width=fit.width, sigma_data=getattr(process, "sigma_data", 0.5)).to(device)
    tcfg = TrainConfig(steps=fit.steps, batch=fit.batch, lr=fit.lr, seed=fit.seed, log_every=max(1, fit.steps // 10))

    def batch(n: int, gen: torch.Generator):
        idx = torch.randint(0, data.shape[0], (n,), generator=gen, device=gen.device)
        return data[idx], labels[idx]

    result = train_classifier(process, classifier, batch, tcfg, scales=fit.scales, out_dir=fit.out, resume=fit.resume, device=device,
                              log_stream=log_stream)
    clf = result.ema.eval()
    sd = float(getattr(process, "sigma_data", 0.5))
    scales = [float(s) for s in grid(process, 5)[:-1].flip(0)] if not process.ends_at_zero else [0.1 * sd, 0.5 * sd, sd, 2 * sd, 4 * sd]
    acc = classifier_accuracy(clf, process, val_x, val_y, scales, generator=torch.Generator(device=device).manual_seed(fit.seed + 11))
    metrics = {**acc, "final_loss": sum(result.losses[-20:]) / max(1, len(result.losses[-20:])), "steps": result.step}
    if fit.out is not None:
        save_classifier(Path(fit.out) / "classifier.pt", clf, dataset=fit.dataset, num_classes=num_classes)
        write_json(Path(fit.out) / "metrics.json", metrics)
    return clf, metrics, tcfg
