"""load_toy on files: .npy point sets, .npz with labels, .json mixtures, and every error case."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from physgen.data import GaussianMixture, ToyDataset, load_toy
from physgen.errors import UserError


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rows_of(x: torch.Tensor, pts: np.ndarray) -> bool:
    """Every row of x is a row of pts."""
    same = x.double()[:, None, :] == torch.from_numpy(pts).double()[None]
    return bool(same.all(-1).any(1).all())


# ---------------------------------------------------------------------- .npy
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_npy_samples_rows_with_replacement(tmp_path, dtype):
    pts = np.arange(30, dtype=dtype).reshape(10, 3)
    path = tmp_path / "pts.npy"
    np.save(path, pts)
    for spec in (str(path), path):
        ds = load_toy(spec)
        assert isinstance(ds, ToyDataset) and ds.dim == 3 and ds.num_classes is None and ds.mixture is None
        x = ds.sample(200, gen(0))
        assert x.shape == (200, 3) and x.dtype == torch.float32
        assert rows_of(x, pts)
        assert len(torch.unique(x, dim=0)) == 10  # 200 draws with replacement hit every row
        assert torch.equal(x, ds.sample(200, gen(0)))
        assert not torch.equal(x, ds.sample(200, gen(1)))
        assert ds.points.shape == (10, 3)
    with pytest.raises(UserError, match="no class labels"):
        load_toy(str(path)).sample_labelled(5, gen(0))


def test_npy_uniform_over_rows(tmp_path):
    path = tmp_path / "pts.npy"
    np.save(path, np.eye(4))
    x = load_toy(path).sample(40000, gen(0), dtype=torch.float64)
    counts = x.argmax(dim=1).bincount(minlength=4).double()
    assert ((counts - 10000).abs() < 6 * np.sqrt(40000 * 0.25 * 0.75)).all()


@pytest.mark.parametrize("array,match", [
    (np.zeros(5), r"2-D \[n, d\] array, got shape \(5,\) \(ndim 1\)"),
    (np.zeros((2, 3, 4)), r"2-D \[n, d\] array, got shape \(2, 3, 4\) \(ndim 3\)"),
    (np.zeros((0, 2)), r"non-empty"),
    (np.array([[0.0, 1.0], [np.nan, 2.0]]), r"1 non-finite values \(first in row 1\)"),
    (np.array([[0.0, np.inf], [-np.inf, 2.0]]), r"2 non-finite values \(first in row 0\)"),
    (np.array([["a", "b"]]), r"expected a float array, got dtype <U1"),
    (np.array([[True, False]]), r"expected a float array, got dtype bool"),
])
def test_npy_errors_name_the_path_and_the_problem(tmp_path, array, match):
    path = tmp_path / "bad.npy"
    np.save(path, array)
    with pytest.raises(UserError, match=match) as info:
        load_toy(str(path))
    assert str(path) in str(info.value)


def test_npy_missing_corrupt_and_pickled(tmp_path):
    missing = tmp_path / "nope.npy"
    with pytest.raises(UserError, match="does not exist") as info:
        load_toy(str(missing))
    assert str(missing) in str(info.value)
    corrupt = tmp_path / "corrupt.npy"
    corrupt.write_bytes(b"not a numpy file at all")
    with pytest.raises(UserError, match="cannot read") as info:
        load_toy(str(corrupt))
    assert str(corrupt) in str(info.value)
    pickled = tmp_path / "obj.npy"
    np.save(pickled, np.array([[1, "a"]], dtype=object), allow_pickle=True)
    with pytest.raises(UserError, match="cannot read"):
        load_toy(str(pickled))
    folder = tmp_path / "dir.npy"
    folder.mkdir()
    with pytest.raises(UserError, match="is not a file"):
        load_toy(str(folder))


def test_unsupported_path_type(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("1,2\n")
    with pytest.raises(UserError, match=r"unsupported type '.csv'; valid: .npy, .npz, .json"):
        load_toy(path)
    with pytest.raises(UserError, match="unknown dataset 'data.csv'"):
        load_toy("data.csv")


# ---------------------------------------------------------------------- .npz
def test_npz_labels_follow_their_rows(tmp_path):
    x = np.stack([np.arange(12.0), -np.arange(12.0)], 1)
    y = np.arange(12) % 3
    path = tmp_path / "lab.npz"
    np.savez(path, x=x, y=y)
    ds = load_toy(str(path))
    assert ds.num_classes == 3 and ds.dim == 2
    xs, ys = ds.sample_labelled(500, gen(0))
    assert ys.dtype == torch.long
    assert torch.equal(ys, xs[:, 0].long() % 3)  # each label is its row's
    assert torch.equal(xs, ds.sample(500, gen(0)))
    assert torch.equal(ds.labels, torch.from_numpy(y).long())


def test_npz_without_labels_and_with_integral_float_labels(tmp_path):
    p = tmp_path / "x.npz"
    np.savez(p, x=np.random.default_rng(0).normal(size=(20, 2)))
    ds = load_toy(p)
    assert ds.num_classes is None and ds.sample(5, gen(0)).shape == (5, 2)
    p2 = tmp_path / "xf.npz"
    np.savez(p2, x=np.zeros((4, 2)), y=np.array([0.0, 1.0, 1.0, 4.0]))
    assert load_toy(p2).num_classes == 5


@pytest.mark.parametrize("arrays,match", [
    ({"data": np.zeros((3, 2))}, r"missing array 'x' \(found: data\)"),
    ({"x": np.zeros(3)}, r"array 'x': expected a 2-D"),
    ({"x": np.array([[np.nan, 0.0]])}, r"array 'x': contains 1 non-finite"),
    ({"x": np.zeros((3, 2)), "y": np.array([0, 1])}, r"array 'y': expected shape \(3,\)"),
    ({"x": np.zeros((3, 2)), "y": np.zeros((3, 1), dtype=int)}, r"array 'y': expected shape \(3,\)"),
    ({"x": np.zeros((2, 2)), "y": np.array([0, -1])}, r"array 'y': labels must be >= 0, got -1"),
    ({"x": np.zeros((2, 2)), "y": np.array([0.5, 1.0])}, r"array 'y': expected integer labels, got dtype float64"),
])
def test_npz_errors(tmp_path, arrays, match):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(UserError, match=match) as info:
        load_toy(str(path))
    assert str(path) in str(info.value)


def test_npz_corrupt(tmp_path):
    path = tmp_path / "bad.npz"
    path.write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(UserError, match="cannot read"):
        load_toy(path)


# --------------------------------------------------------------------- .json
def test_json_mixture_dataset(tmp_path):
    path = tmp_path / "mix.json"
    path.write_text(json.dumps({"means": [[-3, 0], [3, 0], [0, 3]], "stds": [0.1, 0.2, 0.3], "weights": [1, 1, 2]}))
    ds = load_toy(str(path))
    assert isinstance(ds.mixture, GaussianMixture) and ds.num_classes == 3 and ds.dim == 2
    x, y = ds.sample_labelled(4000, gen(0), dtype=torch.float64)
    assert int(y.min()) >= 0 and int(y.max()) <= 2
    assert ((x - ds.mixture.means[y]).norm(dim=1) < 6 * ds.mixture.stds[y]).all()
    frac = torch.bincount(y, minlength=3).double() / 4000
    assert torch.allclose(frac, torch.tensor([0.25, 0.25, 0.5], dtype=torch.float64), atol=0.04)


def test_json_dataset_errors_name_the_key(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"means": [[0, 0]], "stds": [1, 2]}))
    with pytest.raises(UserError, match="'stds'") as info:
        load_toy(str(path))
    assert str(path) in str(info.value)
    with pytest.raises(UserError, match="does not exist"):
        load_toy(str(tmp_path / "missing.json"))


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 50), d=st.integers(1, 5), draws=st.integers(0, 100), seed=st.integers(0, 2 ** 31))
def test_npy_any_shape(tmp_path_factory, n, d, draws, seed):
    path = Path(tmp_path_factory.mktemp("npy")) / "p.npy"
    pts = np.random.default_rng(seed).normal(size=(n, d))
    np.save(path, pts)
    x = load_toy(path).sample(draws, gen(seed), dtype=torch.float64)
    assert x.shape == (draws, d)
    if draws:
        assert rows_of(x, pts)
