"""Neural networks: the toy MLP (:mod:`physgen.nets.mlp`), the DDPM++ U-Net
(:mod:`physgen.nets.unet`) and Inception-v3 for FID / IS (:mod:`physgen.nets.inception`).
Names re-exported here import their submodule lazily, on first use."""
from __future__ import annotations

from typing import Any

_EXPORTS = {
    "MLP": "mlp",
    "UNet": "unet",
    "UNET_PRESETS": "unet",
    "build_unet": "unet",
    "InceptionV3": "inception",
    "load_inception": "inception",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
