"""``physgen edit``: inpaint or edit images with a trained checkpoint (issue 23, :mod:`physgen.editing`).

``--input`` is one PNG or a folder of PNGs (sorted by name), in the checkpoint's size and
channels; ``--mask`` a PNG of the same size, white (255) where the input is kept, black (0)
where it is generated (not needed by ``sdedit``).  ``--method``: ``blend`` / ``repaint``
(:func:`physgen.editing.inpaint`, RePaint's jumps ``--jump-length``/``--jump-n-sample``),
``sdedit`` (:func:`physgen.editing.sdedit` at ``--strength``), ``smc``
(:func:`physgen.editing.smc_condition`, ``--particles`` per input, the first particle of
each population written).  A latent run (``train --latent``) edits in its latent space
(``blend`` / ``repaint`` only, :func:`physgen.latent.edit.latent_inpaint`); ``--input`` and
``--mask`` are then images at the autoencoder's resolution.  Writes ``DIR/{index:06d}.png`` (one per input), ``figure.png``
(input, mask, result) and ``edit.json`` (method, options, NFE).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..config import arg, parse_int
from ..editing import inpaint, sdedit, smc_condition
from ..editing.masks import check_known, check_mask
from ..errors import UserError
from ..images.data import save_pngs, to_uint8
from ..images.train import load_trained
from ..latent.edit import latent_inpaint
from ..latent.train import load_autoencoder
from ..io import save_figure, write_json
from ..runfolder import add_overwrite_argument, prepare
from ..runtime import resolve_device
from .flags import JUMPS, PROBABILITY, SEED, STEPS

OUTPUTS = ("edit.json", "figure.png", "[0-9][0-9][0-9][0-9][0-9][0-9].png")
METHODS = ("repaint", "blend", "sdedit", "smc")
LATENT_METHODS = ("repaint", "blend")  # what a latent run offers (physgen.latent.edit)
MAX_INPUTS = 4096
PARTICLES = arg(parse_int, 1, 4096, "each particle is a field evaluation per step; 4096 per image is beyond any GPU batch")


def register(sub) -> None:
    p = sub.add_parser("edit", help="inpaint (blend, repaint, smc) or edit (sdedit) PNG images with a checkpoint")
    p.add_argument("--ckpt", required=True, help="checkpoint file, or a run directory (its newest checkpoint)")
    p.add_argument("--input", required=True, help="a PNG, or a folder of PNGs, of the checkpoint's size and channels")
    p.add_argument("--mask", default=None, help="PNG of the same size: white = keep, black = generate (blend, repaint, smc)")
    p.add_argument("--method", choices=METHODS, default="repaint", help="editing method (default repaint)")
    p.add_argument("--strength", type=PROBABILITY, default=0.5, help="sdedit: fraction of the schedule to run, in [0, 1]")
    p.add_argument("--solver", default="heun", help="solver of the table for blend, repaint and sdedit (default heun)")
    p.add_argument("--steps", type=STEPS, default=None, help="integration steps (default: the process's; smc: 200)")
    p.add_argument("--jump-length", type=JUMPS, default=3, help="repaint: levels re-noised per jump")
    p.add_argument("--jump-n-sample", type=JUMPS, default=3, help="repaint: descents through each jump point")
    p.add_argument("--particles", type=PARTICLES, default=8, help="smc: particles per input")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--out", required=True, help="output folder")
    add_overwrite_argument(p)
    p.set_defaults(func=run)


GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def _read_png(path: Path, grey: bool = False) -> np.ndarray:
    """``[H, W, C]`` uint8 of a PNG in its own channels (1 for grey modes, else RGB), or grey
    when asked (Pillow decodes; nothing in the file runs)."""
    from PIL import Image  # Pillow ships with matplotlib; imported where a PNG is read

    if path.suffix.lower() != ".png":
        raise UserError(f"{str(path)!r} is not a .png file")
    try:
        with Image.open(path) as img:
            arr = np.array(img.convert("L" if grey or img.mode in GREY_MODES else "RGB"), dtype=np.uint8)
    except Exception as exc:  # Pillow raises many types for a bad file
        raise UserError(f"cannot read image {str(path)!r}: {exc}") from None
    return arr[:, :, None] if arr.ndim == 2 else arr


def read_inputs(source: str, shape: tuple) -> tuple[torch.Tensor, list]:
    """The images of ``source`` (a PNG or a folder of them) in ``[-1, 1]``, ``[B, C, H, W]``, checked against ``shape``."""
    path = Path(source)
    if not path.exists():
        raise UserError(f"--input {source!r} does not exist")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".png") if path.is_dir() else [path]
    if not files:
        raise UserError(f"--input folder {source!r} has no .png images")
    if len(files) > MAX_INPUTS:
        raise UserError(f"--input folder {source!r} has {len(files)} images; at most {MAX_INPUTS} per run")
    arrays = [_read_png(f) for f in files]
    for f, a in zip(files, arrays):
        if (a.shape[2], a.shape[0], a.shape[1]) != tuple(shape):
            raise UserError(f"--input image {str(f)!r} is {a.shape[1]}x{a.shape[0]} with {a.shape[2]} channel(s); the checkpoint "
                            f"takes {shape[2]}x{shape[1]} with {shape[0]}")
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return check_known(x, shape, what="--input"), files


def read_mask(source, shape: tuple) -> torch.Tensor:
    if source is None:
        raise UserError("--mask is needed by blend, repaint and smc (white = keep, black = generate)")
    arr = _read_png(Path(source), grey=True)[:, :, 0]
    if arr.shape != tuple(shape[1:]):
        raise UserError(f"--mask {source!r} is {arr.shape[1]}x{arr.shape[0]}; the images are {shape[2]}x{shape[1]}")
    bad = arr[(arr != 0) & (arr != 255)]
    if bad.size:
        raise UserError(f"--mask {source!r} must be black (0) and white (255) only, got the grey value {int(bad[0])}")
    return check_mask(torch.from_numpy(arr == 255).float()[None], shape)


def _edit(args, model, x, mask):
    common = dict(steps=args.steps, seed=args.seed)
    if args.method == "sdedit":
        return sdedit(model.process, model.field, x, strength=args.strength, method=args.solver, **common)
    if args.method == "smc":
        sol = smc_condition(model.process, model.field, x.repeat_interleave(args.particles, 0), mask, **common)
        sol.x = sol.x[:: args.particles]
        return sol
    jumps = dict(jump_length=args.jump_length, jump_n_sample=args.jump_n_sample) if args.method == "repaint" else {}
    return inpaint(model.process, model.field, x, mask, method=args.solver, **jumps, **common)


def _figure(x, mask, result, path: Path) -> None:
    import matplotlib  # optional heavy dependency: loaded only to draw the figure

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # (after choosing the Agg backend)

    rows = min(x.shape[0], 8)
    fig, axes = plt.subplots(rows, 3, figsize=(6, 2 * rows), squeeze=False)
    shown = [to_uint8(x[:rows]), None if mask is None else to_uint8(mask[None].float().expand(rows, *mask.shape) * 2 - 1),
             to_uint8(result[:rows])]
    for col, (title, images) in enumerate(zip(("input", "mask (white: kept)", "result"), shown)):
        for r in range(rows):
            ax = axes[r, col]
            ax.axis("off")
            if images is not None:
                ax.imshow(images[r].squeeze(-1) if images.shape[-1] == 1 else images[r], cmap="gray", vmin=0, vmax=255)
            if r == 0:
                ax.set_title(title)
    save_figure(fig, path)
    plt.close(fig)


def _latent_edit(args, model, x, mask, device):
    """A latent run (``train --latent``): blend or repaint in its latent space (Blended Latent
    Diffusion, :func:`physgen.latent.edit.latent_inpaint`: the pixel mask min-pooled to the latent
    grid, the kept pixels copied back), with the autoencoder the run records (checksum checked)."""
    if args.method not in LATENT_METHODS:
        raise UserError(f"--method {args.method} does not apply to a latent run ({str(model.path)!r}); use {' or '.join(LATENT_METHODS)}")
    record = model.latent
    ae = load_autoencoder(record["autoencoder"], device=device)
    jumps = dict(jump_length=args.jump_length, jump_n_sample=args.jump_n_sample) if args.method == "repaint" else {}
    return latent_inpaint(model.process, model.field, ae, float(record["scale_factor"]), x, mask, method=args.solver,
                          steps=args.steps, seed=args.seed, **jumps)


def run(args) -> int:
    device = resolve_device(args.device)
    model = load_trained(args.ckpt, device=device)
    latent = model.decode is not None
    shape = tuple(model.latent["image_shape"]) if latent else tuple(model.shape)
    x, files = read_inputs(args.input, shape)
    mask = None if args.method == "sdedit" else read_mask(args.mask, shape)
    if latent and args.method not in LATENT_METHODS:
        raise UserError(f"--method {args.method} does not apply to a latent run ({str(model.path)!r}); use {' or '.join(LATENT_METHODS)}")
    prepare(args.out, "edit", OUTPUTS, overwrite=args.overwrite)
    with torch.no_grad():  # smc takes its twist's gradient under its own enable_grad
        sol = _latent_edit(args, model, x.to(device), mask, device) if latent else _edit(args, model, x.to(device), mask)
    out = Path(args.out)
    save_pngs(sol.x.cpu(), out)
    _figure(x, mask, sol.x.cpu(), out / "figure.png")
    record = {k: v for k, v in sol.stats.extra.items() if k not in ("ess", "grid")}
    write_json(out / "edit.json", {"method": args.method, "inputs": [str(f) for f in files], "checkpoint": str(args.ckpt),
                                   "nfe": sol.stats.nfe, "seed": args.seed, "strength": args.strength if args.method == "sdedit" else None,
                                   "particles": args.particles if args.method == "smc" else None, **record})
    print(f"wrote {len(files)} edited image(s), figure.png and edit.json to {out}: {args.method}, {sol.stats.nfe} NFE")
    return 0
