"""Training, saving and loading the KL autoencoder of :mod:`physgen.nets.autoencoder`.

One optimiser step on a batch ``x`` of ``B`` images minimises (LDM, arXiv 2112.10752, Sec. 3.1)

    L = (1/B) sum_b [ rho(x_b - D(z_b)) + beta KL(q(z|x_b) || N(0, I)) ]  (+ disc_weight L_adv),
    z_b = mu_b + sigma_b * eps_b

with Adam (``betas = (0.5, 0.9)``, LDM's autoencoder setting) at a constant learning rate after
a linear warm-up, and optionally an EMA of the
weights ``theta_ema <- b theta_ema + (1 - b) theta``, ``b = 0.5^(B / h)`` (half-life ``h``
in images, as :mod:`physgen.training`).  The posterior draw ``eps`` of step ``t`` comes from a
generator seeded with ``mix_seed(seed, t, 0)`` and the batches from an
:class:`~physgen.images.data.ImageSampler`, so a step depends only on ``(seed, t)`` and the
sampler's state: the pieces a later resume needs.  With ``disc_weight > 0`` a PatchGAN
discriminator is trained beside it with the hinge loss from step ``disc_start`` on.

An autoencoder checkpoint is a :mod:`physgen.checkpoints` file of kind ``"autoencoder"``:
the weights (the EMA's when there is one) and, in the header, the spec that rebuilds the
network; it loads with ``weights_only=True`` and a network larger than the file can hold is
refused before it is allocated.
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, TextIO

import torch

from .. import checkpoints
from ..config import MAX_BATCH, MAX_LR, MAX_TRAIN_STEPS, parse_float, parse_int, parse_seed
from ..errors import UserError, unknown_name
from ..images.data import ImageDataset, ImageSampler
from ..nets.autoencoder import (RECONSTRUCTION_LOSSES, Autoencoder, AutoencoderSpec, PatchDiscriminator, autoencoder_loss,
                                discriminator_loss, spec_from_dict)
from ..runtime import Progress, initial_weights, mix_seed

__all__ = ["AutoencoderTrainConfig", "AutoencoderTrainer", "AutoencoderResult", "train_autoencoder", "save_autoencoder",
           "load_autoencoder", "autoencoder_file", "CHECKPOINT_KIND", "AUTOENCODER_FILE"]

CHECKPOINT_KIND = "autoencoder"
AUTOENCODER_FILE = "autoencoder.pt"  # what a physgen train-autoencoder run folder holds at the end


@dataclass
class AutoencoderTrainConfig:
    """Optimisation settings of :func:`train_autoencoder` (module docstring).

    ``ema_halflife`` is in images (``None``: no EMA); ``max_minutes`` stops early at the
    first log interval past the budget."""

    steps: int = 1000
    batch: int = 64
    lr: float = 2e-3
    warmup_steps: int = 100
    beta: float = 1e-6
    recon: str = "l1"
    ema_halflife: Optional[float] = 5000.0
    disc_weight: float = 0.0
    disc_start: int = 0
    seed: int = 0
    log_every: int = 100
    max_minutes: Optional[float] = None

    def __post_init__(self) -> None:
        self.steps = parse_int(self.steps, "steps", 1, MAX_TRAIN_STEPS)
        self.batch = parse_int(self.batch, "batch", 1, MAX_BATCH)
        self.lr = parse_float(self.lr, "lr", 0.0, MAX_LR, lo_open=True)
        self.warmup_steps = parse_int(self.warmup_steps, "warmup_steps", 0, MAX_TRAIN_STEPS)
        self.beta = parse_float(self.beta, "beta", 0.0, 1e6)
        if self.recon not in RECONSTRUCTION_LOSSES:
            raise unknown_name("reconstruction loss", self.recon, RECONSTRUCTION_LOSSES)
        if self.ema_halflife is not None:
            self.ema_halflife = parse_float(self.ema_halflife, "ema_halflife", 0.0, 1e12, lo_open=True)
        self.disc_weight = parse_float(self.disc_weight, "disc_weight", 0.0, 1e6)
        self.disc_start = parse_int(self.disc_start, "disc_start", 0, MAX_TRAIN_STEPS)
        self.seed = parse_seed(self.seed)
        self.log_every = parse_int(self.log_every, "log_every", 1, MAX_TRAIN_STEPS)
        if self.max_minutes is not None:
            self.max_minutes = parse_float(self.max_minutes, "max_minutes", 0.0, 1e7, lo_open=True)


@dataclass
class AutoencoderResult:
    """What :func:`train_autoencoder` returns: the network to use (the EMA's weights when
    there is an EMA, eval mode), the steps taken, the per-step losses and the wall time."""

    autoencoder: Autoencoder
    step: int
    losses: List[Dict[str, float]] = field(default_factory=list)
    wall_s: float = 0.0


def _check_data(spec: AutoencoderSpec, data: ImageDataset) -> None:
    want = (spec.in_channels, spec.resolution, spec.resolution)
    got = tuple(data.images.shape[1:])
    if got != want:
        raise UserError(f"dataset {data.name!r} has images of {got[0]} channel(s) at {got[1]}x{got[2]}; the autoencoder "
                        f"takes {want[0]} channel(s) at {want[1]}x{want[2]}")


class AutoencoderTrainer:
    """The state of one autoencoder run (networks, optimisers, EMA, data stream, step) and its
    :meth:`step` function; :func:`train_autoencoder` loops it."""

    def __init__(self, spec: AutoencoderSpec, data: ImageDataset, config: AutoencoderTrainConfig, device: Any = "cpu"):
        _check_data(spec, data)
        self.config, self.device = config, torch.device(device)
        with initial_weights(config.seed):
            self.ae = Autoencoder(spec).to(self.device)
            self.disc = PatchDiscriminator(spec.in_channels).to(self.device) if config.disc_weight > 0 else None
        self.ema = copy.deepcopy(self.ae).requires_grad_(False) if config.ema_halflife else None
        self.opt = torch.optim.Adam(self.ae.parameters(), lr=config.lr, betas=(0.5, 0.9))
        self.disc_opt = None
        if self.disc is not None:
            self.disc_opt = torch.optim.Adam(self.disc.parameters(), lr=config.lr, betas=(0.5, 0.9))
        self.sampler = ImageSampler(data, config.batch, seed=config.seed, device=self.device)
        self.t = 0

    def _lr(self) -> float:
        warm = self.config.warmup_steps
        return self.config.lr * min(1.0, (self.t + 1) / warm) if warm else self.config.lr

    def step(self) -> Dict[str, float]:
        """One optimiser step (module docstring); returns the loss and its parts."""
        cfg = self.config
        x, _ = self.sampler.next()
        gen = torch.Generator(self.device).manual_seed(mix_seed(cfg.seed, self.t, 0, stream="noise"))
        adversarial = self.disc is not None and self.t >= cfg.disc_start
        for group in self.opt.param_groups:
            group["lr"] = self._lr()
        loss, parts = autoencoder_loss(self.ae, x, beta=cfg.beta, recon=cfg.recon, generator=gen,
                                       discriminator=self.disc if adversarial else None, disc_weight=cfg.disc_weight)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if adversarial:
            with torch.no_grad():
                fake = self.ae(x, generator=gen)[0]
            d_loss = discriminator_loss(self.disc, x, fake)
            self.disc_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            self.disc_opt.step()
            parts["disc"] = float(d_loss.detach())
        if self.ema is not None:
            beta = 0.5 ** (cfg.batch / cfg.ema_halflife)
            with torch.no_grad():
                for p_ema, p in zip(self.ema.parameters(), self.ae.parameters()):
                    p_ema.lerp_(p, 1.0 - beta)
        self.t += 1
        return {"loss": float(loss.detach()), **parts}

    def state_dict(self) -> Dict[str, Any]:
        """Everything a step depends on (weights, EMA, optimisers, data stream, step): tensors,
        numbers and dicts, so a checkpoint of it loads with ``weights_only=True``."""
        state = {"step": self.t, "model": self.ae.state_dict(), "optimizer": self.opt.state_dict(),
                 "sampler": self.sampler.state_dict()}
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        if self.disc is not None:
            state["disc"], state["disc_optimizer"] = self.disc.state_dict(), self.disc_opt.state_dict()
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`: the following steps equal an uninterrupted run's, bit for bit on CPU."""
        for key, module in (("model", self.ae), ("ema", self.ema), ("disc", self.disc)):
            if module is not None:
                module.load_state_dict(state[key])
        self.opt.load_state_dict(state["optimizer"])
        if self.disc_opt is not None:
            self.disc_opt.load_state_dict(state["disc_optimizer"])
        self.sampler.load_state_dict(state["sampler"])
        self.t = int(state["step"])

    def result_network(self) -> Autoencoder:
        """The EMA's network when there is one, else the trained one (eval mode)."""
        return (self.ema if self.ema is not None else self.ae).eval()


def train_autoencoder(data: ImageDataset, spec: AutoencoderSpec, config: Optional[AutoencoderTrainConfig] = None, *,
                      device: Any = "cpu", out: Optional[Path] = None, log: Optional[TextIO] = None) -> AutoencoderResult:
    """Train an autoencoder of ``spec`` on ``data`` for ``config.steps`` steps (or until
    ``config.max_minutes``), printing progress (rate, ETA) to ``log`` every ``log_every``
    steps; with ``out``, write the result as an autoencoder checkpoint there."""
    config = config or AutoencoderTrainConfig()
    progress = Progress(config.steps, unit="img", every=config.log_every, stream=log, enabled=log is not None)
    losses: List[Dict[str, float]] = []
    t0 = time.perf_counter()
    trainer = AutoencoderTrainer(spec, data, config, device)
    with torch.random.fork_rng(devices=[]):  # the caller's global RNG is left as it was
        while trainer.t < config.steps:
            parts = trainer.step()
            losses.append(parts)
            progress.update(trainer.t, config.batch, **{k: v for k, v in parts.items() if k != "kl"})
            late = config.max_minutes is not None and time.perf_counter() - t0 > 60 * config.max_minutes
            if late and trainer.t % config.log_every == 0:
                break
    result = AutoencoderResult(trainer.result_network(), trainer.t, losses, time.perf_counter() - t0)
    if out is not None:
        save_autoencoder(out, result.autoencoder, step=result.step, extra={"dataset": data.name, "train": asdict(config)})
    return result


# --------------------------------------------------------------------------- checkpoints


def save_autoencoder(path: Any, ae: Autoencoder, *, step: int = 0, extra: Optional[Dict[str, Any]] = None) -> Path:
    """Write ``ae`` as a checkpoint of kind ``"autoencoder"`` (atomic; the spec in the header)."""
    state = {k: v.detach().cpu() for k, v in ae.state_dict().items()}
    meta = {"autoencoder": ae.spec.to_dict(), **(extra or {})}
    return checkpoints.write(path, {"model": state}, kind=CHECKPOINT_KIND, step=step, meta=meta)


def _spec_of(header: checkpoints.Header) -> AutoencoderSpec:
    spec = spec_from_dict(header.meta.get("autoencoder"), f"checkpoint {str(header.path)!r}: its autoencoder spec")
    with torch.device("meta"):  # count the weights without allocating them
        n = sum(p.numel() for p in Autoencoder(spec).parameters())
    checkpoints.check_weights_fit(header.path, n, "an autoencoder")
    return spec


def autoencoder_file(path: Any) -> Path:
    """The autoencoder checkpoint ``path`` names: the file itself, or a ``physgen
    train-autoencoder`` run folder's ``autoencoder.pt`` (UserError naming the folder when the
    run has not finished)."""
    p = Path(path)
    if p.is_dir():
        if not (p / AUTOENCODER_FILE).is_file():
            raise UserError(f"{str(p)!r} holds no {AUTOENCODER_FILE} (not a finished physgen train-autoencoder run; resume it with --resume {p})")
        return p / AUTOENCODER_FILE
    return p


def load_autoencoder(path: Any, device: Any = "cpu") -> Autoencoder:
    """The autoencoder saved at ``path`` (eval mode; a run folder: its ``autoencoder.pt``).  A
    file of another kind, a damaged one, or one whose spec or weights do not make an
    autoencoder is one UserError naming it."""
    found = checkpoints.find(autoencoder_file(path), kind=CHECKPOINT_KIND, log=None)
    spec = _spec_of(found.header)
    ckpt = checkpoints.read(found.path, kind=CHECKPOINT_KIND, log=None)
    ae = Autoencoder(spec)
    checkpoints.load_state(ae, ckpt.payload.get("model"), path=found.path, what="autoencoder weights")
    return ae.to(device).eval()
