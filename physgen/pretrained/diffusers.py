"""diffusers ``UNet2DModel`` folders as a discrete VP process and its field (optional extra).

A folder written by ``UNet2DModel.save_pretrained`` holds ``config.json`` (the network's
arguments) and ``diffusion_pytorch_model.safetensors`` (its weights); a pipeline folder
holds them under ``unet/`` beside ``scheduler/scheduler_config.json``.  The scheduler's
config decides the physics: DDPM's ``num_train_timesteps`` betas (``linear``:
``linspace(β_start, β_end, T)``; ``scaled_linear``: ``linspace(√β_start, √β_end, T)²``;
``squaredcos_cap_v2``: Nichol & Dhariwal's cosine ``ᾱ(t) = cos²((t + 0.008)/1.008 · π/2)``,
arXiv 2102.09672, ``β ≤ 0.999``; or ``trained_betas``), in float32 as diffusers keeps them,
and the ``prediction_type``: ``epsilon`` (DDPM, arXiv 2006.11239), ``v_prediction``
(``v = √ᾱ ε - √(1-ᾱ) y``, arXiv 2202.00512) or ``sample`` (``y`` itself).  The process is
physgen's VP with those betas (:mod:`physgen.processes.discrete_vp`: exact at the trained
steps, the network fed the fractional timestep ``T t - 1`` between them) and the field
returns what the network predicts (kind ``eps``, or the denoiser for ``v`` and ``sample``).

Weights are read from safetensors only (a ``.bin`` is a pickle: refused); the config is
read as strict JSON; the network is ``UNet2DModel.from_config`` (no download, no code
from the folder).  Sampling-time options of a scheduler (``clip_sample``, thresholding,
timestep spacing) are a sampler's, not the model's: physgen does not apply them.
diffusers itself is imported only here, when a folder is loaded (``pip install
"physgen[diffusers]"``).

:func:`save_diffusers` is the way back (``physgen export --format diffusers``): a model read
from a diffusers folder is written as a flat folder, ``config.json`` (the ``UNet2DModel``
config as read), the weights as safetensors and ``scheduler_config.json`` (the scheduler
config as read), which ``UNet2DModel.from_pretrained`` and physgen both read.  Only such a
model: physgen's own networks are EDM's layouts (SongUNet, DhariwalUNet), whose blocks,
embeddings and resampling have no ``UNet2DModel`` counterpart.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from safetensors.torch import load as st_load, save as st_save
from torch import Tensor, nn

from ..checkpoints import load_state
from ..config import read_json
from ..errors import UserError
from ..io import atomic_write, write_json
from ..fields.kinds import expand_as_batch
from ..fields.labels import check_label
from ..processes import VP

__all__ = ["is_diffusers_folder", "load_diffusers", "save_diffusers", "check_exportable", "DIFFUSERS_OUTPUTS", "diffusers_betas", "DiffusersField",
           "PREDICTION_TYPES", "DIFFUSERS_NETWORK", "check_prediction_type", "unet2d", "discrete_vp", "diffusers_parts"]

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
DIFFUSERS_NETWORK = "UNet2DModel"  # the network class a model folder's header names for an imported diffusers model
WEIGHTS = "diffusion_pytorch_model.safetensors"
DIFFUSERS_OUTPUTS = ("config.json", WEIGHTS, "scheduler_config.json")  # what save_diffusers writes


def _unet_dir(folder: Path) -> Optional[Path]:
    for d in (folder, folder / "unet"):
        if (d / "config.json").is_file():
            return d
    return None


def is_diffusers_folder(folder: Path) -> bool:
    """A folder with a UNet2DModel ``config.json`` (itself or under ``unet/``), or with what only a
    diffusers folder holds (its weights file, ``scheduler_config.json``, ``unet/``), so that a
    folder missing its config is refused by :func:`load_diffusers`, which names what is missing."""
    if any((folder / name).exists() for name in (WEIGHTS, "diffusion_pytorch_model.bin", "scheduler_config.json", "unet")):
        return True
    d = _unet_dir(folder)
    if d is None:
        return False
    try:
        return read_json(d / "config.json").get("_class_name") == "UNet2DModel"
    except (UserError, AttributeError):
        return False


def diffusers_betas(cfg: Dict[str, Any], where: str) -> Tensor:
    """The ``T`` betas (float32) a diffusers scheduler config describes."""
    T = cfg.get("num_train_timesteps", 1000)
    if isinstance(T, bool) or not isinstance(T, int) or not 2 <= T <= 100_000:
        raise UserError(f"{where}: num_train_timesteps must be an integer in 2..100000, got {T!r}")
    if cfg.get("rescale_betas_zero_snr"):
        raise UserError(f"{where}: rescale_betas_zero_snr gives ᾱ = 0 (infinite noise) at the last step, which a VP "
                        f"process cannot start from; not supported")
    if cfg.get("trained_betas") is not None:
        return torch.tensor(cfg["trained_betas"], dtype=torch.float32)
    schedule = cfg.get("beta_schedule", "linear")
    start, end = float(cfg.get("beta_start", 1e-4)), float(cfg.get("beta_end", 0.02))
    if schedule == "linear":
        return torch.linspace(start, end, T, dtype=torch.float32)
    if schedule == "scaled_linear":
        return torch.linspace(start**0.5, end**0.5, T, dtype=torch.float32) ** 2

    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    if schedule == "squaredcos_cap_v2":
        return torch.tensor([min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), 0.999) for i in range(T)], dtype=torch.float32)
    raise UserError(f"{where}: beta_schedule {schedule!r} is not supported; valid: linear, scaled_linear, squaredcos_cap_v2 "
                    f"(or trained_betas)")


class DiffusersField(nn.Module):
    """A ``UNet2DModel`` as a field on a discrete VP process: ``model(x, T t - 1).sample`` is
    ε (kind ``eps``), or ``v`` / ``y`` turned into the denoiser ``D = a x - b v`` / ``y``."""

    def __init__(self, model: nn.Module, process: VP, prediction_type: str, num_classes: int = 0):
        super().__init__()
        check_prediction_type(prediction_type, "DiffusersField")
        self.model, self.process, self.prediction_type = model, process, prediction_type
        self.num_classes = int(num_classes)
        self.kind = "eps" if prediction_type == "epsilon" else "denoiser"

    def forward(self, x: Tensor, s: Tensor, label: Optional[Tensor] = None) -> Tensor:
        label = check_label(label, self.num_classes, x.shape[0], device=x.device, what="this diffusers model")
        if label is not None and bool((label == self.num_classes).any()):
            raise UserError("this diffusers model has no null class (no classifier-free guidance); give every sample a class")
        if self.num_classes and label is None:
            raise UserError("this diffusers model is class-conditional: give a class label")
        timestep = self.process.discrete.timestep(s.double()).to(x.dtype)
        out = self.model(x, timestep, class_labels=label).sample.to(x.dtype)
        if self.prediction_type == "v_prediction":
            a, b = (expand_as_batch(v, x) for v in self.process.coefficients(s))
            return a * x - b * out
        return out


def _scheduler_config(folder: Path, unet: Path) -> Tuple[Path, Dict[str, Any]]:
    for path in (unet / "scheduler_config.json", folder / "scheduler_config.json", folder / "scheduler" / "scheduler_config.json"):
        if path.is_file():
            cfg = read_json(path, "scheduler config")
            if not isinstance(cfg, dict):
                raise UserError(f"scheduler config {str(path)!r} is not a JSON object")
            return path, cfg
    raise UserError(f"{str(folder)!r} has no scheduler_config.json (beside config.json or in scheduler/): the noise schedule "
                    f"the network was trained on is unknown")


def check_prediction_type(value: Any, where: str) -> str:
    """``value`` if it is one of :data:`PREDICTION_TYPES`, else one line naming ``where`` and the value."""
    if value not in PREDICTION_TYPES:
        raise UserError(f"{where}: prediction_type {value!r} is not supported; valid: {', '.join(PREDICTION_TYPES)}")
    return value


def unet2d(config: Dict[str, Any], state: Dict[str, Tensor], where: str, weights: Path, dtype: torch.dtype) -> nn.Module:
    """``UNet2DModel.from_config(config)`` with ``state`` loaded (strict, one line naming ``weights`` and
    the first misfit tensor), in ``dtype``, for inference.  The one place diffusers' network is built:
    for a diffusers folder and for a model folder imported from one (``config`` from its header)."""
    try:
        from diffusers import UNet2DModel  # heavy optional dependency: imported only where it is used
    except ImportError:
        raise UserError(f"{where} is a diffusers UNet2DModel; running it needs the optional diffusers package: "
                        f"pip install \"physgen[diffusers]\"") from None
    try:
        model = UNet2DModel.from_config(config)
    except Exception as exc:  # diffusers' own config validation
        raise UserError(f"{where}: UNet2DModel rejects this config ({str(exc).splitlines()[0] if str(exc) else exc!r})") from None
    load_state(model, state, path=weights, what="UNet2DModel weights")
    return (model if dtype == torch.float32 else model.to(dtype)).eval().requires_grad_(False)


def discrete_vp(betas: Tensor) -> VP:
    """physgen's VP over the scheduler's ``T`` betas: times ``t = (τ + 1)/T`` for the trained steps ``τ``."""
    T = betas.numel()
    return VP("discrete", betas=betas.double().tolist(), t_eps=1.0 / T, t_max=1.0)


def load_diffusers(folder, dtype: torch.dtype = torch.float32) -> Tuple[VP, DiffusersField, Tuple[int, ...], Dict[str, Any]]:
    """``(process, field, sample shape, description)`` of a diffusers folder (module docstring)."""
    folder = Path(folder)
    unet = _unet_dir(folder)
    if unet is None:
        raise UserError(f"{str(folder)!r} has no config.json of a UNet2DModel (itself or under unet/)")
    config = read_json(unet / "config.json", "diffusers config")
    if not isinstance(config, dict) or config.get("_class_name") != "UNet2DModel":
        raise UserError(f"{str(unet / 'config.json')!r} is not a UNet2DModel config (only UNet2DModel folders are read)")
    weights = unet / WEIGHTS
    if not weights.is_file():
        found = sorted(p.name for p in unet.glob("diffusion_pytorch_model*"))
        raise UserError(f"{str(unet)!r} has no {WEIGHTS}" + (f" (found {', '.join(found)}: pickles are not read; save with "
                                                           f"safe_serialization=True)" if found else ""))
    sched_path, sched = _scheduler_config(folder, unet)
    where = f"scheduler config {str(sched_path)!r}"
    betas = diffusers_betas(sched, where)
    prediction = check_prediction_type(sched.get("prediction_type", "epsilon"), where)
    try:
        state = st_load(weights.read_bytes())
    except Exception as exc:  # safetensors' own header and size checks
        raise UserError(f"{str(weights)!r} is damaged or not a safetensors file ({str(exc).splitlines()[0] if str(exc) else exc!r})") from None
    model = unet2d(config, state, f"{str(unet / 'config.json')!r}", weights, dtype)
    process = discrete_vp(betas)
    field = DiffusersField(model, process, prediction, int(config.get("num_class_embeds") or 0))
    size = config.get("sample_size", 32)
    size = (size, size) if isinstance(size, int) else tuple(size)
    shape = (int(config.get("in_channels", 3)), int(size[0]), int(size[1]))
    info = {"network": "UNet2DModel", "prediction_type": prediction, "num_train_timesteps": betas.numel(),
            "beta_schedule": sched.get("beta_schedule", "linear") if sched.get("trained_betas") is None else "trained_betas",
            "scheduler_config": str(sched_path), "config": config, "scheduler": sched, "ignored_sampler_options": {k: sched[k] for k in ("clip_sample", "thresholding") if sched.get(k)}}
    return process, field, shape, info


def diffusers_parts(model: Any) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """``(UNet2DModel config, scheduler config)`` of a model read from a diffusers folder, or of a
    model folder imported from one (its header keeps both); any other model: one line saying why."""
    network = model.info.get("network")
    if model.format == "diffusers":
        return model.info["config"], model.info["scheduler"]
    if isinstance(network, dict) and network.get("class") == DIFFUSERS_NETWORK:
        return network["config"], model.info["source"]["scheduler"]
    raise UserError(f"{str(model.path)!r} ({model.format}) was not read from a diffusers folder: its network (physgen's U-Net, EDM's SongUNet/"
                    f"DhariwalUNet layouts) has no diffusers UNet2DModel equivalent; --format diffusers exports only "
                    f"models read from a diffusers folder (use --format safetensors)")


def check_exportable(model: Any) -> None:
    """One line unless ``model`` was read from a diffusers folder (its network has no ``UNet2DModel`` layout)."""
    diffusers_parts(model)


def save_diffusers(model: Any, out: Path) -> Path:
    """Write a model read from a diffusers folder (:class:`physgen.pretrained.Pretrained` of format
    ``diffusers``, or a model folder imported from one) as ``out/config.json``,
    ``out/diffusion_pytorch_model.safetensors`` and ``out/scheduler_config.json`` (module
    docstring), each atomically, the config last.  Any other model: one line saying why."""
    config, scheduler = diffusers_parts(model)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    blob = st_save({k: v.detach().cpu().contiguous() for k, v in model.field.model.state_dict().items()})
    with atomic_write(out / WEIGHTS, "wb") as f:
        f.write(blob)
    write_json(out / "scheduler_config.json", scheduler)
    write_json(out / "config.json", config)
    return out
