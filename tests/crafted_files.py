"""Files that would run code when loaded naively (pickles whose unpickling creates a marker
file), one per kind of file physgen reads, for the safe-loading tests and the CLI audit
(``benchmarks/audit_cli.py``)."""
from __future__ import annotations

import hashlib
import io
import json
import struct
import zipfile
from pathlib import Path

import numpy as np
import torch

__all__ = ["Payload", "torch_pickle", "new_format_checkpoint", "npy_pickle", "npz_pickle", "pt2_pickle", "CRAFTED"]


class Payload:
    """Unpickling this calls ``open(marker, "w")``: the marker file appears iff the payload ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def torch_pickle(path: Path, marker: Path) -> Path:
    """A plain ``torch.save`` zip (the legacy checkpoint format) holding the payload."""
    torch.save({"format": "physgen-train/2", "model": Payload(marker), "step": 1, "state_dict": Payload(marker)}, path)
    return path


def new_format_checkpoint(path: Path, marker: Path, kind: str = "train") -> Path:
    """A physgen checkpoint whose header and checksum are right (anyone can compute them) and
    whose payload is the pickle: verification passes, only the loader stands in the way."""
    from physgen import checkpoints

    buf = io.BytesIO()
    torch.save({"model": Payload(marker), "step": 1}, buf)
    header = {"format": checkpoints.FORMAT, "version": checkpoints.VERSION, "kind": kind, "step": 1, "torch": torch.__version__,
              "meta": {"process": {"name": "edm"}, "image": {"unet": {}, "shape": [1, 8, 8], "config": {}}}}
    canon = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    header["checksum"] = "sha256:" + hashlib.sha256(canon + buf.getvalue()).hexdigest()
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    path.write_bytes(checkpoints.MAGIC + struct.pack("<Q", len(text)) + text + buf.getvalue())
    return path


def npy_pickle(path: Path, marker: Path) -> Path:
    np.save(path, np.array([Payload(marker), Payload(marker)], dtype=object), allow_pickle=True)
    return path


def npz_pickle(path: Path, marker: Path) -> Path:
    arr = np.array([Payload(marker)], dtype=object)
    np.savez(path, images=arr, labels=arr, x=arr, y=arr, mu=arr, sigma=arr, features=arr)
    return path


def pt2_pickle(path: Path, marker: Path) -> Path:
    """A real ``torch.export`` archive whose ``sample_inputs`` entry is the pickle:
    ``torch.export.load`` tries ``weights_only=True`` on it, fails, and falls back to full
    unpickling (torch 2.13), which runs the payload."""

    class Double(torch.nn.Module):
        def forward(self, x):
            return 2 * x

    torch.export.save(torch.export.export(Double(), (torch.zeros(2),)), str(path))
    buf = io.BytesIO()
    torch.save((Payload(marker),), buf)
    entries = []
    with zipfile.ZipFile(path) as src:
        for info in src.infolist():
            entries.append((info, buf.getvalue() if info.filename.endswith("sample_inputs/model.pt") else src.read(info.filename)))
    with zipfile.ZipFile(path, "w") as out:
        for info, data in entries:
            out.writestr(info, data)
    return path


CRAFTED = {"torch": torch_pickle, "checkpoint": new_format_checkpoint, "npy": npy_pickle, "npz": npz_pickle, "pt2": pt2_pickle}
