"""Checkpoints: one self-describing, verified file format, one writer, one reader, one finder.

Every checkpoint the project writes (training runs, toy MLPs, guidance classifiers) is one
file::

    b"PHYSGEN-CKPT\\n"          magic (13 bytes)
    uint64 little-endian        length of the header
    header                      JSON (UTF-8): format, version, kind, step, meta, checksum
    payload                     torch.save of a dict of tensors, numbers, strings, lists, dicts

The header says what the file is without reading the payload: ``kind`` (:data:`KINDS`),
``step``, and ``meta``, the small JSON-able description needed to rebuild or describe it
(process, network spec, dataset).  ``checksum`` is ``"sha256:<hex>"`` of the canonical
header without its checksum (sorted keys, no spaces) followed by the payload bytes, so a
flipped bit anywhere (header or payload) is a :class:`~physgen.errors.UserError` naming the
file.  The payload is only ever read with ``torch.load(..., weights_only=True)``: a
checkpoint cannot run code.

Files of the previous format (a bare ``torch.save`` of the same dicts) still load, with
``weights_only=True``, and are reported as "no checksum: legacy format".

Training runs keep their checkpoints as ``RUN/checkpoints/ckpt-<step:08d>.pt``
(:func:`save`, which prunes to the newest ``keep_last``).  :func:`find` returns the newest
one that verifies and reports those it skipped (and why); :func:`sweep_temporaries` removes
the temporary files of writers that were killed (call it under the run-folder lock, at the
start of a run).
"""
from __future__ import annotations

import hashlib
import io
import json
import pickle
import re
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import torch

from .config import INT64_MAX, MAX_DEPTH, MAX_RESOLUTION, MAX_SAMPLES, MAX_WIDTH, jsonable
from .errors import UserError
from .io import atomic_write, stale_temporaries

__all__ = [
    "FORMAT",
    "VERSION",
    "KINDS",
    "Header",
    "Checkpoint",
    "Found",
    "write",
    "read_header",
    "verify",
    "read",
    "find",
    "list_checkpoints",
    "checkpoint_path",
    "save",
    "prune",
    "sweep_temporaries",
    "load_state",
    "torch_load",
    "HEADER_SCHEMA",
    "check_weights_fit",
]

FORMAT = "physgen-checkpoint"
VERSION = 1
MAGIC = b"PHYSGEN-CKPT\n"
KINDS = {
    "train": "a training checkpoint (physgen.training.train: model, EMA, optimiser, RNG states)",
    "toy-mlp": "a trained toy MLP (physgen compare-solvers --field mlp)",
    "classifier": "a noise-conditional classifier (physgen train-classifier)",
    "autoencoder": "an autoencoder (physgen train-autoencoder: weights, its spec in the header)",
    "model": "a model folder's header (physgen import / export: process, network, preconditioning; the weights in "
             "model.safetensors beside it, bound by their sha256 in the header)",
}
_MAX_HEADER = 16 << 20  # a header is a few kB; a bigger length field is a damaged file
_CHUNK = 1 << 22
_ZIP = b"PK\x03\x04"  # torch.save's zip container: the legacy format
_LEGACY_FORMATS = {"physgen-train/2": "train", "physgen-classifier/1": "classifier"}
_NAME = re.compile(r"^ckpt-(\d+)\.pt$")
_noted_legacy: set = set()


@dataclass(frozen=True)
class Header:
    """What a checkpoint file says about itself (read without its payload)."""

    path: Path
    kind: str
    step: int
    meta: dict
    checksum: Optional[str]  # None: legacy format
    payload_offset: int = 0
    version: int = VERSION

    @property
    def legacy(self) -> bool:
        return self.checksum is None


@dataclass
class Checkpoint:
    """A verified checkpoint: its header and its payload (a dict)."""

    header: Header
    payload: dict

    @property
    def path(self) -> Path:
        return self.header.path

    @property
    def kind(self) -> str:
        return self.header.kind

    @property
    def step(self) -> int:
        return self.header.step

    @property
    def meta(self) -> dict:
        return self.header.meta


@dataclass
class Found:
    """:func:`find`'s answer: the checkpoint to use and the newer ones it skipped, with why."""

    path: Path
    header: Header
    skipped: list = field(default_factory=list)  # [(path, reason)]


# --------------------------------------------------------------------------- writing


def _canonical(header: dict) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


class _HashingWriter:
    """A write-only stream that hashes what passes through (torch.save streams into it)."""

    def __init__(self, handle, digest):
        self.handle, self.digest = handle, digest

    def write(self, data) -> int:
        self.digest.update(data)
        return self.handle.write(data)

    def flush(self) -> None:
        self.handle.flush()


def write(path, payload: dict, *, kind: str, step: int, meta: Optional[dict] = None) -> Path:
    """Write ``payload`` (a dict ``torch.load(weights_only=True)`` can read) as a checkpoint of
    ``kind`` at ``step`` with the JSON-able ``meta``, atomically.  Returns the path."""
    if kind not in KINDS:
        raise ValueError(f"unknown checkpoint kind {kind!r}; valid: {', '.join(KINDS)}")
    path = Path(path)
    header = {"format": FORMAT, "version": VERSION, "kind": kind, "step": int(step), "torch": torch.__version__,
              "meta": jsonable(meta or {})}
    digest = hashlib.sha256(_canonical(header))
    placeholder = "sha256:" + "0" * 64
    text = _canonical({**header, "checksum": placeholder})
    at = text.index(placeholder.encode()) + len("sha256:")
    with atomic_write(path, "wb") as f:
        f.write(MAGIC + struct.pack("<Q", len(text)))
        start = f.tell()
        f.write(text)
        torch.save(payload, _HashingWriter(f, digest))
        end = f.tell()
        f.seek(start + at)
        f.write(digest.hexdigest().encode())
        f.seek(end)
    return path


# --------------------------------------------------------------------------- the header's schema

HEADER_SCHEMA = {
    ("step",): (int, 0, INT64_MAX), ("version",): (int, 1, VERSION), ("torch",): (str,), ("meta",): (dict,),
    ("meta", "world_size"): (int, 1, MAX_SAMPLES),
    ("meta", "process"): (dict,), ("meta", "process", "name"): (str,),
    ("meta", "image"): (dict,), ("meta", "image", "config"): (dict,), ("meta", "image", "dataset"): (dict,),
    ("meta", "image", "unet"): (dict,), ("meta", "image", "unet", "arch"): (str,), ("meta", "image", "unet", "overrides"): (dict,),
    ("meta", "image", "unet", "img_resolution"): (int, 1, MAX_RESOLUTION), ("meta", "image", "unet", "channels"): (int, 1, MAX_WIDTH),
    ("meta", "image", "unet", "num_classes"): (int, 0, MAX_SAMPLES),
    ("meta", "image", "shape"): (list,), ("meta", "image", "shape", "*"): (int, 1, MAX_RESOLUTION),
    ("meta", "toy"): (dict,), ("meta", "toy", "net"): (dict,), ("meta", "toy", "net", "dim"): (int, 1, MAX_WIDTH),
    ("meta", "toy", "net", "hidden"): (int, 1, MAX_WIDTH), ("meta", "toy", "net", "depth"): (int, 1, MAX_DEPTH),
    ("meta", "toy", "net", "embed_dim"): (int, 2, MAX_WIDTH), ("meta", "toy", "net", "num_classes"): (int, 0, MAX_SAMPLES),
    ("meta", "toy", "net", "out_dim"): (int, 1, MAX_WIDTH), ("meta", "toy", "dataset"): (str,), ("meta", "toy", "n_data"): (int, 1, MAX_SAMPLES),
    ("meta", "toy", "seed"): (int, 0, INT64_MAX), ("meta", "arch"): (dict,), ("meta", "autoencoder"): (dict,),
    ("meta", "network"): (dict,), ("meta", "network", "class"): (str,), ("meta", "preconditioning"): (dict,),
    ("meta", "shape"): (list,), ("meta", "shape", "*"): (int, 1, MAX_RESOLUTION), ("meta", "num_classes"): (int, 0, MAX_SAMPLES),
    ("meta", "weights_sha256"): (str,), ("meta", "source"): (dict,), ("meta", "latent"): (dict,),
}
"""What each field of a header must be where present: ``(type,)`` or ``(int, lo, hi)`` (the size
limits of :mod:`physgen.config`); ``"*"`` is every item of a list.  What a reader needs beyond
this (a spec that is complete, a shape that agrees with it) it checks itself, before the file's
weights are loaded (:func:`check_weights_fit`)."""


def _field_problem(value: Any, rule: tuple) -> Optional[str]:
    kind = rule[0]
    if kind is int:
        if type(value) is not int or not rule[1] <= value <= rule[2]:
            return f"must be an integer in {rule[1]}..{rule[2]}, got {value!r}"
        return None
    if not isinstance(value, kind):
        return f"must be {'an object' if kind is dict else 'a list' if kind is list else 'a string'}, got {json.dumps(value)[:60]}"
    return None


def _schema_problem(header: dict) -> Optional[str]:
    """The first field of ``header`` that breaks :data:`HEADER_SCHEMA` (its path and why), or None."""
    for path, rule in HEADER_SCHEMA.items():
        nodes: list = [(header, "")]
        for key in path:
            step = []
            for node, where in nodes:
                if key == "*" and isinstance(node, list):
                    step += [(v, f"{where}[{i}]") for i, v in enumerate(node)]
                elif isinstance(node, dict) and key in node:
                    step.append((node[key], f"{where}.{key}" if where else key))
            nodes = step
        for value, where in nodes:
            why = _field_problem(value, rule)
            if why is not None:
                return f"{where} {why}"
    return None


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number a checkpoint can hold")


def check_weights_fit(path, n_weights: int, what: str) -> None:
    """UserError unless the file at ``path`` can hold ``n_weights`` numbers (2 bytes each, the
    narrowest precision it could store): a header that describes a larger network than the
    file's weights is refused before that network is allocated."""
    size = Path(path).stat().st_size
    if 2 * n_weights > size:
        raise UserError(f"checkpoint {str(path)!r}: its header describes {what} of at least {n_weights:.3g} weights, more than "
                        f"the file's {size / 1e6:.3g} MB can hold; the header does not describe these weights")


# --------------------------------------------------------------------------- reading


class _Window(io.RawIOBase):
    """The payload of an open checkpoint as a seekable stream starting at offset 0."""

    def __init__(self, handle, offset: int):
        self.handle, self.offset = handle, offset
        handle.seek(offset)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        return self.handle.readinto(buffer)

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos += self.offset
        return self.handle.seek(pos, whence) - self.offset

    def tell(self) -> int:
        return self.handle.tell() - self.offset


def _stream(log: Any):
    """``"stderr"``: the current ``sys.stderr`` (looked up per call, so redirections apply)."""
    return sys.stderr if isinstance(log, str) and log == "stderr" else log


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def torch_load(source, what: str, *, map_location: Any = "cpu", mmap: bool = False) -> Any:
    """The project's one ``torch.load``: ``weights_only=True`` (tensors, numbers, strings,
    lists, dicts; no other Python object is built, so nothing in the file can run), every
    failure one :class:`UserError` naming ``what``.  ``source``: a path or a binary stream."""
    try:
        return torch.load(source, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError:  # torch's weights-only refusal of a Python object
        raise UserError(f"{what} holds Python objects other than tensors, numbers and strings (a pickle that could run code "
                        f"when loaded); it is not loaded") from None
    except Exception as exc:  # zip and format errors differ by torch version
        raise UserError(f"{what} is damaged or not a torch file ({_first_line(exc)})") from None


def _legacy_kind(obj: dict) -> str:
    if obj.get("format") in _LEGACY_FORMATS:
        return _LEGACY_FORMATS[obj["format"]]
    return "toy-mlp" if "model" in obj and "optimizer" not in obj else "train"


def _load_legacy(path: Path, map_location: Any = "cpu", mmap: bool = True) -> dict:
    obj = torch_load(path, f"checkpoint {str(path)!r}", map_location=map_location, mmap=mmap)
    if not isinstance(obj, dict):
        raise UserError(f"{str(path)!r} is not a physgen checkpoint (it holds a {type(obj).__name__}, not a dict)")
    return obj


def _legacy_header(path: Path, obj: dict) -> Header:
    meta = dict(obj.get("meta") or {}) if isinstance(obj.get("meta"), dict) else {}
    if isinstance(obj.get("process"), dict):
        meta.setdefault("process", obj["process"])
    step = obj.get("step", 0)
    return Header(path, _legacy_kind(obj), int(step) if isinstance(step, int) else 0, jsonable(meta), None)


def read_header(path) -> Header:
    """The header of the checkpoint at ``path`` (no payload read; nothing verified).

    A legacy file's header is made from its payload, loaded with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {str(path)!r} does not exist")
    try:
        with open(path, "rb") as f:
            head = f.read(len(MAGIC) + 8)
            if head.startswith(_ZIP):
                return _legacy_header(path, _load_legacy(path))
            if len(head) < len(MAGIC) + 8 or not head.startswith(MAGIC):
                raise UserError(f"{str(path)!r} is not a physgen checkpoint (no checkpoint header)")
            (n,) = struct.unpack("<Q", head[len(MAGIC):])
            if n > _MAX_HEADER:
                raise UserError(f"checkpoint {str(path)!r} is damaged: its header length {n} is implausible")
            raw = f.read(n)
    except OSError as exc:
        raise UserError(f"cannot read checkpoint {str(path)!r}: {_first_line(exc)}") from None
    try:
        h = json.loads(raw.decode(), parse_constant=_no_constant)
        ok = isinstance(h, dict) and h.get("format") == FORMAT and isinstance(h.get("kind"), str) and h["kind"] in KINDS and "step" in h
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # ValueError: JSON, or a NaN/Infinity literal
        why = _first_line(exc) if "checkpoint can hold" in str(exc) else "it does not parse"
        raise UserError(f"checkpoint {str(path)!r} is damaged: its header {why}") from None
    if not ok:
        raise UserError(f"checkpoint {str(path)!r} is damaged: its header does not parse")
    if type(h.get("version")) is not int or h["version"] > VERSION:
        raise UserError(f"checkpoint {str(path)!r} has format version {h.get('version')!r}; this physgen reads up to {VERSION}")
    why = _schema_problem(h)
    if why is not None:
        raise UserError(f"checkpoint {str(path)!r} has an invalid header: {why}")
    return Header(path, h["kind"], h["step"], h.get("meta") or {}, str(h.get("checksum")), len(MAGIC) + 8 + n, h["version"])


def verify(path) -> Header:
    """The header, after checking the checksum over header and payload (UserError naming the
    file on a mismatch).  A legacy file is read in full (``weights_only=True``) instead."""
    header = read_header(path)
    if header.legacy:
        return header
    with open(header.path, "rb") as f:
        f.seek(len(MAGIC) + 8)
        h = json.loads(f.read(header.payload_offset - len(MAGIC) - 8).decode())
        claimed = h.pop("checksum", None)
        digest = hashlib.sha256(_canonical(h))
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    if claimed != "sha256:" + digest.hexdigest():
        raise UserError(f"checkpoint {str(header.path)!r} is corrupt: its checksum does not match (a damaged or truncated file)")
    return header


def _check_kind(header: Header, kind: Union[None, str, Sequence[str]]) -> None:
    kinds = (kind,) if isinstance(kind, str) else tuple(kind or ())
    if kinds and header.kind not in kinds:
        want = " or ".join(KINDS[k].split(" (")[0] for k in kinds)
        raise UserError(f"{str(header.path)!r} is {KINDS[header.kind].split(' (')[0]}, not {want}")


def read(path, *, kind: Union[None, str, Sequence[str]] = None, map_location: Any = "cpu", log: Any = "stderr") -> Checkpoint:
    """Verify and load the checkpoint at ``path`` (``kind``: the kind(s) expected).

    The payload is loaded with ``weights_only=True``.  A legacy file says so once on ``log``
    ("no checksum: legacy format")."""
    header = verify(path)
    _check_kind(header, kind)
    log = _stream(log)
    if header.legacy:
        if log is not None and header.path.resolve() not in _noted_legacy:
            _noted_legacy.add(header.path.resolve())
            print(f"note: checkpoint {str(header.path)!r}: no checksum: legacy format", file=log, flush=True)
        return Checkpoint(header, _load_legacy(header.path, map_location, mmap=False))
    with open(header.path, "rb") as f:
        payload = torch_load(_Window(f, header.payload_offset), f"checkpoint {str(header.path)!r}", map_location=map_location)
    if not isinstance(payload, dict):
        raise UserError(f"{str(header.path)!r} is not a physgen checkpoint (its payload is a {type(payload).__name__})")
    return Checkpoint(header, payload)


# --------------------------------------------------------------------------- run folders


def checkpoint_path(run_dir, step: int) -> Path:
    """``RUN/checkpoints/ckpt-<step:08d>.pt``."""
    return Path(run_dir) / "checkpoints" / f"ckpt-{int(step):08d}.pt"


def _step_of(path: Path) -> int:
    m = _NAME.match(path.name)
    return int(m.group(1)) if m else -1


def list_checkpoints(path) -> list[Path]:
    """The ``ckpt-<step>.pt`` files of a run folder (in ``RUN/checkpoints`` or ``RUN`` itself,
    or ``path`` when it is the ``checkpoints`` folder), newest (highest step) first."""
    p = Path(path)
    found: list[Path] = []
    for d in (p / "checkpoints", p):
        if d.is_dir():
            found = [c for c in d.glob("ckpt-*.pt") if c.is_file() and _NAME.match(c.name)]
            if found:
                break
    return sorted(found, key=lambda c: (_step_of(c), c.name), reverse=True)


def find(path, *, kind: Union[None, str, Sequence[str]] = None, log: Any = "stderr",
         check: Optional[Callable[[Header], None]] = None) -> Found:
    """The checkpoint to use for ``path``: the file itself (verified: a damaged file is an
    error, never silently replaced), or the newest checkpoint of a run folder that verifies.

    Newer checkpoints that do not verify (or are of another ``kind``, or whose header the
    reader's ``check`` refuses with a :class:`UserError`: a spec it cannot build) are skipped,
    each reported on ``log`` (default: the current ``sys.stderr``; ``None``: silent) with the
    reason, and listed in :attr:`Found.skipped`."""
    log = _stream(log)
    p = Path(path)

    def usable(candidate: Path) -> Header:
        header = verify(candidate)
        _check_kind(header, kind)
        if check is not None:
            check(header)
        return header

    if p.is_file():
        return Found(p, usable(p), [])
    if not p.exists():
        raise UserError(f"checkpoint {str(p)!r} does not exist")
    if not p.is_dir():
        raise UserError(f"checkpoint {str(p)!r} is neither a file nor a run directory")
    skipped: list = []
    for candidate in list_checkpoints(p):
        try:
            header = usable(candidate)
        except UserError as exc:
            reason = str(exc)
            skipped.append((candidate, reason))
            if log is not None:
                print(f"note: skipped {reason}", file=log, flush=True)
            continue
        if skipped and log is not None:
            print(f"note: using {str(candidate)!r} (step {header.step}), the newest checkpoint that verifies", file=log, flush=True)
        return Found(candidate, header, skipped)
    if skipped:
        raise UserError(f"no checkpoint in {str(p)!r} verifies ({len(skipped)} skipped; newest: {skipped[0][1]})")
    raise UserError(f"no checkpoint in {str(p)!r} (expected {str(p / 'checkpoints')}/ckpt-*.pt)")


def prune(run_dir, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` checkpoints of the run; returns the deleted."""
    old = list_checkpoints(run_dir)[max(int(keep_last), 1):]
    for path in old:
        path.unlink(missing_ok=True)
    return old


def save(run_dir, payload: dict, *, kind: str, step: int, meta: Optional[dict] = None, keep_last: Optional[int] = None) -> Path:
    """Write ``RUN/checkpoints/ckpt-<step>.pt`` (:func:`write`) and, with ``keep_last``,
    :func:`prune` the older ones."""
    path = write(checkpoint_path(run_dir, step), payload, kind=kind, step=step, meta=meta)
    if keep_last is not None:
        prune(run_dir, keep_last)
    return path


def sweep_temporaries(run_dir) -> list[Path]:
    """Remove what killed writers left in ``run_dir`` (``.ckpt-*.tmp`` and every other
    :func:`physgen.io.atomic_write` temporary); returns the removed paths.  Call it while
    holding the run folder (no other writer can be mid-write)."""
    removed = stale_temporaries(run_dir)
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


# --------------------------------------------------------------------------- loading weights


def load_state(module: torch.nn.Module, state: Any, *, path, what: str = "weights") -> None:
    """``module.load_state_dict(state)`` (strict), with one line naming the checkpoint and the
    first tensor that is missing, unexpected, of the wrong type or of the wrong shape."""
    where = f"checkpoint {str(path)!r}"
    if not isinstance(state, dict):
        raise UserError(f"{where}: its {what} are a {type(state).__name__}, not a state dict")
    own = module.state_dict()
    for name, value in state.items():
        if name not in own:
            raise UserError(f"{where}: its {what} have a tensor {name!r} that the network does not (a different architecture?)")
        if not isinstance(value, torch.Tensor):
            raise UserError(f"{where}: its {what} entry {name!r} is a {type(value).__name__}, not a tensor")
        if tuple(value.shape) != tuple(own[name].shape):
            raise UserError(f"{where}: tensor {name!r} has shape {list(value.shape)}, the network's is {list(own[name].shape)}")
    missing = [name for name in own if name not in state]
    if missing:
        raise UserError(f"{where}: its {what} lack the tensor {missing[0]!r} of the network ({len(missing)} missing)")
    module.load_state_dict(state)

