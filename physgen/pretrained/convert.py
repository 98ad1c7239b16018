"""``physgen import`` / ``physgen export``: a model as a folder of safetensors weights and a JSON description.

A **model folder** holds two files:

* ``model.safetensors``: the network's state dict (safetensors, arXiv-free format of Hugging
  Face: a JSON index and raw little-endian tensor bytes; reading it runs nothing);
* ``model.json``: what rebuilds the field from those weights, ``{"format":
  "physgen-model", "version": 1, "process": {"name", ...config}, "network": {"class",
  ...arguments}, "preconditioning": {"name", ...}, "shape", "num_classes", "weights_sha256",
  "source"}`` (the network and preconditioning as :mod:`physgen.pretrained.edm` describes a
  snapshot, the process as ``process.config()``).

A physgen training run exports to the same folder: its network is ``{"class": "PhysgenUNet",
...the U-Net spec the run records}`` (:func:`physgen.nets.unet.build_unet`'s arguments) and its
preconditioning ``{"name": "process"}``: the process's own ``precondition(net)``, as
:func:`physgen.training.rebuild_field` builds it; the weights are the run's **EMA** weights
(what ``physgen sample --ckpt RUN`` uses).

``physgen import SNAPSHOT --out RUN`` reads an EDM / PFGM++ snapshot once (the restricted
reader, :mod:`physgen.pretrained.reader`) and writes RUN as such a folder, so later runs
(``--ckpt RUN``) never open the pickle.  ``physgen export MODEL --format safetensors --out
DIR`` writes the same folder from an imported folder (the tensors are copied bit for bit),
a snapshot or a physgen training run (file or run folder).
:func:`load_folder` is the reader; :func:`physgen.pretrained.load` calls it for a folder
with ``model.json``.  The weights keep the dtype they were read in (EDM's files are
float32); the sha256 of ``model.safetensors`` is checked before the weights are used.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Dict, Tuple

import torch
from safetensors.torch import load as st_load, save as st_save
from torch import nn

from ..errors import UserError
from ..fields.neural import NeuralField
from ..config import read_json
from ..io import atomic_write, write_json
from ..nets.adm import ADMUNet
from ..nets.unet import UNet
from ..nets.unet import build_unet
from ..processes import process_from_record
from .precond import PRECONDITIONINGS

__all__ = ["WEIGHTS", "DESCRIPTION", "FOLDER_FORMAT", "EXPORT_FORMATS", "is_model_folder", "write_folder", "load_folder", "save_model"]

WEIGHTS, DESCRIPTION, FOLDER_FORMAT = "model.safetensors", "model.json", "physgen-model"
PROCESS_PRECONDITIONING = "process"  # the process's own precondition(net): a physgen training run's field


def _physgen_unet(arch: str, img_resolution: int, channels: int, num_classes: int = 0, overrides: Any = None) -> nn.Module:
    """physgen's own U-Net from the spec a training run records (``meta["image"]["unet"]``)."""
    if not isinstance(overrides, (dict, type(None))):
        raise TypeError(f"overrides must be a mapping, got {overrides!r}")
    return build_unet(arch, int(img_resolution), int(channels), num_classes=int(num_classes), **dict(overrides or {}))


NETWORKS = {"UNet": UNet, "ADMUNet": ADMUNet, "PhysgenUNet": _physgen_unet}
EXPORT_FORMATS = ("safetensors", "diffusers")
"""What ``physgen export --format`` writes (diffusers: only a model read from a diffusers folder,
:func:`physgen.pretrained.diffusers.save_diffusers`; physgen's U-Nets are EDM's layouts, which
have no ``UNet2DModel`` counterpart)."""


def is_model_folder(path: Path) -> bool:
    return path.is_dir() and (path / DESCRIPTION).is_file()


def write_folder(out: Path, description: Dict[str, Any], state: Dict[str, torch.Tensor]) -> Path:
    """Write ``out/model.safetensors`` then ``out/model.json`` (both atomically; the
    description last, so a folder with a description always has its weights)."""
    blob = st_save({k: v.detach().cpu().contiguous() for k, v in state.items()})
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / WEIGHTS, "wb") as f:
        f.write(blob)
    write_json(out / DESCRIPTION, {**description, "format": FOLDER_FORMAT, "version": 1,
                                   "weights_sha256": hashlib.sha256(blob).hexdigest()})
    return out


def save_model(model: Any, out: Path) -> Path:
    """Write a loaded model (:class:`physgen.pretrained.Pretrained`) as a model folder at ``out``:
    an EDM / PFGM++ snapshot (its description from the reader), a physgen training run (its
    recorded U-Net spec; the weights ``model`` was loaded with, EMA by default) or a model
    folder again.  A diffusers folder has no such description: one line."""
    info = model.info
    if "physgen_network" in info:  # read from a snapshot
        network, preconditioning = info["physgen_network"], info["preconditioning"]
        source = {"file": model.path.name, "format": model.format, "preconditioner": info.get("preconditioner"),
                  "network": info.get("network"), "module_src_sha256": info.get("module_src_sha256")}
    elif model.format == "physgen":  # a physgen training run
        network, preconditioning = {"class": "PhysgenUNet", **model.meta["unet"]}, {"name": PROCESS_PRECONDITIONING}
        source = {"file": model.path.name, "format": "physgen", "step": model.step, "weights": model.info.get("weights", "ema")}
    elif model.format == FOLDER_FORMAT:
        network, preconditioning, source = info["network"], info["preconditioning"], info.get("source")
    else:
        raise UserError(f"{str(model.path)!r} is a {model.format} model; import/export convert EDM / PFGM++ snapshots "
                        f"(.pkl/.pt), physgen training runs and physgen model folders")
    description = {"process": {"name": model.process.name, **model.process.config()}, "network": network,
                   "preconditioning": preconditioning, "shape": list(model.shape), "num_classes": int(model.num_classes),
                   "source": source}
    return write_folder(Path(out), description, model.field.net.state_dict())


def _description(path: Path) -> Dict[str, Any]:
    where = f"{str(path / DESCRIPTION)!r}"
    desc = read_json(path / DESCRIPTION, "model description")
    if not isinstance(desc, dict) or desc.get("format") != FOLDER_FORMAT or desc.get("version") != 1:
        raise UserError(f"{where} is not a physgen model description (format {FOLDER_FORMAT!r}, version 1)")
    missing = [k for k in ("process", "network", "preconditioning", "shape", "num_classes", "weights_sha256") if k not in desc]
    if missing:
        raise UserError(f"{where} lacks {', '.join(missing)}")
    return desc


def _network(spec: Dict[str, Any], where: str) -> nn.Module:
    spec = dict(spec)
    cls = NETWORKS.get(spec.pop("class", None))
    if cls is None:
        raise UserError(f"{where}: network class must be one of {', '.join(NETWORKS)}")
    try:
        return cls(**spec)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{where}: its network arguments are invalid ({exc})") from None


def load_folder(path: Path, dtype: torch.dtype = torch.float32) -> Tuple[Any, nn.Module, Tuple[int, ...], Dict[str, Any]]:
    """``(process, field, shape, description)`` of a model folder (module docstring)."""
    desc = _description(path)
    where = f"{str(path / DESCRIPTION)!r}"
    blob = (path / WEIGHTS).read_bytes() if (path / WEIGHTS).is_file() else None
    if blob is None:
        raise UserError(f"{str(path)!r} has {DESCRIPTION} but no {WEIGHTS}")
    if hashlib.sha256(blob).hexdigest() != desc["weights_sha256"]:
        raise UserError(f"{str(path / WEIGHTS)!r} does not match the checksum in {DESCRIPTION} (damaged or replaced)")
    try:
        state = st_load(blob)
    except Exception as exc:  # safetensors' own errors (a damaged index): one line
        raise UserError(f"{str(path / WEIGHTS)!r} is not a safetensors file ({exc})") from None
    process, pre = process_from_record(desc["process"], where), dict(desc["preconditioning"])
    try:
        preconditioning = None if pre.get("name") == PROCESS_PRECONDITIONING else PRECONDITIONINGS[pre.pop("name")](**pre)
    except (KeyError, TypeError) as exc:
        raise UserError(f"{where}: its preconditioning is invalid ({exc})") from None
    net = _network(desc["network"], where)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise UserError(f"{str(path / WEIGHTS)!r} does not fit the network of {DESCRIPTION}: {str(exc).splitlines()[0]}") from None
    net = net.to(dtype)
    field_ = process.precondition(net) if preconditioning is None else NeuralField(net, preconditioning)
    field_.eval().requires_grad_(False)
    return process, field_, tuple(int(v) for v in desc["shape"]), desc
