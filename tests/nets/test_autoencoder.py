"""The KL autoencoder (physgen.nets.autoencoder): shapes, the posterior's KL and moments, the loss."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from physgen.errors import UserError
from physgen.nets.autoencoder import (AE_PRESETS, Autoencoder, AutoencoderSpec, DiagonalGaussian, PatchDiscriminator,
                                      adversarial_loss, build_autoencoder, discriminator_loss, reconstruction_loss, spec_from_dict)


def one_line(exc_info) -> str:
    text = str(exc_info.value)
    assert len(text.splitlines()) == 1, text
    return text


@settings(max_examples=12)
@given(levels=st.integers(1, 3), latent=st.integers(1, 5), channels=st.sampled_from([1, 3]), side=st.integers(1, 3),
       n=st.integers(1, 3), attention=st.booleans())
def test_encode_decode_shapes_follow_f_and_latent_channels(levels, latent, channels, side, n, attention):
    f = 2 ** (levels - 1)
    spec = AutoencoderSpec(in_channels=channels, resolution=f * side * 2, latent_channels=latent, width=8,
                           channel_mult=(1,) * levels, attention=attention)
    ae = Autoencoder(spec)
    x = torch.rand(n, channels, spec.resolution, spec.resolution) * 2 - 1
    q = ae.encode(x)
    assert spec.factor == f and spec.latent_shape == (latent, 2 * side, 2 * side)
    assert q.mean.shape == q.logvar.shape == (n, *spec.latent_shape)
    assert ae.decode(q.sample()).shape == x.shape
    assert ae(x)[0].shape == x.shape


@pytest.mark.parametrize("preset", sorted(AE_PRESETS))
def test_presets_have_factor_4_and_build(preset):
    spec = AE_PRESETS[preset]
    assert spec.factor == 4
    with torch.device("meta"):
        ae = build_autoencoder(preset)
    assert ae.spec.latent_shape == (spec.latent_channels, spec.resolution // 4, spec.resolution // 4)


@settings(max_examples=25)
@given(seed=st.integers(0, 2**31), scale=st.floats(0.1, 3.0))
def test_kl_matches_the_closed_form_of_torch_distributions(seed, scale):
    g = torch.Generator().manual_seed(seed)
    mean, logvar = scale * torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64), scale * torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64)
    q = DiagonalGaussian(mean, logvar)
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mean, (0.5 * logvar).exp()),
                                            torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean)))
    torch.testing.assert_close(q.kl(), ref.flatten(1).sum(1))
    assert (q.kl() >= 0).all()


def test_kl_is_zero_exactly_at_the_prior():
    q = DiagonalGaussian(torch.zeros(3, 2, 2, 2), torch.zeros(3, 2, 2, 2))
    assert torch.equal(q.kl(), torch.zeros(3))


def test_kl_matches_a_monte_carlo_estimate():
    """KL = E_q[log q(z) - log N(z; 0, I)], estimated from 200k reparameterised draws within 5 standard errors."""
    g = torch.Generator().manual_seed(1)
    mean, logvar = torch.randn(1, 3, 2, 2, generator=g, dtype=torch.float64), 0.5 * torch.randn(1, 3, 2, 2, generator=g, dtype=torch.float64)
    q = DiagonalGaussian(mean.expand(200_000, -1, -1, -1), logvar.expand(200_000, -1, -1, -1))
    z = q.sample(torch.Generator().manual_seed(2))
    log_p = -0.5 * (z.square() + math.log(2 * math.pi)).flatten(1).sum(1)
    terms = q.log_prob(z) - log_p
    est, se = float(terms.mean()), float(terms.std() / math.sqrt(len(terms)))
    assert abs(est - float(q.kl()[0])) < 5 * se, (est, float(q.kl()[0]), se)


def test_sample_has_the_posterior_moments_and_mode_is_the_mean():
    mean, logvar = torch.tensor([[1.5, -2.0]]).expand(100_000, 2), torch.tensor([[0.0, math.log(0.25)]]).expand(100_000, 2)
    q = DiagonalGaussian(mean, logvar)
    z = q.sample(torch.Generator().manual_seed(0))
    torch.testing.assert_close(z.mean(0), torch.tensor([1.5, -2.0]), atol=0.02, rtol=0)
    torch.testing.assert_close(z.var(0), torch.tensor([1.0, 0.25]), atol=0.02, rtol=0)
    assert torch.equal(q.mode(), mean)


@pytest.mark.parametrize("kind", ["l1", "l2"])
def test_reconstruction_loss_is_summed_per_image(kind):
    x, x_hat = torch.rand(5, 1, 8, 8), torch.rand(5, 1, 8, 8)
    brute = [sum(abs(float(a - b)) if kind == "l1" else float(a - b) ** 2 for a, b in zip(x[i].flatten(), x_hat[i].flatten())) for i in range(5)]
    torch.testing.assert_close(reconstruction_loss(x, x_hat, kind), torch.tensor(brute), rtol=1e-5, atol=1e-5)


def test_hinge_losses_of_the_patch_discriminator_match_their_brute_force():
    """L_d = mean relu(1 - d(x)) + mean relu(1 + d(x_hat)); the generator's term per image is -mean d(x_hat)."""
    torch.manual_seed(0)
    disc = PatchDiscriminator(1, width=8)
    x, x_hat = torch.rand(3, 1, 16, 16) * 2 - 1, torch.rand(3, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        real, fake = disc(x), disc(x_hat)
        assert real.shape == (3, 1, 4, 4)  # one logit per patch: two stride-2 layers
        want = sum(max(0.0, 1 - float(v)) for v in real.flatten()) / real.numel() + sum(max(0.0, 1 + float(v)) for v in fake.flatten()) / fake.numel()
        assert float(discriminator_loss(disc, x, x_hat)) == pytest.approx(want, rel=1e-5)
        torch.testing.assert_close(adversarial_loss(disc, x_hat), torch.stack([-fake[i].mean() for i in range(3)]))


@pytest.mark.parametrize("bad, words", [
    ({"width": 12}, "multiple of 8"), ({"width": 0}, "width"), ({"resolution": 18}, "divisible"),
    ({"channel_mult": []}, "channel_mult"), ({"channel_mult": "12"}, "channel_mult"), ({"latent_channels": 1.5}, "latent_channels"),
    ({"attention": "yes"}, "attention"), ({"depth": 3}, "unknown field 'depth'"), ({"in_channels": -1}, "in_channels"),
])
def test_bad_specs_are_one_line(bad, words):
    with pytest.raises(UserError) as info:
        spec_from_dict({**AE_PRESETS["digits"].to_dict(), **bad})
    assert words in one_line(info)


def test_unknown_preset_and_wrong_input_shapes_are_one_line():
    with pytest.raises(UserError) as info:
        build_autoencoder("mnist")
    assert "mnist" in one_line(info)
    ae = Autoencoder(AutoencoderSpec(resolution=8, width=8, channel_mult=(1, 1)))
    with pytest.raises(UserError) as info:
        ae.encode(torch.zeros(2, 3, 8, 8))
    assert "[2, 3, 8, 8]" in one_line(info)
    with pytest.raises(UserError) as info:
        ae.decode(torch.zeros(2, 4, 8, 8))
    assert "[N, 4, 4, 4]" in one_line(info)


_JSON = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True) | st.text(max_size=5),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=3), max_leaves=8)


@settings(max_examples=80)
@given(field=st.sampled_from(["in_channels", "resolution", "latent_channels", "width", "channel_mult", "num_res_blocks", "attention"]),
       value=_JSON)
def test_any_header_value_builds_a_checked_spec_or_is_one_line(field, value):
    """A checkpoint header is user input: every JSON value of every field is either a spec
    within the limits or one UserError naming the field."""
    try:
        spec = spec_from_dict({**AE_PRESETS["digits"].to_dict(), field: value})
    except UserError as exc:
        assert len(str(exc).splitlines()) == 1 and field in str(exc), str(exc)
        return
    assert spec.resolution % spec.factor == 0 and spec.width % 8 == 0 and 1 <= spec.in_channels <= 64
