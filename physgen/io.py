"""Atomic output: every file a run writes appears whole or not at all."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Union

import numpy as np

PathLike = Union[str, os.PathLike]

__all__ = ["atomic_write", "write_json", "save_npy", "save_torch", "save_figure", "ensure_dir"]


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file beside ``path``; on success ``os.replace`` it into place.

    A crash (or kill) mid-write leaves the old file, or none, never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: PathLike, obj: Any) -> None:
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=_json_default)
        f.write("\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def save_npy(path: PathLike, array: Any) -> None:
    with atomic_write(path) as f:
        np.save(f, np.asarray(array))


def save_torch(path: PathLike, obj: Any) -> None:
    import torch

    with atomic_write(path) as f:
        torch.save(obj, f)


def save_figure(fig: Any, path: PathLike, **kwargs: Any) -> None:
    """Save a matplotlib figure atomically (format from the suffix) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    with atomic_write(path) as f:
        fig.savefig(f, format=path.suffix.lstrip(".") or "png", **kwargs)
    plt.close(fig)


def ensure_dir(path: PathLike) -> Path:
    path = Path(path)
    if path.exists() and not path.is_dir():
        from .errors import UserError

        raise UserError(f"output path {str(path)!r} exists and is not a directory")
    path.mkdir(parents=True, exist_ok=True)
    return path
