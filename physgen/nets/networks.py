"""The networks ``physgen train`` can put under a process's preconditioning, by ``--arch`` name.

Two families share one spec ``{arch, img_resolution, channels, num_classes, overrides}`` (a
training checkpoint's ``meta.image.unet``, named so before the MLP joined):

* the DDPM++ / NCSN++ U-Nets of :mod:`physgen.nets.unet` (``tiny``, ``small``, ``ddpmpp-cifar10``,
  ...): convolutional, for pixel grids;
* :data:`MLP_PRESETS` (``mlp``): the residual MLP of :mod:`physgen.nets.mlp` on the flattened
  ``channels x img_resolution²`` tensor, ``F_θ(c_in x, c_noise)`` reshaped back, under the same EDM
  preconditioning ``D_θ(x, σ) = c_skip(σ) x + c_out(σ) F_θ(c_in(σ) x, c_noise(σ))`` (arXiv
  2206.00364, Table 1): a network with no locality prior, for small latents (or any tensor whose
  cells are not a spatial grid).  On the digits latent (4 x 4 x 4) it matches the ``tiny`` U-Net
  (the latent default) on classifier confidence and class coverage, with a larger classifier
  Fréchet distance, 0.35 against 0.24 (benchmarks/RESULTS.md, "The latent network (i25-latentnet)").

:func:`build_image_network` builds either from a spec; :func:`image_network_weight_floor` bounds its
weights from below without building it (a checkpoint header that claims a huge network is refused
before allocation).
"""
from __future__ import annotations

from typing import Any, Dict

from torch import nn

from ..config import MAX_DEPTH, MAX_WIDTH, check_options, parse_float, parse_int
from ..errors import UserError, unknown_name
from .mlp import MLP, mlp_weight_floor
from .unet import UNET_PRESETS, UNet, build_unet, unet_weight_floor

__all__ = ["MLP_PRESETS", "ARCHS", "build_image_network", "image_network_weight_floor", "is_mlp_arch", "check_overrides"]

MLP_PRESETS: Dict[str, Dict[str, Any]] = {
    # measured on the digits latent (4x4x4): 2.46M weights
    "mlp": dict(hidden=512, depth=4, embed_dim=64),
}
ARCHS = tuple(UNET_PRESETS) + tuple(MLP_PRESETS)
_MLP_FIXED = ("self", "dim", "num_classes", "out_dim")  # set by the data, not by overrides


def is_mlp_arch(arch: str) -> bool:
    return arch in MLP_PRESETS


def check_overrides(arch: str, overrides: Dict[str, Any], where: str = "unet") -> Dict[str, Any]:
    """``overrides`` checked against the network ``arch`` builds (names and types; an MLP's sizes
    also by range): a UserError naming ``where KEY`` otherwise.  Returns them coerced."""
    if arch not in ARCHS:
        raise unknown_name("network architecture", arch, ARCHS)
    if not is_mlp_arch(arch):
        return check_options(UNet.__init__, overrides, where, skip=("self", "img_resolution", "in_channels", "out_channels", "num_classes"))
    out = check_options(MLP.__init__, overrides, where, skip=_MLP_FIXED)
    for key, hi in (("hidden", MAX_WIDTH), ("depth", MAX_DEPTH), ("embed_dim", MAX_WIDTH)):
        if out.get(key) is not None:
            out[key] = parse_int(out[key], f"{where} {key}", 1, hi)
    if out.get("embed_dim") is not None and out["embed_dim"] % 2:
        raise UserError(f"{where} embed_dim must be even (sine and cosine pairs), got {out['embed_dim']}")
    if out.get("c_noise_unit") is not None:
        out["c_noise_unit"] = parse_float(out["c_noise_unit"], f"{where} c_noise_unit", 0.0, lo_open=True)
    return out


def _mlp_sizes(arch: str, overrides: Dict[str, Any]) -> Dict[str, Any]:
    return {**MLP_PRESETS[arch], **{k: v for k, v in check_overrides(arch, overrides).items() if v is not None}}


def build_image_network(arch: str, img_resolution: int, channels: int, num_classes: int = 0, **overrides: Any) -> nn.Module:
    """The network of spec ``arch`` on ``channels x img_resolution²`` tensors (module docstring):
    a U-Net preset (:func:`physgen.nets.unet.build_unet`) or an MLP preset on the flattened tensor."""
    if not is_mlp_arch(arch):
        return build_unet(arch, img_resolution, channels, num_classes=num_classes, **overrides)
    return MLP(int(channels) * int(img_resolution) ** 2, num_classes=int(num_classes), **_mlp_sizes(arch, overrides))


def image_network_weight_floor(arch: str, img_resolution: int, channels: int, num_classes: int = 0, **overrides: Any) -> int:
    """A lower bound on the weights of :func:`build_image_network` with these arguments."""
    if not is_mlp_arch(arch):
        return unet_weight_floor(arch, channels, num_classes, **overrides)
    sizes = _mlp_sizes(arch, overrides)
    return mlp_weight_floor(int(channels) * int(img_resolution) ** 2, sizes["hidden"], sizes["depth"], sizes["embed_dim"], int(num_classes))
