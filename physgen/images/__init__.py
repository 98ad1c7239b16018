"""Image data and image metrics: offline datasets, sampler and PNG writers
(:mod:`physgen.images.data`), FID / KID / IS / SSIM (:mod:`physgen.images.metrics`)."""
from __future__ import annotations

from .data import (
    DATASET_FORMS,
    ImageDataset,
    ImageSampler,
    load_image_dataset,
    save_image_grid,
    save_pngs,
    to_uint8,
)
from .metrics import (
    compute_fid,
    extract_features,
    feature_statistics,
    fid_from_features,
    frechet_distance,
    inception_score,
    kid,
    load_statistics,
    reference_statistics,
    save_statistics,
    ssim,
)

__all__ = [
    "DATASET_FORMS",
    "ImageDataset",
    "ImageSampler",
    "load_image_dataset",
    "save_image_grid",
    "save_pngs",
    "to_uint8",
    "compute_fid",
    "extract_features",
    "feature_statistics",
    "fid_from_features",
    "frechet_distance",
    "inception_score",
    "kid",
    "load_statistics",
    "reference_statistics",
    "save_statistics",
    "ssim",
]
