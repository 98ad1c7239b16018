"""Saving and loading the KL autoencoder of :mod:`physgen.nets.autoencoder` (its training is
``physgen train-autoencoder``: :mod:`physgen.latent.run`, on the shared Trainer).

An autoencoder checkpoint is a :mod:`physgen.checkpoints` file of kind ``"autoencoder"``:
the weights (the EMA's when there is one) and, in the header, the spec that rebuilds the
network; it loads with ``weights_only=True`` and a network larger than the file can hold is
refused before it is allocated.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

import torch

from .. import checkpoints
from ..errors import UserError
from ..nets.autoencoder import Autoencoder, AutoencoderSpec, spec_from_dict

__all__ = ["save_autoencoder", "load_autoencoder", "autoencoder_file", "CHECKPOINT_KIND", "AUTOENCODER_FILE"]

CHECKPOINT_KIND = "autoencoder"
AUTOENCODER_FILE = "autoencoder.pt"  # what a physgen train-autoencoder run folder holds at the end


# --------------------------------------------------------------------------- checkpoints


def save_autoencoder(path: Any, ae: Autoencoder, *, step: int = 0, extra: Optional[Dict[str, Any]] = None) -> Path:
    """Write ``ae`` as a checkpoint of kind ``"autoencoder"`` (atomic; the spec in the header)."""
    state = {k: v.detach().cpu() for k, v in ae.state_dict().items()}
    meta = {"autoencoder": ae.spec.to_dict(), **(extra or {})}
    return checkpoints.write(path, {"model": state}, kind=CHECKPOINT_KIND, step=step, meta=meta)


def _spec_of(header: checkpoints.Header) -> AutoencoderSpec:
    spec = spec_from_dict(header.meta.get("autoencoder"), f"checkpoint {str(header.path)!r}: its autoencoder spec")
    with torch.device("meta"):  # count the weights without allocating them
        n = sum(p.numel() for p in Autoencoder(spec).parameters())
    checkpoints.check_weights_fit(header.path, n, "an autoencoder")
    return spec


def autoencoder_file(path: Any) -> Path:
    """The autoencoder checkpoint ``path`` names: the file itself, or a ``physgen
    train-autoencoder`` run folder's ``autoencoder.pt`` (UserError naming the folder when the
    run has not finished)."""
    p = Path(path)
    if p.is_dir():
        if not (p / AUTOENCODER_FILE).is_file():
            raise UserError(f"{str(p)!r} holds no {AUTOENCODER_FILE} (not a finished physgen train-autoencoder run; resume it with --resume {p})")
        return p / AUTOENCODER_FILE
    return p


def load_autoencoder(path: Any, device: Any = "cpu") -> Autoencoder:
    """The autoencoder saved at ``path`` (eval mode; a run folder: its ``autoencoder.pt``).  A
    file of another kind, a damaged one, or one whose spec or weights do not make an
    autoencoder is one UserError naming it."""
    found = checkpoints.find(autoencoder_file(path), kind=CHECKPOINT_KIND, log=None)
    spec = _spec_of(found.header)
    ckpt = checkpoints.read(found.path, kind=CHECKPOINT_KIND, log=None)
    ae = Autoencoder(spec)
    checkpoints.load_state(ae, ckpt.payload.get("model"), path=found.path, what="autoencoder weights")
    return ae.to(device).eval()
