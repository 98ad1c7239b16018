"""``physgen import`` / ``physgen export``: a model as a folder of safetensors weights and a checked header.

A **model folder** holds two files:

* ``model.safetensors``: the network's state dict (safetensors, Hugging Face's format: a JSON
  index and raw little-endian tensor bytes; reading it runs nothing), readable by any
  safetensors tool;
* ``model.header``: a physgen checkpoint header (:mod:`physgen.checkpoints`, kind ``model``,
  written and verified by that module: magic, checksummed JSON, schema validated on read)
  whose ``meta`` says what rebuilds the field from those weights: ``{"process": {"name",
  ...config}, "network": {"class", ...arguments}, "preconditioning": {"name", ...},
  "shape", "num_classes", "weights_sha256", "source"}`` (the network and preconditioning
  as :mod:`physgen.pretrained.edm` describes a snapshot, the process as
  ``process.config()``).  The weights are bound to the header by their sha256, checked
  before they are used.

A physgen training run exports to the same folder: its network is ``{"class": "PhysgenUNet",
...the U-Net spec the run records}`` (:func:`physgen.nets.networks.build_image_network`'s arguments) and its
preconditioning ``{"name": "process"}``: the process's own ``precondition(net)``, as
:func:`physgen.training.rebuild_field` builds it; the weights are the run's **EMA** weights
(what ``physgen sample --ckpt RUN`` uses).

A diffusers ``UNet2DModel`` folder imports to the same folder: network ``{"class":
"UNet2DModel", "config": the folder's config.json}``, preconditioning ``{"name": "diffusers",
"prediction_type"}``, the process the discrete VP of :mod:`physgen.pretrained.diffusers` (its
betas in the process record) and ``source.scheduler`` the scheduler config as read (so
``export --format diffusers`` writes it back).  The folder's files are never read again, but
**running such a model still needs the diffusers extra**: physgen's U-Nets are EDM's layouts
and cannot represent ``UNet2DModel``, so the network is ``UNet2DModel.from_config`` of the
recorded config (no code and no file of the original folder is used).

``physgen import PATH --out RUN`` reads an EDM / PFGM++ snapshot (the restricted reader,
:mod:`physgen.pretrained.reader`) or a diffusers folder once and writes RUN as such a folder,
so later runs (``--ckpt RUN``) never open the pickle or the diffusers folder.  ``physgen
export MODEL --format safetensors --out DIR`` writes the same folder from an imported folder
(the tensors are copied bit for bit), a snapshot, a diffusers folder or a physgen training run.
:func:`load_folder` is the reader; :func:`physgen.pretrained.load` calls it for a folder with
``model.header``.  A folder of the earlier format (``model.json``, no checksummed header) is
refused in one line naming that file: import the original again.  The weights keep the dtype
they were read in (EDM's files are float32).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Dict, Tuple

import torch
from safetensors.torch import load as st_load, save as st_save
from torch import nn

from .. import checkpoints
from ..errors import UserError
from ..fields.neural import NeuralField
from ..io import atomic_write
from ..nets.adm import ADMUNet
from ..nets.unet import UNet
from ..nets.networks import build_image_network
from ..processes import process_from_record
from .diffusers import DIFFUSERS_NETWORK, DiffusersField, check_prediction_type, unet2d
from .precond import PRECONDITIONINGS

__all__ = ["WEIGHTS", "HEADER", "FOLDER_FORMAT", "EXPORT_FORMATS", "is_model_folder", "write_folder", "load_folder", "save_model"]

WEIGHTS, HEADER, FOLDER_FORMAT = "model.safetensors", "model.header", "physgen-model"
EARLIER_DESCRIPTION = "model.json"  # the description of the earlier folder format (no checksummed header): refused, named
DIFFUSERS_PRECONDITIONING = "diffusers"  # the network's output read as its scheduler's prediction_type (DiffusersField)
PROCESS_PRECONDITIONING = "process"  # the process's own precondition(net): a physgen training run's field


def _physgen_unet(arch: str, img_resolution: int, channels: int, num_classes: int = 0, overrides: Any = None) -> nn.Module:
    """physgen's own network (a U-Net, or a latent run's MLP) from the spec a training run records
    (``meta["image"]["unet"]``)."""
    if not isinstance(overrides, (dict, type(None))):
        raise TypeError(f"overrides must be a mapping, got {overrides!r}")
    return build_image_network(arch, int(img_resolution), int(channels), num_classes=int(num_classes), **dict(overrides or {}))


NETWORKS = {"UNet": UNet, "ADMUNet": ADMUNet, "PhysgenUNet": _physgen_unet}
EXPORT_FORMATS = ("safetensors", "diffusers")
"""What ``physgen export --format`` writes (diffusers: only a model read from a diffusers folder or
imported from one, :func:`physgen.pretrained.diffusers.save_diffusers`; physgen's U-Nets are EDM's
layouts, which have no ``UNet2DModel`` counterpart)."""


def is_model_folder(path: Path) -> bool:
    """A folder with a model header (or the earlier format's ``model.json``, which the reader refuses by name)."""
    return path.is_dir() and ((path / HEADER).is_file() or (path / EARLIER_DESCRIPTION).is_file())


def write_folder(out: Path, description: Dict[str, Any], state: Dict[str, torch.Tensor]) -> Path:
    """Write ``out/model.safetensors`` then ``out/model.header`` (both atomically; the header
    last, so a folder with a header always has its weights)."""
    blob = st_save({k: v.detach().cpu().contiguous() for k, v in state.items()})
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / WEIGHTS, "wb") as f:
        f.write(blob)
    checkpoints.write(out / HEADER, {}, kind="model", step=0, meta={**description, "weights_sha256": hashlib.sha256(blob).hexdigest()})
    return out


def _described(model: Any) -> Tuple[Dict[str, Any], Dict[str, Any], Dict[str, Any], nn.Module]:
    """``(network, preconditioning, source, network module)`` of a loaded model, for its header."""
    info = model.info
    if "physgen_network" in info:  # read from a snapshot
        source = {"file": model.path.name, "format": model.format, "preconditioner": info.get("preconditioner"),
                  "network": info.get("network"), "module_src_sha256": info.get("module_src_sha256")}
        return info["physgen_network"], info["preconditioning"], source, model.field.net
    if model.format == "physgen":  # a physgen training run
        source = {"file": model.path.name, "format": "physgen", "step": model.step, "weights": model.info.get("weights", "ema")}
        return {"class": "PhysgenUNet", **model.meta["unet"]}, {"name": PROCESS_PRECONDITIONING}, source, model.field.net
    if model.format == "diffusers":
        source = {"file": model.path.name, "format": "diffusers", "scheduler": info["scheduler"]}
        return ({"class": DIFFUSERS_NETWORK, "config": info["config"]},
                {"name": DIFFUSERS_PRECONDITIONING, "prediction_type": info["prediction_type"]}, source, model.field.model)
    if model.format == FOLDER_FORMAT:
        net = model.field.model if isinstance(model.field, DiffusersField) else model.field.net
        return info["network"], info["preconditioning"], info.get("source"), net
    raise UserError(f"{str(model.path)!r} is a {model.format} model; import/export convert EDM / PFGM++ snapshots "
                    f"(.pkl/.pt), diffusers UNet2DModel folders, physgen training runs and physgen model folders")


def save_model(model: Any, out: Path) -> Path:
    """Write a loaded model (:class:`physgen.pretrained.Pretrained`) as a model folder at ``out``:
    an EDM / PFGM++ snapshot (its description from the reader), a diffusers folder (its configs),
    a physgen training run (its recorded U-Net spec; the weights ``model`` was loaded with, EMA by
    default) or a model folder again."""
    network, preconditioning, source, net = _described(model)
    description = {"process": {"name": model.process.name, **model.process.config()}, "network": network,
                   "preconditioning": preconditioning, "shape": list(model.shape), "num_classes": int(model.num_classes),
                   "source": source}
    latent = model.latent
    if latent is not None:  # the network works on latents: the folder names the autoencoder that decodes them
        description["latent"] = latent
    return write_folder(Path(out), description, net.state_dict())


def _description(path: Path) -> Dict[str, Any]:
    """The verified header's ``meta`` (checksum and schema by :func:`physgen.checkpoints.read`)."""
    if not (path / HEADER).is_file():
        raise UserError(f"{str(path / EARLIER_DESCRIPTION)!r} is a model folder of an earlier physgen (no checksummed "
                        f"{HEADER}); run physgen import on the original file again")
    desc = checkpoints.read(path / HEADER, kind="model", log=None).meta
    missing = [k for k in ("process", "network", "preconditioning", "shape", "num_classes", "weights_sha256") if k not in desc]
    if missing:
        raise UserError(f"{str(path / HEADER)!r} lacks {', '.join(missing)}")
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


def _field(desc: Dict[str, Any], state: Dict[str, torch.Tensor], process: Any, path: Path, dtype: torch.dtype) -> nn.Module:
    """The field the header describes, with ``state`` loaded (each misfit one line naming the file)."""
    where, pre = f"{str(path / HEADER)!r}", dict(desc["preconditioning"])
    if desc["network"].get("class") == DIFFUSERS_NETWORK:
        if pre.get("name") != DIFFUSERS_PRECONDITIONING:
            raise UserError(f"{where}: a {DIFFUSERS_NETWORK} needs preconditioning {DIFFUSERS_PRECONDITIONING!r}, got {pre.get('name')!r}")
        config = desc["network"].get("config")
        if not isinstance(config, dict):
            raise UserError(f"{where}: its {DIFFUSERS_NETWORK} network records no config")
        model = unet2d(config, state, where, path / WEIGHTS, dtype)
        return DiffusersField(model, process, check_prediction_type(pre.get("prediction_type"), where), int(desc["num_classes"]))
    try:
        preconditioning = None if pre.get("name") == PROCESS_PRECONDITIONING else PRECONDITIONINGS[pre.pop("name")](**pre)
    except (KeyError, TypeError) as exc:
        raise UserError(f"{where}: its preconditioning is invalid ({exc})") from None
    net = _network(desc["network"], where)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise UserError(f"{str(path / WEIGHTS)!r} does not fit the network of {HEADER}: {str(exc).splitlines()[0]}") from None
    net = net.to(dtype)
    return process.precondition(net) if preconditioning is None else NeuralField(net, preconditioning)


def load_folder(path: Path, dtype: torch.dtype = torch.float32) -> Tuple[Any, nn.Module, Tuple[int, ...], Dict[str, Any]]:
    """``(process, field, shape, description)`` of a model folder (module docstring)."""
    desc = _description(path)
    if not (path / WEIGHTS).is_file():
        raise UserError(f"{str(path)!r} has {HEADER} but no {WEIGHTS}")
    blob = (path / WEIGHTS).read_bytes()
    if hashlib.sha256(blob).hexdigest() != desc["weights_sha256"]:
        raise UserError(f"{str(path / WEIGHTS)!r} does not match the checksum in {HEADER} (damaged or replaced)")
    try:
        state = st_load(blob)
    except Exception as exc:  # safetensors' own errors (a damaged index): one line
        raise UserError(f"{str(path / WEIGHTS)!r} is not a safetensors file ({exc})") from None
    process = process_from_record(desc["process"], f"{str(path / HEADER)!r}")
    field_ = _field(desc, state, process, path, dtype)
    field_.eval().requires_grad_(False)
    return process, field_, tuple(int(v) for v in desc["shape"]), desc
