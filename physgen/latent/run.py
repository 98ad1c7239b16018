"""``physgen train-autoencoder`` runs: the KL autoencoder trained by the shared
:class:`physgen.training.Trainer` (run folder, checkpoints, exact resume, EMA, DDP, progress).

The Trainer minimises ``mean_b objective.loss(net, x_b)`` for any objective with ``name``,
``config()`` and ``loss``; :class:`AutoencoderObjective` is the autoencoder's (LDM, arXiv
2112.10752, Sec. 3.1)::

    l_b = rho(x_b - D(z_b)) + beta KL(q(z|x_b) || N(0, I)),   z_b = mu_b + sigma_b eps_b

with ``eps`` drawn from the Trainer's per-chunk noise generator (seeded by position), so a
step depends only on ``(seed, step, chunk)`` and the image stream's state.  Adam runs with
LDM's autoencoder betas ``(0.5, 0.9)``.  Not here: the optional PatchGAN discriminator
(a second optimiser the Trainer does not have); :func:`physgen.latent.train.train_autoencoder`
still offers it as a library call.

A run folder ``OUT`` holds ``config.json``, ``checkpoints/ckpt-*.pt`` (kind ``"train"``,
for ``--resume``), ``samples/recon-<step>.png`` (held-out originals over their EMA
reconstructions), ``summary.json`` and, at the end, ``autoencoder.pt``: the EMA's weights as
an autoencoder checkpoint, which every reader of an autoencoder (``encode --ae``, ``train
--latent``) finds when given the folder.
"""
from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch
from torch import Tensor

from .. import checkpoints
from ..config import config_from_dict, config_to_dict, jsonable, parse_float
from ..errors import UserError, unknown_name
from ..images.data import ImageDataset, ImageSampler, load_image_dataset, save_image_grid
from ..io import write_json
from ..nets.autoencoder import AE_PRESETS, RECONSTRUCTION_LOSSES, Autoencoder, AutoencoderSpec, reconstruction_loss, spec_from_dict
from ..runtime import init_distributed
from ..training import TrainConfig, TrainResult, Trainer
from .train import AUTOENCODER_FILE, save_autoencoder

__all__ = ["AutoencoderObjective", "AutoencoderRunConfig", "default_autoencoder_train", "run_autoencoder_training",
           "run_config_of", "LDM_BETAS"]

LDM_BETAS = (0.5, 0.9)  # LDM's Adam betas for its autoencoders
GRID_N = 16  # held-out images shown in each reconstruction grid


class AutoencoderObjective:
    """Stands in for a process in :class:`physgen.training.Trainer`: the per-image autoencoder
    loss ``rho(x - D(z)) + beta KL(q(z|x) || N(0, I))`` (module docstring)."""

    name = "autoencoder"

    def __init__(self, beta: float = 1e-6, recon: str = "l1"):
        if recon not in RECONSTRUCTION_LOSSES:
            raise unknown_name("reconstruction loss", recon, RECONSTRUCTION_LOSSES)
        self.beta, self.recon = parse_float(beta, "beta", 0.0, 1e6), recon

    def config(self) -> Dict[str, Any]:
        return {"beta": self.beta, "recon": self.recon}

    def loss(self, ae, x: Tensor, *, generator=None, label=None) -> Tensor:
        x_hat, q = ae(x, generator=generator)
        return reconstruction_loss(x, x_hat, self.recon) + self.beta * q.kl()


def default_autoencoder_train() -> TrainConfig:
    """The autoencoder's optimisation defaults (those of :class:`physgen.latent.train.AutoencoderTrainConfig`):
    1000 steps of 64, lr 2e-3 after 100 warm-up steps, EMA half-life 5000 images (no ramp-up), no clipping."""
    return TrainConfig(steps=1000, batch=64, lr=2e-3, warmup_steps=100, ema_halflife=5000.0, ema_rampup=None,
                       grad_clip=None, log_every=100)


@dataclass
class AutoencoderRunConfig:
    """One ``physgen train-autoencoder`` run (one field per flag; ``train``: the optimisation)."""

    dataset: str = "digits"
    preset: str = "digits"
    beta: float = 1e-6
    recon: str = "l1"
    out: str = "runs/autoencoder"
    device: str = "auto"
    holdout: int = GRID_N
    train: TrainConfig = field(default_factory=default_autoencoder_train)

    def __post_init__(self) -> None:
        if self.preset not in AE_PRESETS:
            raise unknown_name("autoencoder preset", self.preset, AE_PRESETS)
        AutoencoderObjective(self.beta, self.recon)  # validates beta and recon
        if isinstance(self.train, dict):
            self.train = config_from_dict(TrainConfig, {**config_to_dict(default_autoencoder_train(), encode=False), **self.train},
                                          "autoencoder run", prefix="train.")

    @property
    def spec(self) -> AutoencoderSpec:
        return AE_PRESETS[self.preset]

    def to_dict(self) -> Dict[str, Any]:
        return config_to_dict(self)


def run_config_of(header: checkpoints.Header) -> AutoencoderRunConfig:
    """The run config an autoencoder run's checkpoint records (UserError naming the file if none)."""
    record = header.meta.get("autoencoder_run")
    if not isinstance(record, dict):
        raise UserError(f"{str(header.path)!r} is not a checkpoint of physgen train-autoencoder (no run config inside)")
    spec_from_dict(header.meta.get("autoencoder"), f"checkpoint {str(header.path)!r}: its autoencoder spec")
    return config_from_dict(AutoencoderRunConfig, record, f"checkpoint {str(header.path)!r}")


def _split(data: ImageDataset, holdout: int) -> tuple[ImageDataset, Tensor]:
    """The training images and ``holdout`` held-out ones (the last, for the reconstruction grids)."""
    if len(data) <= holdout:
        raise UserError(f"dataset {data.name!r} has {len(data)} image(s); train-autoencoder holds out {holdout} and needs more")
    train = ImageDataset(data.images[:-holdout], None if data.labels is None else data.labels[:-holdout], data.num_classes,
                         data.name, data.class_names)
    return train, data.images[-holdout:]


def _grid_writer(out: Path, held: Tensor, device) -> Callable[[int, Any], None]:
    """``write(step, ema)``: ``out/samples/recon-<step>.png``, originals (top) over their EMA reconstructions."""
    def write(step: int, ema: Autoencoder) -> None:
        with torch.no_grad():
            recon = ema(held.to(device), sample=False)[0].clamp(-1, 1).cpu()
        save_image_grid(torch.cat([held, recon]), out / "samples" / f"recon-{step:08d}.png", nrow=len(held))

    return write


def run_autoencoder_training(config: AutoencoderRunConfig, *, resume=False, log_stream=None,
                             dataset: Optional[ImageDataset] = None) -> TrainResult:
    """Train the autoencoder ``config`` describes with :class:`physgen.training.Trainer`
    (module docstring); ``resume``: ``True`` or a checkpoint path continues the run in ``config.out``."""
    log = log_stream or sys.stderr
    info, device = init_distributed(config.device)
    out, spec, tcfg = Path(config.out), config.spec, config.train
    if not resume and checkpoints.list_checkpoints(out):
        raise UserError(f"{str(out)!r} already holds checkpoints; continue with --resume {out}, or choose another --out")
    data = dataset if dataset is not None else load_image_dataset(config.dataset, spec.resolution)
    got, want = tuple(data.images.shape[1:]), (spec.in_channels, spec.resolution, spec.resolution)
    if got != want:
        raise UserError(f"dataset {data.name!r} has images of {got[0]} channel(s) at {got[1]}x{got[2]}; autoencoder preset "
                        f"{config.preset!r} takes {want[0]} channel(s) at {want[1]}x{want[2]}")
    train_part, held = _split(data, config.holdout)
    if tcfg.batch % info.world_size:
        raise UserError(f"--batch {tcfg.batch} must be divisible by the number of processes ({info.world_size})")
    torch.manual_seed(tcfg.seed)  # the network's initialisation
    ae = Autoencoder(spec)
    sampler = ImageSampler(train_part, tcfg.batch // info.world_size, seed=tcfg.seed + 1, device=device,
                           rank=info.rank, world_size=info.world_size)
    meta = {"autoencoder": spec.to_dict(), "autoencoder_run": config.to_dict()}
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "config.json", config.to_dict())
        n_params = sum(p.numel() for p in ae.parameters())
        c, h, w = spec.latent_shape
        print(f"physgen train-autoencoder: {config.preset} ({n_params / 1e6:.2f}M params, latent {c}x{h}x{w})  {data.name} "
              f"{list(got)} x {len(train_part)} (+{len(held)} held out)  {info.world_size} process(es) on {device}  "
              f"{tcfg.total_steps} steps of {tcfg.batch}", file=log, flush=True)
    trainer = Trainer(AutoencoderObjective(config.beta, config.recon), ae, sampler, tcfg, out_dir=out, device=device,
                      log_stream=log, checkpoint_meta=meta, unit="img", sample_grid=_grid_writer(out, held, device),
                      adam_betas=LDM_BETAS)
    if resume:
        trainer.restore(resume)
    t0 = time.perf_counter()
    result = trainer.run()
    if info.is_main:
        extra = {"dataset": data.name, "autoencoder_run": config.to_dict()}
        written = save_autoencoder(out / AUTOENCODER_FILE, result.ema, step=result.step, extra=jsonable(extra))
        write_json(out / "summary.json", {"step": result.step, "total_steps": tcfg.total_steps, "stopped_early": result.stopped_early,
                                          "final_loss": result.losses[-1] if result.losses else None, "wall_s": time.perf_counter() - t0,
                                          "checkpoint": str(result.checkpoint) if result.checkpoint else None,
                                          "autoencoder": str(written), "world_size": info.world_size})
    return result
