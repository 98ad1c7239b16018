"""DDPM++ U-Net: the image backbone of score SDEs, EDM and PFGM++.

Architecture of the "DDPM++" network of Song et al., *Score-Based Generative Modeling
through Stochastic Differential Equations* (arXiv 2011.13456), in the configuration
Karras et al. reuse as "DDPM++ / VP" in *Elucidating the Design Space of Diffusion-Based
Generative Models* (EDM, arXiv 2206.00364, Table 7) and that PFGM++ (arXiv 2302.04265)
trains unchanged.  Written here from the papers' descriptions.

Structure (``L = len(channel_mult)`` levels, resolution ``R_l = R / 2^l``)::

    e     = MLP(embed(c_noise) + E[label])           embed: positional or Fourier
    h     = conv3x3(x)                                 encoder, level 0 input
    level l: [down-ResBlock if l > 0]  then num_blocks ResBlocks (+ attention at R_l in attn)
    middle: ResBlock + attention, ResBlock
    level l (reversed): [up-ResBlock if l < L-1] then num_blocks+1 ResBlocks on [h, skip]
                         (attention after the last one at R_l in attn)
    out   = conv3x3(SiLU(GroupNorm(h)))                zero-initialised

Residual blocks, self-attention, the noise embeddings and FIR resampling are in
:mod:`physgen.nets.blocks` (with their equations).

NCSN++ (arXiv 2011.13456, Appendix H; EDM's ``SongUNet`` with ``encoder_type``,
``decoder_type``, ``channel_mult_noise``) adds progressive paths beside the U-Net:

    encoder "residual" (input skip):  at each down level  a = conv3x3_down(a);  h = a = (h + a) / sqrt(2)
    encoder "skip":                   at each down level  a = down(a);          h = h + conv1x1(a)
    decoder "skip" (output skip):     at each level       o = conv3x3(SiLU(GN(h))) + up(o)

with ``a = x`` at the input; ``conv3x3_down`` convolves first (padding widened by the
filter's) and filters with stride 2 after.  ``channel_mult_noise`` widens the noise
embedding (NCSN++: 2).
"""
from __future__ import annotations

import inspect
import math
from typing import Any, Dict, Iterable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..config import check_options
from ..errors import UserError, unknown_name
from .blocks import (BOX_FILTER, FIRDownConv, FourierEmbedding, PositionalEmbedding, ResBlock, _group_norm,
                     _init, check_input, fir_down, fir_filter, fir_up, label_index, noise_input)

__all__ = [
    "UNet",
    "UNET_PRESETS",
    "build_unet",
    "unet_weight_floor",
    "PositionalEmbedding",
    "FourierEmbedding",
    "ResBlock",
    "fir_filter",
    "fir_down",
    "fir_up",
    "FIRDownConv",
    "ENCODER_TYPES",
    "DECODER_TYPES",
]

ENCODER_TYPES = ("standard", "skip", "residual")
DECODER_TYPES = ("standard", "skip")


class UNet(nn.Module):
    """DDPM++ / NCSN++ U-Net ``F(x, c_noise, label) -> same shape as x`` (arXiv 2011.13456;
    EDM arXiv 2206.00364's ``SongUNet``); see the module docstring for the equations.

    Parameters
    ----------
    img_resolution: side of the square input; must be divisible by ``2^(len(channel_mult)-1)``.
    in_channels, out_channels: image channels in and out.
    model_channels: base width; level ``l`` has ``model_channels * channel_mult[l]`` channels.
    num_blocks: residual blocks per level in the encoder (``num_blocks + 1`` in the decoder).
    attn_resolutions: resolutions (absolute, e.g. ``(16,)``) with self-attention.
    dropout: dropout probability inside residual blocks.
    embedding: ``"positional"`` (DDPM++) or ``"fourier"`` (NCSN++) embedding of ``c_noise``.
    num_classes: number of classes (0 = unconditional network, no label input).
    channels_per_head: 0 = one attention head; otherwise heads of this many channels.
    channel_mult_noise: the noise embedding has ``model_channels * channel_mult_noise`` channels.
    resample_filter: FIR filter of the up/down blocks (``(1, 1)``: box; NCSN++ ``(1, 3, 3, 1)``).
    encoder_type: ``standard`` (DDPM++), ``residual`` (NCSN++'s input path) or ``skip``.
    decoder_type: ``standard`` or ``skip`` (an output at every level, summed upwards).

    ``forward(x [B,C,H,W], c_noise [B], label=None)``: ``label`` is a long tensor ``[B]`` of
    class indices; ``-1`` or ``num_classes`` (= :attr:`null_label`) and ``label=None`` select
    the null (unconditional) embedding for classifier-free guidance.  The output conv is
    zero-initialised, so a fresh network returns zeros.  The NCSN++ paths live in ``aux``,
    which standard networks do not have (their state dicts are unchanged).
    """

    def __init__(
        self,
        img_resolution: int,
        in_channels: int,
        out_channels: int,
        model_channels: int = 128,
        channel_mult: Sequence[int] = (2, 2, 2),
        num_blocks: int = 4,
        attn_resolutions: Iterable[int] = (16,),
        dropout: float = 0.1,
        embedding: str = "positional",
        num_classes: int = 0,
        channel_mult_emb: int = 4,
        channels_per_head: int = 0,
        fourier_scale: float = 16.0,
        channel_mult_noise: int = 1,
        resample_filter: Sequence[int] = BOX_FILTER,
        encoder_type: str = "standard",
        decoder_type: str = "standard",
    ):
        super().__init__()
        channel_mult = tuple(int(m) for m in channel_mult)
        _check_config(img_resolution, in_channels, out_channels, model_channels, channel_mult, num_blocks, dropout, num_classes)
        if encoder_type not in ENCODER_TYPES:
            raise unknown_name("encoder_type", encoder_type, ENCODER_TYPES)
        if decoder_type not in DECODER_TYPES:
            raise unknown_name("decoder_type", decoder_type, DECODER_TYPES)
        if channel_mult_noise < 1:
            raise UserError(f"channel_mult_noise must be >= 1, got {channel_mult_noise}")
        self.img_resolution = int(img_resolution)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.num_classes = int(num_classes)
        self.channel_mult = channel_mult
        self.attn_resolutions = tuple(int(r) for r in attn_resolutions)
        self.num_blocks = int(num_blocks)
        self.encoder_type, self.decoder_type = encoder_type, decoder_type
        self.resample_filter = tuple(resample_filter)

        emb_channels = model_channels * channel_mult_emb
        noise_channels = model_channels * channel_mult_noise
        if embedding == "positional":
            self.map_noise: nn.Module = PositionalEmbedding(noise_channels)
        elif embedding == "fourier":
            self.map_noise = FourierEmbedding(noise_channels, scale=fourier_scale)
        else:
            raise unknown_name("noise embedding", embedding, ["positional", "fourier"])
        self.map_label = nn.Embedding(num_classes + 1, noise_channels) if num_classes else None
        self.map_layer0 = _init(nn.Linear(noise_channels, emb_channels))
        self.map_layer1 = _init(nn.Linear(emb_channels, emb_channels))
        block = dict(emb_channels=emb_channels, dropout=dropout, channels_per_head=channels_per_head, resample_filter=resample_filter)
        self.aux = nn.ModuleDict()  # NCSN++'s progressive paths (empty for standard networks: no state)
        skips = self._build_encoder(model_channels, block)
        cout = self._build_decoder(model_channels, block, skips)
        self.out_norm = _group_norm(cout)
        self.out_conv = nn.Conv2d(cout, out_channels, 3, padding=1)
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)
        if not self.box_filter:
            self.register_buffer("kernel", fir_filter(resample_filter), persistent=False)

    @property
    def box_filter(self) -> bool:
        return self.resample_filter == BOX_FILTER

    def _build_encoder(self, model_channels: int, block: dict) -> list:
        """Encoder blocks (one skip per module, consumed in reverse by the decoder) and the
        input path of a residual/skip encoder after each down block; returns the skip widths."""
        self.enc = nn.ModuleDict()
        self.enc_conv = _init(nn.Conv2d(self.in_channels, model_channels, 3, padding=1))
        skips = [model_channels]
        cout, caux = model_channels, self.in_channels
        for level, mult in enumerate(self.channel_mult):
            res = self.img_resolution >> level
            if level > 0:
                self.enc[f"{res}x{res}_down"] = ResBlock(cout, cout, down=True, **block)
                if self.encoder_type == "skip":
                    self.aux[f"{res}x{res}_skip"] = _init(nn.Conv2d(caux, cout, 1))
                elif self.encoder_type == "residual":
                    self.aux[f"{res}x{res}_residual"] = FIRDownConv(caux, cout, self.resample_filter)
                    caux = cout
                skips.append(cout)
            for idx in range(self.num_blocks):
                cin, cout = cout, model_channels * mult
                self.enc[f"{res}x{res}_block{idx}"] = ResBlock(cin, cout, attention=res in self.attn_resolutions, **block)
                skips.append(cout)
        return skips

    def _build_decoder(self, model_channels: int, block: dict, skips: list) -> int:
        """Decoder blocks, and the per-level output heads of a skip decoder; returns the last width."""
        self.dec = nn.ModuleDict()
        cout = skips[-1]
        levels = len(self.channel_mult)
        for level, mult in reversed(list(enumerate(self.channel_mult))):
            res = self.img_resolution >> level
            if level == levels - 1:
                self.dec[f"{res}x{res}_in0"] = ResBlock(cout, cout, attention=True, **block)
                self.dec[f"{res}x{res}_in1"] = ResBlock(cout, cout, **block)
            else:
                self.dec[f"{res}x{res}_up"] = ResBlock(cout, cout, up=True, **block)
            for idx in range(self.num_blocks + 1):
                cin, cout = cout + skips.pop(), model_channels * mult
                self.dec[f"{res}x{res}_block{idx}"] = ResBlock(
                    cin, cout, attention=(idx == self.num_blocks and res in self.attn_resolutions), **block
                )
            if self.decoder_type == "skip" and level > 0:  # level 0's head is out_norm / out_conv
                self.aux[f"{res}x{res}_norm"] = _group_norm(cout)
                self.aux[f"{res}x{res}_conv"] = _init(nn.Conv2d(cout, self.out_channels, 3, padding=1), scale=1e-5)
        assert not skips
        return cout

    @property
    def null_label(self) -> int:
        """Index of the null (unconditional) class embedding: ``num_classes``."""
        return self.num_classes

    def _embed(self, c_noise: torch.Tensor, label: Optional[torch.Tensor], batch: int) -> torch.Tensor:
        c_noise = noise_input(c_noise, batch)
        emb = self.map_noise(c_noise)
        if self.map_label is None:
            if label is not None:
                raise UserError("this network is unconditional (num_classes=0) but a label was given")
        else:
            emb = emb + self.map_label(label_index(label, batch, self.num_classes, c_noise.device)).to(emb.dtype)
        emb = F.silu(self.map_layer0(emb))
        return F.silu(self.map_layer1(emb))

    def _input_path(self, name: str, h: torch.Tensor, a: torch.Tensor) -> tuple:
        """NCSN++'s input path after the down block ``name``: ``(h, a)`` updated."""
        res = name[: -len("_down")]
        if self.encoder_type == "skip":
            a = fir_down(a, self.kernel) if not self.box_filter else F.avg_pool2d(a, 2)
            return h + self.aux[f"{res}_skip"](a), a
        h = a = (h + self.aux[f"{res}_residual"](a)) / math.sqrt(2)
        return h, a

    def _upsample(self, o: torch.Tensor) -> torch.Tensor:
        return F.interpolate(o, scale_factor=2.0, mode="nearest") if self.box_filter else fir_up(o, self.kernel)

    def forward(
        self, x: torch.Tensor, c_noise: torch.Tensor, label: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        check_input(x, self.in_channels, self.img_resolution, "UNet")
        emb = self._embed(c_noise, label, x.shape[0])
        h = self.enc_conv(x)
        skips = [h]
        a = x  # the input path of a residual/skip encoder
        for name, module in self.enc.items():
            h = module(h, emb)
            if self.encoder_type != "standard" and name.endswith("_down"):
                h, a = self._input_path(name, h, a)
            skips.append(h)
        out = None  # the running output of a skip decoder
        last = f"_block{self.num_blocks}"
        for name, module in self.dec.items():
            if name.endswith(("_in0", "_in1", "_up")):
                h = module(h, emb)
            else:
                h = module(torch.cat([h, skips.pop()], dim=1), emb)
            res = name.rsplit("_", 1)[0]
            if name.endswith(last) and f"{res}_conv" in self.aux:
                head = self.aux[f"{res}_conv"](F.silu(self.aux[f"{res}_norm"](h)))
                out = head if out is None else head + self._upsample(out)
        final = self.out_conv(F.silu(self.out_norm(h)))
        return final if out is None else final + self._upsample(out)


def _check_config(img_resolution, in_channels, out_channels, model_channels, channel_mult, num_blocks, dropout, num_classes) -> None:
    if not channel_mult or min(channel_mult) < 1:
        raise UserError(f"channel_mult must be a non-empty list of positive ints, got {channel_mult}")
    if model_channels < 1 or model_channels % 2:
        raise UserError(f"model_channels must be a positive even number, got {model_channels}")
    if num_blocks < 1:
        raise UserError(f"num_blocks must be >= 1, got {num_blocks}")
    if in_channels < 1 or out_channels < 1:
        raise UserError(f"channels must be >= 1, got in={in_channels} out={out_channels}")
    if not 0.0 <= dropout < 1.0:
        raise UserError(f"dropout must be in [0, 1), got {dropout}")
    if num_classes < 0:
        raise UserError(f"num_classes must be >= 0, got {num_classes}")
    factor = 2 ** (len(channel_mult) - 1)
    if img_resolution < factor or img_resolution % factor:
        raise UserError(f"img_resolution {img_resolution} must be divisible by 2^(levels-1) = {factor} for channel_mult={channel_mult}")


UNET_PRESETS: Dict[str, Dict[str, Any]] = {
    # CPU tests and toy runs: ~0.2M parameters.
    "tiny": dict(
        model_channels=16, channel_mult=(1, 2), num_blocks=1, attn_resolutions=(8,), dropout=0.0
    ),
    # Quick experiments on 32x32 data with one GPU: ~7M parameters.
    "small": dict(
        model_channels=64, channel_mult=(1, 2, 2), num_blocks=2, attn_resolutions=(16,), dropout=0.1
    ),
    # DDPM++ CIFAR-10 (arXiv 2011.13456; EDM arXiv 2206.00364 Table 7; PFGM++): ~56M.
    "ddpmpp-cifar10": dict(
        model_channels=128,
        channel_mult=(2, 2, 2),
        num_blocks=4,
        attn_resolutions=(16,),
        dropout=0.13,
        embedding="positional",
    ),
    # DDPM++ at 64x64 as EDM trains FFHQ-64 (dropout 0.05); EDM uses a [1,3,3,1]
    # resampling filter there, this network a box filter.
    "ddpmpp-ffhq64": dict(
        model_channels=128,
        channel_mult=(1, 2, 2, 2),
        num_blocks=4,
        attn_resolutions=(16,),
        dropout=0.05,
        embedding="positional",
    ),
}


def unet_weight_floor(arch: str, channels: int, num_classes: int = 0, **overrides: Any) -> int:
    """A lower bound on the weights of ``build_unet(arch, ..., channels, num_classes, **overrides)``
    without building it (so a checkpoint header that claims a huge network is caught before the
    network is allocated): at the widest level, width ``w``, the encoder's ``num_blocks`` blocks
    hold at least a ``w -> w`` 3x3 convolution each and the decoder's ``num_blocks + 1`` two
    (their input is wider), ``9 w² (3 num_blocks + 2)``; plus the embedding MLP's second layer,
    the input convolution and the label table."""
    if arch not in UNET_PRESETS:
        raise unknown_name("network architecture", arch, UNET_PRESETS)
    defaults = {k: p.default for k, p in inspect.signature(UNet.__init__).parameters.items() if p.default is not p.empty}
    kw = {**defaults, **UNET_PRESETS[arch], **{k: v for k, v in overrides.items() if v is not None}}
    width = int(kw["model_channels"]) * max([int(m) for m in kw["channel_mult"]] or [1])
    emb = int(kw["model_channels"]) * int(kw["channel_mult_emb"])
    labels = (int(num_classes) + 1) * int(kw["model_channels"]) if num_classes else 0
    return 9 * (3 * int(kw["num_blocks"]) + 2) * width**2 + emb**2 + 9 * int(channels) * int(kw["model_channels"]) + labels


def build_unet(
    arch: str, img_resolution: int, channels: int, num_classes: int = 0, **overrides: Any
) -> UNet:
    """A :class:`UNet` from a preset in :data:`UNET_PRESETS` with ``channels`` in and out.

    ``overrides`` replace preset entries (any :class:`UNet` keyword).
    """
    if arch not in UNET_PRESETS:
        raise unknown_name("network architecture", arch, UNET_PRESETS)
    fixed = ("self", "img_resolution", "in_channels", "out_channels", "num_classes")
    overrides = check_options(UNet.__init__, overrides, "UNet", skip=fixed)  # names and value types
    kwargs = {**UNET_PRESETS[arch], **{k: v for k, v in overrides.items() if v is not None}}
    return UNet(
        img_resolution=img_resolution,
        in_channels=channels,
        out_channels=channels,
        num_classes=num_classes,
        **kwargs,
    )
