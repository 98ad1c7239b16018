"""Inpainting in a latent space (Blended Latent Diffusion, arXiv 2206.02779, Sec. 3), with the
editing of :mod:`physgen.editing` applied to the latent field.

Given an image ``x`` and a pixel mask ``m`` (1 = keep), the known latent is the scaled posterior
mean ``s * mu(x)`` and the latent mask is ``m`` downsampled to the latent grid: a latent cell is
kept only when every pixel of its ``f x f`` block is kept (a min-pool; the paper resizes the
mask, which can keep a cell that covers pixels to regenerate).  :func:`physgen.editing.inpaint`
fills the other cells with the latent field; the result is decoded and, as the paper's final
blend, the kept pixels are copied back from ``x``::

    z = inpaint(s mu(x), m_latent),   x_out = m * x + (1 - m) * D(z / s)
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from solvers.base import Solution

from ..editing import check_mask, inpaint
from ..nets.autoencoder import Autoencoder
from .encode import decode_latents

__all__ = ["latent_mask", "latent_inpaint"]


def latent_mask(mask: Tensor, factor: int) -> Tensor:
    """The pixel mask ``[C or 1, H, W]`` (1 = keep) on the latent grid ``[1, H/f, W/f]``: a cell is
    kept when all its ``f x f`` pixels (of every channel) are."""
    m = torch.as_tensor(mask).float().amin(0, keepdim=True)
    return (-F.max_pool2d(-m[None], factor))[0] > 0.5


def latent_inpaint(process, field, ae: Autoencoder, scale_factor: float, images: Tensor, mask, **options: Any) -> Solution:
    """Inpaint ``images [B, C, H, W]`` where ``mask`` is 0 in the latent space of ``ae`` (module
    docstring) with the latent run's ``process`` and ``field``; ``options`` go to
    :func:`physgen.editing.inpaint` (method, steps, seed, jumps, ...).  Returns the latent solve's
    :class:`~solvers.base.Solution` with ``x`` the blended images (its NFE are the latent field's)."""
    pixel = check_mask(mask, images.shape[1:])
    with torch.no_grad():
        known = ae.encode(images.float()).mode() * scale_factor
    cells = latent_mask(pixel, ae.spec.factor).expand(known.shape[1:])
    sol = inpaint(process, field, known, cells, **options)
    x = torch.where(pixel.to(images.device), images, decode_latents(ae, sol.x, scale_factor).to(images.device))
    return Solution(x, sol.stats)
