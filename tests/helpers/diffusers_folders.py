"""Tiny random diffusers ``UNet2DModel`` folders (``save_pretrained`` + a ``DDPMScheduler`` config),
for the tests and the audit of physgen.pretrained.  Needs the optional diffusers package: callers
skip (``pytest.importorskip("diffusers")``) without it."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

__all__ = ["tiny_unet2d"]


def tiny_unet2d(folder, prediction_type: str = "epsilon", beta_schedule: str = "linear", *, num_classes: Optional[int] = None,
                seed: int = 0, pipeline: bool = False, T: int = 1000, width: int = 16):
    """Write a 3x8x8 ``UNet2DModel`` (one plain and one attention block, widths ``width``, ``2 width``)
    with perturbed weights and its scheduler config to ``folder`` (flat, or ``unet/`` + ``scheduler/``
    with ``pipeline``); returns the model (eval mode)."""
    import diffusers  # optional heavy dependency: only the tests that need a diffusers folder import it

    torch.manual_seed(seed)
    model = diffusers.UNet2DModel(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(width, 2 * width),
                                  down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                                  norm_num_groups=8, num_class_embeds=num_classes)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))  # untrained output layers are zero: make the output depend on every weight
    folder = Path(folder)
    model.save_pretrained(folder / "unet" if pipeline else folder, safe_serialization=True)
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=T, beta_schedule=beta_schedule, prediction_type=prediction_type)
    scheduler.save_pretrained(folder / "scheduler" if pipeline else folder)
    return model.eval()
