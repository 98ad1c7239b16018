"""The Bayes-optimal noise-conditional classifiers of a labelled point set and of a Gaussian
mixture: the classifiers that make classifier guidance of an exact field exact for Gaussian
kernels (the oracle the guidance tests lean on), and the classifier gradient rule."""
from __future__ import annotations

import math
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import UserError

__all__ = ["BayesClassifier", "MixtureBayesClassifier", "bayes_classifier", "classifier_gradient"]


class BayesClassifier:
    """The Bayes-optimal noise-conditional classifier of a labelled finite point set.

    ``log p(y | x, s) = logsumexp_{i: c_i = y} φ(‖x - a y_i‖², s) - logsumexp_i φ(...)`` for
    the process's radial log-profile ``φ`` (and VP's ``a(s)``): the classifier that makes
    classifier guidance of the exact field exact for Gaussian kernels.  ``__call__`` returns
    these log-probabilities ``[B, K]`` as logits; :meth:`grad_log_prob` gives
    ``∇_x log p(y | x, s)`` in closed form, ``Σ_i (w^y_i - w_i) 2 φ'_i (x - a y_i)``, in
    row blocks so memory stays bounded.
    """

    def __init__(self, points: Tensor, labels: Tensor, log_profile, *, alpha: Optional[Callable[[Tensor], Tensor]] = None,
                 chunk_elems: int = 1 << 20):
        if labels is None or labels.shape != points.shape[:1]:
            raise UserError(f"a Bayes classifier needs one label per point, got labels {None if labels is None else list(labels.shape)} "
                            f"for {points.shape[0]} points")
        self.points, self.labels, self.log_profile, self.alpha, self.chunk_elems = points, labels.long(), log_profile, alpha, chunk_elems
        self.num_classes = int(self.labels.max()) + 1

    @classmethod
    def from_field(cls, field) -> "BayesClassifier":
        """From an :class:`physgen.fields.exact.ExactField` with point labels (same kernel)."""
        if getattr(field, "point_labels", None) is None:
            raise UserError("a Bayes classifier needs an exact field built with point labels")
        return cls(field.points, field.point_labels, field.log_profile, alpha=getattr(field, "alpha", None))

    def _blocks(self, x: Tensor, s: Tensor):
        xf = x.reshape(x.shape[0], -1)
        yf = self.points.reshape(self.points.shape[0], -1).to(device=x.device, dtype=x.dtype)
        s = s.to(device=x.device, dtype=x.dtype)
        a = torch.ones_like(s) if self.alpha is None else self.alpha(s).to(x.dtype)
        rows = max(1, self.chunk_elems // max(yf.shape[0], 1))
        y_sq = (yf * yf).sum(1)
        for r0 in range(0, xf.shape[0], rows):
            xr, sr, ar = xf[r0:r0 + rows], s[r0:r0 + rows, None], a[r0:r0 + rows, None]
            sq = ((xr * xr).sum(1, keepdim=True) - 2 * ar * (xr @ yf.T) + ar**2 * y_sq).clamp_min(0.0)
            yield r0, xr, sr, ar, yf, sq

    def __call__(self, x: Tensor, s: Tensor) -> Tensor:
        labels = self.labels.to(x.device)
        out = []
        for _, _, sr, _, _, sq in self._blocks(x, s):
            logw = self.log_profile(sq, sr)
            per = torch.stack([torch.logsumexp(logw.masked_fill(labels[None, :] != c, -torch.inf), 1) for c in range(self.num_classes)], 1)
            out.append(per - torch.logsumexp(logw, 1, keepdim=True))
        return torch.cat(out)

    def grad_log_prob(self, x: Tensor, s: Tensor, label: Tensor) -> Tensor:
        labels = self.labels.to(x.device)
        label = label.to(x.device)
        out = []
        for r0, xr, sr, ar, yf, sq in self._blocks(x, s):
            with torch.enable_grad():
                sq_ = sq.detach().requires_grad_(True)
                logw = self.log_profile(sq_, sr)
                dphi, = torch.autograd.grad(logw.sum(), sq_)
            logw = logw.detach()
            w = torch.softmax(logw, 1)
            wy = torch.softmax(logw.masked_fill(labels[None, :] != label[r0:r0 + xr.shape[0], None], -torch.inf), 1)
            c = (wy - w) * dphi  # ∇ log k_i = 2 φ'_i (x - a y_i)
            out.append(2 * (c.sum(1, keepdim=True) * xr - ar * (c @ yf)))
        return torch.cat(out).reshape(x.shape)


class MixtureBayesClassifier:
    """The Bayes classifier of an isotropic Gaussian mixture under ``x = a y + b ε`` (component = class).

    ``log p(k | x) = log π_k + log N(x; a μ_k, v_k I) - log p(x)``, ``v_k = a² c_k² + b²``;
    ``∇ log p(k | x) = (a μ_k - x)/v_k - Σ_j r_j (a μ_j - x)/v_j``.
    """

    def __init__(self, mixture, coefficients: Callable[[Tensor], tuple[Tensor, Tensor]]):
        self.mixture, self.coefficients = mixture, coefficients
        self.num_classes = int(mixture.weights.shape[0])

    def _terms(self, x: Tensor, s: Tensor):
        xf = x.reshape(x.shape[0], -1).double()
        mu = self.mixture.means.to(x.device, torch.float64)
        c2 = self.mixture.stds.to(x.device, torch.float64) ** 2
        a, b = (t.double()[:, None] for t in self.coefficients(s))
        v = a**2 * c2[None, :] + b**2
        sq = (xf * xf).sum(1, keepdim=True) - 2 * a * (xf @ mu.T) + a**2 * (mu * mu).sum(1)[None, :]
        logp = torch.log(self.mixture.weights.to(x.device, torch.float64))[None, :] - 0.5 * sq.clamp_min(0) / v - 0.5 * xf.shape[1] * torch.log(2 * math.pi * v)
        return xf, mu, a, v, logp

    def __call__(self, x: Tensor, s: Tensor) -> Tensor:
        *_, logp = self._terms(x, s)
        return torch.log_softmax(logp, 1).to(x.dtype)

    def grad_log_prob(self, x: Tensor, s: Tensor, label: Tensor) -> Tensor:
        xf, mu, a, v, logp = self._terms(x, s)
        r = torch.softmax(logp, 1)
        onehot = F.one_hot(label.to(x.device).long(), self.num_classes).double()
        c = (onehot - r) / v  # [B, K]
        g = a * (c @ mu) - c.sum(1, keepdim=True) * xf
        return g.to(x.dtype).reshape(x.shape)


def bayes_classifier(field) -> Any:
    """The Bayes-optimal classifier matching an exact (point-set) or Gaussian-mixture field."""
    if getattr(field, "point_labels", None) is not None and hasattr(field, "log_profile"):
        return BayesClassifier.from_field(field)
    if hasattr(field, "mixture") and hasattr(field, "coefficients"):
        return MixtureBayesClassifier(field.mixture, field.coefficients)
    raise UserError("no Bayes classifier for this field: it needs an exact field with point labels or a Gaussian-mixture field; "
                    "train one with `physgen train-classifier` and pass --classifier-ckpt")


def classifier_gradient(classifier, x: Tensor, s: Tensor, label: Tensor) -> Tensor:
    """``∇_x log p(label | x, s)``: closed form when the classifier has one, else autograd of log-softmax."""
    closed = getattr(classifier, "grad_log_prob", None)
    if closed is not None:
        return closed(x, s, label)
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        logp = torch.log_softmax(classifier(xr, s).float(), 1).gather(1, label[:, None].long()).sum()
        (g,) = torch.autograd.grad(logp, xr)
    return g.to(x.dtype)


