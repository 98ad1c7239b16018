"""The bad-input audit's cases for the latent network and latent editing (issue 25, i25-latentnet).

* ``latent net``: ``physgen train --latent AE`` with a wrong network name, and ``--arch mlp`` with
  ``--unet-opt`` sizes out of range, of the wrong type or unknown to the MLP (a U-Net option);
  ``latent net legit``: the defaults and ``--arch mlp`` on a tiny autoencoder (right = a
  checkpoint whose network is ``tiny``, resp. the MLP);
* ``latent edit``: ``physgen edit`` on a latent run with a method a latent run does not offer
  (``sdedit``, ``smc``), an input or a mask at the latent grid's size instead of the
  autoencoder's, an input of the wrong channels; ``latent edit legit``: ``blend`` and ``repaint``
  on a clean input and mask (right = the outputs);
* ``latent export``: ``physgen sample`` on the model folder ``physgen export`` wrote of a latent
  run, with another autoencoder or a missing one as ``--ae``, or with a crafted (re-checksummed)
  header whose latent scale factor is not a positive number; ``latent export legit``: sampling the
  folder with no flags (right = PNGs at the autoencoder's 8x8, not the 4x4 latents).

:func:`cases` returns ``(area, argv, needles, keywords)`` tuples for :class:`audit_cli.Case`
(run from the case's folder, where the setup writes ``ae.pt``, the run ``lat`` and the PNGs).
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["cases"]


def _autoencoder(w: Path) -> None:
    """``w/ae.pt``: an untrained 8x8 one-channel autoencoder (f = 2, latent 3 x 4 x 4)."""
    from physgen.latent.train import save_autoencoder
    from physgen.nets.autoencoder import build_autoencoder

    save_autoencoder(w / "ae.pt", build_autoencoder("digits", resolution=8, width=8, channel_mult=[1, 1]))


def _latent_run(w: Path) -> None:
    """``w/lat``: one step of the default latent run on ``ae.pt``; PNGs at 8x8 (right) and 4x4 (the latent grid's size)."""
    import numpy as np
    from PIL import Image
    from physgen.cli.main import main

    _autoencoder(w)
    argv = ["train", "--latent", str(w / "ae.pt"), "--steps", "1", "--batch", "8", "--sample-n", "2", "--sample-steps", "2",
            "--device", "cpu", "--out", str(w / "lat")]
    if main(argv) != 0:
        raise RuntimeError("the latent run of the setup failed")
    for side in (8, 4):
        Image.fromarray(np.full((side, side), 128, np.uint8)).save(w / f"in{side}.png")
        keep = np.full((side, side), 255, np.uint8)
        keep[:, side // 2:] = 0
        Image.fromarray(keep).save(w / f"m{side}.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(w / "rgb8.png")


def _exported(w: Path) -> None:
    """``w/x``: the model folder exported from ``w/lat``; ``w/other.pt``: another autoencoder;
    ``w/bad``: ``w/x`` with its header's latent scale factor replaced by a string (re-checksummed)."""
    import shutil
    from physgen import checkpoints
    from physgen.cli.main import main
    from physgen.latent.train import save_autoencoder
    from physgen.nets.autoencoder import build_autoencoder

    _latent_run(w)
    if main(["export", str(w / "lat"), "--out", str(w / "x")]) != 0:
        raise RuntimeError("the export of the setup failed")
    save_autoencoder(w / "other.pt", build_autoencoder("digits", resolution=8, width=8, channel_mult=[1, 2]))
    shutil.copytree(w / "x", w / "bad")
    meta = checkpoints.read(w / "bad" / "model.header", kind="model", log=None).meta
    checkpoints.write(w / "bad" / "model.header", {}, kind="model", step=0, meta={**meta, "latent": {**meta["latent"], "scale_factor": "big"}})


def _decoded_pngs(w: Path) -> bool:
    from PIL import Image

    return Image.open(w / "s" / "000000.png").size == (8, 8)


def _network_is(arch: str):
    def check(w: Path) -> bool:
        from physgen import checkpoints

        return checkpoints.find(w / "o", log=None).header.meta["image"]["unet"]["arch"] == arch
    return check


def cases() -> list:
    lat = ["train", "--latent", "ae.pt", "--steps", "1", "--batch", "8", "--sample-n", "2", "--sample-steps", "2", "--device", "cpu", "--out", "o"]
    mlp = ["--arch", "mlp"]
    rows = [(["--arch", "mlp2"], ("--arch", "mlp2")), (["--arch", ""], ("--arch",)),
            (["--unet-opt", "hidden=64"], ("hidden",))]  # an MLP size given to the default U-Net
    mlp_rows = [("hidden=0", "hidden"), ("hidden=1e12", "hidden"), ('hidden="wide"', "hidden"), ("hidden=2.5", "hidden"),
                ("depth=-1", "depth"), ("embed_dim=7", "embed_dim"), ("c_noise_unit=0", "c_noise_unit"),
                ("c_noise_unit=nan", "c_noise_unit"), ("dropout=0.1", "dropout")]
    rows += [(mlp + ["--unet-opt", opt], (needle,)) for opt, needle in mlp_rows]
    out = [("latent net", lat + extra, needles, dict(setup=_autoencoder)) for extra, needles in rows]
    pixel_mlp = ["train", "--dataset", "digits", "--resolution", "8", "--arch", "mlp", "--steps", "1", "--batch", "8", "--device", "cpu", "--out", "o"]
    out.append(("latent net", pixel_mlp + ["--unet-opt", "depth=0"], ("depth",), {}))
    for extra, arch in (([], "tiny"), (mlp, "mlp")):
        out.append(("latent net legit", lat + extra, ("train",), dict(setup=_autoencoder, legit=True, check=_network_is(arch), timeout=120.0)))
    edit = ["edit", "--ckpt", "lat", "--steps", "2", "--device", "cpu", "--out", "e"]
    for extra, needles in ((["--input", "in8.png", "--mask", "m8.png", "--method", "sdedit"], ("sdedit", "latent")),
                           (["--input", "in8.png", "--mask", "m8.png", "--method", "smc"], ("smc", "latent")),
                           (["--input", "in8.png", "--mask", "m4.png"], ("m4.png",)),
                           (["--input", "in4.png", "--mask", "m4.png"], ("in4.png",)),
                           (["--input", "rgb8.png", "--mask", "m8.png"], ("rgb8.png",))):
        out.append(("latent edit", edit + extra, needles, dict(setup=_latent_run, timeout=120.0)))
    for method in ("blend", "repaint"):
        out.append(("latent edit legit", edit + ["--input", "in8.png", "--mask", "m8.png", "--method", method], ("edit",),
                    dict(setup=_latent_run, legit=True, timeout=120.0, check=lambda w: (w / "e" / "000000.png").is_file())))
    sample = ["sample", "--n", "2", "--steps", "2", "--device", "cpu", "--out", "s"]
    for extra, needles in ((["--ckpt", "x", "--ae", "other.pt"], ("other.pt",)), (["--ckpt", "x", "--ae", "nope.pt"], ("nope.pt",)),
                           (["--ckpt", "bad"], ("scale_factor", "big"))):
        out.append(("latent export", sample + extra, needles, dict(setup=_exported, timeout=120.0)))
    out.append(("latent export legit", sample + ["--ckpt", "x"], ("sample",), dict(setup=_exported, legit=True, timeout=120.0, check=_decoded_pngs)))
    return out
