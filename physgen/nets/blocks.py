"""The DDPM++ / NCSN++ U-Net's building blocks (:mod:`physgen.nets.unet` assembles them;
:mod:`physgen.nets.adm` and :mod:`physgen.pretrained.edm` reuse them).  Written here from the
papers' descriptions (arXiv 2011.13456, Appendix H; EDM arXiv 2206.00364, Appendix F.2).

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
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError

__all__ = ["SKIP_SCALE", "BOX_FILTER", "fir_filter", "fir_down", "fir_up", "FIRDownConv", "PositionalEmbedding", "FourierEmbedding",
           "ResBlock", "label_index", "noise_input", "check_input"]

SKIP_SCALE = 1.0 / math.sqrt(2.0)
BOX_FILTER = (1, 1)
"""The ``[1, 1]`` filter: average pooling down, nearest neighbour up (physgen's own presets)."""


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
