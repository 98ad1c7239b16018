"""Trained noise-conditional classifiers ``p(y | x, s)`` for classifier guidance: the wrapper
that conditions a network on a process's noise level, its construction, and its checkpoint."""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from .. import checkpoints
from ..errors import UserError, unknown_name
from ..fields.kinds import expand_as_batch
from ..nets.classifier import ConvClassifierNet
from ..nets.mlp import MLP
from ..processes import process_from_record
from .wrappers import check_classifier_process, conditioning_sigma

__all__ = ["NoiseClassifier", "make_classifier", "save_classifier", "load_classifier", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = "physgen-classifier/1"


class NoiseClassifier(nn.Module):
    """``p(y | x, s)`` of one process: ``logits = net(c_in x/a, ln(σ)/4)`` with ``(σ, a)`` from
    :func:`conditioning_sigma` and ``c_in = 1/√(σ² + σ_d²)`` (EDM's input scaling, arXiv 2206.00364).

    ``arch`` (a dict) rebuilds the network from a checkpoint; ``process_spec`` (name and
    constructor options of the process it was trained on) guards against guiding another kernel.
    """

    def __init__(self, net: nn.Module, process, arch: dict, sigma_data: float = 0.5):
        super().__init__()
        self.net, self.process, self.arch, self.sigma_data = net, process, dict(arch), float(sigma_data)
        self.num_classes = int(arch["num_classes"])
        self.process_spec = {"name": process.name, **process.config()}

    def forward(self, x: Tensor, s: Tensor) -> Tensor:
        shape = self.arch.get("data_shape")
        if shape is not None and list(x.shape[1:]) != list(shape):
            raise UserError(f"the classifier was trained on data shaped {list(shape)}, got {list(x.shape[1:])}")
        sigma, a = conditioning_sigma(self.process, s)
        sig, a = expand_as_batch(sigma, x), expand_as_batch(a, x)
        x_in = (x / a) / (sig**2 + self.sigma_data**2).sqrt()
        return self.net(x_in, (sigma.log() / 4).to(x.dtype))


def make_classifier(process, data_shape: Sequence[int], num_classes: int, *, arch: str = "auto", hidden: int = 256, depth: int = 3,
                    width: int = 32, sigma_data: float = 0.5) -> NoiseClassifier:
    """A fresh :class:`NoiseClassifier`: ``arch`` = ``mlp`` (toys, flattened input), ``cnn`` (images) or ``auto``."""
    data_shape = tuple(int(v) for v in data_shape)
    if int(num_classes) < 2:
        raise UserError(f"a classifier needs at least 2 classes, got {num_classes}")
    if arch == "auto":
        arch = "cnn" if len(data_shape) == 3 else "mlp"
    if arch == "mlp":
        spec = {"type": "mlp", "dim": math.prod(data_shape), "hidden": int(hidden), "depth": int(depth), "num_classes": int(num_classes)}
        net = MLP(spec["dim"], hidden=spec["hidden"], depth=spec["depth"], out_dim=spec["num_classes"])
    elif arch == "cnn":
        if len(data_shape) != 3:
            raise UserError(f"--arch cnn needs images [C, H, W], got data shape {list(data_shape)}")
        spec = {"type": "cnn", "channels": data_shape[0], "width": int(width), "num_classes": int(num_classes)}
        net = ConvClassifierNet(spec["channels"], spec["num_classes"], width=spec["width"])
    else:
        raise unknown_name("classifier architecture", arch, ("auto", "mlp", "cnn"))
    spec["data_shape"] = list(data_shape)
    return NoiseClassifier(net, process, spec, sigma_data)


def _build_net(spec: dict) -> nn.Module:
    if spec["type"] == "mlp":
        return MLP(spec["dim"], hidden=spec["hidden"], depth=spec["depth"], out_dim=spec["num_classes"])
    if spec["type"] == "cnn":
        return ConvClassifierNet(spec["channels"], spec["num_classes"], width=spec["width"])
    raise UserError(f"unknown classifier architecture {spec.get('type')!r} in checkpoint")


def save_classifier(path, classifier: NoiseClassifier, **meta: Any) -> None:
    """Write a self-describing classifier checkpoint (architecture, process, weights) atomically
    (:mod:`physgen.checkpoints`, kind ``classifier``; architecture and process also in its header)."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "arch": classifier.arch,
        "sigma_data": classifier.sigma_data,
        "process": classifier.process_spec,
        "state_dict": {k: v.detach().cpu() for k, v in classifier.state_dict().items()},
        "meta": meta,
    }
    checkpoints.write(path, payload, kind="classifier", step=0, meta={"arch": classifier.arch, "process": classifier.process_spec, **meta})


def load_classifier(path, process=None, device=None) -> NoiseClassifier:
    """Load a :func:`save_classifier` checkpoint; with ``process``, check its kernel and bind to it."""
    try:  # verified, and loaded with weights_only=True: a classifier file cannot run code
        read = checkpoints.read(path, kind="classifier")
    except UserError as exc:
        raise UserError(f"cannot load classifier checkpoint: {exc}") from None
    if "process" in read.meta:  # a header that records a process must record a known one (like every reader's check)
        process_from_record(read.meta["process"], f"classifier checkpoint {str(path)!r}")
    ckpt = read.payload
    if ckpt.get("format") != CHECKPOINT_FORMAT or not isinstance(ckpt.get("process"), dict) or not isinstance(ckpt.get("arch"), dict):
        raise UserError(f"{str(path)!r} is not a physgen classifier checkpoint (written by `physgen train-classifier`)")
    spec = ckpt["process"]
    if process is None:
        process = process_from_record(spec, f"classifier checkpoint {str(path)!r}")
    else:
        check_classifier_process(spec, process)
    try:
        net = _build_net(ckpt["arch"])
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"classifier checkpoint {str(path)!r}: its architecture {ckpt['arch']} is incomplete ({exc})") from None
    clf = NoiseClassifier(net, process, ckpt["arch"], ckpt["sigma_data"])
    checkpoints.load_state(clf, ckpt.get("state_dict"), path=path, what="classifier weights")
    clf.process_spec = dict(spec)
    return clf.to(device or "cpu").eval().requires_grad_(False)
