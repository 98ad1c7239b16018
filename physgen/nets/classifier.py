"""A small noise-conditional CNN classifier (for classifier guidance on images)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .mlp import SinusoidalEmbedding

__all__ = ["ConvClassifierNet"]


class ConvClassifierNet(nn.Module):
    """A small noise-conditional CNN for images: ``F(x_in [B,C,H,W], c_noise [B]) -> logits [B, K]``.

    Two stages of (conv, GroupNorm, noise-embedding shift, SiLU) x 2 at full and half
    resolution (an encoder like the first half of a U-Net), global average pooling, linear.
    """

    def __init__(self, channels: int, num_classes: int, width: int = 32, embed_dim: int = 64):
        super().__init__()
        self.num_classes = int(num_classes)
        self.embed = nn.Sequential(SinusoidalEmbedding(embed_dim), nn.Linear(embed_dim, 2 * width), nn.SiLU())
        widths = [width, width, 2 * width, 2 * width]
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        self.shifts = nn.ModuleList()
        c_in = channels
        for c in widths:
            self.convs.append(nn.Conv2d(c_in, c, 3, padding=1))
            self.norms.append(nn.GroupNorm(min(8, c), c))
            self.shifts.append(nn.Linear(2 * width, c))
            c_in = c
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: Tensor, c_noise: Tensor, label=None) -> Tensor:
        emb = self.embed(c_noise)
        h = x
        for i, (conv, norm, shift) in enumerate(zip(self.convs, self.norms, self.shifts)):
            if i == 2 and min(h.shape[-2:]) >= 4:
                h = F.avg_pool2d(h, 2)
            h = F.silu(norm(conv(h)) + shift(emb)[:, :, None, None])
        return self.head(h.mean((-2, -1)))
