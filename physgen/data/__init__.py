"""Toy data: registered 2-D sets, Gaussian mixtures, and point sets from files.

``load_toy(spec)`` returns a :class:`ToyDataset`.  ``spec`` is one of

* a registered name (:func:`dataset_names`): the FFJORD/PFGM toy sets of
  :mod:`physgen.data.toy` (``moons``, ``8gaussians``, ``25gaussians``, ``swissroll``,
  ``checkerboard``, ``pinwheel``, ``circles``, ``2spirals``) and two named mixtures,
  ``two_mode`` (``0.2 N((-2,0), 0.3^2 I) + 0.8 N((2,0), 0.3^2 I)``) and ``ncsn_mog``
  (``0.8 N((5,5), I) + 0.2 N((-5,-5), I)``);
* ``FILE.npy``: an ``[n, d]`` float array; sampling draws rows uniformly with replacement;
* ``FILE.npz``: arrays ``x`` (``[n, d]``) and optional integer ``y`` (``[n]`` labels >= 0);
* ``FILE.json``: a Gaussian mixture (:meth:`GaussianMixture.from_json`), labelled by
  component.

Every draw takes a ``torch.Generator`` and happens on the generator's device, so samples do
not depend on the output ``device``/``dtype``.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from ..errors import UserError, unknown_name
from .mixture import GaussianMixture, ncsn_mixture, two_mode_mixture
from .mixture import _check_count
from .toy import TOY_SETS, ToyFn, toy_mixture

__all__ = [
    "ToyDataset", "GaussianMixture", "load_toy", "dataset_names", "register_dataset",
    "two_mode_mixture", "ncsn_mixture", "FILE_SUFFIXES",
]

PathLike = Union[str, os.PathLike]
Device = Optional[Union[str, torch.device]]
FILE_SUFFIXES = (".npy", ".npz", ".json")


class ToyDataset:
    """A source of i.i.d. points ``[n, dim]`` (and labels where the set has classes).

    ``sampler(n, generator) -> (x float [n, dim], labels long [n] or None)`` draws on the
    generator's device.  ``num_classes`` is ``None`` for unlabelled sets.  ``mixture`` is
    the exact :class:`GaussianMixture` when the set is one (analytic fields, exact NLL).
    ``points`` (and ``labels``) hold the finite point set of a file-backed set, else ``None``.
    """

    def __init__(
        self,
        name: str,
        sampler: ToyFn,
        dim: int,
        num_classes: Optional[int] = None,
        mixture: Optional[GaussianMixture] = None,
        points: Optional[Tensor] = None,
        labels: Optional[Tensor] = None,
    ) -> None:
        self.name = name
        self._sampler = sampler
        self.dim = int(dim)
        self.num_classes = num_classes
        self.mixture = mixture
        self.points = points
        self.labels = labels

    def __repr__(self) -> str:
        return f"ToyDataset({self.name!r}, dim={self.dim}, num_classes={self.num_classes})"

    def _draw(self, n: int, generator: torch.Generator, device: Device, dtype: torch.dtype
              ) -> Tuple[Tensor, Optional[Tensor]]:
        n = _check_count(n)
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        x, y = self._sampler(n, generator)
        out = generator.device if device is None else torch.device(device)
        return x.to(device=out, dtype=dtype), (None if y is None else y.to(device=out, dtype=torch.long))

    def sample(self, n: int, generator: torch.Generator, device: Device = None,
               dtype: torch.dtype = torch.float32) -> Tensor:
        """``n`` points ``[n, dim]`` (float32 by default; on the generator's device if ``device`` is None)."""
        return self._draw(n, generator, device, dtype)[0]

    def sample_labelled(self, n: int, generator: torch.Generator, device: Device = None,
                        dtype: torch.dtype = torch.float32) -> Tuple[Tensor, Tensor]:
        """``(x [n, dim], y long [n])`` with ``0 <= y < num_classes``; UserError if unlabelled.

        Draws the same points as :meth:`sample` with the same generator state.
        """
        if self.num_classes is None:
            labelled = [k for k in dataset_names() if _REGISTRY[k][1] is not None]
            raise UserError(f"dataset {self.name!r} has no class labels; labelled datasets: "
                            f"{', '.join(labelled)}, .json mixtures, .npz files with 'y'")
        x, y = self._draw(n, generator, device, dtype)
        assert y is not None
        return x, y


# ---------------------------------------------------------------- registry
# name -> (factory, num_classes or None); num_classes is recorded to list labelled sets.
_REGISTRY: Dict[str, Tuple[Callable[[], ToyDataset], Optional[int]]] = {}


def register_dataset(name: str, factory: Callable[[], ToyDataset], num_classes: Optional[int] = None) -> None:
    """Register ``name`` -> ``factory()`` (a :class:`ToyDataset`)."""
    _REGISTRY[name] = (factory, num_classes)


def dataset_names() -> List[str]:
    """The registered dataset names, sorted."""
    return sorted(_REGISTRY)


def _from_mixture(name: str, mix: GaussianMixture) -> ToyDataset:
    def sampler(n: int, g: torch.Generator) -> Tuple[Tensor, Optional[Tensor]]:
        return mix.sample(n, g, dtype=torch.float64, return_labels=True)

    return ToyDataset(name, sampler, mix.dim, num_classes=mix.num_components, mixture=mix)


def _toy_factory(name: str) -> Callable[[], ToyDataset]:
    fn, k = TOY_SETS[name]

    def make() -> ToyDataset:
        return ToyDataset(name, fn, 2, num_classes=k, mixture=toy_mixture(name))

    return make


for _name, (_fn, _k) in TOY_SETS.items():
    register_dataset(_name, _toy_factory(_name), _k)
register_dataset("two_mode", lambda: _from_mixture("two_mode", two_mode_mixture()), 2)
register_dataset("ncsn_mog", lambda: _from_mixture("ncsn_mog", ncsn_mixture()), 2)


# -------------------------------------------------------------------- files
def _check_points(x: np.ndarray, src: str, key: str = "") -> Tensor:
    what = f"{src}{f' array {key!r}' if key else ''}"
    if x.dtype == object or not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise UserError(f"{what}: expected a float array, got dtype {x.dtype}")
    if x.ndim != 2:
        raise UserError(f"{what}: expected a 2-D [n, d] array, got shape {x.shape} (ndim {x.ndim})")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise UserError(f"{what}: expected a non-empty [n, d] array, got shape {x.shape}")
    bad = int((~np.isfinite(x)).sum()) if np.issubdtype(x.dtype, np.floating) else 0
    if bad:
        rows = np.flatnonzero(~np.isfinite(x).all(axis=1))
        raise UserError(f"{what}: contains {bad} non-finite values (first in row {int(rows[0])})")
    big = float(np.abs(x).max())
    if big > 1e18:  # squared distances of such points overflow float32 (3.4e38) in every field and metric
        raise UserError(f"{what}: values up to {big:.3g} are too large (|x| must stay below 1e18: squared distances are taken in float32)")
    dtype = np.float32 if x.dtype == np.float32 else np.float64
    return torch.from_numpy(np.ascontiguousarray(x, dtype=dtype))


def _check_labels(y: np.ndarray, n: int, src: str) -> Tensor:
    what = f"{src} array 'y'"
    if y.dtype == object or not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.isfinite(y).all() and (y == np.round(y)).all():
            y = y.astype(np.int64)
        else:
            raise UserError(f"{what}: expected integer labels, got dtype {y.dtype}")
    if y.ndim != 1 or y.shape[0] != n:
        raise UserError(f"{what}: expected shape ({n},) (one label per row of 'x'), got {y.shape}")
    if n and int(y.min()) < 0:
        raise UserError(f"{what}: labels must be >= 0, got {int(y.min())}")
    return torch.from_numpy(y.astype(np.int64))


def _from_points(name: str, x: Tensor, y: Optional[Tensor]) -> ToyDataset:
    def sampler(n: int, g: torch.Generator) -> Tuple[Tensor, Optional[Tensor]]:
        idx = torch.randint(x.shape[0], (n,), generator=g, device=g.device).cpu()
        return x[idx].to(g.device), (None if y is None else y[idx].to(g.device))

    k = None if y is None else int(y.max()) + 1
    return ToyDataset(name, sampler, x.shape[1], num_classes=k, points=x, labels=y)


def _load_file(path: Path) -> ToyDataset:
    src = f"dataset file {str(path)!r}"
    if not path.exists():
        raise UserError(f"{src} does not exist")
    if not path.is_file():
        raise UserError(f"{src} is not a file")
    suffix = path.suffix.lower()
    name = str(path)
    if suffix == ".json":
        mix = GaussianMixture.from_json(path)
        return _from_mixture(name, mix)
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise UserError(f"{src}: cannot read as {suffix}: {exc}") from None
    if suffix == ".npy":
        if not isinstance(loaded, np.ndarray):
            raise UserError(f"{src}: expected a .npy array, got an archive")
        return _from_points(name, _check_points(loaded, src), None)
    # .npz
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise UserError(f"{src}: expected a .npz archive with arrays 'x' and optional 'y'")
    with loaded:
        keys = set(loaded.files)
        if "x" not in keys:
            raise UserError(f"{src}: missing array 'x' (found: {', '.join(sorted(keys)) or 'none'})")
        try:
            xa = loaded["x"]
            ya = loaded["y"] if "y" in keys else None
        except ValueError as exc:  # object arrays need pickle
            raise UserError(f"{src}: cannot read arrays: {exc}") from None
    x = _check_points(xa, src, "x")
    y = None if ya is None else _check_labels(ya, x.shape[0], src)
    return _from_points(name, x, y)


def load_toy(spec: Union[str, PathLike]) -> ToyDataset:
    """The dataset named by ``spec``: a registered name or a ``.npy``/``.npz``/``.json`` path.

    Raises :class:`UserError` for an unknown name, a missing or malformed file.
    """
    if isinstance(spec, ToyDataset):
        return spec
    if isinstance(spec, os.PathLike) or (isinstance(spec, str) and spec.lower().endswith(FILE_SUFFIXES)):
        path = Path(spec)
        if path.suffix.lower() not in FILE_SUFFIXES:
            raise UserError(f"dataset file {str(path)!r}: unsupported type {path.suffix!r}; "
                            f"valid: {', '.join(FILE_SUFFIXES)}")
        return _load_file(path)
    if not isinstance(spec, str):
        raise UserError(f"dataset must be a name or a path, got {spec!r}")
    if spec not in _REGISTRY:
        raise unknown_name("dataset", spec, list(_REGISTRY) + ["FILE.npy", "FILE.npz", "FILE.json"])
    return _REGISTRY[spec][0]()
