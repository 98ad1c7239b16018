"""Training and sampling any process in an autoencoder's latent space (``physgen train
--latent AE``, LDM arXiv 2112.10752): the latent dataset, the record a run keeps of its
autoencoder, and the decoder its samples go through.

A latent run trains on ``s * z`` with ``z`` the posterior means of the images under the
autoencoder and ``s = 1 / std(z)`` (:mod:`physgen.latent.encode`), either encoded here on
the fly from an image dataset (loaded at the autoencoder's resolution) or read from a
latents file made by ``physgen encode`` (``--dataset npz:LATENTS``), whose recorded
autoencoder must be the one given.  The process sees only the latents: its data dimension
``N`` is the latent dimension ``c * h/f * w/f`` (so PFGM++'s ``D`` means ``D`` extra
dimensions over ``N = c h w / f^2``, not over the pixels: the ratio ``D / N`` that sets
how far PFGM++ is from diffusion grows ``f^2 C / c`` times at the same ``D``).

The run records :func:`latent_record` (the autoencoder's path as given, its sha256, the
scale factor, the image shape) in its checkpoints; :func:`latent_decoder` rebuilds the
decoder from it and refuses an autoencoder whose bytes differ (a re-trained or replaced
file would decode the samples into something else, silently).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Optional, TextIO, Tuple

import numpy as np
import torch
from torch import Tensor

from ..config import parse_float
from ..errors import UserError
from ..images.data import ImageDataset, load_image_dataset
from .encode import check_autoencoder, decode_latents, encode_images, file_sha256, read_latent_info
from .train import autoencoder_file, load_autoencoder

__all__ = ["latent_dataset", "latent_record", "latent_decoder", "check_latent_record"]


def _is_latents_file(spec: str) -> bool:
    kind, sep, path = spec.partition(":")
    if kind != "npz" or not sep or not Path(path).is_file():
        return False
    try:
        with np.load(path, allow_pickle=False) as data:
            return "latent_scale_factor" in data.files
    except Exception:  # not an npz at all: the image loader says so
        return False


def latent_record(ae_path: Any, scale_factor: float, image_shape, source: str) -> Dict[str, Any]:
    """What a latent run keeps of its autoencoder (module docstring)."""
    return {"autoencoder": str(ae_path), "sha256": file_sha256(autoencoder_file(ae_path)), "scale_factor": float(scale_factor),
            "image_shape": [int(v) for v in image_shape], "source": source}


def latent_dataset(ae_path: Any, dataset: str, *, device: Any = "cpu", log: Optional[TextIO] = None) -> Tuple[ImageDataset, Dict[str, Any]]:
    """The latents a run on ``dataset`` trains on and the run's :func:`latent_record`.

    ``dataset``: a latents file (``npz:`` from ``physgen encode``, made by this autoencoder)
    or an image dataset spec, encoded here to its scaled posterior means."""
    ae = load_autoencoder(ae_path, device=device)
    image_shape = (ae.spec.in_channels, ae.spec.resolution, ae.spec.resolution)
    if _is_latents_file(dataset):
        path = dataset.partition(":")[2]
        info = read_latent_info(path)
        check_autoencoder(info, ae_path)
        return load_image_dataset(dataset), latent_record(ae_path, info.scale_factor, image_shape, f"file {path}")
    images = load_image_dataset(dataset, ae.spec.resolution)
    got = tuple(images.images.shape[1:])
    if got != image_shape:
        raise UserError(f"dataset {images.name!r} has images of {got[0]} channel(s) at {got[1]}x{got[2]}; the autoencoder "
                        f"{str(ae_path)!r} takes {image_shape[0]} channel(s) at {image_shape[1]}x{image_shape[2]}")
    z = encode_images(ae, images.images, mode="mean", log=log).double()
    std = float(z.std())
    if not std > 0:
        raise UserError(f"the latents of {images.name!r} under {str(ae_path)!r} have no spread (std {std}); no scale factor")
    latents = ImageDataset((z / std).float(), images.labels, images.num_classes, f"{images.name} in the latents of {ae_path}",
                           images.class_names)
    return latents, latent_record(ae_path, 1.0 / std, image_shape, f"encoded {images.name}")


def check_latent_record(record: Any, ae_path: Any, where: str) -> None:
    """UserError (one line) unless ``ae_path`` is byte for byte the autoencoder ``record`` names."""
    if not isinstance(record, dict) or not isinstance(record.get("sha256"), str):
        raise UserError(f"{where}: its latent record is missing or damaged (no autoencoder checksum)")
    sha = file_sha256(autoencoder_file(ae_path))
    if sha != record["sha256"]:
        raise UserError(f"{where} was trained in the latent space of autoencoder {record.get('autoencoder')!r} (sha256 "
                        f"{record['sha256'][:12]}...), not of {str(ae_path)!r} (sha256 {sha[:12]}...); give that autoencoder")


def latent_decoder(record: Dict[str, Any], where: str, *, ae_path: Any = None, device: Any = "cpu") -> Callable[[Tensor], Tensor]:
    """``decode(latents) -> images in [-1, 1]`` for a run's ``record`` (the recorded autoencoder,
    or ``ae_path`` when the file moved; either must match the recorded checksum)."""
    path = ae_path if ae_path is not None else record.get("autoencoder") if isinstance(record, dict) else None
    if path is None:
        raise UserError(f"{where}: its latent record names no autoencoder")
    check_latent_record(record, path, where)
    ae = load_autoencoder(path, device=device)
    scale = parse_float(record.get("scale_factor"), f"{where}: its latent record's scale_factor", 0.0, lo_open=True)
    return lambda z: decode_latents(ae, z, scale).to(z.device)
