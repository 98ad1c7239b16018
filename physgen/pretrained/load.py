"""``physgen.pretrained.load``: one entry point for a model trained elsewhere (or by physgen).

The format is detected from the file: a physgen checkpoint (magic ``PHYSGEN-CKPT``) or run
folder; a physgen model folder (``model.header``, :mod:`physgen.pretrained.convert`); a diffusers folder
(``config.json`` of a ``UNet2DModel``); otherwise an EDM /
PFGM++ snapshot, a pickle (``.pkl``) or a ``torch.save`` zip (``.pt``) whose pickle calls
EDM's persistence reconstructor.  A ``torch.save`` zip that names only plain torch globals
(tensors, storages, ordered dicts) is a physgen checkpoint of the earlier format.
"""
from __future__ import annotations

import io
import pickletools
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from .. import checkpoints
from ..errors import UserError
from ..fields.neural import NeuralField
from ..images.train import load_trained
from ..processes.base import Process
from ..latent.data import latent_decoder
from .convert import FOLDER_FORMAT, HEADER, is_model_folder, load_folder
from .diffusers import is_diffusers_folder, load_diffusers
from .edm import convert, network_record
from .reader import ZIP_MAGIC, read_snapshot

__all__ = ["Pretrained", "load", "detect_format", "FORMATS"]

FORMATS = {
    "edm-pickle": "an EDM / PFGM++ network snapshot (.pkl, EDM's persistence records)",
    "edm-torch": "a torch.save zip of EDM / PFGM++ objects (PFGM++'s training-state-*.pt)",
    "diffusers": "a diffusers UNet2DModel folder (config.json, safetensors weights, scheduler_config.json)",
    "physgen": "a physgen checkpoint or training run",
    FOLDER_FORMAT: "a physgen model folder (model.safetensors + model.header, written by physgen import / export)",
}


@dataclass
class Pretrained:
    """A loaded model: ``process``, ``field`` (for :func:`physgen.sampling.sample`), the
    ``shape`` of one sample ``(C, H, W)``, ``num_classes`` (0: unconditional), the ``path``
    and ``format`` it came from and ``info`` (what the file said, for the record)."""

    process: Process
    field: nn.Module
    shape: Tuple[int, ...]
    num_classes: int
    path: Path
    format: str
    info: Dict[str, Any] = field(default_factory=dict)
    decode: Optional[Callable[[Tensor], Tensor]] = None  # a physgen latent run's checked decoder (physgen.latent.data)

    def denoise(self, x: Tensor, sigma: Union[float, Tensor], labels: Optional[Tensor] = None) -> Tensor:
        """The original network's own call, EDM's convention: ``D(x, σ, labels)`` with ``x`` in
        the data scale (``x = y + σ n``), EDM's ``σ`` (a number, ``[]`` or ``[B]``) and
        ``labels`` one-hot ``[B, L]`` (an all-zero row or ``None``: no class).  For a VP
        process (EDM's VP, diffusers), whose scale is a time (``process.scale_is_sigma`` is false),
        ``σ`` is mapped to the time ``t(σ)`` and ``x`` to ``a(t) x``, so this is the denoiser the
        scheduler implies at ``σ``."""
        if not hasattr(self.process, "denoise"):
            raise UserError(f"process {self.process.describe()} has no denoiser")
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).flatten()
        sigma = sigma.expand(x.shape[0]) if sigma.numel() == 1 else sigma
        if sigma.shape != (x.shape[0],):
            raise UserError(f"sigma must be one value or one per sample ({x.shape[0]}), got shape {list(sigma.shape)}")
        label = self._label_index(labels, x.shape[0])
        if self.process.scale_is_sigma:
            return self.process.denoise(self.field, x, sigma, label)
        t = self.process.t_of_sigma(sigma.double())
        a = self.process.coefficients(t)[0].to(x.dtype)
        return self.process.denoise(self.field, a.reshape(-1, *[1] * (x.ndim - 1)) * x, t.to(x.dtype), label)

    def _label_index(self, labels: Optional[Tensor], batch: int) -> Optional[Tensor]:
        """EDM's one-hot rows as physgen's class indices (all-zero row: the null class ``-1``)."""
        if labels is None:
            return None
        if not self.num_classes:
            raise UserError("this model is unconditional (label_dim 0) but labels were given")
        labels = torch.as_tensor(labels)
        labels = labels[None] if labels.ndim == 1 else labels
        if labels.ndim != 2 or labels.shape[1] != self.num_classes or labels.shape[0] not in (1, batch):
            raise UserError(f"labels must be one-hot rows [B, {self.num_classes}], got shape {list(labels.shape)}")
        ones, zeros = (labels == 1).sum(1), (labels == 0).sum(1)
        if not bool(((ones + zeros == self.num_classes) & (ones <= 1)).all()):
            raise UserError("labels must be one-hot rows (or all-zero for no class); physgen fields take one class per sample")
        index = torch.where(ones == 1, labels.argmax(1), torch.full_like(ones, -1))
        return index.expand(batch).contiguous() if index.shape[0] == 1 else index

    @property
    def step(self) -> Optional[int]:
        """The training step of a physgen checkpoint (``None``: a foreign file records none)."""
        return self.info.get("step")

    @property
    def meta(self) -> Dict[str, Any]:
        """A physgen checkpoint's image metadata (its ``config`` names the dataset); ``{}`` for a foreign file."""
        return self.info.get("meta") or {}

    @property
    def latent(self) -> Optional[Dict[str, Any]]:
        """The latent record (autoencoder path and sha256, scale factor, image shape;
        :mod:`physgen.latent.data`) of a model that works on an autoencoder's latents: a physgen
        latent run, or a model folder exported from one.  ``None`` in pixel space."""
        record = self.meta.get("latent") if self.format == "physgen" else self.info.get("latent") if self.format == FOLDER_FORMAT else None
        return record if isinstance(record, dict) else None

    def to(self, device) -> "Pretrained":
        if isinstance(self.field, nn.Module):  # a plain callable field (from_denoiser, a test's stand-in) has no weights to move
            self.field.to(device)
        return self


def _zip_globals(path: Path) -> Optional[set]:
    """The globals a ``torch.save`` zip's pickle names (read as opcodes, nothing run; ``None``
    if it cannot be walked).  ``STACK_GLOBAL`` names are taken from the two strings pushed
    before it, which is how pickle writes them."""
    try:
        with zipfile.ZipFile(path) as z:
            name = next((n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            data = z.read(name) if name else b""
        found, strings = set(), []
        for op, arg, _ in pickletools.genops(io.BytesIO(data)):
            if op.name == "GLOBAL":
                found.add(arg.replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.add(f"{strings[-2]}.{strings[-1]}")
            if isinstance(arg, str):
                strings.append(arg)
        return found
    except Exception:  # a damaged zip or pickle: the physgen reader says what it is
        return None


def _plain_torch(name: str) -> bool:
    """A global of a plain ``torch.save`` of tensors and containers (physgen's earlier checkpoints)."""
    return name.startswith("torch.") or name in ("collections.OrderedDict", "__builtin__.set", "builtins.set", "_codecs.encode")


def detect_format(path) -> str:
    """The :data:`FORMATS` key of ``path`` (see the module docstring)."""
    path = Path(path)
    if path.is_dir():
        if is_model_folder(path):
            return FOLDER_FORMAT
        return "diffusers" if is_diffusers_folder(path) else "physgen"
    if not path.is_file():
        raise UserError(f"{str(path)!r} does not exist")
    with open(path, "rb") as f:
        head = f.read(len(checkpoints.MAGIC))
    if head == checkpoints.MAGIC:
        return "physgen"
    if head.startswith(ZIP_MAGIC):  # EDM records, or anything beyond plain torch: the snapshot reader (which names what it refuses)
        names = _zip_globals(path)
        return "edm-torch" if names and not all(_plain_torch(n) for n in names) else "physgen"
    return "edm-pickle"


def load(path, device=None, *, dtype: torch.dtype = torch.float32, ema: bool = True, ae=None) -> Pretrained:
    """Load a model from ``path`` (format detected, :data:`FORMATS`) onto ``device`` (default CPU)
    with parameters in ``dtype``; nothing in the file runs.  ``ema=False``: a physgen
    checkpoint's raw training weights (foreign files hold one set of weights).  Errors are one :class:`UserError`
    naming the file and what is wrong (a refused global, a missing or mis-shaped tensor, an
    unsupported network or schedule).  ``ae``: the autoencoder of a physgen latent run when it has
    moved (checked against the run's recorded checksum); its decoder is ``.decode``."""
    path = Path(path)
    if path.name == HEADER and path.is_file() and is_model_folder(path.parent):
        path = path.parent  # a model folder's header stands for its folder
    fmt = detect_format(path)
    where = f"{str(path)!r}"
    if ae is not None and fmt not in ("physgen", FOLDER_FORMAT):
        raise UserError(f"--ae applies to a physgen latent run; {where} is a {fmt} file")
    if fmt == "physgen":
        model = load_trained(path, device=device if device is not None else "cpu", ema=ema, ae=ae)
        out = Pretrained(model.process, model.field, tuple(model.shape), model.num_classes, Path(model.path), fmt,
                         {"step": model.step, "meta": model.meta, "weights": "ema" if ema else "model"}, model.decode)
    elif fmt == FOLDER_FORMAT:
        process, field_, shape, info = load_folder(path, dtype)
        if ae is not None and "latent" not in info:
            raise UserError(f"--ae applies to a physgen latent run; {where} is a model folder in pixel space")
        decode = latent_decoder(info["latent"], where, ae_path=ae, device=device if device is not None else "cpu") if "latent" in info else None
        out = Pretrained(process, field_, shape, int(info["num_classes"]), path, fmt, info, decode)
    elif fmt == "diffusers":
        process, field_, shape, info = load_diffusers(path, dtype)
        out = Pretrained(process, field_, shape, field_.num_classes, path, fmt, info)
    else:
        key, precond, loss = network_record(read_snapshot(path), where)
        process, net, preconditioning, info = convert(precond, loss, path, dtype)
        field_ = NeuralField(net, preconditioning).eval().requires_grad_(False)
        kw = info["network_arguments"]
        shape = (int(kw["in_channels"]), int(kw["img_resolution"]), int(kw["img_resolution"]))
        out = Pretrained(process, field_, shape, int(kw["label_dim"]), path, fmt, {"weights": key, **info})
    return out.to(device) if device is not None else out
