"""``physgen train-autoencoder`` runs: the KL autoencoder trained by the shared
:class:`physgen.training.Trainer` (run folder, checkpoints, exact resume, EMA, DDP, progress).

The Trainer minimises ``mean_b objective.loss(net, x_b)`` for any objective with ``name``,
``config()`` and ``loss``; :class:`AutoencoderObjective` is the autoencoder's (LDM, arXiv
2112.10752, Sec. 3.1)::

    l_b = rho(x_b - D(z_b)) + beta KL(q(z|x_b) || N(0, I)),   z_b = mu_b + sigma_b eps_b

with ``eps`` drawn from the Trainer's per-chunk noise generator (seeded by position), so a
step depends only on ``(seed, step, chunk)`` and the image stream's state.  Adam runs with
LDM's autoencoder betas ``(0.5, 0.9)``.

The optional adversarial term (off by default: ``disc_weight = 0``; LDM's ``disc_start`` /
``disc_weight``) adds, from optimiser step ``disc_start`` on, ``disc_weight * L_adv`` with a
PatchGAN discriminator ``d`` (pix2pix, arXiv 1611.07004) trained beside the autoencoder with
the hinge loss (LDM's choice, arXiv 2112.10752 App. G)::

    L_adv(x_hat) = -mean_patches d(x_hat),   L_d = mean relu(1 - d(x)) + mean relu(1 + d(x_hat))

one Adam step of ``d`` on each chunk's ``(x, x_hat)`` before the autoencoder's term is taken.
The discriminator and its optimiser ride in every checkpoint (the Trainer's ``extra_state``),
so a resumed run equals an uninterrupted one.  LDM also weights ``L_adv`` adaptively by the
ratio of gradient norms at the decoder's last layer; this keeps a fixed ``disc_weight``
(simpler, and measured stable on digits).  One process only: the discriminator is not
synchronised over DDP ranks, so several processes with ``disc_weight > 0`` are refused.

A run folder ``OUT`` holds ``config.json``, ``checkpoints/ckpt-*.pt`` (kind ``"train"``,
for ``--resume``), ``samples/recon-<step>.png`` (held-out originals over their EMA
reconstructions), ``summary.json`` and, at the end, ``autoencoder.pt``: the EMA's weights as
an autoencoder checkpoint, which every reader of an autoencoder (``encode --ae``, ``train
--latent``) finds when given the folder.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch
from torch import Tensor

from .. import checkpoints
from ..config import MAX_TRAIN_STEPS, config_from_dict, config_to_dict, jsonable, parse_float, parse_int
from ..errors import UserError, unknown_name
from ..images.data import ImageDataset, ImageSampler, load_image_dataset, save_image_grid
from ..io import write_json
from ..nets.autoencoder import (AE_PRESETS, RECONSTRUCTION_LOSSES, Autoencoder, AutoencoderSpec, PatchDiscriminator, adversarial_loss,
                                discriminator_loss, reconstruction_loss, spec_from_dict)
from ..runtime import init_distributed, initial_weights
from ..training import TrainConfig, TrainResult, Trainer
from .train import AUTOENCODER_FILE, save_autoencoder

__all__ = ["AutoencoderObjective", "AutoencoderRunConfig", "default_autoencoder_train", "run_autoencoder_training",
           "run_config_of", "LDM_BETAS"]

LDM_BETAS = (0.5, 0.9)  # LDM's Adam betas for its autoencoders
GRID_N = 16  # held-out images shown in each reconstruction grid


class AutoencoderObjective:
    """Stands in for a process in :class:`physgen.training.Trainer`: the per-image autoencoder
    loss ``rho(x - D(z)) + beta KL(q(z|x) || N(0, I))`` (+ ``disc_weight L_adv`` from step
    ``disc_start`` on, training its PatchGAN discriminator as it goes; module docstring).

    ``steps_done``: the optimiser steps taken, which the run sets after each step (the
    Trainer's ``on_step``) and on resuming.  ``state_dict`` / ``load_state_dict``: the
    discriminator's weights and optimiser (the Trainer's ``extra_state``)."""

    name = "autoencoder"

    def __init__(self, beta: float = 1e-6, recon: str = "l1", *, disc_weight: float = 0.0, disc_start: int = 0,
                 in_channels: int = 1, lr: float = 2e-3, seed: int = 0, device: Any = "cpu"):
        if recon not in RECONSTRUCTION_LOSSES:
            raise unknown_name("reconstruction loss", recon, RECONSTRUCTION_LOSSES)
        self.beta, self.recon = parse_float(beta, "beta", 0.0, 1e6), recon
        self.disc_weight = parse_float(disc_weight, "disc_weight", 0.0, 1e6)
        self.disc_start = parse_int(disc_start, "disc_start", 0, MAX_TRAIN_STEPS)
        self.steps_done = 0
        self.discriminator, self.disc_opt = None, None
        if self.disc_weight > 0:
            with initial_weights(seed + 1):  # apart from the autoencoder's (seed)
                self.discriminator = PatchDiscriminator(in_channels).to(device)
            self.disc_opt = torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=LDM_BETAS)

    def config(self) -> Dict[str, Any]:
        return {"beta": self.beta, "recon": self.recon, "disc_weight": self.disc_weight, "disc_start": self.disc_start}

    def loss(self, ae, x: Tensor, *, generator=None, label=None) -> Tensor:
        x_hat, q = ae(x, generator=generator)
        per_image = reconstruction_loss(x, x_hat, self.recon) + self.beta * q.kl()
        if self.discriminator is None or self.steps_done < self.disc_start:
            return per_image
        d_loss = discriminator_loss(self.discriminator, x, x_hat)
        self.disc_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        self.disc_opt.step()
        return per_image + self.disc_weight * adversarial_loss(self.discriminator, x_hat)

    def state_dict(self) -> Dict[str, Any]:
        if self.discriminator is None:
            return {}
        return {"discriminator": self.discriminator.state_dict(), "optimizer": self.disc_opt.state_dict()}

    def load_state_dict(self, state: Any, path: Any = "checkpoint") -> None:
        if self.discriminator is None:
            return
        if not isinstance(state, dict) or "discriminator" not in state or "optimizer" not in state:
            raise UserError(f"checkpoint {str(path)!r} holds no discriminator state, but the run trains one (disc_weight {self.disc_weight})")
        checkpoints.load_state(self.discriminator, state["discriminator"], path=path, what="discriminator weights")
        try:
            self.disc_opt.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            raise UserError(f"checkpoint {str(path)!r}: its discriminator optimiser does not fit ({str(exc).splitlines()[0]})") from None


def default_autoencoder_train() -> TrainConfig:
    """The autoencoder's optimisation defaults: 1000 steps of 64, lr 2e-3 after 100 warm-up
    steps, no clipping, EMA half-life 5000 images with EDM's ramp-up (half-life at most 0.05 x
    the images seen).  The ramp-up matters for a short or ``--max-minutes``-stopped run: without
    it, 100 steps of 64 leave 0.5^(6400/5000) = 41 % of the initial weights in the EMA, whose
    reconstructions the digit classifier then read mostly as one class (issue 25's collapse)."""
    return TrainConfig(steps=1000, batch=64, lr=2e-3, warmup_steps=100, ema_halflife=5000.0, ema_rampup=0.05,
                       grad_clip=None, log_every=100)


@dataclass
class AutoencoderRunConfig:
    """One ``physgen train-autoencoder`` run (one field per flag; ``train``: the optimisation)."""

    dataset: str = "digits"
    preset: str = "digits"
    beta: float = 1e-6
    recon: str = "l1"
    disc_weight: float = 0.0
    disc_start: int = 0
    out: str = "runs/autoencoder"
    device: str = "auto"
    holdout: int = GRID_N
    train: TrainConfig = field(default_factory=default_autoencoder_train)

    def __post_init__(self) -> None:
        if self.preset not in AE_PRESETS:
            raise unknown_name("autoencoder preset", self.preset, AE_PRESETS)
        AutoencoderObjective(self.beta, self.recon, disc_start=self.disc_start)  # validates the loss settings
        self.disc_weight = parse_float(self.disc_weight, "disc_weight", 0.0, 1e6)
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
                             dataset: Optional[ImageDataset] = None, spec: Optional[AutoencoderSpec] = None) -> TrainResult:
    """Train the autoencoder ``config`` describes with :class:`physgen.training.Trainer`
    (module docstring); ``resume``: ``True`` or a checkpoint path continues the run in ``config.out``.
    ``dataset`` replaces ``config.dataset`` and ``spec`` the preset's network (library callers;
    the checkpoints record the spec, and a resume must pass the same one again)."""
    log = log_stream or sys.stderr
    info, device = init_distributed(config.device)
    out, spec, tcfg = Path(config.out), spec or config.spec, config.train
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
    with initial_weights(tcfg.seed):  # the network's initialisation; the caller's generator untouched
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
    if config.disc_weight > 0 and info.world_size > 1:
        raise UserError(f"--disc-weight {config.disc_weight} trains a discriminator on one process only; run without torchrun or with --disc-weight 0")
    objective = AutoencoderObjective(config.beta, config.recon, disc_weight=config.disc_weight, disc_start=config.disc_start,
                                     in_channels=spec.in_channels, lr=tcfg.lr, seed=tcfg.seed, device=device)
    trainer = Trainer(objective, ae, sampler, tcfg, out_dir=out, device=device, log_stream=log, checkpoint_meta=meta, unit="img",
                      sample_grid=_grid_writer(out, held, device), adam_betas=LDM_BETAS, extra_state=objective)
    if resume:
        trainer.restore(resume)
    objective.steps_done = trainer.completed
    t0 = time.perf_counter()
    result = trainer.run(on_step=lambda step, ema: setattr(objective, "steps_done", step))
    if info.is_main:
        extra = {"dataset": data.name, "autoencoder_run": config.to_dict()}
        written = save_autoencoder(out / AUTOENCODER_FILE, result.ema, step=result.step, extra=jsonable(extra))
        write_json(out / "summary.json", {"step": result.step, "total_steps": tcfg.total_steps, "stopped_early": result.stopped_early,
                                          "final_loss": result.losses[-1] if result.losses else None, "wall_s": time.perf_counter() - t0,
                                          "checkpoint": str(result.checkpoint) if result.checkpoint else None,
                                          "autoencoder": str(written), "world_size": info.world_size})
    return result
