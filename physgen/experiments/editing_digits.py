"""The digits inpainting figure of ``physgen experiment editing``: the bottom half of a few
sklearn digits masked, filled in by each editing method of :mod:`physgen.editing`.

**The model.**  ``--digits-ckpt RUN`` reuses a ``physgen train`` run on ``digits`` (pixels,
one channel, any resolution; the images are loaded at the run's resolution).  Without it the
experiment trains its own, offline, into ``OUT/digits-model``: EDM (arXiv 2206.00364) on the
8x8 digits, U-Net ``tiny`` (0.18M weights), batch 64, Adam ``lr = 2e-3`` without warm-up, EMA
half-life 5000 images, :data:`DIGITS_STEPS` steps (about 80 ms a step on one CPU core: two
minutes).  The folder is a training run like any other: a later run into the same ``--out``
reuses it, a killed one resumes from its last checkpoint (every :data:`CHECKPOINT_EVERY`
steps), and ``--digits-steps`` larger than what it holds continues it.

**The figure** (``digits_inpainting.png``): one row per digit (the first ``--digits-images``
classes, the first image of each), columns input, mask (white: kept) and the result of each
method, every method from the same seed: ``repaint`` (RePaint, jumps 3/3, the edit command's
default), ``blend``, ``sdedit`` (strength 0.5 from the input with its bottom half at the
data's mean image, the kept half put back after) and ``smc`` (twisted SMC, :data:`PARTICLES`
particles per digit, the first shown; EDM has the Gaussian transition it needs).  Blend,
RePaint and SDEdit run Heun on the process's 18-step grid; SMC its 200-point chain.
``digits_inpainting.json`` records each method's NFE, seconds and the mean squared distance
of its bottom half to the original's (a completion may be a different, right digit: that
distance shows which methods keep to the data, not which are correct).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from .. import checkpoints
from ..config import arg, parse_int
from ..editing import inpaint, sdedit, smc_condition
from ..editing.masks import known_part, with_known
from ..errors import UserError
from ..images.data import load_image_dataset, to_uint8
from ..images.train import ImageTrainConfig, load_trained, run_training
from ..io import save_figure, write_json
from ..training import TrainConfig

__all__ = ["add_digits_arguments", "digits_model", "digits_inpainting", "DIGITS_STEPS", "DIGITS_OUTPUTS", "METHODS"]

DIGITS_STEPS = 1500
CHECKPOINT_EVERY = 250
PARTICLES = 16
METHODS = ("repaint", "blend", "sdedit", "smc")
DIGITS_OUTPUTS = ("digits_inpainting.png", "digits_inpainting.json")
MODEL_DIR = "digits-model"


def add_digits_arguments(parser) -> None:
    parser.add_argument("--digits-ckpt", default=None, metavar="RUN",
                        help="a `physgen train --dataset digits` run (or checkpoint) for the inpainting figure "
                             f"(default: train a tiny EDM model into OUT/{MODEL_DIR}, reused and resumed there)")
    parser.add_argument("--digits-steps", type=arg(parse_int, 1, 100_000, "the built-in digits model trains in minutes on a CPU"),
                        default=None, help=f"training steps of the built-in digits model (default {DIGITS_STEPS}; --quick: 20)")
    parser.add_argument("--digits-images", type=arg(parse_int, 1, 10, "one digit of each class, 0-9"), default=6,
                        help="digits in the figure (one per class, default 6)")


def _train_config(out: Path, steps: int) -> ImageTrainConfig:
    tcfg = TrainConfig(steps=steps, batch=64, lr=2e-3, warmup_steps=0, ema_halflife=5000.0, ema_rampup=0.05, grad_clip=None,
                       log_every=max(1, steps // 10), checkpoint_every=CHECKPOINT_EVERY, keep_checkpoints=2, seed=0, precision="fp32")
    return ImageTrainConfig(dataset="digits", process="edm", arch="tiny", device="cpu", out=str(out), train=tcfg)


def digits_model(out: Path, ckpt, steps: int, log=None):
    """The digits model: ``ckpt`` loaded (refused unless a pixel run on digits), or the built-in
    one trained (or resumed, or reused) in ``out/digits-model`` to ``steps`` steps."""
    if ckpt is not None:
        model = load_trained(ckpt)
        name = model.meta.get("dataset", {}).get("name")
        if model.decode is not None or model.shape[0] != 1 or name != "digits":
            raise UserError(f"--digits-ckpt {str(ckpt)!r} was trained on {name!r} ({'latents, ' if model.decode else ''}shape "
                            f"{list(model.shape)}); the figure needs a pixel run on digits (physgen train --dataset digits)")
        return model
    log = log or sys.stderr
    folder = out / MODEL_DIR
    held = checkpoints.list_checkpoints(folder)
    done = held and checkpoints.find(folder, kind="train", log=None).header.step >= steps
    if not done:
        print(f"digits model: training {steps} steps into {folder} ({'resuming' if held else 'new'})", file=log, flush=True)
        run_training(_train_config(folder, steps), resume=bool(held), log_stream=log)
    return load_trained(folder)


def _run_method(method: str, model, x: torch.Tensor, mask: torch.Tensor, fill: torch.Tensor, seed: int):
    if method == "smc":
        sol = smc_condition(model.process, model.field, x.repeat_interleave(PARTICLES, 0), mask, seed=seed)
        sol.x = sol.x[::PARTICLES]
        return sol
    if method == "sdedit":
        start = with_known(fill.expand_as(x), mask, known_part(x, mask))
        sol = sdedit(model.process, model.field, start, strength=0.5, seed=seed)
        sol.x = with_known(sol.x, mask, known_part(x, mask))
        return sol
    jumps = dict(jump_length=3, jump_n_sample=3) if method == "repaint" else {}
    return inpaint(model.process, model.field, x, mask, seed=seed, **jumps)


def digits_inpainting(model, out: Path, n_images: int, seed: int, log=None) -> dict:
    """Inpaint the bottom half of ``n_images`` digits with every method (module docstring);
    writes the figure and the record, returns the record."""
    log = log or sys.stderr
    side = model.shape[-1]
    data = load_image_dataset("digits", None if side == 8 else side)
    rows = [int(torch.nonzero(data.labels == k)[0]) for k in range(n_images)]
    x = data.images[rows].to(next(model.field.parameters()).device)
    mask = torch.zeros(model.shape, dtype=torch.bool)
    mask[:, : side // 2] = True  # top half kept
    mask = mask.to(x.device)
    fill = data.images.mean(0, keepdim=True).to(x.device)
    results, record = {}, {"images": rows, "checkpoint": str(model.path), "step": model.step, "particles": PARTICLES, "methods": {}}
    for method in METHODS:
        t0 = time.perf_counter()
        with torch.no_grad():  # smc takes its twist's gradient under its own enable_grad
            sol = _run_method(method, model, x, mask, fill, seed)
        results[method] = sol.x.cpu()
        err = float((sol.x - x)[:, ~mask].pow(2).mean())
        record["methods"][method] = {"nfe": int(sol.stats.nfe), "wall_s": round(time.perf_counter() - t0, 2), "bottom_half_mse": err}
        print(f"digits {method}: {sol.stats.nfe} NFE, bottom-half MSE to the original {err:.3f}", file=log, flush=True)
    _figure(x.cpu(), mask.cpu(), results, out / DIGITS_OUTPUTS[0], model.step)
    write_json(out / DIGITS_OUTPUTS[1], record)
    return record


def _figure(x: torch.Tensor, mask: torch.Tensor, results: dict, path: Path, step: int) -> None:
    import matplotlib  # heavy optional dependency: imported only where it is used

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy optional dependency: imported only where it is used

    masked = torch.where(mask, x, torch.full_like(x, -1.0))
    columns = [("input", x), ("kept (top half)", masked), *((m, results[m]) for m in METHODS)]
    fig, axes = plt.subplots(x.shape[0], len(columns), figsize=(1.3 * len(columns), 1.3 * x.shape[0]), squeeze=False)
    for j, (title, images) in enumerate(columns):
        pixels = to_uint8(images)
        for i in range(x.shape[0]):
            ax = axes[i, j]
            ax.imshow(pixels[i].squeeze(-1), cmap="gray", vmin=0, vmax=255)
            ax.axis("off")
            if i == 0:
                ax.set_title(title, fontsize=8)
    fig.suptitle(f"digits: bottom half inpainted (EDM model, {step} training steps)", fontsize=9)
    save_figure(fig, path, dpi=110)
    plt.close(fig)
