"""Image metrics (physgen.images.metrics) and the Inception-v3 port (physgen.nets.inception)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from physgen.errors import UserError
from physgen.images.metrics import (
    compute_fid,
    extract_features,
    feature_statistics,
    fid_from_features,
    frechet_distance,
    inception_score,
    kid,
    load_statistics,
    reference_statistics,
    save_statistics,
    ssim,
)
from physgen.nets.inception import InceptionV3, load_inception


# ----------------------------------------------------------------- Fréchet distance


def test_frechet_distance_diagonal_closed_form():
    rng = np.random.default_rng(0)
    d = 12
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_rotated_covariances():
    # Same spectrum in a common rotated basis: the closed form still holds.
    rng = np.random.default_rng(1)
    d = 8
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    s1, s2 = rng.uniform(0.5, 2.0, d), rng.uniform(0.5, 2.0, d)
    got = frechet_distance(np.zeros(d), q @ np.diag(s1) @ q.T, np.zeros(d), q @ np.diag(s2) @ q.T)
    assert got == pytest.approx(np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2), rel=1e-8)


def test_frechet_distance_singular_covariance_uses_offset():
    mu1, mu2 = np.array([0.0, 0.0, 1.0]), np.zeros(3)
    sigma = np.diag([1.0, 0.0, 0.0])
    with pytest.warns(UserWarning, match="singular"):
        value = frechet_distance(mu1, sigma, mu2, sigma)
    assert value == pytest.approx(1.0, abs=1e-4)


def test_frechet_distance_accepts_tensors_and_checks_shapes():
    mu, sigma = torch.zeros(3), torch.eye(3)
    assert frechet_distance(mu, sigma, mu + 1, sigma) == pytest.approx(3.0)
    with pytest.raises(UserError):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_fid_of_feature_set_with_itself_is_zero():
    feats = np.random.default_rng(2).normal(size=(400, 32))
    assert abs(fid_from_features(feats, feats)) < 1e-6
    assert fid_from_features(feats, feats + 0.5) == pytest.approx(32 * 0.25, rel=1e-6)


# ----------------------------------------------------------------- KID


def test_kid_near_zero_for_same_distribution_and_grows_with_shift():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(600, 16))
    b = rng.normal(size=(600, 16))
    kw = dict(num_subsets=20, subset_size=200, seed=0)
    same_set, _ = kid(a, a, **kw)
    same_law, _ = kid(a, b, **kw)
    shifts = [kid(a, b + s, **kw)[0] for s in (0.25, 0.5, 1.0)]
    # A set against itself: subsets share ~m^2/N points, a bias of order -2 k(x,x) / N.
    assert abs(same_set) < 0.15 * shifts[0]
    assert abs(same_law) < 0.05 * shifts[0]
    assert shifts[0] < shifts[1] < shifts[2]


def test_kid_is_reproducible_and_validates():
    a = np.random.default_rng(4).normal(size=(50, 4))
    assert kid(a, a + 1, num_subsets=5, seed=7) == kid(a, a + 1, num_subsets=5, seed=7)
    with pytest.raises(UserError):
        kid(a, a[:, :3])
    with pytest.raises(UserError):
        kid(a[:1], a)


# ----------------------------------------------------------------- IS


def test_inception_score_uniform_is_one():
    mean, std = inception_score(np.zeros((100, 10)), splits=10)
    assert mean == pytest.approx(1.0) and std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_confident_distinct_classes_is_class_count():
    k = 7
    logits = torch.eye(k).repeat(20, 1) * 100.0  # every split holds each class equally
    mean, _ = inception_score(logits, splits=4)
    assert mean == pytest.approx(k, rel=1e-6)
    with pytest.raises(UserError):
        inception_score(logits, splits=0)


# ----------------------------------------------------------------- SSIM


def test_ssim_identity_and_noise():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 32, 32, generator=gen) * 2 - 1
    x = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1)  # some structure
    assert torch.allclose(ssim(x, x), torch.ones(4), atol=1e-5)
    small = ssim(x, x + 0.05 * torch.randn(x.shape, generator=gen))
    large = ssim(x, x + 0.5 * torch.randn(x.shape, generator=gen))
    assert small.shape == (4,)
    assert (large < small).all() and (small < 1).all()
    # tiny images use a smaller window rather than failing
    d = torch.rand(2, 1, 8, 8, generator=gen)
    assert torch.allclose(ssim(d, d), torch.ones(2), atol=1e-5)


# ----------------------------------------------------------------- features and caches


class _MeanPool(torch.nn.Module):
    """A stand-in feature network: per-channel 4x4 average pool, flattened."""

    def forward(self, x):
        return torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)


def test_extract_features_batches_and_iterables():
    x = torch.rand(10, 3, 8, 8) * 2 - 1
    net = _MeanPool()
    full = extract_features(x, net, batch_size=3)
    assert full.shape == (10, 48) and full.dtype == np.float64
    pieces = extract_features(((x[i : i + 4], None) for i in range(0, 10, 4)), net)
    np.testing.assert_allclose(full, pieces)
    raw = extract_features(x, net, quantize=False)
    assert np.abs(full - raw).max() <= 1 / 127.5


def test_fid_with_any_feature_net_and_stats_cache(tmp_path):
    gen = torch.Generator().manual_seed(0)
    ref = torch.rand(64, 3, 8, 8, generator=gen) * 2 - 1
    net = _MeanPool()
    cache = tmp_path / "ref_stats.npz"
    mu, sigma = reference_statistics(ref, net, cache)
    assert cache.is_file()
    mu2, sigma2 = load_statistics(cache)
    np.testing.assert_array_equal(mu, mu2)
    np.testing.assert_array_equal(sigma, sigma2)
    assert abs(compute_fid(ref, cache, net)) < 1e-6
    assert abs(compute_fid(ref, (mu, sigma), net)) < 1e-6
    shifted = (ref + 0.3).clamp(-1, 1)
    assert compute_fid(shifted, ref, net) > 0.1
    # the cache is read, not recomputed, the second time
    save_statistics(cache, mu + 1, sigma)
    assert compute_fid(ref, ref, net, cache_path=cache) == pytest.approx(48.0, rel=1e-6)
    with pytest.raises(UserError, match="does not exist"):
        load_statistics(tmp_path / "missing.npz")
    with pytest.raises(UserError, match="features"):
        compute_fid(ref, (np.zeros(3), np.eye(3)), net)


def test_feature_statistics_match_numpy():
    f = np.random.default_rng(5).normal(size=(30, 5))
    mu, sigma = feature_statistics(torch.from_numpy(f))
    np.testing.assert_allclose(mu, f.mean(0))
    np.testing.assert_allclose(sigma, np.cov(f.T))


# ----------------------------------------------------------------- Inception-v3


@pytest.mark.parametrize("flavour", ["fid", "torchvision"])
def test_inception_features_shape(flavour):
    torch.manual_seed(0)
    net = InceptionV3(flavour)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        feats, logits = net.features_and_logits(x)
        assert net(x[:, :1]).shape == (2, 2048)  # grey images are repeated to RGB
    assert feats.shape == (2, 2048) and torch.isfinite(feats).all()
    assert logits.shape == (2, 1008 if flavour == "fid" else 1000)
    assert extract_features(x, net).shape == (2, 2048)


def test_inception_state_dict_round_trip_and_key_errors(tmp_path):
    torch.manual_seed(0)
    fid_path, tv_path = tmp_path / "fid.pth", tmp_path / "tv.pth"
    fid_net = InceptionV3("fid")
    torch.save(fid_net.state_dict(), fid_path)
    torch.save(InceptionV3("torchvision").state_dict(), tv_path)

    loaded = load_inception(fid_path)  # flavour detected from the 1008-way fc
    assert loaded.flavour == "fid" and loaded.AuxLogits is None
    for k, v in fid_net.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    fresh = InceptionV3("fid")
    fresh.load_state_dict(torch.load(fid_path, weights_only=True), strict=True)

    tv = load_inception(tv_path)
    assert tv.flavour == "torchvision" and tv.AuxLogits is not None

    bad = {k: v for k, v in fid_net.state_dict().items() if not k.startswith("Mixed_7c")}
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(UserError, match="bad.pth"):
        load_inception(tmp_path / "bad.pth")
    with pytest.raises(UserError, match="missing.pth"):
        load_inception(tmp_path / "missing.pth")
    with pytest.raises(UserError, match="flavour"):
        load_inception(fid_path, flavour="tf")


def test_extract_features_accepts_image_dataset():
    from physgen.images.data import ImageDataset

    x = torch.rand(6, 1, 8, 8) * 2 - 1
    ds = ImageDataset(x, None, 0, "toy")
    np.testing.assert_allclose(extract_features(ds, _MeanPool()), extract_features(x, _MeanPool()))
