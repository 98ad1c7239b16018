"""Atomic output: every file a run writes appears whole or not at all."""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator, Union

import numpy as np

from .errors import UserError

PathLike = Union[str, os.PathLike]

__all__ = ["atomic_write", "jsonable", "write_json", "save_npy", "save_figure", "ensure_dir", "stale_temporaries", "output_mode"]

# atomic_write's temporary files: ".NAME.<mkstemp's 8 random characters>.tmp" beside NAME
_TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def output_mode() -> int:
    """The mode a new file gets from ``open``: ``0o666`` less the process's umask."""
    try:  # Linux: read it without changing it (os.umask sets it, briefly, for every thread)
        with open("/proc/self/status") as f:
            mask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file beside ``path``; on success ``os.replace`` it into place.

    A crash (or kill) mid-write leaves the old file, or none, never a half-written one (a
    killed writer leaves its temporary ``.NAME.XXXXXXXX.tmp``, which :func:`stale_temporaries`
    finds).  The file gets the mode of any new file (``0o666`` less the umask), not
    ``mkstemp``'s private ``0o600``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:  # a parent is a file, no permission, disk full: the user's path
        raise UserError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None
    try:
        os.chmod(tmp, output_mode())
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def stale_temporaries(folder: PathLike, recursive: bool = True) -> list[Path]:
    """The temporary files that :func:`atomic_write` left in ``folder`` (killed writers)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp")
    return sorted(p for p in found if p.is_file() and _TEMPORARY.match(p.name))


def jsonable(obj: Any) -> Any:
    """``obj`` with infinities as ``"inf"``/``"-inf"`` (JSON has none), tuples as lists, paths,
    numpy scalars and typed numbers (``json_value()``: PFGM++'s ``D``) as plain values, recursively through dicts and lists: the one codec every
    JSON file a run writes goes through (:func:`write_json`); :func:`physgen.config.read_json`
    and the config parsers read ``"inf"`` back as ``math.inf``."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.generic,)):
        obj = obj.item()
    if hasattr(obj, "json_value"):  # a typed number that says how it is written (physgen.config.ExtraDims: 128 or inf)
        obj = obj.json_value()
    if isinstance(obj, float) and math.isinf(obj):
        return "inf" if obj > 0 else "-inf"
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: PathLike, obj: Any) -> None:
    """``obj`` through :func:`jsonable` as indented, key-sorted JSON, atomically (so an infinite
    ``D`` is written ``"inf"``, never the non-JSON ``Infinity``)."""
    with atomic_write(path, "w") as f:
        json.dump(jsonable(obj), f, indent=2, sort_keys=True, default=_json_default)
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


def save_figure(fig: Any, path: PathLike, **kwargs: Any) -> None:
    """Save a matplotlib figure atomically (format from the suffix) and close it."""
    import matplotlib.pyplot as plt  # heavy optional dependency: imported only where it is used

    path = Path(path)
    with atomic_write(path) as f:
        fig.savefig(f, format=path.suffix.lstrip(".") or "png", **kwargs)
    plt.close(fig)


def ensure_dir(path: PathLike) -> Path:
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"output path {str(path)!r} exists and is not a directory")
    path.mkdir(parents=True, exist_ok=True)
    return path
