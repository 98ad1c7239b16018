"""Neural networks: the toy MLP (:mod:`physgen.nets.mlp`), the DDPM++ U-Net
(:mod:`physgen.nets.unet`), Inception-v3 for FID / IS (:mod:`physgen.nets.inception`) and the
noise-conditional CNN classifier of classifier guidance (:mod:`physgen.nets.classifier`)."""
from .classifier import ConvClassifierNet
from .inception import InceptionV3, load_inception
from .mlp import MLP
from .unet import UNET_PRESETS, UNet, build_unet

__all__ = ["MLP", "UNet", "UNET_PRESETS", "build_unet", "InceptionV3", "load_inception", "ConvClassifierNet"]
