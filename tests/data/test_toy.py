"""The registered toy sets: shape, reproducibility, scale, labels, device/dtype."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from physgen.data import GaussianMixture, dataset_names, load_toy
from physgen.errors import UserError

FFJORD = ["moons", "8gaussians", "25gaussians", "swissroll", "checkerboard", "pinwheel", "circles", "2spirals"]
LABELLED = {"moons": 2, "8gaussians": 8, "25gaussians": 25, "pinwheel": 5, "circles": 2, "2spirals": 2,
            "two_mode": 2, "ncsn_mog": 2}
ALL = FFJORD + ["two_mode", "ncsn_mog"]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_registry_lists_every_set():
    assert set(ALL) <= set(dataset_names())
    assert dataset_names() == sorted(dataset_names())


def test_unknown_name_lists_valid_names():
    with pytest.raises(UserError, match=r"unknown dataset 'nope'; valid: .*8gaussians.*moons"):
        load_toy("nope")


@pytest.mark.parametrize("name", ALL)
def test_shape_dtype_finite_and_reproducible(name):
    ds = load_toy(name)
    assert ds.name == name and ds.dim == 2
    x = ds.sample(500, gen(0))
    assert x.shape == (500, 2) and x.dtype == torch.float32 and x.device.type == "cpu"
    assert torch.isfinite(x).all()
    assert torch.equal(x, ds.sample(500, gen(0)))
    assert not torch.equal(x, ds.sample(500, gen(1)))


@pytest.mark.parametrize("name", FFJORD)
def test_roughly_centred_and_unit_scaled(name):
    x = load_toy(name).sample(20000, gen(0)).double()
    assert x.mean(0).abs().max() < 0.6, x.mean(0)
    std = x.std(0)
    assert (std > 0.3).all() and (std < 3.0).all(), std


@settings(max_examples=20, deadline=None)
@given(name=st.sampled_from(ALL), n=st.integers(0, 40))
def test_any_batch_size(name, n):
    x = load_toy(name).sample(n, gen(3))
    assert x.shape == (n, 2)


@pytest.mark.parametrize("bad", [-1, 2.5, "10", True])
def test_bad_count_is_user_error(bad):
    with pytest.raises(UserError, match="number of samples"):
        load_toy("moons").sample(bad, gen(0))


@pytest.mark.parametrize("name", sorted(LABELLED))
def test_labels_in_range_balanced_and_consistent(name):
    ds = load_toy(name)
    k = LABELLED[name]
    assert ds.num_classes == k
    n = 20000
    x, y = ds.sample_labelled(n, gen(0))
    assert y.dtype == torch.long and y.shape == (n,)
    assert int(y.min()) >= 0 and int(y.max()) < k
    # same generator state -> same points as the unlabelled draw
    assert torch.equal(x, ds.sample(n, gen(0)))
    counts = torch.bincount(y, minlength=k).double()
    probs = ds.mixture.weights if ds.mixture is not None else torch.full((k,), 1.0 / k, dtype=torch.float64)
    expected = n * probs
    sd = torch.sqrt(n * probs * (1 - probs))
    assert ((counts - expected).abs() <= 6 * sd).all(), (counts, expected)


@pytest.mark.parametrize("name", ["swissroll", "checkerboard"])
def test_unlabelled_sets_refuse_labels(name):
    ds = load_toy(name)
    assert ds.num_classes is None
    with pytest.raises(UserError, match=f"{name}.*no class labels"):
        ds.sample_labelled(10, gen(0))


@pytest.mark.parametrize("name,k", [("8gaussians", 8), ("25gaussians", 25)])
def test_gaussian_sets_expose_their_mixture(name, k):
    ds = load_toy(name)
    mix = ds.mixture
    assert isinstance(mix, GaussianMixture) and mix.num_components == k and mix.dim == 2
    assert torch.allclose(mix.weights, torch.full((k,), 1.0 / k, dtype=torch.float64))
    x, y = ds.sample_labelled(20000, gen(0), dtype=torch.float64)
    # each class clusters at its component mean, with the component's spread
    for j in range(k):
        pts = x[y == j]
        assert (pts.mean(0) - mix.means[j]).abs().max() < 6 * mix.stds[j] / math.sqrt(len(pts)) + 1e-12
        assert abs(float(pts.std(0).mean()) / float(mix.stds[j]) - 1) < 0.15
    assert float(mix.log_prob(x).mean()) > float(mix.log_prob(x + 1.0).mean())


def test_eight_gaussians_label_is_angle_index():
    mix = load_toy("8gaussians").mixture
    angles = torch.atan2(mix.means[:, 1], mix.means[:, 0]) % (2 * math.pi)
    assert torch.allclose(angles, torch.arange(8, dtype=torch.float64) * math.pi / 4, atol=1e-3)
    assert torch.allclose(mix.means.norm(dim=1), torch.full((8,), 4 / 1.414, dtype=torch.float64))


def test_non_mixture_sets_have_no_mixture():
    for name in ["moons", "swissroll", "checkerboard", "pinwheel", "circles", "2spirals"]:
        assert load_toy(name).mixture is None


def test_pinwheel_arms_are_rotations_of_each_other():
    x, y = load_toy("pinwheel").sample_labelled(20000, gen(0), dtype=torch.float64)
    radius = [float(x[y == c].norm(dim=1).mean()) for c in range(5)]
    assert max(radius) - min(radius) < 0.05
    centre_angle = [float(torch.atan2(x[y == c, 1].mean(), x[y == c, 0].mean())) for c in range(5)]
    diffs = [(centre_angle[(c + 1) % 5] - centre_angle[c]) % (2 * math.pi) for c in range(5)]
    # consecutive arms sit 2 pi / 5 apart (FFJORD's f @ R turns them clockwise)
    assert all(abs(d - 8 * math.pi / 5) < 0.05 for d in diffs), diffs


def test_checkerboard_lies_on_dark_squares():
    x = load_toy("checkerboard").sample(5000, gen(0), dtype=torch.float64)
    assert x.abs().max() <= 4
    # board of side-2 squares: (floor(x/2) + floor(y/2)) is even on the occupied squares
    parity = (torch.floor(x[:, 0] / 2) + torch.floor(x[:, 1] / 2)) % 2
    assert (parity == 0).all() or (parity == 1).all()


def test_circles_radii():
    x, y = load_toy("circles").sample_labelled(5000, gen(0), dtype=torch.float64)
    r = x.norm(dim=1)
    assert abs(float(r[y == 0].mean()) - 3.0) < 0.05 and abs(float(r[y == 1].mean()) - 1.5) < 0.05


@pytest.mark.parametrize("name", ALL)
def test_dtype_and_device_do_not_change_the_draw(name):
    ds = load_toy(name)
    x32 = ds.sample(300, gen(5))
    x64 = ds.sample(300, gen(5), device="cpu", dtype=torch.float64)
    assert x64.dtype == torch.float64 and x64.device.type == "cpu"
    assert torch.equal(x64.float(), x32)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", ALL)
def test_cuda_output_and_cuda_generator(name):
    ds = load_toy(name)
    x = ds.sample(100, gen(0), device="cuda")
    assert x.device.type == "cuda" and torch.equal(x.cpu(), ds.sample(100, gen(0)))
    g = torch.Generator(device="cuda").manual_seed(0)
    xc = ds.sample(100, g)
    assert xc.device.type == "cuda" and torch.isfinite(xc).all()
