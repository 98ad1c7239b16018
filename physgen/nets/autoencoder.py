"""A convolutional KL-regularised autoencoder (LDM's "KL-f" first stage, arXiv 2112.10752).

Written from the paper (Sec. 3.1 and App. G): an encoder ``E`` maps an image
``x in R^{C x H x W}`` to the parameters of a diagonal Gaussian posterior over a latent
``z in R^{c x H/f x W/f}``, a decoder ``D`` maps a latent back to an image::

    (mu, log sigma^2) = E(x),   q(z|x) = N(mu, diag sigma^2),   x_hat = D(z),  z ~ q(z|x)

with ``f = 2^m`` for ``m`` downsampling stages.  Training minimises, per image,

    L(x) = sum_pixels rho(x - x_hat) + beta * KL(q(z|x) || N(0, I))
           [ + lambda * L_adv(D(z)) ]

with ``rho(r) = |r|`` (``"l1"``) or ``r^2`` (``"l2"``), the KL term in closed form
(:meth:`DiagonalGaussian.kl`) and a small ``beta`` (LDM: ``1e-6``) so the latent stays
close to a Gaussian in scale without blurring the reconstruction.  Sums per image, mean
over the batch, as LDM does, so ``beta`` means the same at every resolution.  The optional
adversarial term uses a PatchGAN discriminator (pix2pix, arXiv 1611.07004) with the hinge
loss; it is off by default (``disc_weight = 0``).  Where this differs from LDM's code: no
perceptual (LPIPS) term (it needs downloaded weights) and no learned output log-variance;
the reconstruction is plain L1 or L2; LDM's 1x1 ``quant_conv`` after the encoder is folded
into the encoder's last convolution (a 1x1 convolution after a 3x3 one adds nothing linear).

Blocks follow the paper's architecture (App. G, the VQGAN/DDPM layout): residual blocks of
(GroupNorm, SiLU, 3x3 conv) x 2, a strided 3x3 convolution per downsampling stage, nearest
upsampling + 3x3 convolution per upsampling stage, and a middle of (residual block,
single-head self-attention, residual block) at the latent resolution.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UserError, unknown_name

__all__ = [
    "DiagonalGaussian",
    "AutoencoderSpec",
    "AE_PRESETS",
    "Autoencoder",
    "PatchDiscriminator",
    "build_autoencoder",
    "spec_from_dict",
    "reconstruction_loss",
    "adversarial_loss",
    "discriminator_loss",
    "RECONSTRUCTION_LOSSES",
]

LOGVAR_RANGE = (-30.0, 20.0)  # clamp log sigma^2: exp() neither under- nor overflows in fp32
RECONSTRUCTION_LOSSES = ("l1", "l2")


class DiagonalGaussian:
    """``q = N(mu, diag exp(logvar))`` over tensors ``[B, ...]``.

    ``kl()`` is the closed form against the standard normal, summed over all but the batch axis::

        KL(q || N(0, I)) = 1/2 sum_i (mu_i^2 + sigma_i^2 - 1 - log sigma_i^2)
    """

    def __init__(self, mean: Tensor, logvar: Tensor):
        if mean.shape != logvar.shape:
            raise ValueError(f"mean {list(mean.shape)} and logvar {list(logvar.shape)} differ in shape")
        self.mean = mean
        self.logvar = logvar.clamp(*LOGVAR_RANGE)
        self.std = torch.exp(0.5 * self.logvar)

    @classmethod
    def from_moments(cls, moments: Tensor) -> "DiagonalGaussian":
        """Split ``[B, 2c, h, w]`` along channels into mean and log-variance."""
        mean, logvar = moments.chunk(2, dim=1)
        return cls(mean, logvar)

    def sample(self, generator: Optional[torch.Generator] = None) -> Tensor:
        """``z = mu + sigma * eps``, ``eps ~ N(0, I)`` (reparameterised: gradients reach mu, sigma)."""
        eps = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * eps

    def mode(self) -> Tensor:
        """The posterior mean (= mode) ``mu``."""
        return self.mean

    def kl(self) -> Tensor:
        """``KL(q || N(0, I))`` per batch element, shape ``[B]`` (closed form, class docstring)."""
        terms = self.mean.square() + self.logvar.exp() - 1.0 - self.logvar
        return 0.5 * terms.flatten(1).sum(1)

    def log_prob(self, z: Tensor) -> Tensor:
        """``log q(z)`` per batch element: ``-1/2 sum_i ((z_i - mu_i)^2 / sigma_i^2 + log sigma_i^2 + log 2 pi)``."""
        terms = (z - self.mean).square() / self.logvar.exp() + self.logvar + math.log(2 * math.pi)
        return -0.5 * terms.flatten(1).sum(1)


# --------------------------------------------------------------------------- spec and presets


@dataclass(frozen=True)
class AutoencoderSpec:
    """Everything needed to rebuild an :class:`Autoencoder` (stored in its checkpoint header).

    ``channel_mult`` has one entry per resolution level; ``f = 2^(len(channel_mult) - 1)``.
    """

    in_channels: int = 1
    resolution: int = 16
    latent_channels: int = 4
    width: int = 16
    channel_mult: Tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attention: bool = True

    @property
    def factor(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def latent_shape(self) -> Tuple[int, int, int]:
        side = self.resolution // self.factor
        return (self.latent_channels, side, side)

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["channel_mult"] = list(self.channel_mult)
        return d


AE_PRESETS: Dict[str, AutoencoderSpec] = {
    # digits 16x16 -> 4 x 4 x 4 (f = 4): 64 latent numbers for 256 pixels; width 16 measured enough
    # (benchmarks/latent_digits.py: held-out reconstructions classified as well as the originals)
    "digits": AutoencoderSpec(in_channels=1, resolution=16, latent_channels=4, width=16, channel_mult=(1, 2, 2)),
    # digits 32x32 -> 4 x 8 x 8 (f = 4)
    "digits32": AutoencoderSpec(in_channels=1, resolution=32, latent_channels=4, width=16, channel_mult=(1, 2, 2)),
    # CIFAR-10 32x32x3 -> 4 x 8 x 8 (f = 4), LDM's KL-f4 shape with a narrower trunk
    "cifar10": AutoencoderSpec(in_channels=3, resolution=32, latent_channels=4, width=64, channel_mult=(1, 2, 4), num_res_blocks=2),
}

_LIMITS = {"in_channels": (1, 64), "resolution": (1, 4096), "latent_channels": (1, 256), "width": (8, 1024),
           "num_res_blocks": (1, 8)}


def _check_spec(spec: AutoencoderSpec, where: str) -> AutoencoderSpec:
    for name, (lo, hi) in _LIMITS.items():
        value = getattr(spec, name)
        if type(value) is not int or not lo <= value <= hi:
            raise UserError(f"{where}: {name} must be an integer in {lo}..{hi}, got {value!r}")
    if not spec.channel_mult or len(spec.channel_mult) > 6 or any(type(m) is not int or not 1 <= m <= 16 for m in spec.channel_mult):
        raise UserError(f"{where}: channel_mult must be 1 to 6 integers in 1..16, got {list(spec.channel_mult)!r}")
    if spec.resolution % spec.factor:
        raise UserError(f"{where}: resolution {spec.resolution} is not divisible by f = {spec.factor}")
    if spec.width % 8:
        raise UserError(f"{where}: width must be a multiple of 8 (GroupNorm's 8 groups), got {spec.width}")
    return spec


def spec_from_dict(d: Any, where: str = "autoencoder spec") -> AutoencoderSpec:
    """An :class:`AutoencoderSpec` from a JSON-able dict (a checkpoint header), checked."""
    if not isinstance(d, dict):
        raise UserError(f"{where} must be an object, got {type(d).__name__}")
    names = {f.name for f in fields(AutoencoderSpec)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise UserError(f"{where}: unknown field {unknown[0]!r}; valid: {', '.join(sorted(names))}")
    values = dict(d)
    if "channel_mult" in values:
        if not isinstance(values["channel_mult"], (list, tuple)):
            raise UserError(f"{where}: channel_mult must be a list of integers, got {values['channel_mult']!r}")
        values["channel_mult"] = tuple(values["channel_mult"])
    if "attention" in values and not isinstance(values["attention"], bool):
        raise UserError(f"{where}: attention must be true or false, got {values['attention']!r}")
    return _check_spec(AutoencoderSpec(**values), where)


# --------------------------------------------------------------------------- blocks


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(8, channels, eps=1e-6)


class ResBlock(nn.Module):
    """``h = x' + conv(SiLU(GN(conv(SiLU(GN(x))))))``, ``x'`` a 1x1 projection when widths differ."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2, self.conv2 = _norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Single-head self-attention over the ``h*w`` positions: ``x + W_o softmax(QK^T/sqrt(c)) V``."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(-1, -2).unbind(1)
        a = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        return x + self.out(a.transpose(-1, -2).reshape(b, c, h, w))


def _middle(channels: int, attention: bool) -> nn.Sequential:
    return nn.Sequential(ResBlock(channels, channels), SelfAttention(channels) if attention else nn.Identity(),
                         ResBlock(channels, channels))


class Encoder(nn.Module):
    """``x [B, C, H, W] -> moments [B, 2c, H/f, W/f]`` (mean and log-variance stacked on channels)."""

    def __init__(self, spec: AutoencoderSpec):
        super().__init__()
        widths = [spec.width * m for m in spec.channel_mult]
        self.conv_in = nn.Conv2d(spec.in_channels, widths[0], 3, padding=1)
        layers, c = [], widths[0]
        for level, w in enumerate(widths):
            for _ in range(spec.num_res_blocks):
                layers.append(ResBlock(c, w))
                c = w
            if level < len(widths) - 1:
                layers.append(nn.Conv2d(c, c, 3, stride=2, padding=1))  # halves H and W
        self.down = nn.Sequential(*layers)
        self.mid = _middle(c, spec.attention)
        self.norm_out = _norm(c)
        self.conv_out = nn.Conv2d(c, 2 * spec.latent_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.mid(self.down(self.conv_in(x)))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """``z [B, c, H/f, W/f] -> x_hat [B, C, H, W]`` (the encoder's mirror)."""

    def __init__(self, spec: AutoencoderSpec):
        super().__init__()
        widths = [spec.width * m for m in spec.channel_mult][::-1]
        c = widths[0]
        self.conv_in = nn.Conv2d(spec.latent_channels, c, 3, padding=1)
        self.mid = _middle(c, spec.attention)
        layers = []
        for level, w in enumerate(widths):
            for _ in range(spec.num_res_blocks):
                layers.append(ResBlock(c, w))
                c = w
            if level < len(widths) - 1:
                layers += [nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(c, c, 3, padding=1)]
        self.up = nn.Sequential(*layers)
        self.norm_out = _norm(c)
        self.conv_out = nn.Conv2d(c, spec.in_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.up(self.mid(self.conv_in(z)))
        return self.conv_out(F.silu(self.norm_out(h)))


class Autoencoder(nn.Module):
    """The KL autoencoder (module docstring): ``encode(x) -> DiagonalGaussian``, ``decode(z) -> x_hat``."""

    def __init__(self, spec: AutoencoderSpec):
        super().__init__()
        self.spec = _check_spec(spec, "autoencoder")
        self.encoder = Encoder(spec)
        self.decoder = Decoder(spec)

    def _check_input(self, x: Tensor) -> None:
        want = (self.spec.in_channels, self.spec.resolution, self.spec.resolution)
        if x.ndim != 4 or tuple(x.shape[1:]) != want:
            raise UserError(f"the autoencoder takes images [N, {want[0]}, {want[1]}, {want[2]}], got {list(x.shape)}")

    def encode(self, x: Tensor) -> DiagonalGaussian:
        self._check_input(x)
        return DiagonalGaussian.from_moments(self.encoder(x))

    def decode(self, z: Tensor) -> Tensor:
        if z.ndim != 4 or tuple(z.shape[1:]) != self.spec.latent_shape:
            raise UserError(f"the decoder takes latents [N, {', '.join(map(str, self.spec.latent_shape))}], got {list(z.shape)}")
        return self.decoder(z)

    def forward(self, x: Tensor, generator: Optional[torch.Generator] = None, sample: bool = True) -> Tuple[Tensor, DiagonalGaussian]:
        """``(x_hat, q)``: the reconstruction of a posterior draw (``sample``) or of its mean."""
        q = self.encode(x)
        return self.decode(q.sample(generator) if sample else q.mode()), q


def build_autoencoder(preset: str = "digits", **overrides: Any) -> Autoencoder:
    """An :class:`Autoencoder` from a preset of :data:`AE_PRESETS` with field overrides."""
    if preset not in AE_PRESETS:
        raise unknown_name("autoencoder preset", preset, AE_PRESETS)
    d = {**AE_PRESETS[preset].to_dict(), **overrides}
    return Autoencoder(spec_from_dict(d, f"autoencoder preset {preset!r}"))


# --------------------------------------------------------------------------- discriminator and loss


class PatchDiscriminator(nn.Module):
    """PatchGAN (arXiv 1611.07004): 4x4 convolutions, stride 2, LeakyReLU(0.2); one logit per patch."""

    def __init__(self, in_channels: int, width: int = 32, layers: int = 2):
        super().__init__()
        mods: list = [nn.Conv2d(in_channels, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        c = width
        for _ in range(layers - 1):
            mods += [nn.Conv2d(c, 2 * c, 4, stride=2, padding=1), _norm(2 * c), nn.LeakyReLU(0.2)]
            c *= 2
        mods.append(nn.Conv2d(c, 1, 3, padding=1))
        self.net = nn.Sequential(*mods)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def reconstruction_loss(x: Tensor, x_hat: Tensor, kind: str = "l1") -> Tensor:
    """Per image ``sum_pixels |x - x_hat|`` (``"l1"``) or ``sum_pixels (x - x_hat)^2`` (``"l2"``), shape ``[B]``."""
    if kind not in RECONSTRUCTION_LOSSES:
        raise unknown_name("reconstruction loss", kind, RECONSTRUCTION_LOSSES)
    r = x - x_hat
    return (r.abs() if kind == "l1" else r.square()).flatten(1).sum(1)


def adversarial_loss(discriminator: nn.Module, x_hat: Tensor) -> Tensor:
    """The generator's hinge term per image, ``-mean_patches d(x_hat)``, shape ``[B]``."""
    return -discriminator(x_hat).flatten(1).mean(1)


def discriminator_loss(discriminator: nn.Module, real: Tensor, fake: Tensor) -> Tensor:
    """The hinge loss ``mean(relu(1 - d(x))) + mean(relu(1 + d(x_hat)))`` (``fake`` detached)."""
    return F.relu(1.0 - discriminator(real)).mean() + F.relu(1.0 + discriminator(fake.detach())).mean()
