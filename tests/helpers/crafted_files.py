"""Files that would run code when loaded naively (pickles whose unpickling creates a marker
file), one per kind of file physgen reads, for the safe-loading tests and the CLI audit
(``benchmarks/audit_cli.py``); :data:`SNAPSHOT_PAYLOADS` are EDM-style network snapshots
(``physgen.pretrained.load``), each with the global a naive load would call."""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import struct
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import torch

__all__ = ["Payload", "torch_pickle", "new_format_checkpoint", "npy_pickle", "npz_pickle", "pt2_pickle", "CRAFTED", "SNAPSHOT_PAYLOADS"]


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


class Call:
    """Unpickling this calls ``fn(*args)`` (a REDUCE of ``fn``'s global)."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


def _snapshot(path: Path, ema, zipped: bool = False) -> Path:
    data = {"ema": ema, "loss_fn": None, "augment_pipe": None, "dataset_kwargs": {}}
    if zipped:
        torch.save(data, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(data, f)
    return path


def snapshot_os_system(path: Path, marker: Path) -> Path:
    return _snapshot(path, Call(os.system, f"touch {marker}"))


def snapshot_eval(path: Path, marker: Path) -> Path:
    return _snapshot(path, Call(eval, f"open({str(marker)!r}, 'w')"))


def snapshot_exec(path: Path, marker: Path) -> Path:
    return _snapshot(path, Call(exec, f"open({str(marker)!r}, 'w').close()"))


def snapshot_subprocess(path: Path, marker: Path) -> Path:
    return _snapshot(path, Call(subprocess.call, ["touch", str(marker)]))


def snapshot_zip_os_system(path: Path, marker: Path) -> Path:
    """PFGM++'s ``.pt`` form (a ``torch.save`` zip) with the payload."""
    return _snapshot(path, Call(os.system, f"touch {marker}"), zipped=True)


def snapshot_nested(path: Path, marker: Path) -> Path:
    """The payload inside the legacy ``torch.save`` a plain pickle nests for a storage
    (``torch.storage._load_from_bytes(bytes)``): a pickle inside the pickle."""
    inner = io.BytesIO()
    torch.save(Call(os.system, f"touch {marker}"), inner, _use_new_zipfile_serialization=False)
    return _snapshot(path, Call(torch.storage._load_from_bytes, inner.getvalue()))


def snapshot_in_record_state(path: Path, marker: Path) -> Path:
    """A well-formed persistence record whose state holds the payload (a REDUCE inside the record)."""
    import edm_snapshots as W

    rec = W.Record("EDMPrecond", {"img_resolution": Call(os.system, f"touch {marker}")}, {}, {}, {}, {})
    with W.persistence_module():
        return _snapshot(path, rec)


def snapshot_module_src(path: Path, marker: Path) -> Path:
    """A valid EDM network snapshot whose embedded module source (which EDM's own loader
    executes) creates the marker: physgen loads it without running the source."""
    import edm_snapshots as W
    from physgen.nets.unet import build_unet

    net = build_unet("tiny", 8, 3)
    src = f"open({str(marker)!r}, 'w').close()\n" + W.OWN_SOURCE
    rec = W.precond(W.song_unet(net, torch.float32), "EDMPrecond", 8, 3, 0, source=src, sigma_min=0.002, sigma_max=80.0, sigma_data=0.5)
    W.write(path, rec)
    return path


SNAPSHOT_PAYLOADS = {
    "os.system": (snapshot_os_system, f"{os.system.__module__}.system"),
    "builtins.eval": (snapshot_eval, "builtins.eval"),
    "builtins.exec": (snapshot_exec, "builtins.exec"),
    "subprocess.call": (snapshot_subprocess, "subprocess.call"),
    "os.system in a .pt zip": (snapshot_zip_os_system, f"{os.system.__module__}.system"),
    "os.system in a nested storage pickle": (snapshot_nested, f"{os.system.__module__}.system"),
    "os.system in a record's state": (snapshot_in_record_state, f"{os.system.__module__}.system"),
}
"""name -> (maker(path, marker), the global its payload asks for, which the refusal names)."""

CRAFTED = {"torch": torch_pickle, "checkpoint": new_format_checkpoint, "npy": npy_pickle, "npz": npz_pickle, "pt2": pt2_pickle}
