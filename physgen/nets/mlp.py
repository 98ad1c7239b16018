"""The toy network: an MLP conditioned on the noise level (and optionally a class label).

``F(x_in, c_noise, label)``: the scalar ``c_noise`` is embedded with sinusoidal features
at geometric frequencies (Transformer positional encoding, arXiv 1706.03762, as used by
DDPM for time) followed by a small MLP; the embedding is added to every hidden layer
(residual blocks with SiLU).  The embedding spreads its input by 100 (below), so it is
designed for an O(1) ``c_noise`` such as EDM's ``ln(σ)/4``; a process that feeds another
range (VP's ``ε`` preconditioning feeds DDPM's ``999 t``) is divided by ``c_noise_unit``
first (:func:`physgen.fields.neural.c_noise_unit`): fed ``999 t`` raw, even the slowest
feature turns 10 radians over ``t ∈ [0, 1]``, and the toy VP run left 0.01-0.04% of its samples
2.4-4.4 away from the moons (benchmarks/RESULTS.md, "The demo's recipe").  A label embedding with one extra "null" index (=
``num_classes``) supports classifier-free guidance; ``label=None`` means null.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

__all__ = ["MLP", "SinusoidalEmbedding", "mlp_weight_floor"]


def mlp_weight_floor(dim: int, hidden: int, depth: int, embed_dim: int = 64, num_classes: int = 0, out_dim: Optional[int] = None) -> int:
    """The weight matrices of ``MLP(dim, hidden, depth, embed_dim, num_classes, out_dim)`` (biases
    left out: a lower bound), without building it."""
    labels = (int(num_classes) + 1) * int(hidden) if num_classes else 0
    out = int(dim) if out_dim is None else int(out_dim)
    return int(hidden) * (2 * int(depth) * int(hidden) + int(hidden) + int(embed_dim) + int(dim) + out) + labels


class SinusoidalEmbedding(nn.Module):
    def __init__(self, dim: int, max_period: float = 10_000.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"embedding dim must be even, got {dim}")
        freqs = torch.exp(-math.log(max_period) * torch.arange(dim // 2) / (dim // 2))
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, c: Tensor) -> Tensor:
        angle = c.to(self.freqs.dtype)[:, None] * self.freqs[None, :] * 100.0  # c_noise is O(1): spread it
        return torch.cat([angle.cos(), angle.sin()], dim=1)


class MLP(nn.Module):
    def __init__(
        self,
        dim: int,
        hidden: int = 256,
        depth: int = 3,
        embed_dim: int = 64,
        num_classes: int = 0,
        out_dim: Optional[int] = None,
        c_noise_unit: float = 1.0,
    ):
        super().__init__()
        if dim <= 0 or hidden <= 0 or depth <= 0:
            raise ValueError(f"MLP sizes must be positive, got dim={dim}, hidden={hidden}, depth={depth}")
        if not (math.isfinite(c_noise_unit) and c_noise_unit > 0):
            raise ValueError(f"c_noise_unit must be positive and finite, got {c_noise_unit}")
        self.dim, self.num_classes, self.c_noise_unit = dim, num_classes, float(c_noise_unit)
        self.out_dim = out_dim or dim
        self.embed = nn.Sequential(SinusoidalEmbedding(embed_dim), nn.Linear(embed_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.label_embed = nn.Embedding(num_classes + 1, hidden) if num_classes > 0 else None
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList([nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden)) for _ in range(depth)])
        self.emb_proj = nn.ModuleList([nn.Linear(hidden, hidden) for _ in range(depth)])
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, self.out_dim))
        nn.init.zeros_(self.out[1].weight)
        nn.init.zeros_(self.out[1].bias)

    def forward(self, x: Tensor, c_noise: Tensor, label: Optional[Tensor] = None) -> Tensor:
        shape = x.shape
        emb = self.embed(c_noise / self.c_noise_unit)
        if self.label_embed is not None:
            if label is None:
                label = torch.full((x.shape[0],), self.num_classes, device=x.device, dtype=torch.long)
            emb = emb + self.label_embed(label)
        h = self.inp(x.reshape(shape[0], -1))
        for block, proj in zip(self.blocks, self.emb_proj):
            h = h + block(h + proj(emb))
        out = self.out(h)
        return out.reshape(shape) if self.out_dim == self.dim else out

    def spec(self) -> dict:
        """The sizes that rebuild this network (a toy checkpoint's ``meta.toy.net``)."""
        return {"kind": "mlp", "dim": int(self.dim), "hidden": int(self.inp.out_features), "depth": len(self.blocks),
                "embed_dim": int(self.embed[0].freqs.numel() * 2), "num_classes": int(self.num_classes), "out_dim": int(self.out_dim),
                "c_noise_unit": float(self.c_noise_unit)}
