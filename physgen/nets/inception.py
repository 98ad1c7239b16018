"""Inception-v3 feature network for FID, KID and Inception Score, without torchvision.

Inception-v3 is Szegedy et al., *Rethinking the Inception Architecture for Computer
Vision* (arXiv 1512.00567).  The image metrics built on it are FID (Heusel et al.,
arXiv 1706.08500), KID (Binkowski et al., arXiv 1801.01401) and IS (Salimans et al.,
arXiv 1606.03498).  Module names follow torchvision's ``inception_v3`` so that a
state dict saved by either of the two common PyTorch ports loads with a strict
``load_state_dict``:

``flavour="fid"``
    The network of the standard FID code: Google's 2015-12-05 TensorFlow graph
    (``inception-2015-12-05.tgz``) converted to PyTorch, distributed as
    ``pt_inception-2015-12-05-6726825d.pth`` by the ``pytorch-fid`` package.  It differs
    from torchvision's model in that the average pools of the InceptionA/C/E blocks do
    not count padding (``count_include_pad=False``), the last E block (``Mixed_7c``)
    pools with a 3x3 max pool, there is no auxiliary classifier, and ``fc`` has 1008
    outputs.  **These weights give the standard, paper-comparable FID/KID/IS numbers**
    (those reported by EDM, PFGM++ and most papers, up to the small differences between
    the TF graph and its PyTorch port).
``flavour="torchvision"``
    torchvision's ImageNet classifier (``inception_v3_google-*.pth``, with the
    ``AuxLogits`` head, 1000 classes).  Its FID numbers are *not* comparable to papers.

Both weight sets were trained on inputs scaled to ``[-1, 1]``.  Images here are already
in ``[-1, 1]``: the FID flavour uses them as they are (as pytorch-fid does after its
``2x - 1``); the torchvision flavour applies ImageNet normalisation followed by
torchvision's ``transform_input``, which composes to the same ``[-1, 1]`` input.  Inputs
are resized to 299x299 bilinearly (``align_corners=False``); one-channel images are
repeated to three.

Features are the 2048-d "pool3" activations (global average pool after ``Mixed_7c``);
logits are ``fc`` of those (1008 or 1000 classes).  No weights are ever downloaded: name
a local file with :func:`load_inception`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError, unknown_name
from ..checkpoints import torch_load

__all__ = ["InceptionV3", "load_inception", "FLAVOURS", "detect_flavour"]

FLAVOURS = ("fid", "torchvision")

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class BasicConv2d(nn.Module):
    """``ReLU(BatchNorm(conv(x)))`` with a bias-free conv and BatchNorm eps 1e-3."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool(x: torch.Tensor, fid: bool) -> torch.Tensor:
    # The TF graph's 3x3 average pools exclude the padding from the count.
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=not fid)


class InceptionA(nn.Module):
    """35x35 block: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | pool-1x1 branches (Fig. 5 of 1512.00567)."""

    def __init__(self, in_channels: int, pool_features: int, fid: bool = False):
        super().__init__()
        self.fid = fid
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_avg_pool(x, self.fid))
        return torch.cat([b1, b5, b3, bp], 1)


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17: stride-2 3x3 | 1x1-3x3-3x3/2 | max pool."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([b3, bd, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionC(nn.Module):
    """17x17 block with factorised 1x7 / 7x1 convolutions (Fig. 6 of 1512.00567)."""

    def __init__(self, in_channels: int, channels_7x7: int, fid: bool = False):
        super().__init__()
        self.fid = fid
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for layer in (
            self.branch7x7dbl_1,
            self.branch7x7dbl_2,
            self.branch7x7dbl_3,
            self.branch7x7dbl_4,
            self.branch7x7dbl_5,
        ):
            bd = layer(bd)
        bp = self.branch_pool(_avg_pool(x, self.fid))
        return torch.cat([b1, b7, bd, bp], 1)


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | max pool."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionE(nn.Module):
    """8x8 block with expanded 1x3 / 3x1 branches (Fig. 7 of 1512.00567).

    ``pool``: ``"avg"`` (torchvision), ``"avg_nopad"`` (FID ``Mixed_7b``) or ``"max"``
    (FID ``Mixed_7c``: the TF graph max-pools in the last block).
    """

    def __init__(self, in_channels: int, pool: str = "avg"):
        super().__init__()
        self.pool = pool
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        if self.pool == "max":
            pooled = F.max_pool2d(x, 3, stride=1, padding=1)
        else:
            pooled = _avg_pool(x, fid=self.pool == "avg_nopad")
        return torch.cat([b1, b3, bd, self.branch_pool(pooled)], 1)


class InceptionAux(nn.Module):
    """torchvision's auxiliary classifier on the 17x17 grid (kept only so its weights load)."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.conv0 = BasicConv2d(in_channels, 128, kernel_size=1)
        self.conv1 = BasicConv2d(128, 768, kernel_size=5)
        self.fc = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.conv0(F.avg_pool2d(x, kernel_size=5, stride=3)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class InceptionV3(nn.Module):
    """Inception-v3 (arXiv 1512.00567) as a feature network: ``forward(x) -> [B, 2048]``.

    ``x`` is ``[B, C, H, W]`` with ``C`` in {1, 3} and values in ``[-1, 1]``; it is resized to
    299x299 and scaled as the flavour expects (module docstring).  ``flavour="fid"`` with the
    ``pt_inception-2015-12-05`` weights gives the standard FID; ``"torchvision"`` loads
    torchvision's ImageNet weights.  Build with :func:`load_inception` to load a file.

    The network is put in eval mode at construction (BatchNorm uses its running
    statistics); it is a fixed feature extractor.
    """

    def __init__(
        self,
        flavour: str = "fid",
        num_classes: Optional[int] = None,
        aux_logits: Optional[bool] = None,
        resize: bool = True,
    ):
        super().__init__()
        if flavour not in FLAVOURS:
            raise unknown_name("Inception flavour", flavour, FLAVOURS)
        fid = flavour == "fid"
        self.flavour = flavour
        self.resize = resize
        if num_classes is None:
            num_classes = 1008 if fid else 1000
        if aux_logits is None:
            aux_logits = not fid
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.maxpool1 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.maxpool2 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Mixed_5b = InceptionA(192, pool_features=32, fid=fid)
        self.Mixed_5c = InceptionA(256, pool_features=64, fid=fid)
        self.Mixed_5d = InceptionA(288, pool_features=64, fid=fid)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128, fid=fid)
        self.Mixed_6c = InceptionC(768, channels_7x7=160, fid=fid)
        self.Mixed_6d = InceptionC(768, channels_7x7=160, fid=fid)
        self.Mixed_6e = InceptionC(768, channels_7x7=192, fid=fid)
        self.AuxLogits = InceptionAux(768, num_classes) if aux_logits else None
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool="avg_nopad" if fid else "avg")
        self.Mixed_7c = InceptionE(2048, pool="max" if fid else "avg")
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=0.5)
        self.fc = nn.Linear(2048, num_classes)
        self.eval()

    @property
    def feature_dim(self) -> int:
        return 2048

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise UserError(f"Inception expects images [B, 1 or 3, H, W], got {list(x.shape)}")
        x = x.to(self.fc.weight.dtype)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.resize and x.shape[-2:] != (299, 299):
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        if self.flavour == "torchvision":
            # ImageNet normalisation of x01 = (x + 1) / 2, then torchvision's transform_input.
            mean = x.new_tensor(_IMAGENET_MEAN)[None, :, None, None]
            std = x.new_tensor(_IMAGENET_STD)[None, :, None, None]
            x = ((x + 1) / 2 - mean) / std
            x = x * (std / 0.5) + (mean - 0.5) / 0.5
        return x

    def features_and_logits(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Pool3 features ``[B, 2048]`` and class logits ``[B, 1008 or 1000]``."""
        x = self._prepare(x)
        for layer in (
            self.Conv2d_1a_3x3,
            self.Conv2d_2a_3x3,
            self.Conv2d_2b_3x3,
            self.maxpool1,
            self.Conv2d_3b_1x1,
            self.Conv2d_4a_3x3,
            self.maxpool2,
            self.Mixed_5b,
            self.Mixed_5c,
            self.Mixed_5d,
            self.Mixed_6a,
            self.Mixed_6b,
            self.Mixed_6c,
            self.Mixed_6d,
            self.Mixed_6e,
            self.Mixed_7a,
            self.Mixed_7b,
            self.Mixed_7c,
        ):
            x = layer(x)
        feats = torch.flatten(self.avgpool(x), 1)
        return feats, self.fc(self.dropout(feats))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pool3 features ``[B, 2048]`` of images in ``[-1, 1]``."""
        return self.features_and_logits(x)[0]


def _read_state_dict(path: Path) -> Dict[str, torch.Tensor]:
    if not path.is_file():
        raise UserError(
            f"Inception weights file {str(path)!r} does not exist; name a local copy of "
            "pt_inception-2015-12-05-6726825d.pth (standard FID) or torchvision's "
            "inception_v3_google-*.pth (nothing is downloaded)"
        )

    obj = torch_load(path, f"Inception weights {str(path)!r}")
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"Inception weights {str(path)!r} are not a state dict of tensors")
    return obj


def detect_flavour(state_dict: Dict[str, torch.Tensor]) -> str:
    """``"fid"`` when ``fc`` has 1008 outputs (the TF-graph port), else ``"torchvision"``."""
    fc = state_dict.get("fc.weight")
    return "fid" if fc is not None and fc.shape[0] == 1008 else "torchvision"


def load_inception(
    path: Union[str, os.PathLike],
    flavour: Optional[str] = None,
    device: Union[str, torch.device, None] = None,
) -> InceptionV3:
    """An :class:`InceptionV3` with the weights in the local file ``path`` (strict load).

    ``flavour=None`` picks ``"fid"`` for a 1008-class file and ``"torchvision"`` otherwise;
    whether an auxiliary head exists is read from the file.  Keys that do not match raise
    a :class:`~physgen.errors.UserError` naming the file.
    """
    path = Path(path)
    state = _read_state_dict(path)
    if flavour is None:
        flavour = detect_flavour(state)
    if flavour not in FLAVOURS:
        raise unknown_name("Inception flavour", flavour, FLAVOURS)
    fc = state.get("fc.weight")
    num_classes = int(fc.shape[0]) if fc is not None else None
    aux = any(k.startswith("AuxLogits.") for k in state)
    net = InceptionV3(flavour, num_classes=num_classes, aux_logits=aux)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        expected = set(net.state_dict())
        missing = sorted(expected - set(state))
        unexpected = sorted(set(state) - expected)
        detail: List[str] = []
        if missing:
            detail.append(f"missing {len(missing)} keys (e.g. {missing[:3]})")
        if unexpected:
            detail.append(f"unexpected {len(unexpected)} keys (e.g. {unexpected[:3]})")
        if not detail:
            detail.append(str(exc).splitlines()[-1].strip())
        raise UserError(
            f"Inception weights {str(path)!r} do not match the {flavour!r} Inception-v3: "
            f"{'; '.join(detail)}"
        ) from exc
    net.eval()
    if device is not None:
        net.to(device)
    return net
