"""train-autoencoder runs on the shared Trainer (physgen.latent.run): the objective is LDM's
per-image loss, and a run stopped and resumed equals an uninterrupted one bit for bit."""
import pytest
import torch

from physgen import checkpoints
from physgen.images.data import ImageDataset, load_image_dataset
from physgen.errors import UserError
from physgen.latent.run import AutoencoderObjective, AutoencoderRunConfig, run_autoencoder_training
from physgen.latent.train import load_autoencoder
from physgen.nets.autoencoder import Autoencoder, AutoencoderSpec, adversarial_loss
from physgen.training import TrainConfig

TINY = AutoencoderSpec(in_channels=1, resolution=8, latent_channels=2, width=8, channel_mult=(1, 2), attention=False)


def test_objective_is_reconstruction_plus_beta_times_the_closed_form_kl():
    """l = sum |x - D(mu + sigma eps)| + beta * 0.5 sum(mu^2 + sigma^2 - 1 - log sigma^2), per image."""
    torch.manual_seed(0)
    ae, x = Autoencoder(TINY), torch.rand(5, 1, 8, 8) * 2 - 1
    for recon, beta in (("l1", 1e-3), ("l2", 0.5)):
        got = AutoencoderObjective(beta, recon).loss(ae, x, generator=torch.Generator().manual_seed(3))
        q = ae.encode(x)
        z = q.mean + q.std * torch.randn(q.mean.shape, generator=torch.Generator().manual_seed(3))
        r = x - ae.decode(z)
        rec = (r.abs() if recon == "l1" else r.square()).flatten(1).sum(1)
        kl = 0.5 * (q.mean.square() + q.std.square() - 1 - q.std.square().log()).flatten(1).sum(1)
        assert got.shape == (5,)
        torch.testing.assert_close(got, rec + beta * kl, rtol=1e-5, atol=1e-4)


def test_the_adversarial_term_enters_only_when_weighted_and_from_disc_start():
    """disc_weight 0 builds no discriminator; with a weight, before disc_start the loss is the plain
    one and the discriminator is not trained; from disc_start on, each call takes one hinge step of
    the discriminator, then adds disc_weight * (-mean d(x_hat)) per image."""
    torch.manual_seed(0)
    ae, x = Autoencoder(TINY), torch.rand(4, 1, 8, 8) * 2 - 1
    gen = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    plain = AutoencoderObjective(1e-3).loss(ae, x, generator=gen())
    assert AutoencoderObjective(1e-3).discriminator is None and AutoencoderObjective(1e-3).state_dict() == {}
    obj = AutoencoderObjective(1e-3, disc_weight=0.5, disc_start=2, lr=1e-2)
    before = {k: v.clone() for k, v in obj.discriminator.state_dict().items()}
    assert torch.equal(obj.loss(ae, x, generator=gen()), plain)
    assert all(torch.equal(before[k], v) for k, v in obj.discriminator.state_dict().items())
    obj.steps_done = 2
    got = obj.loss(ae, x, generator=gen())
    assert not all(torch.equal(before[k], v) for k, v in obj.discriminator.state_dict().items())  # one hinge step taken
    with torch.no_grad():
        x_hat, _ = ae(x, generator=gen())
        torch.testing.assert_close(got, plain + 0.5 * adversarial_loss(obj.discriminator, x_hat), rtol=1e-5, atol=1e-5)
    assert got.shape == (4,) and got.requires_grad


def test_a_short_run_reconstructs_its_images_far_better_than_their_mean(tmp_path):
    """32 digits at 8x8 through a 2x4x4 latent, 100 steps: the EMA's reconstruction error of the
    training images is below 0.3 of their variance (measured 0.1), its loss curve falls by half."""
    d = load_image_dataset("digits")  # the native 8x8
    data = ImageDataset(d.images[:36], d.labels[:36], 10, "digits[:36]")
    config = AutoencoderRunConfig(out=str(tmp_path / "ae"), device="cpu", holdout=4,
                                  train=TrainConfig(steps=60, batch=16, lr=3e-3, warmup_steps=10, ema_halflife=5000.0, ema_rampup=0.05,
                                                    grad_clip=None, log_every=50))
    result = run_autoencoder_training(config, dataset=data, spec=TINY)
    ae, train = load_autoencoder(tmp_path / "ae"), data.images[:32]
    with torch.no_grad():
        mse = float((ae(train, sample=False)[0] - train).square().mean())
    var = float((train - train.mean(0)).square().mean())
    assert mse < 0.3 * var, (mse, var)
    assert result.losses[-1] < 0.5 * result.losses[0], (result.losses[0], result.losses[-1])


@pytest.mark.parametrize("field, value", [("beta", -1.0), ("recon", "l3"), ("disc_weight", float("nan")), ("disc_weight", -1.0),
                                          ("disc_start", -1), ("preset", "huge"), ("train", {"steps": 0}), ("train", {"ema_halflife": 0.0})])
def test_bad_run_settings_are_one_line(field, value):
    with pytest.raises(UserError) as info:
        AutoencoderRunConfig(**{field: value})
    text = str(info.value)
    assert len(text.splitlines()) == 1 and (field.split("_")[0] in text or "reconstruction" in text or str(value) in text
                                            or any(k in text for k in (value if isinstance(value, dict) else ()))), text


def _config(out, steps, disc_weight=0.0):
    return AutoencoderRunConfig(out=str(out), device="cpu", holdout=4, disc_weight=disc_weight, disc_start=1,
                                train=TrainConfig(steps=steps, batch=8, lr=2e-3, warmup_steps=2, ema_halflife=100.0, ema_rampup=None,
                                                  grad_clip=None, log_every=1, checkpoint_every=2, seed=3))


@pytest.mark.parametrize("disc_weight", [0.0, 0.1])
def test_stopped_and_resumed_run_equals_an_uninterrupted_one(tmp_path, disc_weight):
    """The digits preset on 40 digits: 4 steps straight vs 2 steps then --resume to 4 (with the
    PatchGAN term from step 1: its discriminator and optimiser resume too)."""
    data = load_image_dataset("digits", 16)
    data = ImageDataset(data.images[:40], data.labels[:40], 10, "digits[:40]")
    straight = run_autoencoder_training(_config(tmp_path / "a", 4, disc_weight), dataset=data)
    run_autoencoder_training(_config(tmp_path / "b", 2, disc_weight), dataset=data)
    resumed = run_autoencoder_training(_config(tmp_path / "b", 4, disc_weight), resume=True, dataset=data)
    assert straight.step == resumed.step == 4 and straight.losses == resumed.losses
    a, b = (checkpoints.read(checkpoints.find(tmp_path / d, log=None).path).payload for d in "ab")
    for key in ("model", "ema", "optimizer", "sampler", "extra"):
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert bool(a["extra"]) == (disc_weight > 0)
    if disc_weight:  # the adversarial term changed the training
        plain = run_autoencoder_training(_config(tmp_path / "c", 4), dataset=data)
        assert plain.losses[:1] == straight.losses[:1] and plain.losses[1:] != straight.losses[1:]
    wa, wb = (load_autoencoder(tmp_path / d).state_dict() for d in "ab")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not torch.equal(wa["decoder.conv_out.weight"], a["model"]["decoder.conv_out.weight"])  # autoencoder.pt holds the EMA
    assert (tmp_path / "a" / "samples" / "recon-00000004.png").is_file()
