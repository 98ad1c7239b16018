"""Latent runs' data and decoder (physgen.latent.data): unit-variance latents of the images, a
latents file accepted only with its own autoencoder, the decoder refused for another one."""
import pytest
import torch

from physgen.errors import UserError
from physgen.images.data import load_image_dataset
from physgen.latent.data import check_latent_record, latent_dataset, latent_decoder
from physgen.latent.encode import encode_dataset
from physgen.latent.train import save_autoencoder
from physgen.nets.autoencoder import Autoencoder, AutoencoderSpec

SPEC = AutoencoderSpec(in_channels=1, resolution=8, latent_channels=3, width=8, channel_mult=(1, 1))


def _ae(path, seed):
    torch.manual_seed(seed)
    return save_autoencoder(path, Autoencoder(SPEC))


def test_on_the_fly_latents_have_unit_variance_and_decode_to_the_autoencoders_images(tmp_path):
    ae = _ae(tmp_path / "ae.pt", 0)
    data, record = latent_dataset(ae, "digits")
    assert tuple(data.images.shape) == (1797, 3, 4, 4) and data.num_classes == 10
    assert float(data.images.double().var()) == pytest.approx(1.0, rel=1e-3)
    assert record["image_shape"] == [1, 8, 8] and record["autoencoder"] == str(ae)
    decode = latent_decoder(record, "run")
    images = decode(data.images[:5])
    assert images.shape == (5, 1, 8, 8) and images.abs().max() <= 1.0
    # the same latents from an encoded file: same scale, same tensors
    encode_dataset(ae, "digits", tmp_path / "z.npz")
    again, rec2 = latent_dataset(ae, f"npz:{tmp_path / 'z.npz'}")
    assert rec2["scale_factor"] == pytest.approx(record["scale_factor"]) and torch.allclose(again.images, data.images, atol=1e-5)


def test_another_autoencoder_is_refused_for_a_file_and_for_a_record(tmp_path):
    a, b = _ae(tmp_path / "a.pt", 0), _ae(tmp_path / "b.pt", 1)
    encode_dataset(a, load_image_dataset("digits", 8), tmp_path / "z.npz")
    with pytest.raises(UserError, match="b.pt"):
        latent_dataset(b, f"npz:{tmp_path / 'z.npz'}")
    _, record = latent_dataset(a, f"npz:{tmp_path / 'z.npz'}")
    check_latent_record(record, a, "run")
    with pytest.raises(UserError, match="not of .*b.pt"):
        latent_decoder(record, "run", ae_path=b)
    with pytest.raises(UserError, match="checksum"):
        check_latent_record({"autoencoder": str(a)}, a, "run")
