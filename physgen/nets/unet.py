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
filter of the DDPM++ CIFAR-10 configuration).
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
]

SKIP_SCALE = 1.0 / math.sqrt(2.0)


def _num_groups(channels: int, max_groups: int = 32, min_channels_per_group: int = 4) -> int:
    """Largest group count <= 32 that divides ``channels`` with >= 4 channels per group."""
    groups = max(1, min(max_groups, channels // min_channels_per_group))
    while channels % groups:
        groups -= 1
    return groups


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(_num_groups(channels), channels, eps=1e-6)


def _init(layer: nn.Module, scale: float = 1.0) -> nn.Module:
    """Xavier-uniform weights scaled by ``scale``, zero bias (DDPM/NCSN++ practice)."""
    nn.init.xavier_uniform_(layer.weight)
    with torch.no_grad():
        layer.weight.mul_(scale)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


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
        arg = c.float()[:, None] * self.freqs[None, :]
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
        arg = (2 * math.pi) * c.float()[:, None] * self.freqs[None, :].float()
        return torch.cat([arg.cos(), arg.sin()], dim=1)


class ResBlock(nn.Module):
    """BigGAN-style residual block with embedding conditioning and optional attention.

    ``h = conv(resample(SiLU(GN(x)))) + Linear(e)``; ``h = conv(Dropout(SiLU(GN(h))))``;
    ``x = (h + skip(x)) / sqrt(2)``; then optionally
    ``x = (x + proj(softmax(q k^T / sqrt(d)) v)) / sqrt(2)``
    (DDPM++, arXiv 2011.13456, Appendix H; EDM arXiv 2206.00364, Appendix F.2).
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
    ):
        super().__init__()
        if up and down:
            raise ValueError("a block resamples up or down, not both")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.up = up
        self.down = down
        self.norm0 = _group_norm(in_channels)
        self.conv0 = _init(nn.Conv2d(in_channels, out_channels, 3, padding=1))
        self.affine = _init(nn.Linear(emb_channels, out_channels))
        self.norm1 = _group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv1 = _init(nn.Conv2d(out_channels, out_channels, 3, padding=1), scale=1e-5)
        self.skip: Optional[nn.Module] = None
        if in_channels != out_channels or up or down:
            self.skip = _init(nn.Conv2d(in_channels, out_channels, 1))
        self.num_heads = 0
        if attention:
            self.num_heads = max(1, out_channels // channels_per_head) if channels_per_head else 1
            if out_channels % self.num_heads:
                raise UserError(f"{out_channels} channels do not split into {self.num_heads} heads")
            self.norm2 = _group_norm(out_channels)
            self.qkv = _init(nn.Conv2d(out_channels, out_channels * 3, 1), scale=math.sqrt(0.2))
            self.proj = _init(nn.Conv2d(out_channels, out_channels, 1), scale=1e-5)

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            return F.interpolate(x, scale_factor=2.0, mode="nearest")
        if self.down:
            return F.avg_pool2d(x, 2)
        return x

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv0(self._resample(F.silu(self.norm0(x))))
        h = h + self.affine(emb)[:, :, None, None].to(h.dtype)
        h = self.conv1(self.dropout(F.silu(self.norm1(h))))
        skip = self._resample(x)
        if self.skip is not None:
            skip = self.skip(skip)
        x = (h + skip) * SKIP_SCALE
        if self.num_heads:
            x = (x + self.proj(self._attention(self.qkv(self.norm2(x))))) * SKIP_SCALE
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


class UNet(nn.Module):
    """DDPM++ U-Net ``F(x, c_noise, label) -> same shape as x`` (arXiv 2011.13456 /
    EDM arXiv 2206.00364 "DDPM++" config); see the module docstring for the equations.

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

    ``forward(x [B,C,H,W], c_noise [B], label=None)``: ``label`` is a long tensor ``[B]`` of
    class indices; ``-1`` or ``num_classes`` (= :attr:`null_label`) and ``label=None`` select
    the null (unconditional) embedding for classifier-free guidance.  The output conv is
    zero-initialised, so a fresh network returns zeros.
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
    ):
        super().__init__()
        channel_mult = tuple(int(m) for m in channel_mult)
        attn_resolutions = tuple(int(r) for r in attn_resolutions)
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
            raise UserError(
                f"img_resolution {img_resolution} must be divisible by 2^(levels-1) = {factor} "
                f"for channel_mult={channel_mult}"
            )
        self.img_resolution = int(img_resolution)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.num_classes = int(num_classes)
        self.channel_mult = channel_mult
        self.attn_resolutions = attn_resolutions

        emb_channels = model_channels * channel_mult_emb
        if embedding == "positional":
            self.map_noise: nn.Module = PositionalEmbedding(model_channels)
        elif embedding == "fourier":
            self.map_noise = FourierEmbedding(model_channels, scale=fourier_scale)
        else:
            raise unknown_name("noise embedding", embedding, ["positional", "fourier"])
        self.map_label = nn.Embedding(num_classes + 1, model_channels) if num_classes else None
        self.map_layer0 = _init(nn.Linear(model_channels, emb_channels))
        self.map_layer1 = _init(nn.Linear(emb_channels, emb_channels))

        block = dict(emb_channels=emb_channels, dropout=dropout, channels_per_head=channels_per_head)

        # Encoder: one skip per module, consumed in reverse by the decoder.
        self.enc = nn.ModuleDict()
        self.enc_conv = _init(nn.Conv2d(in_channels, model_channels, 3, padding=1))
        skips = [model_channels]
        cout = model_channels
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            if level > 0:
                self.enc[f"{res}x{res}_down"] = ResBlock(cout, cout, down=True, **block)
                skips.append(cout)
            for idx in range(num_blocks):
                cin, cout = cout, model_channels * mult
                self.enc[f"{res}x{res}_block{idx}"] = ResBlock(
                    cin, cout, attention=res in attn_resolutions, **block
                )
                skips.append(cout)

        # Decoder.
        self.dec = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = img_resolution >> level
            if level == len(channel_mult) - 1:
                self.dec[f"{res}x{res}_in0"] = ResBlock(cout, cout, attention=True, **block)
                self.dec[f"{res}x{res}_in1"] = ResBlock(cout, cout, **block)
            else:
                self.dec[f"{res}x{res}_up"] = ResBlock(cout, cout, up=True, **block)
            for idx in range(num_blocks + 1):
                cin, cout = cout + skips.pop(), model_channels * mult
                self.dec[f"{res}x{res}_block{idx}"] = ResBlock(
                    cin, cout, attention=(idx == num_blocks and res in attn_resolutions), **block
                )
        assert not skips
        self.out_norm = _group_norm(cout)
        self.out_conv = nn.Conv2d(cout, out_channels, 3, padding=1)
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)

    @property
    def null_label(self) -> int:
        """Index of the null (unconditional) class embedding: ``num_classes``."""
        return self.num_classes

    def _embed(self, c_noise: torch.Tensor, label: Optional[torch.Tensor], batch: int) -> torch.Tensor:
        if c_noise.ndim == 0:
            c_noise = c_noise.expand(batch)
        if c_noise.shape != (batch,):
            raise UserError(f"c_noise must have shape [{batch}], got {list(c_noise.shape)}")
        emb = self.map_noise(c_noise)
        if self.map_label is None:
            if label is not None:
                raise UserError("this network is unconditional (num_classes=0) but a label was given")
        else:
            if label is None:
                index = torch.full((batch,), self.null_label, dtype=torch.long, device=c_noise.device)
            else:
                if label.shape != (batch,) or label.is_floating_point():
                    raise UserError(
                        f"label must be an integer tensor of shape [{batch}], got "
                        f"{label.dtype} {list(label.shape)}"
                    )
                index = label.long()
                if index.device.type == "cpu" and bool(((index < -1) | (index > self.num_classes)).any()):
                    raise UserError(
                        f"labels must be in [-1, {self.num_classes}] (-1 and {self.num_classes} = null)"
                    )
                index = torch.where(index < 0, torch.full_like(index, self.null_label), index)
            emb = emb + self.map_label(index).to(emb.dtype)
        emb = F.silu(self.map_layer0(emb))
        return F.silu(self.map_layer1(emb))

    def forward(
        self, x: torch.Tensor, c_noise: torch.Tensor, label: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels or x.shape[-2:] != (
            self.img_resolution,
            self.img_resolution,
        ):
            raise UserError(
                f"UNet expects x of shape [B, {self.in_channels}, {self.img_resolution}, "
                f"{self.img_resolution}], got {list(x.shape)}"
            )
        emb = self._embed(c_noise, label, x.shape[0])
        h = self.enc_conv(x)
        skips = [h]
        for module in self.enc.values():
            h = module(h, emb)
            skips.append(h)
        for name, module in self.dec.items():
            if name.endswith(("_in0", "_in1", "_up")):
                h = module(h, emb)
            else:
                h = module(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out_conv(F.silu(self.out_norm(h)))


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
