"""Guidance: field -> field wrappers for every process (classifier-free and classifier guidance).

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
from typing import Any, Optional

import torch
from torch import Tensor

from ..errors import UserError, unknown_name
from ..fields.kinds import convert_gaussian, expand_as_batch
from ..fields.labels import check_label
from .bayes import bayes_classifier, classifier_gradient
from ..sampling import sample

__all__ = ["GUIDANCE_KINDS", "ClassifierFreeGuidance", "ClassifierGuidance", "GuidanceTransform", "guidance_variance",
           "conditioning_sigma", "to_denoiser", "make_guided_field", "sample_guided", "parse_interval", "check_w", "check_guidance_flags",
           "check_classifier_process", "KERNEL_KEYS"]

GUIDANCE_KINDS = ("cfg", "classifier")
# constructor options that change a process's kernel (not only its range): a classifier
# trained under one kernel is wrong under another
KERNEL_KEYS = ("D", "m", "schedule", "beta_schedule", "beta_min", "beta_max", "cosine_offset")


# ------------------------------------------------------------------------ small helpers
def check_w(w: float) -> float:
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
        raise UserError(f"guidance scale w must be a finite number, got {w!r}")
    return float(w)


def check_guidance_flags(kind: Optional[str], w: float = 1.0, interval: Any = None, classifier_ckpt: Any = None) -> None:
    """The one rule of every command with guidance flags: ``--w``, ``--guidance-interval`` and
    ``--classifier-ckpt`` only act with ``--guidance`` (the last only with ``classifier``);
    given without it they are refused, never ignored."""
    if kind is None:
        given = [f for f, v in (("--w", w != 1.0), ("--guidance-interval", interval is not None), ("--classifier-ckpt", classifier_ckpt is not None)) if v]
        if given:
            kinds = "classifier" if given[0] == "--classifier-ckpt" else "cfg or classifier"
            raise UserError(f"{given[0]} only acts with --guidance ({kinds}); add it, or drop {given[0]}")
        return
    if kind == "cfg" and classifier_ckpt is not None:
        raise UserError("--classifier-ckpt is only used with --guidance classifier")


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
    if field.kind in ("score", "eps") and "score" in process.capabilities():
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
    if "score" in process.capabilities():
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
        self.field, self.w, self.interval, self.batched = field, check_w(w), parse_interval(interval), bool(batched)
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
        self.w, self.interval = check_w(w), parse_interval(interval)
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
    counted = hasattr(field, "evaluations")
    if counted:
        field.reset_counts()
    sol = sample(process, field, x0, schedule, method, noise=noise, label=label, **options)
    if counted:
        sol.stats.extra["flow_evaluations"] = sol.stats.nfe
        sol.stats.extra["classifier_evaluations"] = field.classifier_evaluations
        sol.stats.nfe = field.evaluations
    return sol



def check_classifier_process(spec: dict, process) -> None:
    """UserError unless ``process`` has the kernel the classifier was trained on."""
    name = getattr(process, "name", None)
    config = process.config() if hasattr(process, "config") else {}
    diffs = [k for k in KERNEL_KEYS if k in spec or k in config if spec.get(k) != config.get(k)]
    if spec.get("name") != name or diffs:
        want = {k: spec.get(k) for k in ("name", *KERNEL_KEYS) if spec.get(k) is not None}
        have = {"name": name, **{k: config.get(k) for k in KERNEL_KEYS if config.get(k) is not None}}
        raise UserError(f"the classifier was trained on {want}, but the process is {have}; "
                        f"train one on the same process and kernel (physgen train-classifier --process ...)")



class GuidanceTransform:
    """A ``field_transform`` for :func:`physgen.images.generate.generate`: wraps the field once
    and keeps the guided field, whose counters give the honest NFE (:meth:`summary`)."""

    def __init__(self, kind: str, process, w: float, interval=None, classifier=None):
        if kind not in GUIDANCE_KINDS:
            raise unknown_name("guidance", kind, GUIDANCE_KINDS)
        self.kind, self.process, self.w, self.interval, self.classifier = kind, process, check_w(w), parse_interval(interval), classifier
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


