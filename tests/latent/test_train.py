"""The autoencoder training loop (physgen.latent.train): it learns to reconstruct, reproducibly;
on digits the classifier reads held-out reconstructions as the originals (slow tier)."""
import numpy as np
import pytest
import torch

from physgen.images.data import ImageDataset, load_image_dataset
from physgen.latent.encode import decode_latents, encode_dataset
from physgen.latent.train import AutoencoderTrainConfig, load_autoencoder, train_autoencoder
from physgen.nets.autoencoder import AE_PRESETS, AutoencoderSpec

TINY = AutoencoderSpec(in_channels=1, resolution=8, latent_channels=2, width=8, channel_mult=(1, 2), attention=False)


def tiny_digits(n=32) -> ImageDataset:
    d = load_image_dataset("digits")  # the native 8x8
    return ImageDataset(d.images[:n], d.labels[:n], 10, "digits[:32]")


def test_training_reconstructs_its_images_far_better_than_their_mean():
    """32 digits, 8x8 -> 2x4x4 latents: after 100 steps the reconstruction error of the training
    images is below 0.3 of their variance (the error of predicting the mean image; measured
    0.17), and the last steps' loss is under half the first steps' (measured 0.23)."""
    data = tiny_digits()
    res = train_autoencoder(data, TINY, AutoencoderTrainConfig(steps=100, batch=16, lr=3e-3, warmup_steps=10, ema_halflife=None))
    with torch.no_grad():
        rec = res.autoencoder.decode(res.autoencoder.encode(data.images).mode())
    mse = float((rec - data.images).square().mean())
    var = float((data.images - data.images.mean(0)).square().mean())
    assert mse < 0.3 * var, (mse, var)
    first, last = np.mean([r["rec"] for r in res.losses[:10]]), np.mean([r["rec"] for r in res.losses[-10:]])
    assert last < 0.5 * first, (first, last)


def test_training_is_reproducible_and_the_ema_differs_from_the_raw_weights(tmp_path):
    data = tiny_digits()
    config = AutoencoderTrainConfig(steps=6, batch=8, warmup_steps=2, ema_halflife=50.0, disc_weight=0.1)
    a = train_autoencoder(data, TINY, config, out=tmp_path / "a.pt")
    b = train_autoencoder(data, TINY, config, out=tmp_path / "b.pt")
    assert [r["loss"] for r in a.losses] == [r["loss"] for r in b.losses] and "disc" in a.losses[-1]
    assert all(torch.equal(p, q) for p, q in zip(load_autoencoder(tmp_path / "a.pt").parameters(), b.autoencoder.parameters()))
    state = torch.random.get_rng_state()
    c = train_autoencoder(data, TINY, AutoencoderTrainConfig(steps=6, batch=8, warmup_steps=2, ema_halflife=None, disc_weight=0.1))
    assert not all(torch.equal(p, q) for p, q in zip(a.autoencoder.parameters(), c.autoencoder.parameters()))
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's global RNG is untouched


@pytest.mark.slow
def test_digits_reconstructions_keep_their_class(tmp_path):
    """Issue 25's bar: the digits preset (16x16 -> 4x4x4, f = 4), trained on the classifier's
    training part only, reconstructs the held-out digits, through a latents file and back, so
    that the classifier's accuracy on them is within 0.05 of its accuracy on the originals.  400
    steps (half the benchmark's 800) keep the test near a minute; with this judge the gap measured
    0.003 (0.958 vs 0.955) at 400 steps, 0.008 at 300."""
    from physgen.images.quality import classifier_outputs, split_dataset, train_classifier

    data = load_image_dataset("digits", 16)
    clf, _ = train_classifier(data, steps=300, seed=0)
    train_part, held = split_dataset(data, 0.2, 0)
    train_autoencoder(train_part, AE_PRESETS["digits"], AutoencoderTrainConfig(steps=400), out=tmp_path / "ae.pt")
    info = encode_dataset(tmp_path / "ae.pt", held, tmp_path / "z.npz")
    latents = load_image_dataset(f"npz:{tmp_path / 'z.npz'}")
    recon = decode_latents(load_autoencoder(tmp_path / "ae.pt"), latents.images, info.scale_factor)
    labels = held.labels.numpy()
    acc = [float((classifier_outputs(clf, x)[1].argmax(1) == labels).mean()) for x in (held.images, recon)]
    assert acc[1] >= acc[0] - 0.05, acc


def test_a_trainer_restored_from_its_state_continues_bit_for_bit(tmp_path):
    """Train 3 steps, save the trainer's state as a checkpoint, restore it into a fresh trainer
    (weights-only load) and train 3 more: the same losses and weights as 6 uninterrupted steps."""
    from physgen import checkpoints
    from physgen.latent.train import AutoencoderTrainer

    data, config = tiny_digits(), AutoencoderTrainConfig(steps=6, batch=8, warmup_steps=2, ema_halflife=50.0, disc_weight=0.1)
    whole = AutoencoderTrainer(TINY, data, config)
    losses = [whole.step() for _ in range(6)]
    first = AutoencoderTrainer(TINY, data, config)
    head = [first.step() for _ in range(3)]
    checkpoints.write(tmp_path / "t.pt", first.state_dict(), kind="autoencoder", step=3, meta={"autoencoder": TINY.to_dict()})
    torch.manual_seed(123)  # the global RNG plays no part
    resumed = AutoencoderTrainer(TINY, data, config)
    resumed.load_state_dict(checkpoints.read(tmp_path / "t.pt", kind="autoencoder").payload)
    tail = [resumed.step() for _ in range(3)]
    assert head + tail == losses
    for a, b in zip(whole.state_dict()["ema"].values(), resumed.state_dict()["ema"].values()):
        assert torch.equal(a, b)
