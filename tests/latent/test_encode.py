"""Latent datasets (physgen.latent.encode) and autoencoder checkpoints (physgen.latent.train)."""
import pickle
import shutil

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from physgen import checkpoints
from physgen.errors import UserError
from physgen.images.data import ImageDataset, load_image_dataset
from physgen.latent.encode import check_autoencoder, decode_latents, encode_dataset, encode_images, read_latent_info
from physgen.latent.train import load_autoencoder, save_autoencoder
from physgen.nets.autoencoder import Autoencoder, AutoencoderSpec

SPEC = AutoencoderSpec(in_channels=1, resolution=8, latent_channels=3, width=8, channel_mult=(1, 1))


def one_line(exc_info) -> str:
    text = str(exc_info.value)
    assert len(text.splitlines()) == 1, text
    return text


def make_ae(path, seed=0, spec=SPEC):
    torch.manual_seed(seed)
    ae = Autoencoder(spec)
    save_autoencoder(path, ae, step=3)
    return ae.eval()


def blobs(n=40, channels=1, side=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ImageDataset((torch.rand(n, channels, side, side, generator=g) * 2 - 1), torch.arange(n) % 4, 4, "blobs")


def test_checkpoint_round_trip_gives_the_same_network(tmp_path):
    ae = make_ae(tmp_path / "ae.pt")
    back = load_autoencoder(tmp_path / "ae.pt")
    x = blobs().images
    assert back.spec == SPEC
    assert torch.equal(back.encode(x).mean, ae.encode(x).mean)
    assert checkpoints.read_header(tmp_path / "ae.pt").kind == "autoencoder"


def test_latents_file_loads_as_npz_data_with_unit_variance_and_decodes(tmp_path):
    ae = make_ae(tmp_path / "ae.pt")
    data = blobs()
    info = encode_dataset(tmp_path / "ae.pt", data, tmp_path / "z.npz")
    loaded = load_image_dataset(f"npz:{tmp_path / 'z.npz'}")
    z = encode_images(ae, data.images)
    assert info.latent_shape == (3, 4, 4) and info.count == 40 and info.image_shape == (1, 8, 8) and info.mode == "mean"
    assert info.scale_factor == pytest.approx(1 / float(z.double().std()), rel=1e-6)
    assert float(loaded.images.double().var()) == pytest.approx(1.0, abs=1e-5)
    assert torch.equal(loaded.labels, data.labels) and loaded.num_classes == 4
    torch.testing.assert_close(loaded.images, z * info.scale_factor, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        direct = ae.decode(z).clamp(-1, 1)
    torch.testing.assert_close(decode_latents(ae, loaded.images, info.scale_factor), direct, rtol=1e-4, atol=1e-5)


@settings(max_examples=6)
@given(shift=st.floats(-5, 5), stretch=st.floats(0.01, 50))
def test_scale_factor_makes_unit_variance_whatever_the_latent_scale(tmp_path_factory, shift, stretch):
    """Scale the encoder's last layer: the latents' spread changes, the stored latents' variance stays 1."""
    tmp = tmp_path_factory.mktemp("scale")
    torch.manual_seed(0)
    ae = Autoencoder(SPEC)
    with torch.no_grad():
        ae.encoder.conv_out.weight.mul_(stretch)
        ae.encoder.conv_out.bias.add_(shift)
    save_autoencoder(tmp / "ae.pt", ae)
    info = encode_dataset(tmp / "ae.pt", blobs(), tmp / "z.npz")
    x = load_image_dataset(f"npz:{tmp / 'z.npz'}").images.double()
    assert float(x.var()) == pytest.approx(1.0, abs=1e-4)
    assert info.scale_factor * float(encode_images(ae, blobs().images).double().std()) == pytest.approx(1.0, rel=1e-5)


def test_sample_mode_draws_from_the_posterior_reproducibly(tmp_path):
    make_ae(tmp_path / "ae.pt")
    a = encode_dataset(tmp_path / "ae.pt", blobs(), tmp_path / "a.npz", mode="sample", seed=5)
    encode_dataset(tmp_path / "ae.pt", blobs(), tmp_path / "b.npz", mode="sample", seed=5)
    encode_dataset(tmp_path / "ae.pt", blobs(), tmp_path / "m.npz")
    xa, xb, xm = (np.load(tmp_path / f"{k}.npz")["x"] for k in "abm")
    assert a.mode == "sample" and np.array_equal(xa, xb) and not np.allclose(xa, xm)


def test_a_different_autoencoder_is_refused_naming_the_files(tmp_path):
    make_ae(tmp_path / "ae.pt")
    encode_dataset(tmp_path / "ae.pt", blobs(), tmp_path / "z.npz")
    check_autoencoder(tmp_path / "z.npz", tmp_path / "ae.pt")
    shutil.copy(tmp_path / "ae.pt", tmp_path / "copy.pt")
    check_autoencoder(tmp_path / "z.npz", tmp_path / "copy.pt")  # the same bytes under another name
    make_ae(tmp_path / "other.pt", seed=1)
    with pytest.raises(UserError) as info:
        check_autoencoder(tmp_path / "z.npz", tmp_path / "other.pt")
    text = one_line(info)
    assert "z.npz" in text and "other.pt" in text and "ae.pt" in text


def test_a_checkpoint_of_another_kind_is_not_an_autoencoder(tmp_path):
    checkpoints.write(tmp_path / "train.pt", {"model": {}}, kind="train", step=1, meta={})
    with pytest.raises(UserError) as info:
        load_autoencoder(tmp_path / "train.pt")
    assert "train.pt" in one_line(info) and "not an autoencoder" in str(info.value)
    with pytest.raises(UserError) as info:
        encode_dataset(tmp_path / "train.pt", blobs(), tmp_path / "z.npz")
    assert "train.pt" in one_line(info)
    assert not (tmp_path / "z.npz").exists()


class _Boom:
    def __reduce__(self):
        return (print, ("ran code",))


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", pickle.dumps(_Boom()), pickle.dumps({"model": 1})])
def test_files_that_are_not_checkpoints_are_one_line(tmp_path, capsys, content):
    (tmp_path / "bad.pt").write_bytes(content)
    with pytest.raises(UserError) as info:
        load_autoencoder(tmp_path / "bad.pt")
    assert "bad.pt" in one_line(info) and "ran code" not in capsys.readouterr().out


def test_a_verifying_autoencoder_checkpoint_with_a_pickle_payload_runs_nothing(tmp_path, capsys):
    """Header, spec and checksum are right; only the weights-only loader stands between the pickle and the user."""
    pad = torch.zeros(sum(p.numel() for p in Autoencoder(SPEC).parameters()))  # big enough for the size check
    checkpoints.write(tmp_path / "evil.pt", {"model": _Boom(), "pad": pad}, kind="autoencoder", step=0,
                      meta={"autoencoder": SPEC.to_dict()})
    capsys.readouterr()
    with pytest.raises(UserError) as info:
        load_autoencoder(tmp_path / "evil.pt")
    assert "evil.pt" in one_line(info) and "ran code" not in capsys.readouterr().out


def test_a_header_that_describes_a_bigger_network_than_its_weights_is_refused(tmp_path):
    make_ae(tmp_path / "ae.pt")
    big = {**SPEC.to_dict(), "width": 1024, "channel_mult": [16, 16]}
    checkpoints.write(tmp_path / "big.pt", {"model": {}}, kind="autoencoder", step=0, meta={"autoencoder": big})
    with pytest.raises(UserError) as info:
        load_autoencoder(tmp_path / "big.pt")
    assert "big.pt" in one_line(info) and "more than" in str(info.value)
    checkpoints.write(tmp_path / "wrong.pt", {"model": {"x": torch.zeros(2)}}, kind="autoencoder", step=0,
                      meta={"autoencoder": SPEC.to_dict()})
    with pytest.raises(UserError) as info:
        load_autoencoder(tmp_path / "wrong.pt")
    assert "wrong.pt" in one_line(info)


@pytest.mark.parametrize("channels, side, words", [(3, 8, "3 channel(s) at 8x8"), (1, 16, "1 channel(s) at 16x16")])
def test_a_dataset_of_the_wrong_channels_or_size_is_one_line(tmp_path, channels, side, words):
    make_ae(tmp_path / "ae.pt")
    with pytest.raises(UserError) as info:
        encode_dataset(tmp_path / "ae.pt", blobs(channels=channels, side=side), tmp_path / "z.npz")
    text = one_line(info)
    assert words in text and "blobs" in text and "ae.pt" in text


def test_a_plain_npz_is_not_a_latents_file_and_latents_are_not_resized(tmp_path):
    np.savez(tmp_path / "plain.npz", x=np.zeros((2, 8, 8, 1), np.uint8))
    with pytest.raises(UserError) as info:
        read_latent_info(tmp_path / "plain.npz")
    assert "plain.npz" in one_line(info)
    make_ae(tmp_path / "ae.pt")
    encode_dataset(tmp_path / "ae.pt", blobs(), tmp_path / "z.npz")
    with pytest.raises(UserError) as info:
        load_image_dataset(f"npz:{tmp_path / 'z.npz'}", 8)
    assert "z.npz" in one_line(info)
    arrays = dict(np.load(tmp_path / "z.npz"))
    arrays["x"][0, 0, 0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", **arrays)
    with pytest.raises(UserError) as info:
        load_image_dataset(f"npz:{tmp_path / 'nan.npz'}")
    assert "nan.npz" in one_line(info)
