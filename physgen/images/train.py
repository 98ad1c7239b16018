"""Image runs: the config dataclass, config files, building the field, training, and
rebuilding a trained field from its (self-describing) checkpoint.

The default recipe is EDM's / PFGM++'s CIFAR-10 recipe (Karras et al., arXiv 2206.00364,
Table 7; Xu et al., arXiv 2302.04265, App. C): DDPM++ U-Net (``--arch ddpmpp`` =
preset ``ddpmpp-cifar10``, dropout 0.13), Adam with ``lr = 1e-3`` and a linear warm-up
over 10 Mimg, batch 512, EMA half-life 0.5 Mimg with ramp-up 0.05, no gradient
clipping; total 200 Mimg ``= 390,625`` steps at batch 512 (``--steps`` or
``--duration-mimg``).  Not reproduced: EDM's non-leaky geometric augmentation pipeline
(``augment = 0.12`` in EDM's CIFAR-10 runs; ``--xflip`` gives horizontal flips only).

Config files (``--config FILE``) are TOML or JSON with the fields of
:class:`ImageTrainConfig` at the top and the :class:`physgen.training.TrainConfig` fields
in a ``[train]`` table::

    dataset = "cifar10:/data/cifar-10-batches-py"
    process = "pfgmpp"
    D = 2048                    # or "inf"
    arch = "ddpmpp"
    out = "runs/c10-d2048"
    [train]
    batch = 512
    lr = 1e-3
    duration_mimg = 200

``null``/absent keep the default; in TOML (which has no null) write ``"none"``.
Command-line flags override the file, one flag per field.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch

from .. import checkpoints
from ..config import (
    LIMIT_REASONS, MAX_RESOLUTION, MAX_SAMPLES, ExtraDims, check_options, config_from_dict as _from_dict, config_to_dict, dump_config_file, jsonable,
    load_config_file, parse_D, parse_float, parse_int, parse_optional, parse_probability, parse_seed, parse_steps,
)
from ..errors import UserError, unknown_name
from ..fields.labels import drop_labels
from ..io import write_json
from ..runtime import init_distributed, initial_weights
from ..training import TrainConfig, TrainResult, rebuild_field, train
from ..fields.neural import c_noise_unit
from .data import ImageDataset, ImageSampler, load_image_dataset
from ..nets.networks import ARCHS, build_image_network, check_overrides, image_network_weight_floor, is_mlp_arch
from ..processes import make_process, process_from_record, process_class
from .generate import sample_grid
from ..latent.data import check_latent_record, latent_dataset, latent_decoder

__all__ = [
    "ImageTrainConfig",
    "ARCH_ALIASES",
    "resolve_arch",
    "LATENT_DEFAULTS",
    "scaled_warmup_mimg",
    "with_default_warmup",
    "warmup_warning",
    "default_image_train",
    "load_config",
    "dump_config",
    "config_from_dict",
    "build_process",
    "build_network",
    "LabelledStream",
    "run_training",
    "TrainedModel",
    "load_trained",
]

ARCH_ALIASES = {"ddpmpp": "ddpmpp-cifar10"}
STEPS_200_MIMG_AT_512 = 390_625
PIXEL_ARCH, LATENT_ARCH = "ddpmpp", "tiny"  # the network when --arch is not given: on pixels, in a latent space
LATENT_DEFAULTS: Dict[str, Any] = {
    "sigma_data": 1.0, "train.steps": 4000, "train.batch": 256, "train.lr": 2e-3, "train.warmup_steps": 100, "train.warmup_mimg": None,
}
"""What ``physgen train --latent`` uses for the keys neither a flag nor a config file sets (dotted:
``train.*`` in the training table).  The latents are scaled to unit variance (``σ_d = 1``).  The
training recipe is sized to a few CPU minutes on the digits latent (4000 steps of 256, Adam 2e-3,
with the ``tiny`` U-Net of :data:`LATENT_ARCH`): the pixel recipe's 10 Mimg warm-up would keep a run of
a few thousand steps at under 10 % of its learning rate (the cause of the flat latent losses recorded
before; benchmarks/RESULTS.md, "The latent network (i25-latentnet)")."""


def resolve_arch(arch: str) -> str:
    """``ddpmpp`` -> ``ddpmpp-cifar10``; preset names (``tiny``, ``small``, ``mlp``, ...) as they are."""
    name = ARCH_ALIASES.get(arch, arch)
    if name not in ARCHS:
        raise unknown_name("--arch", arch, list(ARCHS) + list(ARCH_ALIASES))
    return name


EDM_WARMUP_MIMG = 10.0
EDM_WARMUP_SHARE = 0.05  # EDM's ratio: 10 Mimg of lr warm-up in a 200 Mimg run (arXiv 2206.00364, App. F.3)


def scaled_warmup_mimg(total_mimg: float) -> float:
    """The warm-up of a run ``total_mimg`` million images long when none is given: EDM's
    ``min(10, 0.05 · total)`` Mimg.  At EDM's 200 Mimg this is EDM's 10 Mimg; a short run (``train
    --steps 2000`` of 512: 1.02 Mimg -> 0.05 Mimg, 100 steps) keeps EDM's share rather than its
    length, which would hold the whole run under 10 % of its learning rate."""
    return min(EDM_WARMUP_MIMG, EDM_WARMUP_SHARE * float(total_mimg))


def with_default_warmup(table: Dict[str, Any], given: set) -> Dict[str, Any]:
    """A full training table whose user set only the keys ``given``: ``warmup_steps`` without
    ``warmup_mimg`` clears the latter (it would override the steps); a length (``steps`` or
    ``duration_mimg``) without either warm-up key gets :func:`scaled_warmup_mimg` of that length.
    One rule for flags, config files and Python callers."""
    table = dict(table)
    if "warmup_steps" in given and "warmup_mimg" not in given:
        table["warmup_mimg"] = None
    if {"steps", "duration_mimg"} & given and not {"warmup_steps", "warmup_mimg"} & given:
        total_mimg = table["duration_mimg"] if table.get("duration_mimg") is not None else int(table["steps"]) * int(table["batch"]) / 1e6
        table["warmup_steps"], table["warmup_mimg"] = 0, scaled_warmup_mimg(float(total_mimg))
    return table


def warmup_warning(tcfg: TrainConfig) -> Optional[str]:
    """A line for a run whose warm-up outlasts half of it (its lr never reaches the value set), else None."""
    if 2 * tcfg.warmup <= tcfg.total_steps:
        return None
    reached = min(1.0, tcfg.total_steps / max(tcfg.warmup, 1))
    return (f"physgen train: warning: the lr warm-up ({tcfg.warmup} steps) is longer than half of the run ({tcfg.total_steps} steps); "
            f"the last step runs at {100 * reached:.0f} % of lr {tcfg.lr:g} (--warmup-steps / --warmup-mimg set it)")


def default_image_train() -> TrainConfig:
    """EDM / PFGM++ CIFAR-10 optimisation defaults (module docstring)."""
    return TrainConfig(
        steps=STEPS_200_MIMG_AT_512,
        batch=512,
        lr=1e-3,
        warmup_steps=0,
        warmup_mimg=EDM_WARMUP_MIMG,
        ema_halflife=500_000.0,
        ema_rampup=0.05,
        grad_clip=None,
        log_every=100,
        checkpoint_every=5000,
        keep_checkpoints=3,
        seed=0,
        precision="auto",
        channels_last=True,
    )


@dataclass
class ImageTrainConfig:
    """One image training run (one field per ``physgen train`` flag).

    ``dataset``: ``digits``, ``cifar10:PATH``, ``folder:PATH`` or ``npz:PATH``;
    ``resolution`` resizes (``None``: the data's own).  ``cond`` trains a class-conditional
    network (labels from the data), replacing a fraction ``label_dropout`` of the labels by
    the null class so the same network also samples unconditionally (the hook for
    classifier-free guidance).  ``process`` with ``D``, ``sigma_*`` and any other
    ``process_options`` builds the process (``None``: its default).  ``arch``: a U-Net
    preset (``tiny``, ``small``, ``ddpmpp-cifar10``; ``ddpmpp`` is an alias) or the MLP
    ``mlp`` (:mod:`physgen.nets.networks`), with ``unet`` overrides of the preset (e.g.
    ``{"dropout": 0.1}``, or ``{"hidden": 1024}`` for the MLP); ``None``: ``ddpmpp`` on
    pixels, ``tiny`` in a latent space (:attr:`network_arch`).  ``sample_every`` steps (0: only at the end)
    rank 0 writes a grid of ``sample_n`` EMA samples (``sample_solver`` with
    ``sample_steps`` steps, seeds ``0..sample_n-1`` of ``sample_seed``) to
    ``out/samples/``.  ``latent``: an autoencoder (checkpoint or train-autoencoder run
    folder); the run then trains on ``dataset``'s scaled latents (:mod:`physgen.latent.data`)
    and decodes its sample grids.
    """

    dataset: str = "digits"
    resolution: Optional[int] = None
    xflip: bool = False
    cond: bool = False
    label_dropout: float = 0.1
    process: str = "pfgmpp"
    D: Optional[ExtraDims] = field(default=None, metadata={"parse": parse_optional(parse_D)})
    sigma_min: Optional[float] = None
    sigma_max: Optional[float] = None
    sigma_data: Optional[float] = None
    process_options: Dict[str, Any] = field(default_factory=dict)
    arch: Optional[str] = None
    unet: Dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    out: str = "runs/images"
    sample_every: int = 0
    sample_n: int = 64
    sample_steps: int = 18
    sample_solver: str = "heun"
    sample_seed: int = 0
    latent: Optional[str] = None
    train: TrainConfig = field(default_factory=default_image_train)

    def __post_init__(self):
        if isinstance(self.train, dict):
            table = with_default_warmup({**config_to_dict(default_image_train(), encode=False), **self.train}, set(self.train))
            self.train = _from_dict(TrainConfig, table, "config", prefix="train.")
        if not isinstance(self.dataset, str) or not self.dataset:
            raise UserError(f"dataset must be a dataset spec string, got {self.dataset!r}")
        if self.resolution is not None:
            self.resolution = parse_int(self.resolution, "resolution", 1, MAX_RESOLUTION, LIMIT_REASONS["resolution"])
        self.label_dropout = parse_probability(self.label_dropout, "label_dropout", hi_open=True)
        process_class(self.process)  # unknown names list the valid ones
        self.D = None if self.D is None else parse_D(self.D)  # a file's D was parsed by config_from_dict and passes as it is
        for name in ("sigma_min", "sigma_max", "sigma_data"):
            if getattr(self, name) is not None:
                setattr(self, name, parse_float(getattr(self, name), name, 0.0, lo_open=True))
        if self.arch is not None and not isinstance(self.arch, str):
            raise UserError(f"arch must be a network name, got {self.arch!r}")
        resolve_arch(self.network_arch)
        self.sample_every = parse_int(self.sample_every, "sample_every", 0)
        if self.latent is not None and (not isinstance(self.latent, str) or not self.latent):
            raise UserError(f"latent must be an autoencoder path, got {self.latent!r}")
        self.sample_n = parse_int(self.sample_n, "sample_n", 1, MAX_SAMPLES, LIMIT_REASONS["samples"])
        self.sample_steps = parse_steps(self.sample_steps, "sample_steps")
        self.sample_seed = parse_seed(self.sample_seed, "sample_seed")
        if not isinstance(self.process_options, dict) or not isinstance(self.unet, dict):
            raise UserError("process_options and unet must be tables (dicts)")
        self._check_options()

    def _check_options(self) -> None:
        """Process options and U-Net overrides by name and type now, not when a run starts."""
        given = {**self.process_options, **{k: getattr(self, k) for k in ("D", "sigma_min", "sigma_max", "sigma_data")}}
        check_options(process_class(self.process).__init__, {k: v for k, v in given.items() if v is not None}, f"process_options (process {self.process!r})")
        check_overrides(resolve_arch(self.network_arch), self.unet, "unet")

    @property
    def network_arch(self) -> str:
        """``arch``, or the default of the data space: ``tiny`` (0.18M weights) in a latent space, ``ddpmpp`` on pixels."""
        return self.arch if self.arch is not None else LATENT_ARCH if self.latent is not None else PIXEL_ARCH

    def to_dict(self) -> Dict[str, Any]:
        """Plain JSON-able dict (``D = inf`` written as ``"inf"``)."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any], where: str = "config") -> "ImageTrainConfig":
        return config_from_dict(d, where)


# --------------------------------------------------------------------------- config files


def config_from_dict(d: Dict[str, Any], where: str = "config") -> ImageTrainConfig:
    """An :class:`ImageTrainConfig` from a (parsed file's) dict; unknown keys and wrongly
    typed values raise a :class:`UserError` naming the key (``train.KEY`` for the training
    table, whose absent keys keep :func:`default_image_train`'s values)."""
    return _from_dict(ImageTrainConfig, d, where)


def load_config(path) -> ImageTrainConfig:
    """Read a ``.toml`` or ``.json`` config file (module docstring)."""
    return config_from_dict(load_config_file(path), where=str(path))


def dump_config(config: ImageTrainConfig, path) -> Path:
    """Write ``config`` as TOML or JSON (by suffix), atomically."""
    return dump_config_file(config.to_dict(), path)


# --------------------------------------------------------------------------- building


def build_process(config: ImageTrainConfig):
    """``make_process(config.process, D=..., sigma_min=..., ...)`` (``None``: default)."""
    opts = dict(config.process_options)
    for key in ("D", "sigma_min", "sigma_max", "sigma_data"):
        if getattr(config, key) is not None:
            opts[key] = getattr(config, key)
    return make_process(config.process, **opts)


def build_network(spec: Dict[str, Any]):
    """A U-Net or MLP from a spec ``{arch, img_resolution, channels, num_classes, overrides}``
    (:func:`physgen.nets.networks.build_image_network`)."""
    return build_image_network(spec["arch"], int(spec["img_resolution"]), int(spec["channels"]), num_classes=int(spec["num_classes"]),
                               **dict(spec.get("overrides", {})))


class LabelledStream:
    """An :class:`ImageSampler` whose labels are dropped (unconditional network) or, with
    probability ``p``, replaced by the null class ``null_label`` (classifier-free guidance
    training, Ho & Salimans, arXiv 2207.12598).  The drop mask is drawn for the global
    batch from the sampler's generator, so it is rank-consistent and resumes exactly."""

    def __init__(self, sampler: ImageSampler, cond: bool, p: float = 0.0, null_label: int = 0):
        self.sampler, self.cond, self.p, self.null_label = sampler, bool(cond), float(p), int(null_label)

    @property
    def batch_size(self) -> int:
        return self.sampler.batch_size

    def next(self):
        y, label = self.sampler.next()
        if not self.cond:
            return y, None
        if self.p > 0:
            s = self.sampler
            u = torch.rand(s.batch_size * s.world_size, generator=s.generator)[s.rank * s.batch_size : (s.rank + 1) * s.batch_size]
            label = drop_labels(label, self.p, self.null_label, u)
        return y, label

    def state_dict(self):
        return self.sampler.state_dict()

    def load_state_dict(self, state):
        self.sampler.load_state_dict(state)


def _grid_writer(process, out: Path, config: ImageTrainConfig, shape, num_classes: int, device, decode=None) -> Callable[[int, Any], None]:
    """``write_grid(step, ema)``: ``out/samples/grid-<step>.png`` of ``sample_n`` EMA samples
    (fixed seed, labels cycling through the classes), for :meth:`physgen.training.Trainer.sample_grid`."""
    def write_grid(step: int, ema) -> None:
        label = [i % num_classes for i in range(config.sample_n)] if num_classes else None
        sample_grid(
            process, ema, config.sample_n, out / "samples" / f"grid-{step:08d}.png", shape,
            seed=config.sample_seed, solver=config.sample_solver, steps=config.sample_steps,
            label=label, batch=min(config.sample_n, 256), device=device, decode=decode,
        )

    return write_grid


def _latent_data(config: ImageTrainConfig, resume, out: Path, device):
    """A latent run's (latents, record, decoder) (:mod:`physgen.latent.data`); a resumed run must
    keep the autoencoder its checkpoint records."""
    if config.resolution is not None:
        raise UserError("--resolution does not apply with --latent (the images are loaded at the autoencoder's resolution)")
    dataset, latent = latent_dataset(config.latent, config.dataset, device=device)
    if resume:
        recorded = checkpoints.find(resume if resume is not True else out, kind="train", log=None).header.meta.get("image", {})
        check_latent_record(recorded.get("latent"), config.latent, f"run {str(out)!r}")
    return dataset, latent, latent_decoder(latent, f"run {str(out)!r}", device=device)


def run_training(
    config: ImageTrainConfig,
    *,
    resume: bool = False,
    log_stream=None,
    on_step: Optional[Callable] = None,
    dataset: Optional[ImageDataset] = None,
) -> TrainResult:
    """Train an image field as ``config`` says (under ``torchrun``: DDP over all ranks).

    Writes ``out/config.json``, ``out/checkpoints/ckpt-*.pt`` (self-describing: the
    config, the U-Net spec and the process are inside), grids ``out/samples/grid-*.png``
    and ``out/summary.json``.  ``resume=True`` continues from the newest checkpoint in
    ``out`` (``config.train`` may carry a new ``steps`` total).  ``on_step(step, ema)``
    runs after the grid callback (return ``True`` to stop).
    """
    log = log_stream or sys.stderr
    info, device = init_distributed(config.device)
    out = Path(config.out)
    if not resume and checkpoints.list_checkpoints(out):
        raise UserError(f"{str(out)!r} already holds checkpoints; continue with --resume {out}, or choose another --out")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    latent, decode = None, None
    if config.latent is not None:
        dataset, latent, decode = _latent_data(config, resume, out, device)
    if dataset is None:
        dataset = load_image_dataset(config.dataset, config.resolution)
    if config.cond and dataset.num_classes == 0:
        raise UserError(f"--cond needs a labelled dataset; {config.dataset!r} has no labels")
    process = build_process(config)
    spec = {
        "arch": resolve_arch(config.network_arch),
        "img_resolution": dataset.resolution,
        "channels": dataset.channels,
        "num_classes": dataset.num_classes if config.cond else 0,
        "overrides": dict(config.unet),
    }
    shape = (dataset.channels, dataset.resolution, dataset.resolution)
    with initial_weights(config.train.seed):
        net = build_network(spec)
    field_ = process.precondition(net)
    if is_mlp_arch(spec["arch"]):  # its embedding wants O(1) input: VP feeds 999 t (physgen.fields.neural)
        net.c_noise_unit = spec["overrides"]["c_noise_unit"] = c_noise_unit(field_)
    tcfg = config.train
    if tcfg.batch % info.world_size:
        raise UserError(f"--batch {tcfg.batch} must be divisible by the number of processes ({info.world_size})")
    data = dataset.to(device) if device.type == "cuda" else dataset
    sampler = ImageSampler(data, tcfg.batch // info.world_size, seed=tcfg.seed + 1, flip=config.xflip, device=device, rank=info.rank, world_size=info.world_size)
    stream = LabelledStream(sampler, config.cond, config.label_dropout, null_label=spec["num_classes"])
    meta = {
        "image": {
            "config": config.to_dict(),
            "unet": spec,
            "dataset": {"name": dataset.name, "size": len(dataset), "num_classes": dataset.num_classes, "class_names": list(dataset.class_names or ())},
            "shape": list(shape),
            **({"latent": latent} if latent is not None else {}),
        }
    }
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "config.json", {**config.to_dict(), "resolved": {"process": {"name": process.name, **jsonable(process.config())}, "unet": spec, "world_size": info.world_size, "device": str(device), "total_steps": tcfg.total_steps}})
        n_params = sum(p.numel() for p in net.parameters())
        print(f"physgen train: {process.name} {jsonable(process.config())}  {spec['arch']} ({n_params / 1e6:.2f}M params)  {dataset.name} {list(shape)} x {len(dataset)}  "
              f"{info.world_size} process(es) on {device}  {tcfg.total_steps} steps of {tcfg.batch}", file=log, flush=True)
        warning = None if resume else warmup_warning(tcfg)
        if warning:
            print(warning, file=log, flush=True)
    t0 = time.perf_counter()
    result = train(process, field_, stream, tcfg, out_dir=out, resume=resume, device=device, log_stream=log, on_step=on_step, checkpoint_meta=meta,
                   unit="img", sample_grid=_grid_writer(process, out, config, shape, spec["num_classes"], device, decode), sample_every=config.sample_every)
    wall = time.perf_counter() - t0
    if info.is_main:
        tail = result.losses[-max(1, len(result.losses) // 10):]
        write_json(out / "summary.json", {
            "step": result.step, "total_steps": tcfg.total_steps, "stopped_early": result.stopped_early,
            "final_loss": sum(tail) / len(tail) if tail else None, "wall_s": wall,
            "checkpoint": str(result.checkpoint) if result.checkpoint else None, "world_size": info.world_size,
        })
    return result


# --------------------------------------------------------------------------- loading


@dataclass
class TrainedModel:
    """A trained field rebuilt from a checkpoint alone."""

    process: Any
    field: torch.nn.Module
    shape: tuple
    num_classes: int
    step: int
    path: Path
    meta: Dict[str, Any]
    decode: Optional[Callable[[torch.Tensor], torch.Tensor]] = None  # a latent run's decoder (``shape`` is then the latent's)

    @property
    def latent(self) -> Optional[Dict[str, Any]]:
        """The run's latent record (autoencoder path and sha256, scale factor, image shape); ``None`` in pixel space."""
        record = self.meta.get("latent")
        return record if isinstance(record, dict) else None

    @property
    def config(self) -> Optional[ImageTrainConfig]:
        cfg = self.meta.get("config")
        return config_from_dict(cfg, where=str(self.path)) if cfg else None


def check_image_header(header: checkpoints.Header) -> None:
    """UserError naming the file unless its header describes an image network this file can
    hold: a complete U-Net spec, a sample shape that agrees with it, a known process, and no
    more weights than the file has room for (:func:`checkpoints.check_weights_fit`).  Given to
    :func:`checkpoints.find`, so a run folder falls back past a checkpoint that fails it."""
    where = f"checkpoint {str(header.path)!r}"
    meta = header.meta.get("image")
    if not meta:
        raise UserError(f"{str(header.path)!r} is not an image checkpoint (no U-Net spec inside); was it written by physgen train?")
    if "process" in header.meta:
        process_from_record(header.meta["process"], where)
    try:
        spec = meta["unet"]
        floor = image_network_weight_floor(spec["arch"], spec["img_resolution"], spec["channels"], spec["num_classes"], **dict(spec.get("overrides", {})))
        side = spec["img_resolution"]
        if list(meta["shape"]) != [spec["channels"], side, side]:
            raise ValueError(f"shape {meta['shape']} is not [channels, img_resolution, img_resolution] = {[spec['channels'], side, side]}")
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{where}: its U-Net spec is invalid ({exc})") from None
    checkpoints.check_weights_fit(header.path, floor, "a U-Net")


def load_trained(path, device="cpu", ema: bool = True, ae: Any = None) -> TrainedModel:
    """Rebuild process, U-Net and field from a checkpoint (file or run dir: its newest
    checkpoint whose header is valid, :func:`check_image_header`, and that verifies) and load
    the EMA weights (``ema=False``: the raw training weights).  A latent run also gets its
    decoder: the autoencoder it records (or ``ae``), refused unless its checksum matches."""
    found = checkpoints.find(path, kind="train", check=check_image_header)
    meta = found.header.meta["image"]
    ckpt = checkpoints.read(found.path, kind="train")
    try:
        net = build_network(meta["unet"])
        shape = tuple(int(v) for v in meta["shape"])
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"checkpoint {str(found.path)!r}: its U-Net spec is invalid ({exc})") from None
    process, field_ = rebuild_field(ckpt, net, weights="ema" if ema else "model", device=device)
    decode = latent_decoder(meta["latent"], f"checkpoint {str(found.path)!r}", ae_path=ae, device=device) if "latent" in meta else None
    if ae is not None and decode is None:
        raise UserError(f"--ae applies to a latent run; {str(found.path)!r} was trained on images")
    return TrainedModel(process, field_, shape, int(meta["unet"]["num_classes"]), ckpt.step, found.path, meta, decode)
