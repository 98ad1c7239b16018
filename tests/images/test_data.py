"""Offline image datasets, sampler and PNG writers (physgen.images.data)."""
from __future__ import annotations

import pickle
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from physgen.errors import UserError
from physgen.images.data import (
    ImageDataset,
    ImageSampler,
    load_image_dataset,
    save_image_grid,
    save_pngs,
    to_uint8,
)


def _write_cifar(folder, n_per_batch=4, seed=0):
    """Tiny CIFAR-10 python batches in the real format (dict of bytes keys, uint8 rows)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=n_per_batch)]
        batches[name] = (data, labels)
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": data}, f, protocol=2)
    with open(folder / "batches.meta", "wb") as f:
        names = [n.encode() for n in "plane car bird cat deer dog frog horse ship truck".split()]
        pickle.dump({b"label_names": names, b"num_vis": 3072}, f, protocol=2)
    return batches


def test_digits_resized_in_range_with_ten_classes():
    ds = load_image_dataset("digits", 16)
    assert isinstance(ds, ImageDataset)
    assert ds.images.shape == (1797, 1, 16, 16) and ds.images.dtype == torch.float32
    assert ds.images.min() >= -1 and ds.images.max() <= 1
    assert ds.images.min() == -1 and ds.images.max() > 0.9
    assert ds.num_classes == 10 and ds.labels.dtype == torch.long
    assert set(ds.labels.tolist()) == set(range(10))
    assert load_image_dataset("digits").images.shape[-1] == 8


def test_fake_cifar10_loads_from_folder_and_tarball(tmp_path):
    batches = _write_cifar(tmp_path / "cifar")
    ds = load_image_dataset(f"cifar10:{tmp_path / 'cifar'}")
    assert ds.images.shape == (20, 3, 32, 32) and ds.num_classes == 10
    assert ds.class_names[0] == "plane"
    data, labels = batches["data_batch_1"]
    expected = torch.from_numpy(data[0].reshape(3, 32, 32).astype(np.float32)) / 127.5 - 1
    assert torch.allclose(ds.images[0], expected)
    assert ds.labels[:4].tolist() == labels
    test = load_image_dataset(f"cifar10:{tmp_path / 'cifar'}", 16, split="test")
    assert test.images.shape == (4, 3, 16, 16) and test.name == "cifar10-test"

    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "cifar", arcname="cifar-10-batches-py")
    from_tar = load_image_dataset(f"cifar10:{archive}")
    assert torch.equal(from_tar.images, ds.images)
    # the parent of the extracted folder works too
    (tmp_path / "parent").mkdir()
    (tmp_path / "cifar").rename(tmp_path / "parent" / "cifar-10-batches-py")
    assert len(load_image_dataset(f"cifar10:{tmp_path / 'parent'}")) == 20


def test_cifar10_errors_say_what_to_put_there(tmp_path):
    with pytest.raises(UserError, match="data_batch_1..5") as err:
        load_image_dataset(f"cifar10:{tmp_path / 'nowhere'}")
    assert str(tmp_path / "nowhere") in str(err.value)
    _write_cifar(tmp_path / "partial")
    (tmp_path / "partial" / "data_batch_3").unlink()
    with pytest.raises(UserError, match="lacks data_batch_3"):
        load_image_dataset(f"cifar10:{tmp_path / 'partial'}")
    # a pickle that would run code is refused
    evil = tmp_path / "evil"
    _write_cifar(evil)
    with open(evil / "data_batch_1", "wb") as f:
        pickle.dump({b"data": print}, f)
    with pytest.raises(UserError, match="cannot read"):
        load_image_dataset(f"cifar10:{evil}")


def test_folder_of_pngs_with_class_subfolders(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(
                tmp_path / "imgs" / cls / f"{i}.png"
            )
    ds = load_image_dataset(f"folder:{tmp_path / 'imgs'}")
    assert ds.images.shape == (6, 3, 12, 12)
    assert ds.class_names == ("cats", "dogs") and ds.num_classes == 2
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert ds.images.min() >= -1 and ds.images.max() <= 1
    assert load_image_dataset(f"folder:{tmp_path / 'imgs'}", 8).images.shape == (6, 3, 8, 8)


def test_folder_unlabelled_grey_and_errors(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.fromarray(np.zeros((6, 6), np.uint8)).save(flat / "a.png")
    Image.fromarray(np.full((6, 6), 255, np.uint8)).save(flat / "b.jpg")
    ds = load_image_dataset(f"folder:{flat}")
    assert ds.images.shape == (2, 1, 6, 6) and ds.labels is None and ds.num_classes == 0
    assert ds.images[0].max() == -1 and ds.images[1].min() > 0.9
    Image.fromarray(np.zeros((7, 5), np.uint8)).save(flat / "c.png")
    with pytest.raises(UserError, match="resolution"):
        load_image_dataset(f"folder:{flat}")
    assert load_image_dataset(f"folder:{flat}", 4).images.shape == (3, 1, 4, 4)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no .png"):
        load_image_dataset(f"folder:{tmp_path / 'empty'}")
    with pytest.raises(UserError, match="missing"):
        load_image_dataset(f"folder:{tmp_path / 'missing'}")


@pytest.mark.parametrize("layout", ["nhwc", "nchw", "float"])
def test_npz_loads(tmp_path, layout):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (5, 3, 8, 8), dtype=np.uint8)
    expected = torch.from_numpy(x.astype(np.float32)) / 127.5 - 1
    stored = {"nhwc": x.transpose(0, 2, 3, 1), "nchw": x, "float": expected.numpy()}[layout]
    np.savez(tmp_path / "d.npz", x=stored, y=np.array([0, 1, 2, 1, 0]))
    ds = load_image_dataset(f"npz:{tmp_path / 'd.npz'}")
    assert ds.images.shape == (5, 3, 8, 8)
    assert torch.allclose(ds.images, expected, atol=1e-6)
    assert ds.labels.tolist() == [0, 1, 2, 1, 0] and ds.num_classes == 3


def test_npz_errors(tmp_path):
    with pytest.raises(UserError, match="no-such.npz"):
        load_image_dataset(f"npz:{tmp_path / 'no-such.npz'}")
    np.savez(tmp_path / "bad.npz", x=np.full((2, 1, 4, 4), 3.0, np.float32))
    with pytest.raises(UserError, match=r"\[-1, 1\]"):
        load_image_dataset(f"npz:{tmp_path / 'bad.npz'}")
    np.savez(tmp_path / "nox.npz", images=np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(UserError, match="'x'"):
        load_image_dataset(f"npz:{tmp_path / 'nox.npz'}")


def test_unknown_spec_lists_valid_forms():
    for spec in ("mnist", "cifar10", "folder:", "imagenet:/data"):
        with pytest.raises(UserError, match="cifar10:PATH"):
            load_image_dataset(spec)


def test_sampler_reproducible_epochs_flips_and_ranks():
    images = torch.arange(10, dtype=torch.float32).view(10, 1, 1, 1).expand(10, 1, 2, 2).clone()
    images[:, :, :, 1] += 100  # right column marks a flip
    ds = ImageDataset(images, torch.arange(10), 10, "toy")
    a = ImageSampler(ds, 4, seed=3)
    b = ImageSampler(ds, 4, generator=torch.Generator().manual_seed(3))
    seen = []
    for _ in range(5):  # 20 draws = two epochs
        (xa, ya), (xb, yb) = a.next(), b.next()
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert torch.equal(xa[:, 0, 0, 0], ya.float())  # labels follow their images
        seen += ya.tolist()
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:]) == list(range(10))
    assert a.epoch == 1

    flipper = ImageSampler(ds, 10, seed=0, flip=True)
    x, y = flipper.next()
    flipped = x[:, 0, 0, 0] >= 100
    assert 0 < int(flipped.sum()) < 10
    assert torch.equal(x[flipped, 0, 0, 1], y[flipped].float())

    # two ranks with one seed split one global batch between them
    r0 = ImageSampler(ds, 3, seed=5, rank=0, world_size=2)
    r1 = ImageSampler(ds, 3, seed=5, rank=1, world_size=2)
    one = ImageSampler(ds, 6, seed=5)
    for _ in range(4):
        y0, y1, yy = r0.next()[1], r1.next()[1], one.next()[1]
        assert torch.equal(torch.cat([y0, y1]), yy)

    # resume
    s = ImageSampler(ds, 4, seed=9, flip=True)
    s.next()
    state = s.state_dict()
    after = [s.next() for _ in range(3)]
    t = ImageSampler(ds, 4, seed=0, flip=True)
    t.load_state_dict(state)
    for (x1, y1), (x2, y2) in zip(after, (t.next() for _ in range(3))):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)

    unlabelled = ImageSampler(ImageDataset(images, None, 0, "u"), 2)
    assert unlabelled.next()[1] is None
    with pytest.raises(UserError):
        ImageSampler(ds, 0)


def test_png_writers_round_trip(tmp_path):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(5, 3, 6, 6, generator=gen) * 2 - 1
    paths = save_pngs(x, tmp_path / "samples", start_index=10)
    assert [p.name for p in paths] == [f"{i:06d}.png" for i in range(10, 15)]
    back = np.asarray(Image.open(paths[2]))
    assert np.array_equal(back, to_uint8(x)[2])
    ds = load_image_dataset(f"folder:{tmp_path / 'samples'}")
    assert (ds.images - x).abs().max() <= 0.5 / 127.5 + 1e-6

    grid = save_image_grid(x, tmp_path / "grid.png", nrow=3)
    img = np.asarray(Image.open(grid))
    assert img.shape == (2 * 8 + 2, 3 * 8 + 2, 3)
    assert np.array_equal(img[2:8, 2:8], to_uint8(x)[0])
    grey = save_image_grid(torch.zeros(4, 1, 4, 4), tmp_path / "grey.png")
    assert np.asarray(Image.open(grey)).shape == (2 * 6 + 2, 2 * 6 + 2)
    assert not list(tmp_path.glob(".*.tmp"))
