"""Evaluation of image samples: FID / KID / IS against a reference set, SSIM between pairs.

Feature networks (:func:`load_feature_net`):

* ``inception=WEIGHTS``: Inception-v3 pool3 features from a local weights file
  (:func:`physgen.nets.inception.load_inception`; the ``pt_inception-2015-12-05`` file
  gives the standard, paper-comparable numbers).  Also gives logits, hence the
  Inception Score.
* ``feature_net="module:callable"``: ``callable`` is imported from ``module`` (which must
  be importable, e.g. on ``PYTHONPATH``) and called with no arguments; it returns an
  ``nn.Module`` (or any callable) mapping images ``[B, C, H, W]`` in ``[-1, 1]`` to
  features ``[B, D]``.  An ``nn.Module`` attribute is used as it is.  This is the one
  plug-in point (the one ``import_module`` of physgen): a feature network is code, and here
  it is code the user chose to import.

Network *files* are refused: ``torch.export.load`` of a ``.pt2`` falls back to full
unpickling when an archive's ``sample_inputs`` fail to load, and a TorchScript archive runs
its own code (``__setstate__``, ``forward``; e.g. ``torch.save`` to any path) -- either can
act when loaded.  To use a network file you trust, load it in your own module::

    # featnet.py, on PYTHONPATH:   --feature-net featnet:net
    import torch
    def net():
        return torch.export.load("feats.pt2").module()

The FID is then the Fréchet distance between Gaussians fitted to the features
(``||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))``, Heusel et al., arXiv 1706.08500);
with a non-Inception network it is *not* comparable to published FIDs, only between runs
evaluated with the same network.  KID (Binkowski et al., arXiv 1801.01401) and IS
(Salimans et al., arXiv 1606.03498): :mod:`physgen.images.metrics`.

Reference statistics of a dataset are cached as ``.npz`` (``mu``, ``sigma`` and up to
``KID_REF_MAX`` reference features for KID) under ``$PHYSGEN_CACHE/fid`` (default
``~/.cache/physgen/fid``), keyed by the dataset spec, split, resolution and the feature
network's identity (weights file path, size and mtime), or at an explicit path.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from .data import ImageDataset, load_image_dataset
from .metrics import extract_features, feature_statistics, frechet_distance, inception_score, kid, load_statistics, save_statistics, ssim
from ..nets.inception import load_inception

__all__ = ["load_feature_net", "load_images", "default_cache_path", "reference_features", "evaluate_fid", "evaluate_ssim", "KID_REF_MAX"]

KID_REF_MAX = 5000


class _CallableNet(nn.Module):
    """A callable (function, exported program) as a module; the callable is not registered
    as a child, so ``eval()``/``train()`` do not reach it (exported programs refuse them)."""

    def __init__(self, fn):
        super().__init__()
        object.__setattr__(self, "fn", fn)

    def forward(self, x):
        return self.fn(x)


def _file_id(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{int(st.st_mtime)}"


def load_feature_net(feature_net: Optional[str] = None, inception: Optional[str] = None, device="cpu") -> Tuple[nn.Module, str]:
    """``(network, identity string)`` from ``--inception WEIGHTS`` or ``--feature-net
    module:callable``; see the module docstring."""
    if (feature_net is None) == (inception is None):
        raise UserError("name exactly one feature network: --inception WEIGHTS (standard FID) or --feature-net module:callable")
    if inception is not None:
        net = load_inception(inception, device=device)
        return net, f"inception-{net.flavour}:{_file_id(Path(inception))}"
    spec = str(feature_net)
    path = Path(spec)
    if path.is_file() or path.suffix.lower() in (".pt2", ".pt", ".pth", ".ts", ".jit"):
        raise UserError(f"--feature-net {spec!r}: network files are not loaded (a .pt2 or TorchScript file can run code when loaded); "
                        f"give module:callable, a function of your own that loads the file you trust (see physgen eval --help)")
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UserError(f"--feature-net {spec!r} is not module:callable (an importable module and a callable in it)")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"--feature-net: cannot import module {module_name!r} ({exc}); is it on PYTHONPATH?") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UserError(f"--feature-net: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    net = obj if isinstance(obj, nn.Module) else obj() if callable(obj) else None
    if net is None:
        raise UserError(f"--feature-net {spec!r} is not callable")
    if not isinstance(net, nn.Module):
        if not callable(net):
            raise UserError(f"--feature-net {spec!r} returned {type(net).__name__}, not a module or callable")
        net = _CallableNet(net)
    return net.to(device).eval(), f"python:{spec}"


def load_images(spec: str, resolution: Optional[int] = None, split: str = "train", limit: Optional[int] = None) -> ImageDataset:
    """A directory of PNGs, an ``.npz`` file, or any dataset spec (``cifar10:PATH``, ...)."""
    path = Path(spec)
    if ":" not in spec or path.exists():
        if path.is_dir():
            spec = f"folder:{spec}"
        elif path.is_file() and path.suffix.lower() == ".npz":
            spec = f"npz:{spec}"
        elif spec != "digits":
            raise UserError(f"{spec!r} is not a directory of PNGs, an .npz file, or a dataset spec (digits, cifar10:PATH, folder:PATH, npz:PATH)")
    data = load_image_dataset(spec, resolution, split=split)
    if limit is not None:
        if limit < 1:
            raise UserError(f"--n must be >= 1, got {limit}")
        data = ImageDataset(data.images[:limit], None if data.labels is None else data.labels[:limit], data.num_classes, data.name, data.class_names)
    return data


def _is_stats_file(ref: str) -> bool:
    return ref.lower().endswith(".npz") and not ref.startswith("npz:")


def default_cache_path(ref: str, split: str, resolution: Optional[int], net_id: str) -> Path:
    """``$PHYSGEN_CACHE/fid/<name>-<hash>.npz`` for a reference dataset and feature net."""
    kind, _, arg = ref.partition(":")
    canon = f"{kind}:{Path(arg).resolve()}" if arg else ref
    key = json.dumps([canon, split, resolution, net_id])
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    base = Path(os.environ.get("PHYSGEN_CACHE", Path.home() / ".cache" / "physgen"))
    return base / "fid" / f"{kind}-{split}-{digest}.npz"


def reference_features(
    ref: str,
    net: nn.Module,
    net_id: str,
    *,
    split: str = "train",
    resolution: Optional[int] = None,
    cache: Union[None, bool, str, os.PathLike] = True,
    batch: int = 250,
    device=None,
) -> Dict[str, Any]:
    """``{"mu", "sigma", "kid_features" (or None), "n", "source"}`` of a reference: a
    statistics ``.npz`` (used as it is), or a dataset whose statistics are computed once and
    cached (``cache=True``: :func:`default_cache_path`; a path; ``False``: no cache)."""
    if _is_stats_file(ref):
        mu, sigma = load_statistics(ref)
        with np.load(ref, allow_pickle=False) as data:
            feats = data["kid_features"] if "kid_features" in data.files else None
            n = int(data["n"]) if "n" in data.files else None
        return {"mu": mu, "sigma": sigma, "kid_features": feats, "n": n, "source": ref}
    path = None if cache is False or cache is None else (default_cache_path(ref, split, resolution, net_id) if cache is True else Path(cache))
    if path is not None and path.is_file():
        out = reference_features(str(path), net, net_id)
        out["source"] = f"{ref} (cached {path})"
        return out
    data = load_images(ref, resolution, split=split)
    feats = extract_features(data, net, batch_size=batch, device=device)
    mu, sigma = feature_statistics(feats)
    rng = np.random.default_rng(0)
    keep = feats if len(feats) <= KID_REF_MAX else feats[np.sort(rng.choice(len(feats), KID_REF_MAX, replace=False))]
    if path is not None:
        save_statistics(path, mu, sigma, kid_features=keep.astype(np.float32), n=len(feats), net=net_id, ref=ref, split=split)
    return {"mu": mu, "sigma": sigma, "kid_features": keep, "n": len(feats), "source": ref + (f" (cached to {path})" if path else "")}


def evaluate_fid(
    samples: str,
    ref: str,
    net: nn.Module,
    net_id: str,
    *,
    split: str = "train",
    resolution: Optional[int] = None,
    cache: Union[None, bool, str, os.PathLike] = True,
    compute_kid: bool = True,
    compute_is: bool = True,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    limit: Optional[int] = None,
    batch: int = 250,
    device=None,
) -> Dict[str, Any]:
    """FID (and KID, IS where possible) of the images in ``samples`` against ``ref``.

    KID needs reference features (a dataset, or a cache/stats file that stores them); IS
    needs class logits (Inception).  A metric that cannot be computed is ``None`` with the
    reason under ``notes``."""
    data = load_images(samples, resolution, limit=limit)
    if len(data) < 2:
        raise UserError(f"need at least 2 samples, found {len(data)} in {samples!r}")
    has_logits = compute_is and hasattr(net, "features_and_logits")
    got = extract_features(data, net, batch_size=batch, device=device, logits=has_logits)
    feats, logits = got if has_logits else (got, None)
    refd = reference_features(ref, net, net_id, split=split, resolution=resolution, cache=cache, batch=batch, device=device)
    mu, sigma = feature_statistics(feats)
    if mu.shape != refd["mu"].shape:
        raise UserError(f"reference statistics have {refd['mu'].shape[0]} features, the network gives {mu.shape[0]}; use statistics of the same network")
    out: Dict[str, Any] = {
        "fid": frechet_distance(mu, sigma, refd["mu"], refd["sigma"]),
        "n_samples": len(data), "n_ref": refd["n"], "samples": samples, "ref": refd["source"], "feature_net": net_id,
        "kid_mean": None, "kid_std": None, "is_mean": None, "is_std": None, "notes": [],
    }
    if not net_id.startswith("inception-fid"):
        out["notes"].append("not the standard FID (features of another network than the pt_inception-2015-12-05 Inception): compare only with runs evaluated the same way")
    if compute_kid:
        if refd["kid_features"] is None:
            out["notes"].append("KID skipped: the reference statistics file stores no features (give the dataset, or statistics written by physgen)")
        else:
            out["kid_mean"], out["kid_std"] = kid(feats, refd["kid_features"], num_subsets=kid_subsets, subset_size=kid_subset_size)
    if compute_is:
        if logits is None:
            out["notes"].append("IS skipped: the feature network gives no class logits (use --inception)")
        else:
            out["is_mean"], out["is_std"] = inception_score(logits, splits=min(10, len(logits)))
    return out


def _image_names(d: Path):
    if not d.is_dir():
        raise UserError(f"{str(d)!r} is not a directory of images")
    return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file() and p.suffix.lower() in (".png", ".jpg", ".jpeg"))


def evaluate_ssim(a: str, b: str, batch: int = 256) -> Dict[str, Any]:
    """SSIM between images of the same name in directories ``a`` and ``b`` (e.g.
    reconstructions and originals); mean, standard deviation, min over pairs."""
    na, nb = _image_names(Path(a)), _image_names(Path(b))
    if na != nb:
        only_a, only_b = sorted(set(na) - set(nb)), sorted(set(nb) - set(na))
        raise UserError(f"--a and --b must hold the same file names ({len(na)} vs {len(nb)} images; only in a: {only_a[:3]}, only in b: {only_b[:3]})")
    if not na:
        raise UserError(f"no images in {a!r}")
    xa, xb = load_images(str(a)).images, load_images(str(b)).images
    if xa.shape != xb.shape:
        raise UserError(f"image shapes differ: {list(xa.shape)} in {a!r}, {list(xb.shape)} in {b!r}")
    values = torch.cat([ssim(xa[i : i + batch], xb[i : i + batch]) for i in range(0, len(xa), batch)]).double()
    return {"ssim_mean": float(values.mean()), "ssim_std": float(values.std()) if len(values) > 1 else 0.0, "ssim_min": float(values.min()), "n": len(values), "a": str(a), "b": str(b)}
