"""ADM U-Net (Dhariwal & Nichol, *Diffusion Models Beat GANs on Image Synthesis*, arXiv
2105.05233) in the form EDM retrains it on ImageNet-64 (``DhariwalUNet``, arXiv 2206.00364,
Appendix F.2).  Written from the papers' descriptions, with :class:`physgen.nets.unet.ResBlock`.

What differs from DDPM++ (:class:`physgen.nets.unet.UNet`)::

    e   = SiLU(MLP(embed(c_noise)) + E[label])      positional embedding, Transformer form
                                                    (lowest frequency 1/10000^((n/2-1)/(n/2)));
                                                    the label enters after the MLP, no bias
    h   = conv3x3(x) to model_channels * channel_mult[0]
    block: (s, b) = Linear(e);  h = conv(Dropout(SiLU(GN(conv(resample(SiLU(GN(x))))) (1+s) + b)))
           x = h + skip(x)                          adaptive group norm, skip scale 1, the skip of
                                                    a resampling block is the resampled input
    attention with heads of 64 channels (none below 64) after every block at the listed
    resolutions, in the encoder and the decoder; group norms with eps = 1e-5.
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from .blocks import BOX_FILTER, PositionalEmbedding, ResBlock, _group_norm, _init, check_input, label_index, noise_input
from .unet import _check_config

__all__ = ["ADMUNet"]


class ADMUNet(nn.Module):
    """ADM's U-Net ``F(x, c_noise, label) -> [B, out_channels, H, W]`` (see the module docstring).

    ``label``: integer classes ``[B]``, ``-1`` / ``num_classes`` / ``None`` the null class (its
    embedding row; a network converted from EDM, whose labels are one-hot vectors with the
    all-zero vector as "no class", has a zero null row).
    """

    def __init__(
        self,
        img_resolution: int,
        in_channels: int,
        out_channels: int,
        model_channels: int = 192,
        channel_mult: Sequence[int] = (1, 2, 3, 4),
        num_blocks: int = 3,
        attn_resolutions: Iterable[int] = (32, 16, 8),
        dropout: float = 0.1,
        num_classes: int = 0,
        channel_mult_emb: int = 4,
        channels_per_head: int = 64,
        resample_filter: Sequence[int] = BOX_FILTER,
    ):
        super().__init__()
        channel_mult = tuple(int(m) for m in channel_mult)
        _check_config(img_resolution, in_channels, out_channels, model_channels, channel_mult, num_blocks, dropout, num_classes)
        if channels_per_head < 1:
            raise UserError(f"channels_per_head must be >= 1, got {channels_per_head}")
        self.img_resolution, self.in_channels, self.out_channels = int(img_resolution), int(in_channels), int(out_channels)
        self.num_classes = int(num_classes)
        attn = tuple(int(r) for r in attn_resolutions)
        emb_channels = model_channels * channel_mult_emb
        self.map_noise = PositionalEmbedding(model_channels, endpoint=False)
        self.map_layer0 = _init(nn.Linear(model_channels, emb_channels))
        self.map_layer1 = _init(nn.Linear(emb_channels, emb_channels))
        self.map_label = nn.Embedding(num_classes + 1, emb_channels) if num_classes else None
        block = dict(emb_channels=emb_channels, dropout=dropout, resample_filter=resample_filter, adaptive_scale=True, skip_scale=1.0,
                     eps=1e-5, resample_proj=False)

        def heads(channels: int, attention: bool) -> int:
            return channels // channels_per_head if attention else 0

        self.enc = nn.ModuleDict()
        cout = model_channels * channel_mult[0]
        self.enc_conv = _init(nn.Conv2d(in_channels, cout, 3, padding=1))
        skips = [cout]
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            if level > 0:
                self.enc[f"{res}x{res}_down"] = ResBlock(cout, cout, down=True, num_heads=0, **block)
                skips.append(cout)
            for idx in range(num_blocks):
                cin, cout = cout, model_channels * mult
                self.enc[f"{res}x{res}_block{idx}"] = ResBlock(cin, cout, attention=True, num_heads=heads(cout, res in attn), **block)
                skips.append(cout)
        self.dec = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = img_resolution >> level
            if level == len(channel_mult) - 1:
                self.dec[f"{res}x{res}_in0"] = ResBlock(cout, cout, attention=True, num_heads=heads(cout, True), **block)
                self.dec[f"{res}x{res}_in1"] = ResBlock(cout, cout, num_heads=0, **block)
            else:
                self.dec[f"{res}x{res}_up"] = ResBlock(cout, cout, up=True, num_heads=0, **block)
            for idx in range(num_blocks + 1):
                cin, cout = cout + skips.pop(), model_channels * mult
                self.dec[f"{res}x{res}_block{idx}"] = ResBlock(cin, cout, attention=True, num_heads=heads(cout, res in attn), **block)
        self.out_norm = _group_norm(cout, eps=1e-5)
        self.out_conv = nn.Conv2d(cout, out_channels, 3, padding=1)
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)

    @property
    def null_label(self) -> int:
        """Index of the null class's embedding row: ``num_classes``."""
        return self.num_classes

    def _embed(self, c_noise: torch.Tensor, label: Optional[torch.Tensor], batch: int) -> torch.Tensor:
        c_noise = noise_input(c_noise, batch)
        emb = self.map_layer1(F.silu(self.map_layer0(self.map_noise(c_noise))))
        if self.map_label is not None:
            emb = emb + self.map_label(label_index(label, batch, self.num_classes, c_noise.device)).to(emb.dtype)
        elif label is not None:
            raise UserError("this network is unconditional (num_classes=0) but a label was given")
        return F.silu(emb)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, label: Optional[torch.Tensor] = None) -> torch.Tensor:
        check_input(x, self.in_channels, self.img_resolution, "ADMUNet")
        emb = self._embed(c_noise, label, x.shape[0])
        h = self.enc_conv(x)
        skips = [h]
        for module in self.enc.values():
            h = module(h, emb)
            skips.append(h)
        for name, module in self.dec.items():
            h = module(h if name.endswith(("_in0", "_in1", "_up")) else torch.cat([h, skips.pop()], dim=1), emb)
        return self.out_conv(F.silu(self.out_norm(h)))
