"""Sample quality without Inception: a small digit classifier as the judge.

For data such as sklearn's digits, Inception features say little; a classifier trained
on the real images does better.  :func:`train_classifier` fits :class:`SmallCNN` on a
labelled :class:`~physgen.images.data.ImageDataset` (a fixed held-out split reports its
accuracy); :func:`classifier_report` then describes a set of samples by

* the classifier's confidence ``max_k p(k|x)`` (a histogram, its mean, the fraction
  above 0.9): blurry or mixed samples get low confidence;
* the histogram of predicted classes and its normalised entropy
  ``H(p̂)/log K`` (1 = all classes equally often, lower = mode dropping);
* the Fréchet distance between Gaussians fitted to the classifier's penultimate
  features of the samples and of real images (the FID recipe, arXiv 1706.08500, with
  this network: comparable only between runs judged by the same classifier).
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from .data import ImageDataset
from .metrics import fid_from_features

__all__ = ["SmallCNN", "train_classifier", "classifier_outputs", "classifier_report", "split_dataset"]


class SmallCNN(nn.Module):
    """conv(32)-conv(64)-pool-conv(128)-pool-GAP -> 128-d features -> linear classes."""

    def __init__(self, channels: int, num_classes: int, width: int = 32):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(channels, w, 3, padding=1), nn.GroupNorm(8, w), nn.SiLU(),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.GroupNorm(8, 2 * w), nn.SiLU(), nn.AvgPool2d(2, ceil_mode=True),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.GroupNorm(8, 4 * w), nn.SiLU(), nn.AvgPool2d(2, ceil_mode=True),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(4 * w, num_classes)

    def features_and_logits(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        f = self.body(x)
        return f, self.head(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features_and_logits(x)[0]


def split_dataset(data: ImageDataset, holdout: float = 0.2, seed: int = 0) -> Tuple[ImageDataset, ImageDataset]:
    """A fixed random (train, held-out) split."""
    if not 0 < holdout < 1:
        raise UserError(f"holdout must be in (0, 1), got {holdout}")
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    n_hold = max(1, int(round(holdout * len(data))))
    parts = []
    for idx in (perm[n_hold:], perm[:n_hold]):
        idx = idx.to(data.images.device)
        labels = None if data.labels is None else data.labels[idx.to(data.labels.device)]
        parts.append(ImageDataset(data.images[idx], labels, data.num_classes, data.name, data.class_names))
    return parts[0], parts[1]


def train_classifier(
    data: ImageDataset,
    *,
    steps: int = 600,
    batch: int = 128,
    lr: float = 2e-3,
    holdout: float = 0.2,
    seed: int = 0,
    device=None,
) -> Tuple[SmallCNN, float]:
    """Fit :class:`SmallCNN` with Adam (cosine-decayed lr, random ±1 pixel shifts) on the
    training part of a fixed split; returns the network (eval mode) and the held-out
    accuracy."""
    if data.labels is None or data.num_classes < 2:
        raise UserError(f"the classifier needs a labelled dataset with >= 2 classes; {data.name!r} has none")
    device = torch.device(device or "cpu")
    train_part, held = split_dataset(data, holdout, seed)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = SmallCNN(data.channels, data.num_classes).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    x_all, y_all = train_part.images.to(device), train_part.labels.to(device)
    net.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x_all), (batch,), generator=g).to(device)
        x = x_all[idx]
        dx, dy = (int(v) for v in torch.randint(-1, 2, (2,), generator=g))
        x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
        loss = F.cross_entropy(net.features_and_logits(x)[1], y_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    _, logits = classifier_outputs(net, held.images, device=device)
    acc = float((logits.argmax(1) == held.labels.numpy()).mean())
    return net, acc


def classifier_outputs(net: nn.Module, images: torch.Tensor, *, batch: int = 512, device=None) -> Tuple[np.ndarray, np.ndarray]:
    """Features ``[N, D]`` and logits ``[N, K]`` (float64 numpy) of images in ``[-1, 1]``."""
    device = torch.device(device or next(net.parameters()).device)
    feats, logits = [], []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            f, z = net.features_and_logits(images[i : i + batch].to(device, torch.float32))
            feats.append(f.double().cpu().numpy())
            logits.append(z.double().cpu().numpy())
    return np.concatenate(feats), np.concatenate(logits)


def classifier_report(net: nn.Module, samples: torch.Tensor, real: torch.Tensor, *, num_classes: Optional[int] = None, device=None, bins: int = 10) -> Dict[str, Any]:
    """Confidence and class histograms of ``samples`` and the Fréchet distance of their
    classifier features to those of ``real`` (module docstring)."""
    fs, zs = classifier_outputs(net, samples, device=device)
    fr, _ = classifier_outputs(net, real, device=device)
    p = torch.softmax(torch.as_tensor(zs), dim=1).numpy()
    k = num_classes or p.shape[1]
    conf = p.max(1)
    pred = p.argmax(1)
    counts = np.bincount(pred, minlength=k)
    freq = counts / max(counts.sum(), 1)
    nz = freq[freq > 0]
    entropy = float(-(nz * np.log(nz)).sum() / math.log(k))
    hist, edges = np.histogram(conf, bins=bins, range=(0.0, 1.0))
    return {
        "n": int(len(samples)),
        "confidence_mean": float(conf.mean()),
        "confident_fraction_0.9": float((conf > 0.9).mean()),
        "confidence_hist": hist.tolist(),
        "confidence_edges": edges.tolist(),
        "class_counts": counts.tolist(),
        "class_entropy": entropy,
        "frechet_classifier": float(fid_from_features(fs, fr)) if len(fs) > 1 else float("nan"),
    }
