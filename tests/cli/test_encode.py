"""``physgen encode`` (physgen.cli.encode): the defaults' result, and bad inputs in one line with exit status 2."""
import numpy as np
import pytest
import torch

from physgen import checkpoints
from physgen.cli.main import main
from physgen.images.data import load_image_dataset
from physgen.latent.encode import read_latent_info
from physgen.latent.train import save_autoencoder
from physgen.nets.autoencoder import Autoencoder, AutoencoderSpec

SPEC = AutoencoderSpec(in_channels=1, resolution=8, latent_channels=3, width=8, channel_mult=(1, 1))


@pytest.fixture
def ae_path(tmp_path):
    torch.manual_seed(0)
    return save_autoencoder(tmp_path / "ae.pt", Autoencoder(SPEC))


def test_encode_defaults_write_unit_variance_digits_latents(tmp_path, ae_path, capsys):
    out = tmp_path / "z.npz"
    assert main(["encode", "--ae", str(ae_path), "--out", str(out), "--device", "cpu"]) == 0
    data = load_image_dataset(f"npz:{out}")
    info = read_latent_info(out)
    assert len(data) == 1797 and data.num_classes == 10 and np.bincount(data.labels.numpy()).min() > 150  # every digit
    assert tuple(data.images.shape[1:]) == (3, 4, 4) and info.mode == "mean" and info.dataset == "digits"
    assert float(data.images.double().var()) == pytest.approx(1.0, abs=1e-5)
    assert info.autoencoder == str(ae_path) and "wrote" in capsys.readouterr().out
    assert main(["encode", "--ae", str(ae_path), "--out", str(out), "--device", "cpu"]) == 2  # no silent overwrite
    assert main(["encode", "--ae", str(ae_path), "--out", str(out), "--device", "cpu", "--overwrite", "--mode", "sample"]) == 0
    assert read_latent_info(out).mode == "sample"


def _one_line_error(capsys, argv, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and all(n in err for n in needles), err


def test_a_training_checkpoint_as_the_autoencoder_is_one_line(tmp_path, capsys):
    checkpoints.write(tmp_path / "run.pt", {"model": {}}, kind="train", step=1, meta={})
    _one_line_error(capsys, ["encode", "--ae", str(tmp_path / "run.pt"), "--out", str(tmp_path / "z.npz")], "run.pt", "not an autoencoder")
    assert not (tmp_path / "z.npz").exists()


def test_a_dataset_of_the_wrong_channels_is_one_line(tmp_path, ae_path, capsys):
    np.savez(tmp_path / "rgb.npz", x=np.zeros((4, 8, 8, 3), np.uint8))
    _one_line_error(capsys, ["encode", "--ae", str(ae_path), "--dataset", f"npz:{tmp_path / 'rgb.npz'}", "--out", str(tmp_path / "z.npz")],
                    "rgb.npz", "3 channel(s)")
