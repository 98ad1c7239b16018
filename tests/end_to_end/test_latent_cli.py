"""``physgen train --latent AE`` then ``physgen sample``: trains on the latents with the network
sized to them (no --arch: the ``tiny`` U-Net, and the latent recipe unless a flag or a config
file says otherwise), samples decode to images, the run exports and edits, and the wrong
autoencoder or a file that is not one is refused in one line with exit status 2."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from physgen import checkpoints
from physgen.cli.main import main
from physgen.images.train import LATENT_DEFAULTS, load_config
import physgen.pretrained as P
from physgen.compare.problems import ImageProblem
from physgen.latent.train import save_autoencoder
from physgen.nets.autoencoder import Autoencoder, AutoencoderSpec

SPEC = AutoencoderSpec(in_channels=1, resolution=8, latent_channels=3, width=8, channel_mult=(1, 2))
TRAIN = ["train", "--dataset", "digits", "--process", "pfgmpp", "--D", "128", "--steps", "2", "--batch", "16",
         "--sample-n", "4", "--sample-steps", "3", "--device", "cpu"]


def _ae(path, seed):
    torch.manual_seed(seed)
    return save_autoencoder(path, Autoencoder(SPEC))


def _one_line_error(capsys, argv, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and all(n in err for n in needles), err


def test_latent_run_samples_decoded_images_and_refuses_another_autoencoder(tmp_path, capsys):
    ae, other = _ae(tmp_path / "ae.pt", 0), _ae(tmp_path / "other.pt", 1)
    run = tmp_path / "run"
    assert main(TRAIN + ["--latent", str(ae), "--out", str(run)]) == 0
    meta = checkpoints.find(run, log=None).header.meta["image"]
    assert meta["shape"] == [3, 4, 4] and meta["unet"]["channels"] == 3 and meta["unet"]["img_resolution"] == 4
    assert meta["unet"]["arch"] == "tiny" and meta["config"]["arch"] is None  # no --arch: the latent default network
    assert meta["latent"]["image_shape"] == [1, 8, 8] and meta["config"]["sigma_data"] == 1.0
    capsys.readouterr()
    assert main(["sample", "--ckpt", str(run), "--out", str(tmp_path / "s"), "--n", "3", "--steps", "3", "--device", "cpu"]) == 0
    pngs = sorted((tmp_path / "s").glob("*.png"))
    assert len(pngs) == 3 and np.asarray(Image.open(pngs[0])).shape[:2] == (8, 8)  # decoded to the autoencoder's images
    problem = ImageProblem(run, n_samples=6, n_reference=20)  # compare-solvers --ckpt: solved in latents, judged on images
    assert problem.x0.shape == (6, 3, 4, 4) and problem.reference.shape == (20, 64)
    latents = problem.x0 * 0.01
    latents[0] = float("nan")
    got = problem.metrics(latents)
    assert got["nonfinite"] == 1 and got["sliced_w2"] > 0 and got["mmd"] >= 0
    # physgen edit on the latent run (blended latent diffusion): kept pixels exact, the rest regenerated
    img = np.asarray(Image.open(pngs[0]))
    Image.fromarray(img).save(tmp_path / "in.png")
    keep = np.full((8, 8), 255, np.uint8)
    keep[:, 4:] = 0
    Image.fromarray(keep).save(tmp_path / "m.png")
    edit = ["edit", "--ckpt", str(run), "--input", str(tmp_path / "in.png"), "--mask", str(tmp_path / "m.png"), "--steps", "3", "--device", "cpu"]
    assert main(edit + ["--method", "blend", "--out", str(tmp_path / "e")]) == 0
    out = np.asarray(Image.open(tmp_path / "e" / "000000.png"))
    assert out.shape[:2] == (8, 8) and np.array_equal(out[:, :4], img[:, :4])
    assert json.loads((tmp_path / "e" / "edit.json").read_text())["nfe"] > 0
    capsys.readouterr()
    _one_line_error(capsys, edit + ["--method", "sdedit", "--out", str(tmp_path / "e2")], "sdedit", "latent")
    grid = tmp_path / "g.png"
    capsys.readouterr()
    _one_line_error(capsys, ["sample", "--ckpt", str(run), "--out", str(grid), "--ae", str(other), "--device", "cpu"], "other.pt", "ae.pt")
    _one_line_error(capsys, TRAIN + ["--resume", str(run), "--latent", str(other), "--steps", "3"], "--latent")
    (tmp_path / "ae.pt").write_bytes((tmp_path / "other.pt").read_bytes())  # the recorded file replaced by another autoencoder
    _one_line_error(capsys, ["sample", "--ckpt", str(run), "--out", str(grid), "--device", "cpu"], "ae.pt", "sha256")


@pytest.mark.parametrize("make, needles", [
    (lambda w: (w / "junk.pt").write_bytes(b"not a checkpoint"), ("junk.pt",)),
    (lambda w: None, ("missing.pt",)),
])
def test_a_file_that_is_not_an_autoencoder_is_refused(tmp_path, capsys, make, needles):
    make(tmp_path)
    name = "junk.pt" if "junk.pt" in needles else "missing.pt"
    _one_line_error(capsys, TRAIN + ["--latent", str(tmp_path / name), "--out", str(tmp_path / "o")], *needles)


def test_a_train_checkpoint_as_latent_and_a_dataset_of_the_wrong_channels_are_refused(tmp_path, capsys):
    ae = _ae(tmp_path / "ae.pt", 0)
    assert main(TRAIN + ["--latent", str(ae), "--out", str(tmp_path / "run")]) == 0
    ckpt = checkpoints.find(tmp_path / "run", log=None).path
    capsys.readouterr()
    _one_line_error(capsys, TRAIN + ["--latent", str(ckpt), "--out", str(tmp_path / "o")], str(ckpt), "autoencoder")
    np.savez(tmp_path / "rgb.npz", x=np.zeros((8, 8, 8, 3), np.uint8))
    _one_line_error(capsys, TRAIN[:1] + ["--dataset", f"npz:{tmp_path / 'rgb.npz'}"] + TRAIN[3:] + ["--latent", str(ae), "--out", str(tmp_path / "o2")],
                    "rgb.npz", "channel")


def test_the_latent_recipe_sits_below_flags_and_config_files(tmp_path):
    def dumped(*argv):
        assert main(["train", *argv, "--out", str(tmp_path / "o"), "--dump-config", str(tmp_path / "c.json")]) == 0
        return load_config(tmp_path / "c.json")

    def value(config, key):
        return getattr(config.train, key[6:]) if key.startswith("train.") else getattr(config, key)

    latent = dumped("--latent", "ae.pt")
    assert latent.network_arch == "tiny" and all(value(latent, k) == v for k, v in LATENT_DEFAULTS.items())
    flagged = dumped("--latent", "ae.pt", "--batch", "32", "--arch", "mlp", "--sigma-data", "0.7")
    assert (flagged.train.batch, flagged.network_arch, flagged.sigma_data, flagged.train.lr) == (32, "mlp", 0.7, LATENT_DEFAULTS["train.lr"])
    (tmp_path / "f.toml").write_text('latent = "ae.pt"\n[train]\nbatch = 64\n')
    from_file = dumped("--config", str(tmp_path / "f.toml"))
    assert from_file.train.batch == 64 and from_file.train.steps == LATENT_DEFAULTS["train.steps"] and from_file.network_arch == "tiny"
    pixels = dumped("--dataset", "digits")
    assert pixels.network_arch == "ddpmpp" and pixels.train.batch == 512 and pixels.sigma_data is None


def test_a_latent_mlp_run_samples_edits_and_exports_the_same_field(tmp_path):
    ae, run = _ae(tmp_path / "ae.pt", 0), tmp_path / "run"
    assert main(TRAIN + ["--latent", str(ae), "--arch", "mlp", "--out", str(run)]) == 0
    assert checkpoints.find(run, log=None).header.meta["image"]["unet"]["arch"] == "mlp"
    assert main(["sample", "--ckpt", str(run), "--out", str(tmp_path / "s"), "--n", "2", "--steps", "3", "--device", "cpu"]) == 0
    assert np.asarray(Image.open(tmp_path / "s" / "000000.png")).shape[:2] == (8, 8)
    Image.fromarray(np.full((8, 8), 128, np.uint8)).save(tmp_path / "in.png")
    keep = np.full((8, 8), 255, np.uint8)
    keep[:, 4:] = 0
    Image.fromarray(keep).save(tmp_path / "m.png")
    assert main(["edit", "--ckpt", str(run), "--input", str(tmp_path / "in.png"), "--mask", str(tmp_path / "m.png"), "--method", "blend",
                 "--steps", "3", "--device", "cpu", "--out", str(tmp_path / "e")]) == 0
    assert ImageProblem(run, n_samples=4, n_reference=8).x0.shape == (4, 3, 4, 4)  # compare-solvers --ckpt
    assert main(["export", str(run), "--out", str(tmp_path / "x")]) == 0  # the MLP rebuilt from the exported spec
    ours, theirs = P.load(run), P.load(tmp_path / "x")
    x, sigma = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0)), torch.tensor([0.1, 5.0])
    assert torch.equal(ours.denoise(x, sigma), theirs.denoise(x, sigma))


def test_an_exported_latent_run_still_decodes_its_samples_and_checks_its_autoencoder(tmp_path, capsys):
    """export keeps the latent record: sampling the model folder writes the run's decoded images, not its latents."""
    ae, other, run = _ae(tmp_path / "ae.pt", 0), _ae(tmp_path / "other.pt", 1), tmp_path / "run"
    assert main(TRAIN + ["--latent", str(ae), "--out", str(run)]) == 0
    assert main(["export", str(run), "--out", str(tmp_path / "x")]) == 0
    assert checkpoints.read(tmp_path / "x" / "model.header", kind="model", log=None).meta["latent"]["sha256"] == \
        checkpoints.find(run, log=None).header.meta["image"]["latent"]["sha256"]
    sample = ["sample", "--n", "3", "--steps", "3", "--device", "cpu"]
    assert main(sample + ["--ckpt", str(run), "--out", str(tmp_path / "a")]) == 0
    assert main(sample + ["--ckpt", str(tmp_path / "x"), "--out", str(tmp_path / "b")]) == 0
    for name in ("000000.png", "000002.png"):  # the same decoded 8x8 digits, pixel for pixel
        a, b = (np.asarray(Image.open(tmp_path / d / name)) for d in ("a", "b"))
        assert a.shape == (8, 8) and np.array_equal(a, b)
    (tmp_path / "moved.pt").write_bytes(ae.read_bytes())
    ae.unlink()
    assert main(sample + ["--ckpt", str(tmp_path / "x"), "--ae", str(tmp_path / "moved.pt"), "--out", str(tmp_path / "c")]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "c" / "000001.png")), np.asarray(Image.open(tmp_path / "a" / "000001.png")))
    capsys.readouterr()
    _one_line_error(capsys, sample + ["--ckpt", str(tmp_path / "x"), "--ae", str(other), "--out", str(tmp_path / "d")], "other.pt", "give that autoencoder")
    pixel = tmp_path / "pixel"
    assert main(TRAIN + ["--out", str(pixel), "--resolution", "8", "--arch", "tiny"]) == 0 and main(["export", str(pixel), "--out", str(tmp_path / "px")]) == 0
    capsys.readouterr()
    _one_line_error(capsys, sample + ["--ckpt", str(tmp_path / "px"), "--ae", str(other), "--out", str(tmp_path / "e")], "--ae", "pixel space")


@pytest.mark.parametrize("record, words", [({"scale_factor": "x"}, ("scale_factor",)), ({"scale_factor": -1.0}, ("scale_factor",)),
                                           ({"sha256": 5}, ("latent record",)), ({"autoencoder": None}, ("names no autoencoder",))])
def test_a_model_folder_with_a_damaged_latent_record_is_one_line(tmp_path, capsys, record, words):
    ae, run = _ae(tmp_path / "ae.pt", 0), tmp_path / "run"
    assert main(TRAIN + ["--latent", str(ae), "--out", str(run)]) == 0 and main(["export", str(run), "--out", str(tmp_path / "x")]) == 0
    header = checkpoints.read(tmp_path / "x" / "model.header", kind="model", log=None)
    meta = {**header.meta, "latent": {**header.meta["latent"], **record}}
    checkpoints.write(tmp_path / "x" / "model.header", {}, kind="model", step=0, meta=meta)  # re-checksummed: a crafted, well-formed header
    capsys.readouterr()
    _one_line_error(capsys, ["sample", "--ckpt", str(tmp_path / "x"), "--n", "1", "--steps", "2", "--device", "cpu", "--out", str(tmp_path / "s")], *words)
