"""``--arch`` networks (physgen.nets.networks): the MLP preset builds on the flattened tensor and is
rebuilt from the spec a checkpoint records, its weight floor is a lower bound (so a header that
claims a huge network is refused before allocation), and bad names or sizes are one UserError."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st

from physgen.errors import UserError
from physgen.nets.mlp import MLP
from physgen.nets.networks import ARCHS, MLP_PRESETS, build_image_network, check_overrides, image_network_weight_floor
from physgen.nets.unet import UNet
from physgen.runtime import initial_weights


def test_the_mlp_maps_a_latent_grid_to_its_own_shape_and_a_unet_preset_stays_a_unet():
    net = build_image_network("mlp", 4, 4, num_classes=10)
    assert isinstance(net, MLP) and net.dim == 64 and net.inp.out_features == MLP_PRESETS["mlp"]["hidden"]
    for p in net.out.parameters():  # zero-initialised output: give it weights so the shape check means something
        torch.nn.init.normal_(p, generator=torch.Generator().manual_seed(0))
    x = torch.randn(3, 4, 4, 4)
    y = net(x, torch.zeros(3), torch.tensor([0, 9, 10]))
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert isinstance(build_image_network("tiny", 8, 1), UNet) and set(ARCHS) >= {"tiny", "mlp", "ddpmpp-cifar10"}


@settings(deadline=None, max_examples=20)
@given(st.integers(1, 6), st.integers(1, 3), st.integers(1, 64), st.integers(1, 4), st.integers(0, 12), st.sampled_from([2, 8, 64]))
def test_the_weight_floor_is_a_lower_bound_and_the_spec_rebuilds_the_same_network(res, channels, hidden, depth, classes, embed):
    spec = dict(hidden=hidden, depth=depth, embed_dim=embed)
    with initial_weights(0):
        a = build_image_network("mlp", res, channels, classes, **spec)
    with initial_weights(0):
        b = build_image_network("mlp", res, channels, classes, **spec)
    n = sum(p.numel() for p in a.parameters())
    assert image_network_weight_floor("mlp", res, channels, classes, **spec) <= n
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("arch, overrides, needle", [
    ("nope", {}, "'nope'"),
    ("mlp", {"dropout": 0.1}, "'dropout'"),
    ("mlp", {"hidden": 0}, "hidden"),
    ("mlp", {"depth": -2}, "depth"),
    ("mlp", {"embed_dim": 7}, "embed_dim"),
    ("mlp", {"hidden": 10**9}, "hidden"),
    ("mlp", {"c_noise_unit": 0}, "c_noise_unit"),
    ("tiny", {"hidden": 64}, "'hidden'"),
])
def test_bad_names_and_sizes_are_one_user_error(arch, overrides, needle):
    with pytest.raises(UserError, match=needle):
        check_overrides(arch, overrides)
