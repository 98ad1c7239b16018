"""Conditional generation and guidance: field -> field wrappers for every process.

A conditional field answers ``field(x, s, label)`` (labels: :mod:`physgen.fields.labels`;
the *null* label means unconditional).  Guidance turns a field into another field, so
every process, solver and sampler uses it unchanged.  Two kinds are implemented.

Classifier-free guidance (Ho & Salimans, arXiv 2207.12598)
----------------------------------------------------------
With a field trained with label dropout (the null label), for guidance scale ``w``

    D_w(x, s | y) = D(x, s | ∅) + w [D(x, s | y) - D(x, s | ∅)]                    (CFG)

``w = 0``: unconditional; ``w = 1``: the conditional field; ``w > 1``: "sharper" classes.
The combination is written on the denoiser, but it is an affine combination (weights
``1 - w`` and ``w`` sum to one) and every Gaussian kind is an affine function of the
denoiser at the same ``x`` (``score = (a D - x)/b²``, ``eps = (x - a D)/b``, kinds.py), so
combining scores or eps gives *exactly* the same guided field: :class:`ClassifierFreeGuidance`
combines in the field's own kind and needs no process.  This is why CFG is
process-agnostic: for PFGM++ and Yukawa (denoiser fields, non-Gaussian kernels) the
formula is the same.  (Only PFGM's *normalised* Poisson field, kind ``velocity``, is not
affine in ``D``; use its denoiser form.)  An interval ``[s_lo, s_hi]`` of the process's
scale restricts guidance to part of the trajectory (Kynkäänniemi et al., arXiv
2404.07724); outside it the conditional field is used.

Classifier guidance (Dhariwal & Nichol, arXiv 2105.05233)
---------------------------------------------------------
``p(x_t | x_{t+1}, y) ∝ p(x_t | x_{t+1}) p(y | x_t)``: with a *noise-conditional*
classifier ``p(y | x, s)`` trained on the process's own perturbations
(``process.perturb`` at ``process.sample_scales``: :func:`train_classifier`), Bayes'
rule gives ``∇ log p_s(x | y) = ∇ log p_s(x) + ∇ log p(y | x, s)``.

*Gaussian kernels* (VE, EDM, VP; ``x = a y + b ε``).  Tweedie, ``D = (x + b² ∇log p)/a``,
is linear in the score, so the exact conditional denoiser is

    D(x, s | y) = D(x, s) + (b²/a) ∇_x log p(y | x, s)            (VE/EDM: a = 1, b = σ)

and classifier guidance of scale ``w`` is ``D + w (b²/a) ∇ log p(y | x, s)`` (a score
shift of ``w ∇ log p(y|x,s)``).  With the Bayes-optimal classifier of a finite point set,
``p(y | x, s) = Σ_{i∈y} k(x - a y_i) / Σ_i k(x - a y_i)`` (:class:`BayesClassifier`), ``w = 1``
reproduces the exact conditional field (:class:`physgen.fields.exact.ExactField` with
labels) to rounding: the tests check it for EDM, VE and VP.

*Non-Gaussian kernels* (PFGM++, arXiv 2302.04265; Yukawa).  Take the finite point set
``{y_i}`` with posterior weights ``w_i ∝ k(x - y_i)`` and class-``y`` weights
``w^y_i ∝ w_i 1[c_i = y]``.  The exact shift and the classifier gradient are

    D(x|y) - D(x)        = Σ_i (w^y_i - w_i) y_i,
    ∇_x log p(y | x, s)  = Σ_i (w^y_i - w_i) λ_i (y_i - x),      λ_i = -2 φ'(‖x - y_i‖²),

with ``φ`` the radial log-profile of the kernel.  Gaussian: ``λ_i = 1/σ²`` for every
``i``, and (since ``Σ_i (w^y_i - w_i) = 0``) the gradient is ``Δ/σ²``: the formula above.
PFGM++: ``φ = -(N+D)/2 · log(d² + r²)``, so ``λ_i = (N+D)/(‖x - y_i‖² + r²)`` *varies from
point to point*, and the gradient is a differently weighted sum than the shift.  No
function of ``(D(x), ∇ log p(y|x,s))`` alone is then exact: two point sets can share both
and have different conditional denoisers.

What *is* exact is the scale-mixture picture.  The PFGM++ kernel is a Student-t:
``x = y + σ √(D/u) g`` with ``g ~ N(0, I_N)``, ``u ~ χ²_D``; conditional on the mixing
variable it is Gaussian with variance ``τ_u = σ² D/u``.  By the tower rule and Tweedie
per ``u``,

    D(x, σ | y) = E_{u | x, y} [ D_G(x, τ_u) + τ_u ∇_x log p_{τ_u}(y | x) ],
    q(u | x, y) = q(u | x) p_{τ_u}(y | x) / p(y | x, σ),

so the exact shift is a posterior mixture over ``u`` of Gaussian classifier shifts (plus the
covariance term ``(E_{u|x,y} - E_{u|x}) D_G(x, τ_u)``).  It needs a classifier and a
Gaussian denoiser at *every* ``τ`` and the posterior of ``u``, which a PFGM++ network does
not provide (the tests verify the identity by quadrature over ``u`` on point sets).  The
practical rule used here is the *aligned* one,

    D(x, σ | y) ≈ D(x, σ) + σ² ∇_x log p(y | x, σ),     σ = r/√D (PFGM++), process.sigma_of_scale(s) in general,

i.e. ``λ_i ≈ 1/σ²``.  Since ``λ_i σ² = (1 + N/D)/(1 + ‖x - y_i‖²/(σ² D))``, the relative
error is ``O((N + ‖x - y_i‖²/σ²)/D)`` and vanishes as ``D → ∞`` at ``r = σ√D``, exactly
the limit in which the PFGM++ kernel becomes ``N(y, σ² I)`` (Prop. 4.1).  Measured on
8 Gaussians (2-D) with the Bayes classifier at σ = 1, the mean relative error
``‖D_guided - D(x|y)‖ / ‖D(x|y) - D(x)‖`` over ``x ~ p_σ(x | y)`` (where a guided sampler
goes) is 0.40, 0.23, 0.069, 0.019, 0.0051, 0.0013 at D = 4, 8, 32, 128, 512, 2048 (∝ 1/D)
and 1e-15 at D = ∞; over ``x ~ p_σ(x)`` (far from the class, larger ``‖x - y_i‖²/σ²``) it
is 0.79, 0.64, 0.36, 0.13, 0.037, 0.0096 (``physgen experiment guidance``,
``shift_error.csv``; ``tests/test_guidance.py``).  Replacing ``σ²`` by a local
``1/λ(‖x - D‖²)`` or by the kernel's variance ``σ² D/(D-2)`` was tried and is not better
uniformly.  The same aligned rule serves any radially symmetric kernel that is a Gaussian
scale mixture: Yukawa's normal-inverse-Gaussian kernel (GenPhys, arXiv 2304.02637) is
``x = y + √W ε`` with ``W ~ IG(z/m, z²)``, Gaussian of variance ``z/m`` as ``m z → ∞``, and
the process's ``σ(z)² = z²/(1 + m z) → z/m`` there; measured relative error at ``σ(z) = 1``
(x ~ p(x|y)): 0.65, 0.38, 0.10, 0.010, 0.0011, 1e-4 at m z = 0.35, 1.6, 9.9, 101, 901, 1e4.  :attr:`ClassifierGuidance.exact`
says whether the shift is exact.  (Yukawa's default birth-free *transport* flow integrates
a different posterior mean, the transport denoiser, whose class shift has no classifier
form; classifier guidance there applies to the denoiser flow, ``--birth-death off``.  CFG,
being affine, guides every Yukawa output: the denoiser, the death rate and the transport
denoiser.)

NFE
---
Guided fields count their own evaluations: ``evaluations`` counts evaluations of the
wrapped field on the batch (a batched call on ``2B`` rows, conditional and null labels
concatenated, counts as 2; a call that needs only one of them counts as 1), and
``classifier_evaluations`` counts classifier gradients (one forward and one backward pass).
``evaluations_per_call`` is the most one call can cost.  :func:`sample_guided` runs
:func:`physgen.sampling.sample` and reports ``stats.nfe`` = field evaluations (the solver's
count of flow calls moves to ``stats.extra["flow_evaluations"]``).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import UserError, unknown_name
from .fields.kinds import convert_gaussian, expand_as_batch
from .fields.labels import check_label

__all__ = [
    "GUIDANCE_KINDS",
    "ClassifierFreeGuidance",
    "ClassifierGuidance",
    "BayesClassifier",
    "MixtureBayesClassifier",
    "NoiseClassifier",
    "ClassifierNet",
    "ClassifierObjective",
    "SCALE_LAWS",
    "bayes_classifier",
    "make_classifier",
    "train_classifier",
    "save_classifier",
    "load_classifier",
    "classifier_accuracy",
    "classifier_gradient",
    "guidance_variance",
    "conditioning_sigma",
    "to_denoiser",
    "make_guided_field",
    "sample_guided",
    "parse_interval",
    "check_toy_guidance",
    "guide_toy",
    "class_fraction",
    "class_reference",
    "GuidanceTransform",
    "guidance_transform",
]

GUIDANCE_KINDS = ("cfg", "classifier")
CHECKPOINT_FORMAT = "physgen-classifier/1"
# constructor options that change a process's kernel (not only its range): a classifier
# trained under one kernel is wrong under another
_KERNEL_KEYS = ("D", "m", "schedule", "beta_schedule", "beta_min", "beta_max", "cosine_offset")


# ------------------------------------------------------------------------ small helpers
def _check_w(w: float) -> float:
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
        raise UserError(f"guidance scale w must be a finite number, got {w!r}")
    return float(w)


def parse_interval(interval: Any) -> Optional[tuple[float, float]]:
    """``None``, ``(lo, hi)`` or ``"lo,hi"`` -> ``(lo, hi)`` with ``0 <= lo < hi`` (``hi`` may be ``inf``)."""
    if interval is None:
        return None
    if isinstance(interval, str):
        parts = interval.replace(":", ",").split(",")
        if len(parts) != 2:
            raise UserError(f"guidance interval must be 'LO,HI' (scales of the process), got {interval!r}")
        try:
            interval = tuple(float(p) for p in parts)
        except ValueError:
            raise UserError(f"guidance interval must be two numbers 'LO,HI', got {interval!r}") from None
    try:
        lo, hi = (float(v) for v in interval)
    except (TypeError, ValueError):
        raise UserError(f"guidance interval must be two numbers (lo, hi), got {interval!r}") from None
    if not (lo >= 0 and hi > lo) or math.isnan(hi):
        raise UserError(f"guidance interval needs 0 <= lo < hi, got ({lo}, {hi})")
    return lo, hi


def _in_interval(s: Tensor, interval: Optional[tuple[float, float]]) -> Optional[Tensor]:
    """Boolean ``[B]`` mask of the rows to guide, or ``None`` for all rows."""
    if interval is None:
        return None
    lo, hi = interval
    return (s >= lo) & (s <= hi)


def _field_classes(field) -> int:
    return int(getattr(field, "num_classes", None) or 0)


def to_denoiser(process, field, x: Tensor, s: Tensor, label=None) -> Tensor:
    """The field's output as a denoiser ``D(x, s)`` (Gaussian conversions through the process)."""
    out = field(x, s, label)
    if field.kind == "denoiser":
        return out
    if field.kind in ("score", "eps") and getattr(process, "has_score", False) and hasattr(process, "coefficients"):
        a, b = process.coefficients(s)
        return convert_gaussian(out, field.kind, "denoiser", x, a, b)
    raise UserError(f"classifier guidance needs a denoiser field (or a score/eps field of a Gaussian process); "
                    f"got a {field.kind!r} field for process {getattr(process, 'name', process)!r}")


def guidance_variance(process, s: Tensor) -> tuple[Tensor, bool]:
    """``(v [B], exact)``: the factor turning ``∇ log p(y|x,s)`` into a denoiser shift.

    Gaussian processes: ``v = b²/a`` (exact).  Other radial kernels: ``v = σ_eff(s)²`` with
    the process's aligned Gaussian scale ``sigma_of_scale`` (PFGM++: ``σ = r/√D``), an
    approximation whose error is O(1/D) (module docstring).
    """
    if getattr(process, "has_score", False) and hasattr(process, "coefficients"):
        a, b = process.coefficients(s)
        return b**2 / a, True
    sig = getattr(process, "sigma_of_scale", None)
    if sig is None:
        raise UserError(f"classifier guidance is not defined for process {getattr(process, 'name', process)!r}: "
                        f"it has neither a Gaussian marginal nor an aligned Gaussian scale (sigma_of_scale)")
    return sig(s) ** 2, False


def conditioning_sigma(process, s: Tensor) -> tuple[Tensor, Tensor]:
    """``(σ, a)``: the classifier sees ``x/a`` at the equivalent Gaussian noise level ``σ``.

    VP: ``σ = b/a``; σ-parameterised processes (VE, EDM, PFGM++, Yukawa): ``σ = sigma_of_scale(s)``, ``a = 1``.
    """
    sig = getattr(process, "sigma_of_scale", None)
    if sig is not None:
        sigma = sig(s)
        return sigma, torch.ones_like(sigma)
    a, b = process.coefficients(s)
    return b / a, a


class _Counter:
    """Evaluation counters shared by the guided fields."""

    evaluations_per_call = 1

    def reset_counts(self) -> None:
        self.evaluations = 0
        self.classifier_evaluations = 0
        self.calls = 0


# --------------------------------------------------------------- classifier-free guidance
class ClassifierFreeGuidance(_Counter):
    """``D_w = D(·|∅) + w (D(·|y) - D(·|∅))`` (arXiv 2207.12598) around a conditional field.

    ``field``: any field that takes labels and has a null label (neural fields trained with
    label dropout, exact fields with point labels, Gaussian-mixture fields); ``w``: the
    guidance scale; ``interval``: ``(s_lo, s_hi)`` in the process's scale where guidance
    applies (outside: the conditional field); ``batched=True`` evaluates conditional and
    null labels in one call on ``2B`` rows (counted as 2 evaluations), ``False`` in two calls.
    The output has the field's ``kind`` (the combination is kind-independent; module docstring).
    """

    evaluations_per_call = 2

    def __init__(self, field, w: float = 1.0, *, interval=None, batched: bool = True):
        if getattr(field, "kind", None) not in ("denoiser", "score", "eps"):
            raise UserError(f"classifier-free guidance needs a denoiser, score or eps field, got kind {getattr(field, 'kind', None)!r} "
                            f"(a normalised Poisson field is not affine in the denoiser)")
        self.num_classes = _field_classes(field)
        if self.num_classes <= 0:
            raise UserError("classifier-free guidance needs a conditional field (labels with a null label); this field has no classes")
        self.field, self.w, self.interval, self.batched = field, _check_w(w), parse_interval(interval), bool(batched)
        self.kind = field.kind
        self.reset_counts()

    def __call__(self, x: Tensor, s: Tensor, label=None) -> Tensor:
        return self._combine(self.field, x, s, label, self.batched)

    def __getattr__(self, name: str):
        """Guided versions of a field's extra outputs (Yukawa's ``transport_denoise`` and
        ``denoise_and_rate``): posterior means too, so the same affine combination applies."""
        if name in _AUX_OUTPUTS and "field" in self.__dict__ and callable(getattr(self.field, name, None)):
            inner = getattr(self.field, name)
            return lambda x, s, label=None: self._combine(inner, x, s, label, False)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _combine(self, fn, x: Tensor, s: Tensor, label, batched: bool):
        self.calls += 1
        k = self.num_classes
        label = check_label(label, k, x.shape[0], device=x.device, what="the guided field")
        if label is None or self.w == 1.0:  # unconditional, or exactly the conditional field
            self.evaluations += 1
            return fn(x, s, label)
        rows = _in_interval(s, self.interval)
        idx = None  # rows to guide: all
        if rows is not None and not bool(rows.all()):
            if not bool(rows.any()):
                self.evaluations += 1
                return fn(x, s, label)
            idx = rows.nonzero().squeeze(1)
        if self.w == 0.0 and idx is None:
            self.evaluations += 1
            return fn(x, s, None)
        xu, su = (x, s) if idx is None else (x[idx], s[idx])
        self.evaluations += 2
        if batched:  # one call: conditional rows, then null rows (2 evaluations)
            b = x.shape[0]
            null = torch.full((xu.shape[0],), k, dtype=label.dtype, device=label.device)
            both = fn(torch.cat([x, xu]), torch.cat([s, su]), torch.cat([label, null]))
            cond, uncond = _split(both, b)
        else:
            cond, uncond = fn(x, s, label), fn(xu, su, None)
        return _apply(lambda c, u: u + self.w * (c - u) if idx is None else c.index_copy(0, idx, u + self.w * (c[idx] - u)), cond, uncond)


_AUX_OUTPUTS = ("transport_denoise", "denoise_and_rate")


def _split(out, b: int):
    if isinstance(out, tuple):
        return tuple(o[:b] for o in out), tuple(o[b:] for o in out)
    return out[:b], out[b:]


def _apply(fn, cond, uncond):
    if isinstance(cond, tuple):
        return tuple(fn(c, u) for c, u in zip(cond, uncond))
    return fn(cond, uncond)


# ------------------------------------------------------------------ Bayes classifiers
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


# -------------------------------------------------------------------- classifier guidance
class ClassifierGuidance(_Counter):
    """``D_w(x, s | y) = D(x, s) + w v(s) ∇_x log p(y | x, s)`` (arXiv 2105.05233), kind ``denoiser``.

    ``field``: the (unconditional) field; a conditional field is evaluated with the null
    label.  ``classifier(x, s) -> logits [B, K]`` (a :class:`NoiseClassifier` trained on the
    process's kernel, or a Bayes classifier); ``v(s)`` from :func:`guidance_variance`:
    ``b²/a`` for Gaussian processes (exact at ``w = 1``), ``σ_eff²`` otherwise (the aligned
    approximation, module docstring).  ``exact`` records which.  ``interval``: scales where
    the shift applies (outside it: the base field, unguided).  Samples with the null label
    are not guided.  With the Bayes classifier of a Gaussian process, classifier guidance
    equals CFG of the exact field at *every* ``w`` (both are ``D + w (D(·|y) - D)``).  Only the
    denoiser is guided (no ``transport_denoise`` / ``denoise_and_rate``), so Yukawa samples
    with ``birth_death="off"``.
    """

    kind = "denoiser"

    def __init__(self, field, process, classifier, w: float = 1.0, *, interval=None):
        self.field, self.process, self.classifier = field, process, classifier
        self.w, self.interval = _check_w(w), parse_interval(interval)
        self.num_classes = int(getattr(classifier, "num_classes", 0) or 0)
        if self.num_classes <= 0:
            raise UserError("the classifier has no classes")
        spec = getattr(classifier, "process_spec", None)
        if spec is not None:
            check_classifier_process(spec, process)
        s1 = torch.ones(1, dtype=torch.float64)
        self.exact = guidance_variance(process, s1)[1]
        self.reset_counts()

    def __call__(self, x: Tensor, s: Tensor, label=None) -> Tensor:
        self.calls += 1
        k = self.num_classes
        label = check_label(label, k, x.shape[0], device=x.device, what="the classifier")
        base_label = "null" if _field_classes(self.field) > 0 else None
        d = to_denoiser(self.process, self.field, x, s, base_label)
        self.evaluations += 1
        if label is None or self.w == 0.0:
            return d
        guide = label != k
        rows = _in_interval(s, self.interval)
        if rows is not None:
            guide = guide & rows
            if not bool(guide.any()):
                return d
        g = classifier_gradient(self.classifier, x, s, torch.where(guide, label, torch.zeros_like(label)))
        self.classifier_evaluations += 1
        v, _ = guidance_variance(self.process, s)
        scale = torch.where(guide, self.w * v.to(x.dtype), torch.zeros_like(v, dtype=x.dtype))
        return d + expand_as_batch(scale, x) * g.to(d.dtype)


def make_guided_field(kind: str, field, process=None, *, w: float = 1.0, interval=None, classifier=None):
    """``kind`` = ``cfg`` or ``classifier``: the guided field around ``field``."""
    if kind == "cfg":
        return ClassifierFreeGuidance(field, w, interval=interval)
    if kind == "classifier":
        if process is None:
            raise UserError("classifier guidance needs the process (its kernel decides the shift)")
        if classifier is None:
            classifier = bayes_classifier(field)
        return ClassifierGuidance(field, process, classifier, w, interval=interval)
    raise unknown_name("guidance", kind, GUIDANCE_KINDS)


def sample_guided(process, field, x0: Tensor, schedule: Tensor, method: str = "heun", *, noise=None, label=None, **options):
    """:func:`physgen.sampling.sample` with ``stats.nfe`` = evaluations of the wrapped field.

    For a guided field (one with an ``evaluations`` counter) the solver's count of flow calls
    goes to ``stats.extra["flow_evaluations"]`` and classifier gradients to
    ``stats.extra["classifier_evaluations"]``; other fields pass through unchanged.
    """
    from .sampling import sample

    counted = hasattr(field, "evaluations")
    if counted:
        field.reset_counts()
    sol = sample(process, field, x0, schedule, method, noise=noise, label=label, **options)
    if counted:
        sol.stats.extra["flow_evaluations"] = sol.stats.nfe
        sol.stats.extra["classifier_evaluations"] = field.classifier_evaluations
        sol.stats.nfe = field.evaluations
    return sol


# ---------------------------------------------------------------- trained classifiers
class ConvClassifierNet(nn.Module):
    """A small noise-conditional CNN for images: ``F(x_in [B,C,H,W], c_noise [B]) -> logits [B, K]``.

    Two stages of (conv, GroupNorm, noise-embedding shift, SiLU) x 2 at full and half
    resolution (an encoder like the first half of a U-Net), global average pooling, linear.
    """

    def __init__(self, channels: int, num_classes: int, width: int = 32, embed_dim: int = 64):
        super().__init__()
        from .nets.mlp import SinusoidalEmbedding

        self.num_classes = int(num_classes)
        self.embed = nn.Sequential(SinusoidalEmbedding(embed_dim), nn.Linear(embed_dim, 2 * width), nn.SiLU())
        widths = [width, width, 2 * width, 2 * width]
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        self.shifts = nn.ModuleList()
        c_in = channels
        for c in widths:
            self.convs.append(nn.Conv2d(c_in, c, 3, padding=1))
            self.norms.append(nn.GroupNorm(min(8, c), c))
            self.shifts.append(nn.Linear(2 * width, c))
            c_in = c
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: Tensor, c_noise: Tensor, label=None) -> Tensor:
        emb = self.embed(c_noise)
        h = x
        for i, (conv, norm, shift) in enumerate(zip(self.convs, self.norms, self.shifts)):
            if i == 2 and min(h.shape[-2:]) >= 4:
                h = F.avg_pool2d(h, 2)
            h = F.silu(norm(conv(h)) + shift(emb)[:, :, None, None])
        return self.head(h.mean((-2, -1)))


ClassifierNet = ConvClassifierNet


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
        from .nets.mlp import MLP

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
        from .nets.mlp import MLP

        return MLP(spec["dim"], hidden=spec["hidden"], depth=spec["depth"], out_dim=spec["num_classes"])
    if spec["type"] == "cnn":
        return ConvClassifierNet(spec["channels"], spec["num_classes"], width=spec["width"])
    raise UserError(f"unknown classifier architecture {spec.get('type')!r} in checkpoint")


SCALE_LAWS = ("mixed", "process", "log-uniform")


class ClassifierObjective:
    """Stands in for a process in :func:`physgen.training.train`: cross-entropy of the classifier
    on ``x ~ p_s(x | y)`` drawn with the process's own kernel (``process.perturb``).

    Scales ``s``: ``process`` = ``process.sample_scales`` (the field's training law);
    ``log-uniform`` over the sampling range ``[s_min, s_max]``; ``mixed`` (default) = half of
    each.  Why mixed: guidance acts at every step of the schedule and the shift multiplies the
    classifier's gradient by ``σ²``, so errors at the largest scales, which EDM's log-normal
    law (``ln σ ~ N(-1.2, 1.2²)``) almost never trains, are magnified the most (measured on 8
    Gaussians, MLP, 400 steps: the shift error at ``σ_max`` fell from 72% to 24% of the
    Bayes-classifier shift, unchanged at ``σ ≤ 4``).
    """

    def __init__(self, process, scales: str = "mixed"):
        if scales not in SCALE_LAWS:
            raise unknown_name("classifier scale law", scales, SCALE_LAWS)
        self.process, self.scales = process, scales
        self.name = process.name

    def config(self) -> dict:
        return self.process.config()

    def sample_scales(self, n: int, generator=None, device=None) -> Tensor:
        proc = self.process
        s = proc.sample_scales(n, generator=generator, device=device).double()
        if self.scales == "process":
            return s
        lo, hi = math.log(proc.s_min), math.log(proc.s_max)
        u = torch.exp(lo + (hi - lo) * torch.rand(n, generator=generator, device=device, dtype=torch.float64))
        if self.scales == "log-uniform":
            return u
        return torch.where(torch.arange(n, device=u.device) % 2 == 0, s, u)

    def loss(self, classifier, y: Tensor, *, generator=None, label: Optional[Tensor] = None) -> Tensor:
        if label is None:
            raise UserError("training a classifier needs labelled data")
        s = self.sample_scales(y.shape[0], generator=generator, device=y.device).to(y.dtype)
        x = self.process.perturb(y, s, generator=generator)
        return F.cross_entropy(classifier(x, s).float(), label.long(), reduction="none")


def train_classifier(process, classifier: NoiseClassifier, sample_batch, config, *, scales: str = "mixed", out_dir=None,
                     resume: bool = False, device=None, log_stream=None):
    """Train ``classifier`` with :func:`physgen.training.train` (Adam, EMA, checkpoints, resume).

    ``sample_batch(n, generator) -> (y, labels)``; ``scales``: see :class:`ClassifierObjective`.
    Returns the ``TrainResult`` (``.ema`` is the classifier to use); checkpoints for resuming
    go to ``out_dir/checkpoints``.
    """
    from .training import train

    return train(ClassifierObjective(process, scales), classifier, sample_batch, config, out_dir=out_dir, resume=resume,
                 device=device, log_stream=log_stream)


def save_classifier(path, classifier: NoiseClassifier, **meta: Any) -> None:
    """Write a self-describing classifier checkpoint (architecture, process, weights) atomically
    (:mod:`physgen.checkpoints`, kind ``classifier``; architecture and process also in its header)."""
    from . import checkpoints

    payload = {
        "format": CHECKPOINT_FORMAT,
        "arch": classifier.arch,
        "sigma_data": classifier.sigma_data,
        "process": classifier.process_spec,
        "state_dict": {k: v.detach().cpu() for k, v in classifier.state_dict().items()},
        "meta": meta,
    }
    checkpoints.write(path, payload, kind="classifier", step=0, meta={"arch": classifier.arch, "process": classifier.process_spec, **meta})


def check_classifier_process(spec: dict, process) -> None:
    """UserError unless ``process`` has the kernel the classifier was trained on."""
    name = getattr(process, "name", None)
    config = process.config() if hasattr(process, "config") else {}
    diffs = [k for k in _KERNEL_KEYS if k in spec or k in config if spec.get(k) != config.get(k)]
    if spec.get("name") != name or diffs:
        want = {k: spec.get(k) for k in ("name", *_KERNEL_KEYS) if spec.get(k) is not None}
        have = {"name": name, **{k: config.get(k) for k in _KERNEL_KEYS if config.get(k) is not None}}
        raise UserError(f"the classifier was trained on {want}, but the process is {have}; "
                        f"train one on the same process and kernel (physgen train-classifier --process ...)")


def load_classifier(path, process=None, device=None) -> NoiseClassifier:
    """Load a :func:`save_classifier` checkpoint; with ``process``, check its kernel and bind to it."""
    from . import checkpoints

    try:  # verified, and loaded with weights_only=True: a classifier file cannot run code
        ckpt = checkpoints.read(path, kind="classifier").payload
    except UserError as exc:
        raise UserError(f"cannot load classifier checkpoint: {exc}") from None
    if ckpt.get("format") != CHECKPOINT_FORMAT or not isinstance(ckpt.get("process"), dict) or not isinstance(ckpt.get("arch"), dict):
        raise UserError(f"{str(path)!r} is not a physgen classifier checkpoint (written by `physgen train-classifier`)")
    spec = ckpt["process"]
    if process is None:
        from .processes import make_process

        options = {k: v for k, v in spec.items() if k != "name"}
        process = make_process(spec["name"], **options)
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


@torch.no_grad()
def classifier_accuracy(classifier, process, y: Tensor, labels: Tensor, sigmas: Sequence[float], *, generator=None) -> dict[str, float]:
    """Accuracy on ``x ~ p_s(x | y)`` at each scale in ``sigmas`` (keys ``acc@<s>``)."""
    out = {}
    for sv in sigmas:
        s = torch.full((y.shape[0],), float(sv), device=y.device, dtype=y.dtype)
        x = process.perturb(y, s, generator=generator)
        pred = classifier(x, s).argmax(1)
        out[f"acc@{sv:g}"] = float((pred == labels.to(pred.device)).double().mean())
    return out


# -------------------------------------------------------------------- the image route
class GuidanceTransform:
    """A ``field_transform`` for :func:`physgen.images.generate.generate`: wraps the field once
    and keeps the guided field, whose counters give the honest NFE (:meth:`summary`)."""

    def __init__(self, kind: str, process, w: float, interval=None, classifier=None):
        if kind not in GUIDANCE_KINDS:
            raise unknown_name("guidance", kind, GUIDANCE_KINDS)
        self.kind, self.process, self.w, self.interval, self.classifier = kind, process, _check_w(w), parse_interval(interval), classifier
        self.guided = None

    def __call__(self, field):
        self.guided = make_guided_field(self.kind, field, self.process, w=self.w, interval=self.interval, classifier=self.classifier)
        return self.guided

    def summary(self) -> str:
        g = self.guided
        if g is None:
            return f"guidance {self.kind}: not used"
        return (f"guidance {self.kind} (w={self.w:g}): {g.evaluations} network evaluations and "
                f"{g.classifier_evaluations} classifier gradients over {g.calls} field calls")


def guidance_transform(args, process, device=None) -> GuidanceTransform:
    """From CLI flags ``--guidance --w --guidance-interval --classifier-ckpt --label`` (``physgen sample``)."""
    if args.label is None:
        raise UserError(f"--guidance {args.guidance} needs --label (the class to guide towards)")
    classifier = None
    if args.guidance == "classifier":
        if args.classifier_ckpt is None:
            raise UserError("--guidance classifier needs --classifier-ckpt (train one with `physgen train-classifier`)")
        classifier = load_classifier(args.classifier_ckpt, process, device)
    elif args.classifier_ckpt is not None:
        raise UserError("--classifier-ckpt is only used with --guidance classifier")
    return GuidanceTransform(args.guidance, process, args.w, args.guidance_interval, classifier)


# ---------------------------------------------------------------------- the toy route
def check_toy_guidance(config) -> None:
    """Validate the guidance fields of a :class:`physgen.toy.ToyConfig`."""
    if config.guidance is None:
        if config.classifier_ckpt is not None:
            raise UserError("--classifier-ckpt is only used with --guidance classifier")
        return
    if config.guidance not in GUIDANCE_KINDS:
        raise unknown_name("guidance", config.guidance, GUIDANCE_KINDS)
    if config.label is None:
        raise UserError(f"--guidance {config.guidance} needs --label (the class to guide towards)")
    _check_w(config.w)
    parse_interval(config.guidance_interval)
    if config.guidance == "cfg" and config.classifier_ckpt is not None:
        raise UserError("--classifier-ckpt is only used with --guidance classifier")


def guide_toy(config, process, field, data: Tensor, labels: Optional[Tensor], device, log_stream=None):
    """The guided field for ``physgen toy``: CFG around the (conditional) field, or classifier
    guidance with ``--classifier-ckpt``, the Bayes classifier of an exact/analytic field, or a
    classifier trained here on the same data (``--field mlp`` without a checkpoint)."""
    if config.guidance == "cfg":
        return ClassifierFreeGuidance(field, config.w, interval=config.guidance_interval)
    if config.classifier_ckpt is not None:
        classifier = load_classifier(config.classifier_ckpt, process, device)
    elif config.field in ("exact", "analytic"):
        classifier = bayes_classifier(field)
    else:
        if labels is None:
            raise UserError(f"dataset {config.dataset!r} has no labels to train a classifier on")
        from .training import TrainConfig

        k = int(labels.max()) + 1
        classifier = make_classifier(process, data.shape[1:], k, hidden=config.hidden, depth=config.depth,
                                     sigma_data=getattr(process, "sigma_data", 0.5)).to(device)
        tcfg = TrainConfig(steps=config.train_steps, batch=config.batch, lr=config.lr, seed=config.seed + 1,
                           log_every=max(1, config.train_steps // 10))

        def batch(n: int, g: torch.Generator):
            idx = torch.randint(0, data.shape[0], (n,), generator=g, device=g.device)
            return data[idx], labels[idx]

        classifier = train_classifier(process, classifier, batch, tcfg, device=device, log_stream=log_stream).ema
    if classifier.num_classes <= int(config.label):
        raise UserError(f"label {config.label} out of range: the classifier has {classifier.num_classes} classes")
    return ClassifierGuidance(field, process, classifier, config.w, interval=config.guidance_interval)


# ----------------------------------------------------------------- conditional metrics
@torch.no_grad()
def class_fraction(samples: Tensor, data: Tensor, labels: Tensor, label: int, *, chunk: int = 1024) -> float:
    """Fraction of ``samples`` whose nearest point of the labelled ``data`` has class ``label``
    (a 1-nearest-neighbour classifier; samples with a NaN/Inf count as misses)."""
    xs = samples.reshape(samples.shape[0], -1).to(data.device, torch.float32)
    xd = data.reshape(data.shape[0], -1).float()
    hits = 0
    for r0 in range(0, xs.shape[0], chunk):
        xr = xs[r0:r0 + chunk]
        nearest = torch.cdist(xr, xd).argmin(1)
        ok = (labels.to(xd.device)[nearest] == int(label)) & torch.isfinite(xr).all(1)
        hits += int(ok.sum())
    return hits / max(1, xs.shape[0])


def class_reference(dataset, n: int, generator: torch.Generator, label: int, device=None, max_tries: int = 64) -> Tensor:
    """``n`` fresh points of class ``label`` from a labelled toy dataset (rejection on the label)."""
    k = dataset.num_classes
    if k is None or not 0 <= int(label) < int(k):
        raise UserError(f"label {label!r} out of range: dataset {dataset.name!r} has {k or 0} classes")
    out, have = [], 0
    for _ in range(max_tries):
        x, y = dataset.sample_labelled(max(n, 256) * 2, generator, device=device)
        keep = x[y == int(label)]
        out.append(keep)
        have += keep.shape[0]
        if have >= n:
            return torch.cat(out)[:n]
    raise UserError(f"class {label} of dataset {dataset.name!r} is too rare to draw {n} reference points")
