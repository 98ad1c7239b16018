"""Offline image datasets, a batched random sampler, and PNG writers.

Every dataset is returned as float32 ``[N, C, H, W]`` in ``[-1, 1]`` (``x = u / 127.5 - 1``
for 8-bit pixels ``u``; ``x = v / 8 - 1`` for the 0..16 digits) with integer labels or
``None``.  Dataset specs (:func:`load_image_dataset`)::

    digits          sklearn's bundled 8x8 handwritten digits (1797 images, 10 classes),
                    resized with bilinear antialiased interpolation
    cifar10:PATH    the CIFAR-10 python pickles data_batch_1..5 / test_batch in PATH
                    (Krizhevsky 2009), or the cifar-10-python.tar.gz archive itself
    folder:PATH     PNG/JPEG files under PATH; labels from first-level sub-folders
    npz:PATH        arrays x (uint8 [N,H,W,C] / [N,C,H,W], or float in [-1,1]) and optional y,
                    or a latents file of physgen.latent.encode (float [N,c,h,w], unbounded)

Nothing is downloaded.  The sampler draws batches from a per-epoch random permutation
(a ``torch.Generator``), optionally flipping each image horizontally with probability 1/2
(the augmentation of DDPM, arXiv 2006.11239, and EDM, arXiv 2206.00364); with
``world_size > 1`` every rank draws the same global batch and keeps its slice, so ranks
stay in step without communication.
"""
from __future__ import annotations

import io
import math
import os
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError
from ..io import atomic_write, ensure_dir

__all__ = [
    "ImageDataset",
    "DATASET_FORMS",
    "load_image_dataset",
    "load_digits",
    "load_cifar10",
    "load_folder",
    "load_npz",
    "resize_images",
    "ImageSampler",
    "to_uint8",
    "save_image_grid",
    "save_pngs",
]

PathLike = Union[str, os.PathLike]

DATASET_FORMS = ("digits", "cifar10:PATH", "folder:PATH", "npz:PATH")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
CIFAR10_HINT = (
    "cifar10:PATH needs the python batches data_batch_1..5 and test_batch from "
    "cifar-10-python.tar.gz extracted into PATH (or PATH may be that .tar.gz file)"
)


@dataclass
class ImageDataset:
    """Images ``[N, C, H, W]`` float32 in ``[-1, 1]``, labels ``[N]`` long (or ``None``).

    ``num_classes`` is 0 when there are no labels; ``class_names`` when known.
    """

    images: torch.Tensor
    labels: Optional[torch.Tensor]
    num_classes: int
    name: str
    class_names: Optional[Tuple[str, ...]] = None

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise UserError(f"dataset {self.name!r}: images must be [N, C, H, W], got {list(self.images.shape)}")
        if self.labels is not None:
            if self.labels.shape != (self.images.shape[0],):
                raise UserError(f"dataset {self.name!r}: {len(self.labels)} labels for {len(self)} images")
            if len(self.labels) and (int(self.labels.min()) < 0 or int(self.labels.max()) >= self.num_classes):
                raise UserError(f"dataset {self.name!r}: labels must be in [0, {self.num_classes})")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def to(self, device: Union[str, torch.device]) -> "ImageDataset":
        """The same dataset with images and labels on ``device``."""
        labels = self.labels.to(device) if self.labels is not None else None
        return ImageDataset(self.images.to(device), labels, self.num_classes, self.name, self.class_names)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def resolution(self) -> int:
        return int(self.images.shape[-1])


# --------------------------------------------------------------------------- helpers


def resize_images(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """Bilinear, antialiased resize of ``[N, C, H, W]`` to ``resolution x resolution``."""
    if resolution < 1:
        raise UserError(f"resolution must be >= 1, got {resolution}")
    if tuple(images.shape[-2:]) == (resolution, resolution):
        return images
    out = F.interpolate(
        images, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False
    )
    return out.clamp_(-1.0, 1.0)


def _from_uint8_nchw(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).float().div_(127.5).sub_(1.0)


def _maybe_resize(images: torch.Tensor, resolution: Optional[int]) -> torch.Tensor:
    return images if resolution is None else resize_images(images, resolution)


# --------------------------------------------------------------------------- digits


def load_digits(resolution: Optional[int] = None) -> ImageDataset:
    """sklearn's 8x8 digits (values 0..16 -> ``v/8 - 1``), resized to ``resolution``."""
    from sklearn.datasets import load_digits as _sk_load_digits  # heavy optional dependency: imported only where it is used

    bunch = _sk_load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32)).div_(8.0).sub_(1.0)[:, None]
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    return ImageDataset(
        _maybe_resize(images, resolution), labels, 10, "digits", tuple(str(i) for i in range(10))
    )


# --------------------------------------------------------------------------- CIFAR-10


class _CifarUnpickler(pickle.Unpickler):
    """Loads only dicts/lists/bytes and numpy arrays: a pickle cannot run code here."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("codecs", "encode"),
        ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch")
        return super().find_class(module, name)


def _unpickle(data: bytes, where: str) -> Dict[Any, Any]:
    try:
        obj = _CifarUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as exc:
        raise UserError(f"cannot read CIFAR-10 batch {where}: {exc}; {CIFAR10_HINT}") from exc
    if not isinstance(obj, dict):
        raise UserError(f"CIFAR-10 batch {where} is not a dict; {CIFAR10_HINT}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _cifar_files(path: Path, names: Sequence[str]) -> Dict[str, bytes]:
    """Raw bytes of the named batch files from a folder or a .tar.gz archive."""
    if path.is_file() and tarfile.is_tarfile(path):
        out: Dict[str, bytes] = {}
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and (base in names or base == "batches.meta"):
                    handle = tar.extractfile(member)
                    if handle is not None:
                        out[base] = handle.read()
        return out
    if not path.is_dir():
        raise UserError(f"cifar10 path {str(path)!r} does not exist; {CIFAR10_HINT}")
    folder = path
    if not (folder / names[0]).is_file() and (folder / "cifar-10-batches-py" / names[0]).is_file():
        folder = folder / "cifar-10-batches-py"
    return {n: (folder / n).read_bytes() for n in (*names, "batches.meta") if (folder / n).is_file()}


def load_cifar10(path: PathLike, split: str = "train", resolution: Optional[int] = None) -> ImageDataset:
    """CIFAR-10 from its python pickles (``split`` ``"train"``: data_batch_1..5, ``"test"``:
    test_batch).  Each batch holds ``data`` uint8 ``[10000, 3072]`` (R, G, B planes of 32x32,
    row-major) and ``labels``."""
    if split not in ("train", "test"):
        raise UserError(f"unknown CIFAR-10 split {split!r}; valid: test, train")
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    path = Path(path)
    files = _cifar_files(path, names)
    missing = [n for n in names if n not in files]
    if missing:
        raise UserError(f"cifar10 path {str(path)!r} lacks {', '.join(missing)}; {CIFAR10_HINT}")
    arrays, labels = [], []
    for name in names:
        batch = _unpickle(files[name], f"{path}/{name}")
        if "data" not in batch or "labels" not in batch:
            raise UserError(f"CIFAR-10 batch {path}/{name} lacks 'data' or 'labels'; {CIFAR10_HINT}")
        data = np.asarray(batch["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(batch["labels"]) != len(data):
            raise UserError(f"CIFAR-10 batch {path}/{name} has data of shape {data.shape}; {CIFAR10_HINT}")
        arrays.append(data.reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch["labels"], dtype=np.int64))
    class_names = None
    if "batches.meta" in files:
        try:
            meta = _unpickle(files["batches.meta"], f"{path}/batches.meta")
            raw = meta.get("label_names")
            if raw is not None and len(raw) == 10:
                class_names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in raw)
        except UserError:
            class_names = None
    images = _from_uint8_nchw(np.concatenate(arrays))
    return ImageDataset(
        _maybe_resize(images, resolution),
        torch.from_numpy(np.concatenate(labels)),
        10,
        f"cifar10-{split}",
        class_names,
    )


# --------------------------------------------------------------------------- folder


def _read_image(file: Path, grayscale: bool) -> np.ndarray:
    from PIL import Image  # heavy optional dependency: imported only where it is used

    try:
        with Image.open(file) as img:
            img = img.convert("L" if grayscale else "RGB")
            arr = np.array(img, dtype=np.uint8)  # writable copy
    except Exception as exc:
        raise UserError(f"cannot read image {str(file)!r}: {exc}") from exc
    return arr[:, :, None] if arr.ndim == 2 else arr


def _center_crop_square(arr: np.ndarray) -> np.ndarray:
    h, w = arr.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return arr[top : top + s, left : left + s]


def load_folder(path: PathLike, resolution: Optional[int] = None) -> ImageDataset:
    """PNG/JPEG images under ``path`` (recursively, sorted by path).

    Labels: when images lie in first-level sub-folders, each sub-folder is a class (names
    sorted); images directly in ``path`` then are an error.  Images are grey (1 channel)
    when every file is greyscale, RGB otherwise (alpha dropped).  With ``resolution``, each
    image is centre-cropped to a square and resized bilinearly (antialiased); without it,
    all images must share one size.
    """
    from PIL import Image  # heavy optional dependency: imported only where it is used

    root = Path(path)
    if not root.is_dir():
        raise UserError(
            f"folder path {str(root)!r} does not exist; folder:PATH needs a directory of "
            f"PNG/JPEG images (optionally one sub-folder per class)"
        )
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(
            f"folder {str(root)!r} has no .png/.jpg/.jpeg images; put the images there "
            f"(optionally one sub-folder per class)"
        )
    rel = [f.relative_to(root) for f in files]
    in_sub = [len(r.parts) > 1 for r in rel]
    class_names: Optional[Tuple[str, ...]] = None
    labels: Optional[torch.Tensor] = None
    if any(in_sub):
        if not all(in_sub):
            loose = [str(r) for r, s in zip(rel, in_sub) if not s][:3]
            raise UserError(
                f"folder {str(root)!r} mixes class sub-folders with loose images (e.g. {loose}); "
                f"put every image in a class sub-folder, or none"
            )
        class_names = tuple(sorted({r.parts[0] for r in rel}))
        index = {n: i for i, n in enumerate(class_names)}
        labels = torch.tensor([index[r.parts[0]] for r in rel], dtype=torch.long)

    grey_modes = {"1", "L", "LA", "I", "I;16", "F"}
    grayscale = True
    for f in files:
        try:
            with Image.open(f) as img:
                if img.mode not in grey_modes:
                    grayscale = False
                    break
        except Exception as exc:
            raise UserError(f"cannot read image {str(f)!r}: {exc}") from exc

    tensors: List[torch.Tensor] = []
    first_shape = None
    for f in files:
        arr = _read_image(f, grayscale)
        if resolution is None:
            if first_shape is None:
                first_shape = arr.shape
            elif arr.shape != first_shape:
                raise UserError(
                    f"images in {str(root)!r} differ in size ({str(files[0])!r} is "
                    f"{first_shape[1]}x{first_shape[0]}, {str(f)!r} is {arr.shape[1]}x{arr.shape[0]}); "
                    f"give a resolution to resize them"
                )
            tensors.append(_from_uint8_nchw(arr.transpose(2, 0, 1)))
        else:
            x = _from_uint8_nchw(_center_crop_square(arr).transpose(2, 0, 1))[None]
            tensors.append(resize_images(x, resolution)[0])
    images = torch.stack(tensors)
    return ImageDataset(images, labels, len(class_names or ()), f"folder:{root}", class_names)


# --------------------------------------------------------------------------- npz


def _channels_first(x: np.ndarray, where: str) -> np.ndarray:
    """``[N,H,W]`` / ``[N,H,W,C]`` / ``[N,C,H,W]`` (C in 1, 3) -> ``[N,C,H,W]``."""
    if x.ndim == 3:
        return x[:, None]
    if x.ndim != 4:
        raise UserError(f"{where}: x must be [N,H,W,C] or [N,C,H,W], got shape {list(x.shape)}")
    last, first = x.shape[3] in (1, 3), x.shape[1] in (1, 3)
    if last and first:  # ambiguous: prefer square spatial dims, then the dtype's habit
        if x.shape[1] == x.shape[2] and x.shape[2] != x.shape[3]:
            first = False
        elif x.shape[2] == x.shape[3] and x.shape[1] != x.shape[2]:
            last = False
        elif x.dtype == np.uint8:
            first = False
        else:
            last = False
    if last:
        return x.transpose(0, 3, 1, 2)
    if first:
        return x
    raise UserError(f"{where}: cannot find a channel axis of size 1 or 3 in shape {list(x.shape)}")


def load_npz(path: PathLike, resolution: Optional[int] = None) -> ImageDataset:
    """Arrays ``x`` (uint8 0..255, or float in ``[-1, 1]``; NHWC or NCHW) and optional
    integer ``y`` (and optional scalar ``num_classes``) from an ``.npz`` file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"npz path {str(path)!r} does not exist; npz:PATH needs an .npz file with an array "
            f"'x' (uint8 [N,H,W,C] or [N,C,H,W], or float in [-1,1]) and optionally labels 'y'"
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as exc:
        raise UserError(f"cannot read npz file {str(path)!r}: {exc}") from exc
    if "x" not in arrays:
        raise UserError(f"npz file {str(path)!r} has no array 'x' (found: {sorted(arrays)})")
    latent = "latent_scale_factor" in arrays  # physgen.latent's files: [N, c, h, w] of any finite values
    x = arrays["x"] if latent else _channels_first(arrays["x"], f"npz file {str(path)!r}")
    if latent:
        if x.ndim != 4 or not np.issubdtype(x.dtype, np.floating) or not np.isfinite(x).all():
            raise UserError(f"latents file {str(path)!r}: x must be finite floats [N, c, h, w], got {x.dtype} {list(x.shape)}")
        if resolution is not None and resolution != x.shape[-1]:
            raise UserError(f"latents file {str(path)!r} has a {x.shape[-1]}x{x.shape[-1]} grid; latents are not resized ({resolution})")
        images = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    elif x.dtype == np.uint8:
        images = _from_uint8_nchw(x)
    elif np.issubdtype(x.dtype, np.floating):
        if x.size and (float(np.nanmin(x)) < -1.0 - 1e-3 or float(np.nanmax(x)) > 1.0 + 1e-3):
            raise UserError(
                f"npz file {str(path)!r}: float x must lie in [-1, 1] (got {float(x.min()):.3g}.."
                f"{float(x.max()):.3g}); store 8-bit images as uint8"
            )
        if not np.isfinite(x).all():
            raise UserError(f"npz file {str(path)!r}: x has NaN or infinite values")
        images = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).clamp_(-1.0, 1.0)
    else:
        raise UserError(f"npz file {str(path)!r}: x must be uint8 or float, got {x.dtype}")
    labels, num_classes = None, 0
    if "y" in arrays:
        y = np.asarray(arrays["y"]).reshape(-1)
        if not np.issubdtype(y.dtype, np.integer) or len(y) != len(x):
            raise UserError(
                f"npz file {str(path)!r}: y must hold one integer label per image "
                f"({len(x)}), got {y.dtype} of length {len(y)}"
            )
        if len(y) and y.min() < 0:
            raise UserError(f"npz file {str(path)!r}: labels must be >= 0")
        labels = torch.from_numpy(y.astype(np.int64))
        num_classes = int(y.max()) + 1 if len(y) else 0
        if "num_classes" in arrays:
            num_classes = max(num_classes, int(arrays["num_classes"]))
    return ImageDataset(_maybe_resize(images, resolution), labels, num_classes, f"npz:{path}")


# --------------------------------------------------------------------------- dispatch


def load_image_dataset(
    spec: str, resolution: Optional[int] = None, *, split: str = "train"
) -> ImageDataset:
    """Load ``digits``, ``cifar10:PATH``, ``folder:PATH`` or ``npz:PATH`` (module docstring).

    ``resolution`` resizes (bilinear, antialiased) to a square side; ``split`` selects the
    CIFAR-10 train or test batches.
    """
    if not isinstance(spec, str) or not spec:
        raise UserError(f"dataset spec must be one of {', '.join(DATASET_FORMS)}; got {spec!r}")
    kind, sep, arg = spec.partition(":")
    if kind == "digits" and not sep:
        return load_digits(resolution)
    loaders = {"cifar10": load_cifar10, "folder": load_folder, "npz": load_npz}
    if kind in loaders and sep and arg:
        if kind == "cifar10":
            return load_cifar10(arg, split=split, resolution=resolution)
        return loaders[kind](arg, resolution=resolution)
    raise UserError(f"unknown image dataset {spec!r}; valid forms: {', '.join(DATASET_FORMS)}")


# --------------------------------------------------------------------------- sampler


class ImageSampler:
    """Endless random batches ``(images, labels)`` from an :class:`ImageDataset`.

    Each epoch is a permutation drawn from ``generator`` (or a fresh one seeded with
    ``seed``); batches of ``batch_size * world_size`` consecutive indices are drawn
    (wrapping into the next epoch), and rank ``rank`` keeps its ``batch_size`` slice.
    With ``flip=True`` each image is mirrored horizontally with probability 1/2, the
    choice also drawn from the generator.  All ranks built with the same seed stay in
    step.  ``labels`` is ``None`` for unlabelled data.  ``state_dict`` /
    ``load_state_dict`` resume the exact stream.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        batch_size: int,
        *,
        generator: Optional[torch.Generator] = None,
        seed: int = 0,
        flip: bool = False,
        device: Union[str, torch.device, None] = None,
        rank: int = 0,
        world_size: int = 1,
    ):
        if batch_size < 1:
            raise UserError(f"batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise UserError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if len(dataset) == 0:
            raise UserError(f"dataset {dataset.name!r} is empty")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.flip = bool(flip)
        self.device = torch.device(device) if device is not None else None
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.generator = generator if generator is not None else torch.Generator().manual_seed(seed)
        self.epoch = 0
        self._perm = torch.randperm(len(dataset), generator=self.generator)
        self._pos = 0

    def _next_indices(self, n: int) -> torch.Tensor:
        chunks = []
        while n > 0:
            if self._pos >= len(self._perm):
                self._perm = torch.randperm(len(self.dataset), generator=self.generator)
                self._pos = 0
                self.epoch += 1
            take = min(n, len(self._perm) - self._pos)
            chunks.append(self._perm[self._pos : self._pos + take])
            self._pos += take
            n -= take
        return torch.cat(chunks)

    def next(self) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The next batch: images ``[batch_size, C, H, W]`` and labels ``[batch_size]`` or None."""
        total = self.batch_size * self.world_size
        index = self._next_indices(total)
        flips = torch.rand(total, generator=self.generator) < 0.5 if self.flip else None
        mine = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        index = index[mine].to(self.dataset.images.device)
        images = self.dataset.images[index]
        if flips is not None:
            f = flips[mine].to(images.device)[:, None, None, None]
            images = torch.where(f, images.flip(-1), images)
        labels = None
        if self.dataset.labels is not None:
            labels = self.dataset.labels[index.to(self.dataset.labels.device)]
        if self.device is not None:
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True) if labels is not None else None
        return images, labels

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, Optional[torch.Tensor]]]:
        while True:
            yield self.next()

    def state_dict(self) -> Dict[str, Any]:
        return {
            "generator": self.generator.get_state(),
            "perm": self._perm.clone(),
            "pos": self._pos,
            "epoch": self.epoch,
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if len(state["perm"]) != len(self.dataset):
            raise UserError(
                f"sampler state is for a dataset of {len(state['perm'])} images, "
                f"this one has {len(self.dataset)}"
            )
        self.generator.set_state(state["generator"])
        self._perm = state["perm"].clone()
        self._pos = int(state["pos"])
        self.epoch = int(state["epoch"])


# --------------------------------------------------------------------------- writers


def to_uint8(images: Union[torch.Tensor, np.ndarray]) -> np.ndarray:
    """``[N, C, H, W]`` in ``[-1, 1]`` -> uint8 ``[N, H, W, C]``: ``round(127.5 (x + 1))``."""
    x = torch.as_tensor(images).detach().float().cpu()
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise UserError(f"images must be [N, C, H, W], got {list(x.shape)}")
    x = ((x + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def _write_png(array: np.ndarray, path: Path) -> None:
    from PIL import Image  # heavy optional dependency: imported only where it is used

    img = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
    with atomic_write(path) as f:
        img.save(f, format="PNG")


def save_image_grid(
    images: Union[torch.Tensor, np.ndarray], path: PathLike, nrow: Optional[int] = None, padding: int = 2
) -> Path:
    """Tile ``[N, C, H, W]`` images in ``[-1, 1]`` into one PNG, ``nrow`` images per row
    (default ``ceil(sqrt(N))``), ``padding`` black pixels between tiles.  Atomic write."""
    arr = to_uint8(images)
    n, h, w, c = arr.shape
    if n == 0:
        raise UserError("save_image_grid needs at least one image")
    nrow = int(nrow) if nrow else int(math.ceil(math.sqrt(n)))
    if nrow < 1:
        raise UserError(f"nrow must be >= 1, got {nrow}")
    rows = int(math.ceil(n / nrow))
    grid = np.zeros((rows * (h + padding) + padding, nrow * (w + padding) + padding, c), np.uint8)
    for i in range(n):
        r, q = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + q * (w + padding)
        grid[top : top + h, left : left + w] = arr[i]
    path = Path(path)
    _write_png(grid, path)
    return path


def save_pngs(images: Union[torch.Tensor, np.ndarray], directory: PathLike, start_index: int = 0) -> List[Path]:
    """One PNG per image, ``{index:06d}.png`` from ``start_index`` (sample shards written
    by several ranks or runs never collide when their index ranges do not).  Atomic writes."""
    directory = ensure_dir(directory)
    paths = []
    for i, arr in enumerate(to_uint8(images)):
        p = directory / f"{start_index + i:06d}.png"
        _write_png(arr, p)
        paths.append(p)
    return paths
