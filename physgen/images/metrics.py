"""Image sample metrics: FID, KID, Inception Score, SSIM, and feature extraction.

Fréchet Inception Distance (Heusel et al., arXiv 1706.08500) between Gaussians fitted to
features of two image sets::

    FID = ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))

Kernel Inception Distance (Binkowski et al., arXiv 1801.01401): the unbiased MMD^2 with
the cubic polynomial kernel ``k(a, b) = (a.b / d + 1)^3`` averaged over random subsets::

    MMD^2_u = 1/(m(m-1)) sum_{i!=j} [k(x_i,x_j) + k(y_i,y_j)] - 2/m^2 sum_{i,j} k(x_i,y_j)

Inception Score (Salimans et al., arXiv 1606.03498), per split of the samples::

    IS = exp( E_x KL(p(y|x) || p(y)) ),   p(y) = E_x p(y|x)

SSIM (Wang et al. 2004, IEEE TIP 13(4)) with an 11x11 Gaussian window of sigma 1.5,
``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2`` and ``L`` the data range (2 for ``[-1, 1]``)::

    SSIM = mean over valid windows of
           (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))

Features come from any ``torch.nn.Module`` mapping images in ``[-1, 1]`` to ``[B, D]``
(``feature_net``); with the FID-variant Inception weights
(:mod:`physgen.nets.inception`) the numbers are the standard ones.  Reference statistics
are cached as ``.npz`` files with arrays ``mu`` and ``sigma`` (atomic writes).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Iterable, Optional, Tuple, Union

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F

from ..errors import UserError
from ..io import atomic_write

__all__ = [
    "frechet_distance",
    "feature_statistics",
    "fid_from_features",
    "kid",
    "inception_score",
    "ssim",
    "extract_features",
    "save_statistics",
    "load_statistics",
    "reference_statistics",
    "compute_fid",
]

PathLike = Union[str, os.PathLike]
ArrayLike = Union[np.ndarray, torch.Tensor]
Images = Union[torch.Tensor, np.ndarray, Iterable[Any]]


def _np64(a: Any) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().double().numpy()
    return np.asarray(a, dtype=np.float64)


# --------------------------------------------------------------------------- FID


def _sqrtm(a: np.ndarray) -> Tuple[np.ndarray, bool]:
    """``scipy.linalg.sqrtm(a)`` and whether scipy flagged ``a`` as singular."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", scipy.linalg.LinAlgWarning)
        root = np.asarray(scipy.linalg.sqrtm(a))
    return root, any(issubclass(w.category, scipy.linalg.LinAlgWarning) for w in caught)


def frechet_distance(
    mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike, eps: float = 1e-6
) -> float:
    """Fréchet distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``.

    ``||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr(sqrtm(sigma1 sigma2))`` with
    ``scipy.linalg.sqrtm``.  As in the reference FID code: when the product is singular
    (``sqrtm`` not finite) ``eps`` is added to both diagonals; imaginary parts from
    round-off are dropped, and raise ``ValueError`` if larger than 1e-3 on the diagonal.
    """
    mu1, mu2 = np.atleast_1d(_np64(mu1)), np.atleast_1d(_np64(mu2))
    sigma1, sigma2 = np.atleast_2d(_np64(sigma1)), np.atleast_2d(_np64(sigma2))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise UserError(
            f"Fréchet distance needs means [D] and covariances [D, D] of one D; got "
            f"{list(mu1.shape)}, {list(sigma1.shape)}, {list(mu2.shape)}, {list(sigma2.shape)}"
        )
    diff = mu1 - mu2
    covmean, singular = _sqrtm(sigma1 @ sigma2)
    if singular or not np.isfinite(covmean).all():
        warnings.warn(f"FID: singular product of covariances; adding {eps} to the diagonals")
        offset = np.eye(d) * eps
        covmean, _ = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(
                f"FID: imaginary component {np.max(np.abs(covmean.imag)):.3g} in sqrtm(S1 S2)"
            )
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def feature_statistics(features: ArrayLike) -> Tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and unbiased covariance ``[D, D]`` (float64) of features ``[N, D]``."""
    f = _np64(features)
    if f.ndim != 2 or f.shape[0] < 2:
        raise UserError(f"need features [N >= 2, D] for statistics, got shape {list(f.shape)}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def fid_from_features(features1: ArrayLike, features2: ArrayLike) -> float:
    """FID between two feature sets ``[N1, D]`` and ``[N2, D]``."""
    return frechet_distance(*feature_statistics(features1), *feature_statistics(features2))


# --------------------------------------------------------------------------- KID


def kid(
    features1: ArrayLike,
    features2: ArrayLike,
    *,
    num_subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    coef0: float = 1.0,
    seed: int = 0,
) -> Tuple[float, float]:
    """Kernel Inception Distance: mean and standard deviation over ``num_subsets`` random
    subsets (size ``min(subset_size, N1, N2)``, drawn without replacement) of the
    unbiased MMD^2 with kernel ``(a.b / D + coef0)^degree`` (module docstring).

    The estimate is unbiased for independent sets; a set compared with itself gives a
    slightly negative value, since its two subsets share points."""
    x, y = _np64(features1), _np64(features2)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise UserError(f"KID needs features [N1, D] and [N2, D]; got {list(x.shape)}, {list(y.shape)}")
    m = min(subset_size, len(x), len(y))
    if m < 2:
        raise UserError(f"KID needs at least 2 samples in each set, got {len(x)} and {len(y)}")
    if num_subsets < 1:
        raise UserError(f"num_subsets must be >= 1, got {num_subsets}")
    d = x.shape[1]
    rng = np.random.default_rng(seed)
    values = np.empty(num_subsets)
    for s in range(num_subsets):
        a = x[rng.choice(len(x), m, replace=False)]
        b = y[rng.choice(len(y), m, replace=False)]
        kxx = (a @ a.T / d + coef0) ** degree
        kyy = (b @ b.T / d + coef0) ** degree
        kxy = (a @ b.T / d + coef0) ** degree
        off = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        values[s] = off - 2.0 * kxy.mean()
    return float(values.mean()), float(values.std())


# --------------------------------------------------------------------------- IS


def inception_score(logits: ArrayLike, splits: int = 10) -> Tuple[float, float]:
    """Inception Score mean and standard deviation over ``splits`` equal parts of the
    samples, from class logits ``[N, K]`` (softmax taken here)."""
    z = torch.as_tensor(_np64(logits))
    if z.ndim != 2 or len(z) < 1:
        raise UserError(f"inception_score needs logits [N, K], got shape {list(z.shape)}")
    if not 1 <= splits <= len(z):
        raise UserError(f"splits must be in [1, N={len(z)}], got {splits}")
    logp = torch.log_softmax(z, dim=1)
    scores = []
    for part in torch.tensor_split(logp, splits):
        log_py = torch.logsumexp(part, dim=0) - np.log(len(part))
        kl = (part.exp() * (part - log_py)).sum(dim=1).mean()
        scores.append(float(kl.exp()))
    return float(np.mean(scores)), float(np.std(scores))


# --------------------------------------------------------------------------- SSIM


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return g.to(dtype=dtype, device=device)


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    data_range: float = 2.0,
    window_size: int = 11,
    sigma: float = 1.5,
) -> torch.Tensor:
    """Per-image SSIM ``[B]`` of ``[B, C, H, W]`` batches (module docstring).

    Windows are "valid" (no padding), the separable Gaussian applied per channel; the map
    is averaged over channels and positions.  Images smaller than the window use the
    largest odd window that fits.
    """
    if x.shape != y.shape or x.ndim != 4:
        raise UserError(f"ssim needs two [B, C, H, W] batches of one shape; got {list(x.shape)}, {list(y.shape)}")
    dtype = torch.promote_types(x.dtype, torch.float32)
    x, y = x.to(dtype), y.to(dtype)
    c = x.shape[1]
    size = min(window_size, x.shape[-2], x.shape[-1])
    size -= 1 - size % 2
    g = _gaussian_window(size, sigma, dtype, x.device)
    wh = g.view(1, 1, size, 1).expand(c, 1, size, 1)
    ww = g.view(1, 1, 1, size).expand(c, 1, 1, size)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, wh, groups=c), ww, groups=c)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x**2
    syy = blur(y * y) - mu_y**2
    sxy = blur(x * y) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2)
    return (num / den).flatten(1).mean(dim=1)


# --------------------------------------------------------------------------- features


def _batches(images: Images, batch_size: int) -> Iterable[torch.Tensor]:
    if isinstance(getattr(images, "images", None), torch.Tensor):  # an ImageDataset
        images = images.images  # type: ignore[union-attr]
    if isinstance(images, (torch.Tensor, np.ndarray)):
        t = torch.as_tensor(images)
        if t.ndim != 4:
            raise UserError(f"images must be [N, C, H, W], got {list(t.shape)}")
        for i in range(0, len(t), batch_size):
            yield t[i : i + batch_size]
    else:
        for item in images:
            if isinstance(item, (tuple, list)):  # (images, labels) from a sampler/loader
                item = item[0]
            yield torch.as_tensor(item)


def extract_features(
    images: Images,
    feature_net: torch.nn.Module,
    *,
    batch_size: int = 250,
    device: Union[str, torch.device, None] = None,
    quantize: bool = True,
    logits: bool = False,
) -> Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
    """Features ``[N, D]`` (float64) of images in ``[-1, 1]``, computed in batches.

    ``images``: a tensor/array ``[N, C, H, W]``, an ``ImageDataset``, or an iterable of
    such batches (or of ``(images, labels)`` pairs), e.g. a generator of samples.  ``feature_net`` maps a batch
    to ``[B, D]`` (extra trailing singleton dims are flattened); it is run in eval mode
    under ``no_grad`` on ``device`` (default: where its parameters are).  ``quantize``
    rounds to 8-bit levels first, as when samples are saved to PNG (the standard protocol).
    ``logits=True`` also returns the class logits, for a network with a
    ``features_and_logits`` method such as :class:`~physgen.nets.inception.InceptionV3`.
    """
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    if logits and not hasattr(feature_net, "features_and_logits"):
        raise UserError(f"{type(feature_net).__name__} has no features_and_logits(); logits need Inception")
    if device is None:
        param = next(iter(feature_net.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
    was_training = feature_net.training
    feature_net.eval()
    feats, outs = [], []
    try:
        with torch.no_grad():
            for batch in _batches(images, batch_size):
                x = batch.to(device=device, dtype=torch.float32)
                if quantize:
                    x = ((x + 1) * 127.5).round().clamp(0, 255) / 127.5 - 1
                if logits:
                    f, z = feature_net.features_and_logits(x)  # type: ignore[operator]
                    outs.append(z.double().cpu().numpy())
                else:
                    f = feature_net(x)
                if f.ndim > 2:
                    f = f.flatten(1)
                feats.append(f.double().cpu().numpy())
    finally:
        feature_net.train(was_training)
    if not feats:
        raise UserError("no images to extract features from")
    features = np.concatenate(feats)
    return (features, np.concatenate(outs)) if logits else features


# --------------------------------------------------------------------------- stats cache


def save_statistics(path: PathLike, mu: ArrayLike, sigma: ArrayLike, **extra: Any) -> Path:
    """Write ``mu``, ``sigma`` (and any ``extra`` arrays/scalars) to an ``.npz``, atomically."""
    path = Path(path)
    with atomic_write(path) as f:
        np.savez(f, mu=_np64(mu), sigma=_np64(sigma), **{k: np.asarray(v) for k, v in extra.items()})
    return path


def load_statistics(path: PathLike) -> Tuple[np.ndarray, np.ndarray]:
    """``(mu, sigma)`` from an ``.npz`` written by :func:`save_statistics` (or pytorch-fid)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"reference statistics file {str(path)!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            if "mu" not in data.files or "sigma" not in data.files:
                raise UserError(f"statistics file {str(path)!r} needs arrays 'mu' and 'sigma' (found {data.files})")
            return data["mu"].astype(np.float64), data["sigma"].astype(np.float64)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"cannot read statistics file {str(path)!r}: {exc}") from exc


def reference_statistics(
    images: Images,
    feature_net: torch.nn.Module,
    cache_path: Optional[PathLike] = None,
    **extract_kwargs: Any,
) -> Tuple[np.ndarray, np.ndarray]:
    """``(mu, sigma)`` of the features of reference images, read from ``cache_path`` when
    it exists, else computed and written there.  The cache is not keyed by network: use
    one file per (dataset, feature network)."""
    if cache_path is not None and Path(cache_path).is_file():
        return load_statistics(cache_path)
    mu, sigma = feature_statistics(extract_features(images, feature_net, **extract_kwargs))
    if cache_path is not None:
        save_statistics(cache_path, mu, sigma, feature_net=type(feature_net).__name__)
    return mu, sigma


def compute_fid(
    images: Images,
    reference: Union[PathLike, Images, Tuple[np.ndarray, np.ndarray]],
    feature_net: torch.nn.Module,
    *,
    cache_path: Optional[PathLike] = None,
    **extract_kwargs: Any,
) -> float:
    """FID of ``images`` against ``reference``: a statistics ``.npz`` path, a
    ``(mu, sigma)`` pair, or reference images (statistics cached at ``cache_path``)."""
    if isinstance(reference, (str, os.PathLike)):
        mu_r, sigma_r = load_statistics(reference)
    elif (
        isinstance(reference, tuple)
        and len(reference) == 2
        and np.ndim(reference[0]) == 1
        and np.ndim(reference[1]) == 2
    ):
        mu_r, sigma_r = _np64(reference[0]), _np64(reference[1])
    else:
        mu_r, sigma_r = reference_statistics(reference, feature_net, cache_path, **extract_kwargs)
    mu, sigma = feature_statistics(extract_features(images, feature_net, **extract_kwargs))
    if mu.shape != mu_r.shape:
        raise UserError(
            f"reference statistics have {mu_r.shape[0]} features but {type(feature_net).__name__} "
            f"gives {mu.shape[0]}; use statistics computed with the same feature network"
        )
    return frechet_distance(mu, sigma, mu_r, sigma_r)
