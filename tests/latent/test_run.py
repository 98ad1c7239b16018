"""train-autoencoder runs on the shared Trainer (physgen.latent.run): the objective is LDM's
per-image loss, and a run stopped and resumed equals an uninterrupted one bit for bit."""
import pytest
import torch

from physgen import checkpoints
from physgen.images.data import ImageDataset, load_image_dataset
from physgen.latent.run import AutoencoderObjective, AutoencoderRunConfig, run_autoencoder_training
from physgen.latent.train import load_autoencoder
from physgen.nets.autoencoder import Autoencoder, AutoencoderSpec
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


def _config(out, steps):
    return AutoencoderRunConfig(out=str(out), device="cpu", holdout=4,
                                train=TrainConfig(steps=steps, batch=8, lr=2e-3, warmup_steps=2, ema_halflife=100.0, ema_rampup=None,
                                                  grad_clip=None, log_every=1, checkpoint_every=2, seed=3))


def test_stopped_and_resumed_run_equals_an_uninterrupted_one(tmp_path, monkeypatch):
    """The digits preset on 40 digits: 4 steps straight vs 2 steps then --resume to 4."""
    data = load_image_dataset("digits", 16)
    data = ImageDataset(data.images[:40], data.labels[:40], 10, "digits[:40]")
    straight = run_autoencoder_training(_config(tmp_path / "a", 4), dataset=data)
    run_autoencoder_training(_config(tmp_path / "b", 2), dataset=data)
    resumed = run_autoencoder_training(_config(tmp_path / "b", 4), resume=True, dataset=data)
    assert straight.step == resumed.step == 4 and straight.losses == resumed.losses
    a, b = (checkpoints.read(checkpoints.find(tmp_path / d, log=None).path).payload for d in "ab")
    for key in ("model", "ema", "optimizer", "sampler"):
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    wa, wb = (load_autoencoder(tmp_path / d).state_dict() for d in "ab")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not torch.equal(wa["decoder.conv_out.weight"], a["model"]["decoder.conv_out.weight"])  # autoencoder.pt holds the EMA
    assert (tmp_path / "a" / "samples" / "recon-00000004.png").is_file()
