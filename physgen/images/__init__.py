"""Image data and image metrics: offline datasets, sampler and PNG writers
(:mod:`physgen.images.data`), FID / KID / IS / SSIM (:mod:`physgen.images.metrics`).

Imported on demand (they pull in processes and solvers): image training runs and
checkpoints (:mod:`physgen.images.train`), sharded per-sample-seeded generation
(:mod:`physgen.images.generate`), evaluation with Inception or any feature network
(:mod:`physgen.images.evaluate`) and a digit-classifier judge (:mod:`physgen.images.quality`)."""
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
