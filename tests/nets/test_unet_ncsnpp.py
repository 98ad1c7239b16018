"""The U-Net's NCSN++ configurations (FIR resampling, residual / skip encoder, skip decoder,
wider noise embedding) and ADM's U-Net: the filters' algebra, shapes, gradients, labels,
and that physgen's standard configurations are untouched (no new tensors)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from physgen.errors import UserError
from physgen.nets.adm import ADMUNet
from physgen.nets.unet import UNET_PRESETS, UNet, build_unet, fir_down, fir_filter, fir_up


def test_box_filter_is_average_pooling_and_nearest_upsampling():
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    k = fir_filter((1, 1)).double()
    assert torch.allclose(fir_down(x, k), F.avg_pool2d(x, 2), atol=1e-15)
    assert torch.allclose(fir_up(x, k), F.interpolate(x, scale_factor=2.0, mode="nearest"), atol=1e-15)


@pytest.mark.parametrize("taps", [(1, 3, 3, 1), (1, 1), (1, 2, 1)])
def test_fir_filters_keep_constants_away_from_the_border(taps):
    """The 2-D kernel sums to 1 (down) and each of up's four polyphase parts sums to 1."""
    k = fir_filter(taps).double()
    assert float(k.sum()) == pytest.approx(1.0, abs=1e-15)
    c = torch.full((1, 2, 16, 16), 3.5, dtype=torch.float64)
    m = len(taps)
    assert torch.allclose(fir_down(c, k)[..., m:-m, m:-m], c[..., : 16 // 2 - 2 * m, : 16 // 2 - 2 * m])
    if len(taps) % 2 == 0:  # even filters: up then down keeps a constant (odd ones shift the grid)
        assert torch.allclose(fir_up(c, k)[..., m:-m, m:-m], torch.full((1, 2, 32 - 2 * m, 32 - 2 * m), 3.5, dtype=torch.float64))


def test_bad_filter_is_one_line():
    with pytest.raises(UserError, match="resample_filter"):
        fir_filter((1, -1))


NCSNPP = dict(embedding="fourier", channel_mult_noise=2, resample_filter=(1, 3, 3, 1))


@pytest.mark.parametrize("encoder, decoder", [("residual", "standard"), ("skip", "skip"), ("standard", "skip"), ("residual", "skip")])
@pytest.mark.parametrize("num_classes", [0, 3])
def test_ncsnpp_paths_shape_and_every_parameter_gets_a_gradient(encoder, decoder, num_classes):
    torch.manual_seed(0)
    net = build_unet("tiny", 16, 3, num_classes=num_classes, encoder_type=encoder, decoder_type=decoder, **NCSNPP)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    assert len(net.aux) > 0
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    label = torch.tensor([0, -1]) if num_classes else None
    out = net(x, torch.rand(2), label)
    assert out.shape == x.shape
    out.square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_standard_presets_have_no_new_tensors():
    """The NCSN++ options default off: physgen's presets keep their state-dict names."""
    for arch in UNET_PRESETS:
        net = build_unet(arch, 32, 3, num_classes=2) if arch != "tiny" else build_unet(arch, 8, 3, num_classes=2)
        names = list(net.state_dict())
        assert not [n for n in names if n.startswith("aux.")] and "map_noise.freqs" not in names


def test_unknown_encoder_is_one_line():
    with pytest.raises(UserError, match="encoder_type"):
        UNet(8, 3, 3, encoder_type="fancy")


@pytest.mark.parametrize("num_classes", [0, 4])
def test_adm_shapes_gradients_and_null_label(num_classes):
    torch.manual_seed(0)
    net = ADMUNet(8, 3, 3, model_channels=64, channel_mult=(1, 2), num_blocks=1, attn_resolutions=(4,), num_classes=num_classes, dropout=0.0)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    assert net.enc["4x4_block0"].num_heads == 2 and net.enc["8x8_block0"].num_heads == 0  # heads of 64 channels where listed
    x = torch.randn(3, 3, 8, 8)
    c = torch.rand(3)
    out = net(x, c, torch.tensor([0, 3, -1]) if num_classes else None)
    out.square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
    if num_classes:
        assert torch.equal(net(x, c), net(x, c, torch.tensor([-1, -1, num_classes])))
