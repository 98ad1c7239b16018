"""Latent inpainting (physgen.latent.edit): the mask on the latent grid keeps only fully kept
blocks, and the edit keeps the known pixels exactly while regenerating the others."""
import torch

from physgen.latent.edit import latent_inpaint, latent_mask
from physgen.nets.autoencoder import Autoencoder, AutoencoderSpec
from physgen.nets.unet import build_unet
from physgen.processes import make_process

SPEC = AutoencoderSpec(in_channels=1, resolution=8, latent_channels=2, width=8, channel_mult=(1, 2))


def test_latent_mask_keeps_a_cell_only_when_its_whole_block_is_kept():
    torch.manual_seed(0)
    for _ in range(20):
        m = torch.rand(3, 8, 8) > 0.2
        got = latent_mask(m, 4)
        brute = torch.tensor([[bool(m[:, 4 * i:4 * i + 4, 4 * j:4 * j + 4].all()) for j in range(2)] for i in range(2)])
        assert got.shape == (1, 2, 2) and torch.equal(got[0], brute)


def test_inpainting_keeps_the_known_pixels_and_regenerates_the_rest():
    torch.manual_seed(0)
    ae = Autoencoder(SPEC).eval()
    process = make_process("edm", sigma_data=1.0)
    field = process.precondition(build_unet("tiny", img_resolution=4, channels=2)).eval()
    images = torch.rand(3, 1, 8, 8) * 2 - 1
    mask = torch.ones(1, 8, 8)
    mask[:, :, 4:] = 0  # regenerate the right half
    with torch.no_grad():
        sol = latent_inpaint(process, field, ae, 1.7, images, mask, steps=3, seed=1)
    out = sol.x
    assert sol.stats.nfe > 0 and out.shape == images.shape
    assert torch.equal(out[..., :4], images[..., :4])
    assert not torch.allclose(out[..., 4:], images[..., 4:]) and out[..., 4:].abs().max() <= 1.0
