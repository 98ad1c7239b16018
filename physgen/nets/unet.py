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

Residual block (BigGAN-style, with timestep/label conditioning ``e``)::

    h = conv3x3(resample(SiLU(GN(x))))
    h = h + Linear(e)[:, :, None, None]
    h = conv3x3(Dropout(SiLU(GN(h))))                  near-zero init
    x = (h + conv1x1(resample(x))) / sqrt(2)           skip scaling 1/sqrt(2)

Self-attention block (single head by default, ``d`` = channels per head)::

    q, k, v = conv1x1(GN(x));   a = softmax(q k^T / sqrt(d)) v
    x = (x + conv1x1(a)) / sqrt(2)

Noise embeddings (``c`` channels, ``c_noise`` a scalar per sample)::

    positional (DDPM++):              [sin(c_noise w_i), cos(c_noise w_i)],  w_i = 10000^(-i/(c/2 - 1))
    Fourier (Tancik et al. 2020):     [cos(2 pi c_noise b_i), sin(2 pi c_noise b_i)], b_i ~ N(0, 16^2)

Class labels use an embedding with ``num_classes + 1`` rows; the last row is the "null"
class used for classifier-free guidance (Ho & Salimans, arXiv 2207.12598): ``label=None``
(or label ``-1`` / ``num_classes``) means unconditional.

Resampling is 2x2 average pooling down and nearest-neighbour up (the ``[1, 1]`` FIR
filter of the DDPM++ CIFAR-10 configuration), or any other separable FIR filter
(``resample_filter``; NCSN++ uses ``[1, 3, 3, 1]``): down ``x <- (f f^T / (sum f)^2) * x``
with stride 2, up the transposed convolution with ``4 f f^T / (sum f)^2``, padding
``(len(f) - 1) // 2`` (Zhang, arXiv 1904.11486; StyleGAN2 / NCSN++ practice).

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

SKIP_SCALE = 1.0 / math.sqrt(2.0)
BOX_FILTER = (1, 1)
"""The ``[1, 1]`` filter: average pooling down, nearest neighbour up (physgen's own presets)."""
ENCODER_TYPES = ("standard", "skip", "residual")
DECODER_TYPES = ("standard", "skip")


def fir_filter(taps: Sequence[int]) -> torch.Tensor:
    """The 2-D resampling kernel ``f f^T / (sum f)^2`` of a 1-D filter, shaped ``[1, 1, k, k]`` (float32)."""
    f = torch.as_tensor([float(t) for t in taps], dtype=torch.float32)
    if f.ndim != 1 or f.numel() < 1 or not bool(torch.isfinite(f).all()) or float(f.sum()) == 0:
        raise UserError(f"resample_filter must be a non-empty list of numbers with a non-zero sum, got {list(taps)}")
    return (torch.outer(f, f) / f.sum().square())[None, None]


def fir_down(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Filter each channel with ``kernel`` and keep every second pixel (``H -> H/2``)."""
    k = kernel.to(x.dtype).tile([x.shape[1], 1, 1, 1])
    return F.conv2d(x, k, groups=x.shape[1], stride=2, padding=(kernel.shape[-1] - 1) // 2)


def fir_up(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Zero-stuff by 2 and filter each channel with ``4 kernel`` (``H -> 2H``)."""
    k = kernel.to(x.dtype).mul(4).tile([x.shape[1], 1, 1, 1])
    return F.conv_transpose2d(x, k, groups=x.shape[1], stride=2, padding=(kernel.shape[-1] - 1) // 2)


class FIRDownConv(nn.Conv2d):
    """``conv3x3`` then FIR downsampling, fused as NCSN++'s residual input path does it: the
    convolution is padded by ``1 + (len(f) - 1)//2`` and the filter runs with stride 2 and no
    padding (so the border differs from filtering first); the bias is added last."""

    def __init__(self, in_channels: int, out_channels: int, taps: Sequence[int]):
        super().__init__(in_channels, out_channels, 3)
        _init(self)
        self.register_buffer("kernel", fir_filter(taps), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = 1 + (self.kernel.shape[-1] - 1) // 2
        x = F.conv2d(x, self.weight.to(x.dtype), padding=pad)
        x = F.conv2d(x, self.kernel.to(x.dtype).tile([x.shape[1], 1, 1, 1]), groups=x.shape[1], stride=2)
        return x + self.bias.to(x.dtype)[None, :, None, None]


def _num_groups(channels: int, max_groups: int = 32, min_channels_per_group: int = 4) -> int:
    """Largest group count <= 32 that divides ``channels`` with >= 4 channels per group."""
    groups = max(1, min(max_groups, channels // min_channels_per_group))
    while channels % groups:
        groups -= 1
    return groups


def _group_norm(channels: int, eps: float = 1e-6) -> nn.GroupNorm:
    return nn.GroupNorm(_num_groups(channels), channels, eps=eps)


def _init(layer: nn.Module, scale: float = 1.0) -> nn.Module:
    """Xavier-uniform weights scaled by ``scale``, zero bias (DDPM/NCSN++ practice)."""
    nn.init.xavier_uniform_(layer.weight)
    with torch.no_grad():
        layer.weight.mul_(scale)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


def _at_least_float32(c: torch.Tensor) -> torch.Tensor:
    """``c`` in float32, or float64 when it is float64 (a float64 network embeds in float64)."""
    return c.to(torch.promote_types(c.dtype, torch.float32))


class PositionalEmbedding(nn.Module):
    """Sinusoidal embedding of a scalar per sample, as DDPM++ uses it.

    ``emb(c) = [sin(c w_0..w_{n/2-1}), cos(c w_0..w_{n/2-1})]`` with
    ``w_i = (1/max_positions)^(i/(n/2 - 1))``: the frequencies run from 1 to exactly
    ``1/max_positions`` (the "endpoint" form).  This is DDPM++'s embedding as written in
    score_sde's ``get_timestep_embedding`` (arXiv 2011.13456, ``log(10000)/(half - 1)``,
    ``[sin, cos]``) and in EDM's ``SongUNet`` (arXiv 2206.00364: ``PositionalEmbedding(...,
    endpoint=True)``, then its halves swapped to ``[sin, cos]``).  The Transformer form
    (Vaswani et al. arXiv 1706.03762; EDM's ``endpoint=False`` default, used by its ADM
    network) divides by ``n/2`` instead, so its lowest frequency stops one step short of
    ``1/max_positions``; ``endpoint=False`` gives that.  The order of the halves only
    permutes the inputs of the first linear layer; the frequencies change what the network
    sees, so weights trained with one form do not carry over to the other.
    """

    def __init__(self, num_channels: int, max_positions: float = 10000.0, endpoint: bool = True):
        super().__init__()
        if num_channels % 2:
            raise UserError(f"embedding channels must be even, got {num_channels}")
        half = num_channels // 2
        denom = max(half - 1, 1) if endpoint else half
        freqs = (1.0 / max_positions) ** (torch.arange(half, dtype=torch.float32) / denom)
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        arg = _at_least_float32(c)[:, None] * self.freqs[None, :]
        return torch.cat([arg.sin(), arg.cos()], dim=1)


class FourierEmbedding(nn.Module):
    """Random Fourier features of a scalar (Tancik et al. arXiv 2006.10739; NCSN++ in
    arXiv 2011.13456, usually applied to ``log sigma``).

    ``emb(c) = [cos(2 pi c b), sin(2 pi c b)]``, ``b ~ N(0, scale^2)`` fixed at
    construction from a fixed seed (stored in the state dict).
    """

    def __init__(self, num_channels: int, scale: float = 16.0, seed: int = 0):
        super().__init__()
        if num_channels % 2:
            raise UserError(f"embedding channels must be even, got {num_channels}")
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("freqs", torch.randn(num_channels // 2, generator=gen) * scale)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        c = _at_least_float32(c)
        arg = (2 * math.pi) * c[:, None] * self.freqs[None, :].to(c.dtype)
        return torch.cat([arg.cos(), arg.sin()], dim=1)


class ResBlock(nn.Module):
    """BigGAN-style residual block with embedding conditioning and optional attention.

    ``h = conv(resample(SiLU(GN(x)))) + Linear(e)``; ``h = conv(Dropout(SiLU(GN(h))))``;
    ``x = (h + skip(x)) / sqrt(2)``; then optionally
    ``x = (x + proj(softmax(q k^T / sqrt(d)) v)) / sqrt(2)``
    (DDPM++, arXiv 2011.13456, Appendix H; EDM arXiv 2206.00364, Appendix F.2).

    ADM's variant (Dhariwal & Nichol, arXiv 2105.05233; :mod:`physgen.nets.adm`) takes
    ``adaptive_scale``: ``(s, b) = Linear(e)``, ``h = SiLU(GN(h) (1 + s) + b)`` in place of
    the added embedding; ``skip_scale = 1``; ``resample_proj=False`` (a resampling block of
    unchanged width resamples its skip without a 1x1 convolution); GroupNorm ``eps = 1e-5``;
    and ``num_heads`` given directly (``0``: no attention).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        emb_channels: int,
        *,
        up: bool = False,
        down: bool = False,
        attention: bool = False,
        dropout: float = 0.0,
        channels_per_head: int = 0,
        resample_filter: Sequence[int] = BOX_FILTER,
        adaptive_scale: bool = False,
        skip_scale: float = SKIP_SCALE,
        eps: float = 1e-6,
        resample_proj: bool = True,
        num_heads: Optional[int] = None,
    ):
        super().__init__()
        if up and down:
            raise ValueError("a block resamples up or down, not both")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.up = up
        self.down = down
        self.adaptive_scale = bool(adaptive_scale)
        self.skip_scale = float(skip_scale)
        self.box = tuple(resample_filter) == BOX_FILTER
        if not self.box:  # a fixed filter, rebuilt from the configuration (not in the state dict)
            self.register_buffer("kernel", fir_filter(resample_filter), persistent=False)
        self.norm0 = _group_norm(in_channels, eps)
        self.conv0 = _init(nn.Conv2d(in_channels, out_channels, 3, padding=1))
        self.affine = _init(nn.Linear(emb_channels, out_channels * (2 if adaptive_scale else 1)))
        self.norm1 = _group_norm(out_channels, eps)
        self.dropout = nn.Dropout(dropout)
        self.conv1 = _init(nn.Conv2d(out_channels, out_channels, 3, padding=1), scale=1e-5)
        self.skip: Optional[nn.Module] = None
        if in_channels != out_channels or ((up or down) and resample_proj):
            self.skip = _init(nn.Conv2d(in_channels, out_channels, 1))
        self.num_heads = 0
        if attention:
            if num_heads is None:
                num_heads = max(1, out_channels // channels_per_head) if channels_per_head else 1
            self.num_heads = int(num_heads)
        if self.num_heads:
            if out_channels % self.num_heads:
                raise UserError(f"{out_channels} channels do not split into {self.num_heads} heads")
            self.norm2 = _group_norm(out_channels, eps)
            self.qkv = _init(nn.Conv2d(out_channels, out_channels * 3, 1), scale=math.sqrt(0.2))
            self.proj = _init(nn.Conv2d(out_channels, out_channels, 1), scale=1e-5)

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            return F.interpolate(x, scale_factor=2.0, mode="nearest") if self.box else fir_up(x, self.kernel)
        if self.down:
            return F.avg_pool2d(x, 2) if self.box else fir_down(x, self.kernel)
        return x

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv0(self._resample(F.silu(self.norm0(x))))
        params = self.affine(emb)[:, :, None, None].to(h.dtype)
        if self.adaptive_scale:
            scale, shift = params.chunk(2, dim=1)
            h = F.silu(torch.addcmul(shift, self.norm1(h), scale + 1))
        else:
            h = F.silu(self.norm1(h + params))
        h = self.conv1(self.dropout(h))
        skip = self._resample(x)
        if self.skip is not None:
            skip = self.skip(skip)
        x = (h + skip) * self.skip_scale
        if self.num_heads:
            x = (x + self.proj(self._attention(self.qkv(self.norm2(x))))) * self.skip_scale
        return x

    def _attention(self, qkv: torch.Tensor) -> torch.Tensor:
        """``softmax(q k^T / sqrt(d)) v`` per head, from the ``[B, 3 n c, H, W]`` projections.

        The fused kernels of ``scaled_dot_product_attention`` want each head's channels
        contiguous (stride 1 on the last dim of ``[B, n, HW, c]``).  Pixels-major
        ``[B, H, W, 3nc]`` gives exactly that after a view: it is free under channels_last
        and one copy otherwise (instead of three strided q/k/v that the kernel would copy
        or take a slower path on).  The result goes back in the same layout.
        """
        b, _, height, width = qkv.shape
        n = self.num_heads
        c = self.out_channels // n
        # .contiguous(): a plain reshape of the NCHW permute would be a view with channel stride H*W
        tokens = qkv.permute(0, 2, 3, 1).contiguous().reshape(b, height * width, 3, n, c)
        q, k, v = tokens.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, n, HW, c], channels contiguous
        a = F.scaled_dot_product_attention(q, k, v)
        return a.transpose(1, 2).reshape(b, height, width, n * c).permute(0, 3, 1, 2)


def label_index(label: Optional[torch.Tensor], batch: int, num_classes: int, device) -> torch.Tensor:
    """Class indices ``[batch]`` for an embedding with a null row ``num_classes``: ``None``,
    ``-1`` and ``num_classes`` select the null row (classifier-free guidance's unconditional)."""
    if label is None:
        return torch.full((batch,), num_classes, dtype=torch.long, device=device)
    if label.shape != (batch,) or label.is_floating_point():
        raise UserError(f"label must be an integer tensor of shape [{batch}], got {label.dtype} {list(label.shape)}")
    index = label.long()
    if index.device.type == "cpu" and bool(((index < -1) | (index > num_classes)).any()):
        raise UserError(f"labels must be in [-1, {num_classes}] (-1 and {num_classes} = null)")
    return torch.where(index < 0, torch.full_like(index, num_classes), index)


def noise_input(c_noise: torch.Tensor, batch: int) -> torch.Tensor:
    """``c_noise`` as ``[batch]`` (a scalar is broadcast)."""
    if c_noise.ndim == 0:
        c_noise = c_noise.expand(batch)
    if c_noise.shape != (batch,):
        raise UserError(f"c_noise must have shape [{batch}], got {list(c_noise.shape)}")
    return c_noise


def check_input(x: torch.Tensor, channels: int, resolution: int, what: str) -> None:
    if x.ndim != 4 or x.shape[1] != channels or x.shape[-2:] != (resolution, resolution):
        raise UserError(f"{what} expects x of shape [B, {channels}, {resolution}, {resolution}], got {list(x.shape)}")


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
