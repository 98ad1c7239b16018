"""Latent datasets: encode images with a KL autoencoder, decode latents back to images.

A latents file is an ``.npz`` that ``npz:PATH`` data loading reads (arrays only; loaded
with ``allow_pickle=False``)::

    x                       float32 [N, c, h, w]   the scaled latents s * z
    y                       int64 [N]              labels (when the dataset has them)
    num_classes             int                    (when labelled)
    latent_scale_factor     float                  s
    latent_mode             str                    "mean" (z = mu) or "sample" (z ~ q(z|x))
    latent_autoencoder      str                    the autoencoder checkpoint's path, as given
    latent_autoencoder_sha256  str                 sha256 of that file's bytes
    latent_image_shape      int [3]                (C, H, W) of the images it decodes to
    latent_dataset          str                    the encoded dataset's name

The scale factor follows LDM (arXiv 2112.10752, Sec. 4.3.2 and App. D.1, ``scale_factor``):
``s = 1 / std(z)`` over every element of the encoded dataset, so the stored latents have
unit variance and a process's noise scales (sigma_max, the prior) mean what they mean on
images.  LDM estimates ``std`` on the first batch; this uses the whole dataset.  Decoding
inverts it: ``x_hat = D(z_stored / s)``.

A run in latent space must decode with the autoencoder that encoded its data:
:func:`check_autoencoder` compares the file's recorded sha256 with the autoencoder's.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, TextIO, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from ..config import parse_float
from ..errors import UserError
from ..images.data import ImageDataset, load_image_dataset
from ..io import atomic_write
from ..nets.autoencoder import Autoencoder
from ..runtime import Progress
from .train import autoencoder_file, load_autoencoder

__all__ = ["LatentInfo", "LATENT_MODES", "file_sha256", "encode_images", "decode_latents", "encode_dataset",
           "read_latent_info", "check_autoencoder"]

LATENT_MODES = ("mean", "sample")
_CHUNK = 1 << 22


@dataclass(frozen=True)
class LatentInfo:
    """What a latents file records about how it was made (module docstring)."""

    path: Path
    scale_factor: float
    mode: str
    autoencoder: str
    autoencoder_sha256: str
    image_shape: Tuple[int, int, int]
    dataset: str
    latent_shape: Tuple[int, int, int]
    count: int


def file_sha256(path: Any) -> str:
    """The hex sha256 of a file's bytes (UserError naming the file if it cannot be read)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise UserError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
    return digest.hexdigest()


@torch.no_grad()
def encode_images(ae: Autoencoder, images: Tensor, *, mode: str = "mean", generator: Optional[torch.Generator] = None,
                  batch: int = 256, log: Optional[TextIO] = None) -> Tensor:
    """Unscaled latents ``z`` of ``images`` ``[N, C, H, W]``: the posterior mean ``mu``
    (``mode="mean"``) or a draw ``mu + sigma eps`` (``"sample"``, from ``generator``);
    progress (rate, ETA) on ``log`` every 20 batches."""
    if mode not in LATENT_MODES:
        raise UserError(f"unknown latent mode {mode!r}; valid: {', '.join(LATENT_MODES)}")
    device = next(ae.parameters()).device
    batches = -(-len(images) // batch)
    progress = Progress(batches, unit="img", every=20, stream=log, enabled=log is not None)
    out = []
    for k, i in enumerate(range(0, len(images), batch)):
        q = ae.encode(images[i:i + batch].to(device, torch.float32))
        out.append((q.mode() if mode == "mean" else q.sample(generator)).cpu())
        progress.update(k + 1, batch)
    return torch.cat(out) if out else torch.empty(0, *ae.spec.latent_shape)


@torch.no_grad()
def decode_latents(ae: Autoencoder, latents: Tensor, scale_factor: float = 1.0, *, batch: int = 256) -> Tensor:
    """Images ``D(latents / scale_factor)`` in ``[-1, 1]`` (clamped), on the CPU."""
    scale_factor = parse_float(scale_factor, "latent scale factor", 0.0, lo_open=True)
    device = next(ae.parameters()).device
    out = [ae.decode(latents[i:i + batch].to(device, torch.float32) / scale_factor).clamp(-1, 1).cpu()
           for i in range(0, len(latents), batch)]
    return torch.cat(out) if out else torch.empty(0, ae.spec.in_channels, ae.spec.resolution, ae.spec.resolution)


def _check_images(ae: Autoencoder, data: ImageDataset, ae_path: Any) -> None:
    spec = ae.spec
    got = tuple(data.images.shape[1:])
    if got != (spec.in_channels, spec.resolution, spec.resolution):
        raise UserError(f"dataset {data.name!r} has images of {got[0]} channel(s) at {got[1]}x{got[2]}; the autoencoder "
                        f"{str(ae_path)!r} takes {spec.in_channels} channel(s) at {spec.resolution}x{spec.resolution}")


def encode_dataset(ae_path: Any, dataset: Union[str, ImageDataset], out: Any, *, mode: str = "mean", seed: int = 0,
                   batch: int = 256, device: Any = "cpu", split: str = "train", log: Optional[TextIO] = None) -> LatentInfo:
    """Encode ``dataset`` (a spec such as ``"digits"``, loaded at the autoencoder's resolution
    (``split``: CIFAR-10's train or test batches), or an :class:`ImageDataset`) with the
    autoencoder at ``ae_path`` into the latents file ``out`` (module docstring; written
    atomically).  ``mode="sample"`` draws from a generator seeded with ``seed``."""
    if mode not in LATENT_MODES:
        raise UserError(f"unknown latent mode {mode!r}; valid: {', '.join(LATENT_MODES)}")
    ae = load_autoencoder(ae_path, device=device)
    sha = file_sha256(autoencoder_file(ae_path))
    data = load_image_dataset(dataset, ae.spec.resolution, split=split) if isinstance(dataset, str) else dataset
    _check_images(ae, data, ae_path)
    if len(data) < 2:
        raise UserError(f"dataset {data.name!r} has {len(data)} image(s); the scale factor needs at least 2")
    gen = torch.Generator(torch.device(device)).manual_seed(int(seed))
    z = encode_images(ae, data.images, mode=mode, generator=gen, batch=batch, log=log)
    std = float(z.double().std())
    if not std > 0:
        raise UserError(f"the latents of {data.name!r} under {str(ae_path)!r} have no spread (std {std}); no scale factor")
    scale = 1.0 / std
    arrays = {
        "x": (z.double() * scale).float().numpy(),
        "latent_scale_factor": np.float64(scale),
        "latent_mode": np.str_(mode),
        "latent_autoencoder": np.str_(str(ae_path)),
        "latent_autoencoder_sha256": np.str_(sha),
        "latent_image_shape": np.asarray([ae.spec.in_channels, ae.spec.resolution, ae.spec.resolution], np.int64),
        "latent_dataset": np.str_(data.name),
    }
    if data.labels is not None:
        arrays["y"] = data.labels.numpy().astype(np.int64)
        arrays["num_classes"] = np.int64(data.num_classes)
    with atomic_write(out) as f:
        np.savez(f, **arrays)
    return read_latent_info(out)


def _scalar(arrays: dict, key: str, path: Path, kind: type) -> Any:
    value = arrays.get(key)
    if value is None or np.ndim(value) != 0:
        raise UserError(f"latents file {str(path)!r} lacks the scalar {key!r}; re-encode it with physgen.latent.encode_dataset")
    value = value.item()
    if not isinstance(value, kind) or (kind is float and not 0 < value < float("inf")):
        raise UserError(f"latents file {str(path)!r}: {key} is {value!r}, not a valid {kind.__name__}")
    return value


def read_latent_info(path: Any) -> LatentInfo:
    """The record of a latents file (one UserError naming the file if it is not one)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as exc:
        raise UserError(f"cannot read latents file {str(path)!r}: {exc}") from None
    if "latent_scale_factor" not in arrays or "x" not in arrays:
        raise UserError(f"{str(path)!r} is not a latents file (no 'latent_scale_factor'); make one with physgen.latent.encode_dataset")
    x, shape = arrays["x"], np.asarray(arrays.get("latent_image_shape", ()))
    if x.ndim != 4 or shape.shape != (3,) or not np.issubdtype(shape.dtype, np.integer):
        raise UserError(f"latents file {str(path)!r}: x must be [N, c, h, w] and latent_image_shape three integers")
    return LatentInfo(path, _scalar(arrays, "latent_scale_factor", path, float), _scalar(arrays, "latent_mode", path, str),
                      _scalar(arrays, "latent_autoencoder", path, str), _scalar(arrays, "latent_autoencoder_sha256", path, str),
                      tuple(int(v) for v in shape), _scalar(arrays, "latent_dataset", path, str), tuple(x.shape[1:]), len(x))


def check_autoencoder(latents: Union[Any, LatentInfo], ae_path: Any) -> None:
    """UserError (one line naming both files) unless the autoencoder at ``ae_path`` is the
    one, byte for byte (sha256), that encoded the latents file."""
    info = latents if isinstance(latents, LatentInfo) else read_latent_info(latents)
    sha = file_sha256(autoencoder_file(ae_path))
    if sha != info.autoencoder_sha256:
        raise UserError(f"latents file {str(info.path)!r} was encoded by autoencoder {info.autoencoder!r} (sha256 "
                        f"{info.autoencoder_sha256[:12]}...), not by {str(ae_path)!r} (sha256 {sha[:12]}...); use that autoencoder or re-encode")
