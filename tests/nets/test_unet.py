"""DDPM++ U-Net (physgen.nets.unet): shapes, zero-init output, gradients, presets."""
from __future__ import annotations

import pytest
import torch

from physgen.errors import UserError
from physgen.nets.unet import UNET_PRESETS, UNet, build_unet


def _randomize_output(net: UNet) -> UNet:
    """The output conv is zero at init; give it weights so the output depends on x."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        net.out_conv.weight.copy_(torch.randn(net.out_conv.weight.shape, generator=gen) * 0.1)
    return net


@pytest.mark.parametrize("res", [8, 16, 32])
@pytest.mark.parametrize("num_classes", [0, 10])
def test_tiny_output_is_per_sample_and_follows_its_conditioning(res, num_classes):
    """What makes it a denoiser network, not only its shape: each row of the output depends on its own
    sample alone (group norms, no batch statistics: the sample alone gives the same row), and on its
    noise level and its label (a network that ignored either could not learn to condition on it)."""
    torch.manual_seed(0)
    net = build_unet("tiny", res, 3, num_classes=num_classes).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # as if trained: the zero-initialised layers (output, each block's last conv) get weights
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    x, c = torch.randn(2, 3, res, res), torch.rand(2)
    label = torch.tensor([0, 9]) if num_classes else None
    with torch.no_grad():
        out = net(x, c, label)
        assert out.shape == x.shape and bool(torch.isfinite(out).all())
        alone = net(x[1:], c[1:], None if label is None else label[1:])
        torch.testing.assert_close(alone[0], out[1], rtol=1e-5, atol=1e-5)
        other_level = net(x, c + 0.5, label)
        assert all((other_level[i] - out[i]).abs().max() > 1e-4 for i in range(2))  # the noise level conditions every row
        if num_classes:
            swapped = net(x, c, label.flip(0))
            assert all((swapped[i] - out[i]).abs().max() > 1e-4 for i in range(2))  # so does the label


def test_zero_init_output():
    torch.manual_seed(0)
    net = build_unet("tiny", 16, 1, num_classes=4)
    out = net(torch.randn(3, 1, 16, 16), torch.rand(3), torch.tensor([0, 1, 3]))
    assert torch.count_nonzero(out) == 0


def test_gradients_flow_to_every_parameter():
    torch.manual_seed(0)
    net = _randomize_output(build_unet("tiny", 16, 3, num_classes=3, dropout=0.1))
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    label = torch.tensor([0, 1, 2, -1])  # -1: the null class, so every embedding row is used
    net(x, torch.rand(4), label).square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_labels_and_null_class():
    torch.manual_seed(0)
    net = _randomize_output(build_unet("tiny", 8, 3, num_classes=5)).eval()
    x, c = torch.randn(2, 3, 8, 8), torch.rand(2)
    none = net(x, c)
    assert torch.allclose(none, net(x, c, torch.tensor([5, 5])))  # num_classes = null
    assert torch.allclose(none, net(x, c, torch.tensor([-1, -1])))  # -1 = null
    assert not torch.allclose(none, net(x, c, torch.tensor([0, 1])))
    with pytest.raises(UserError):
        net(x, c, torch.tensor([0, 6]))
    with pytest.raises(UserError):
        build_unet("tiny", 8, 3)(x, c, torch.tensor([0, 1]))  # unconditional net


def test_noise_conditioning_matters_for_both_embeddings():
    for embedding in ("positional", "fourier"):
        torch.manual_seed(0)
        net = _randomize_output(build_unet("tiny", 8, 1, embedding=embedding)).eval()
        x = torch.randn(1, 1, 8, 8)
        a = net(x, torch.tensor([0.1]))
        b = net(x, torch.tensor([2.0]))
        assert not torch.allclose(a, b)


def test_ddpmpp_cifar10_param_count_on_meta():
    with torch.device("meta"):
        net = build_unet("ddpmpp-cifar10", 32, 3)
    n = sum(p.numel() for p in net.parameters())
    assert abs(n - 56e6) / 56e6 < 0.10, n
    assert next(net.parameters()).is_meta


def test_channels_last_matches():
    torch.manual_seed(0)
    net = _randomize_output(build_unet("tiny", 16, 3, num_classes=2)).eval()
    x, c, y = torch.randn(2, 3, 16, 16), torch.rand(2), torch.tensor([0, 1])
    ref = net(x, c, y)
    net = net.to(memory_format=torch.channels_last)
    out = net(x.to(memory_format=torch.channels_last), c, y)
    assert torch.allclose(ref, out, atol=1e-5)


def test_bf16_autocast_runs():
    torch.manual_seed(0)
    net = _randomize_output(build_unet("tiny", 8, 3)).eval()
    x, c = torch.randn(2, 3, 8, 8), torch.rand(2)
    ref = net(x, c)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x, c)
    assert out.shape == x.shape and torch.isfinite(out.float()).all()
    assert (out.float() - ref).abs().mean() < 0.1 * ref.abs().mean() + 1e-3


def test_build_unet_errors():
    with pytest.raises(UserError, match="ddpmpp-cifar10"):
        build_unet("resnet", 32, 3)
    with pytest.raises(UserError, match="unknown UNet option"):
        build_unet("tiny", 16, 3, widht=3)
    with pytest.raises(UserError, match="divisible"):
        build_unet("ddpmpp-cifar10", 30, 3)
    with pytest.raises(UserError):
        build_unet("tiny", 16, 3, embedding="learned")
    net = build_unet("tiny", 16, 3)
    with pytest.raises(UserError):
        net(torch.randn(2, 3, 8, 8), torch.rand(2))
    with pytest.raises(UserError):
        net(torch.randn(2, 3, 16, 16), torch.rand(3))


def test_presets_are_unet_keywords():
    for name, cfg in UNET_PRESETS.items():
        with torch.device("meta"):
            UNet(img_resolution=64, in_channels=3, out_channels=3, **cfg)


@pytest.mark.parametrize("channels", [4, 16, 128])
def test_positional_embedding_is_ddpmpp_endpoint_form(channels):
    # DDPM++ (score_sde get_timestep_embedding; EDM SongUNet endpoint=True): w_i = 10000^(-i/(n/2 - 1)), [sin, cos]
    from physgen.nets.unet import PositionalEmbedding

    half = channels // 2
    c = torch.tensor([0.0, 0.37, -1.5, 20.0], dtype=torch.float64)
    w = torch.tensor([10000.0 ** (-i / (half - 1)) for i in range(half)], dtype=torch.float64)
    arg = c[:, None] * w[None, :]
    emb = PositionalEmbedding(channels)
    assert emb.freqs[0] == 1.0 and emb.freqs[-1] == pytest.approx(1e-4, rel=1e-6)  # both ends reached
    torch.testing.assert_close(emb(c).double(), torch.cat([arg.sin(), arg.cos()], 1), rtol=1e-5, atol=1e-5)
    transformer = PositionalEmbedding(channels, endpoint=False)  # Vaswani: i / (n/2), stops short of 1e-4
    assert transformer.freqs[-1] == pytest.approx(10000.0 ** (-(half - 1) / half), rel=1e-6)


@pytest.mark.parametrize("channels_per_head", [0, 8])
@pytest.mark.parametrize("channels_last", [False, True])
def test_attention_equals_the_softmax_formula(channels_per_head, channels_last):
    from physgen.nets.unet import ResBlock

    torch.manual_seed(0)
    blk = ResBlock(32, 32, 16, attention=True, channels_per_head=channels_per_head).double()
    qkv = torch.randn(2, 96, 4, 6, dtype=torch.float64)
    if channels_last:
        qkv = qkv.contiguous(memory_format=torch.channels_last)
    n, c = blk.num_heads, 32 // blk.num_heads
    q, k, v = qkv.reshape(2, 3, n, c, 24).unbind(1)  # channel index = (which, head, channel); [B, n, c, HW]
    a = torch.softmax(torch.einsum("bncq,bnck->bnqk", q, k) / c**0.5, dim=-1)
    ref = torch.einsum("bnqk,bnck->bncq", a, v).reshape(2, 32, 4, 6)
    torch.testing.assert_close(blk._attention(qkv), ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("channels_last", [False, True])
def test_attention_hands_the_fused_kernel_stride_one_channels(channels_last):
    # with only the flash backend allowed, SDPA refuses inputs whose last dim is strided
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from physgen.nets.unet import ResBlock

    blk = ResBlock(32, 32, 16, attention=True, channels_per_head=8)
    qkv = torch.randn(2, 96, 8, 8)
    if channels_last:
        qkv = qkv.contiguous(memory_format=torch.channels_last)
    expected = blk._attention(qkv)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        torch.testing.assert_close(blk._attention(qkv), expected)
