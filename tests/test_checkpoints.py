"""physgen.checkpoints: the one verified checkpoint format, its finder, and strict weight loading."""
from __future__ import annotations

import io
import math
import hashlib
import json
import os
import struct

import pytest
import torch
from hypothesis import given, settings, strategies as st

from physgen import checkpoints
from physgen.errors import UserError


def _payload(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"model": {"w": torch.randn(7, 3, generator=g), "b": torch.zeros(3)}, "step": 5, "losses": [0.5, 0.25],
            "generator": g.get_state(), "config": {"lr": 1e-3, "name": "x", "opt": None}}


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def test_round_trip_keeps_payload_and_describes_itself(tmp_path):
    path = checkpoints.write(tmp_path / "c.pt", _payload(), kind="train", step=5, meta={"process": {"name": "pfgmpp", "D": math.inf}})
    header = checkpoints.read_header(path)
    assert (header.kind, header.step, header.legacy) == ("train", 5, False)
    assert header.meta == {"process": {"name": "pfgmpp", "D": "inf"}}  # the inf codec: JSON has no infinity
    assert header.checksum.startswith("sha256:") and len(header.checksum) == 7 + 64
    back = checkpoints.read(path, kind="train")
    assert _same(back.payload, _payload())
    with pytest.raises(UserError, match="not a noise-conditional classifier"):
        checkpoints.read(path, kind="classifier")


def _flip(data: bytes, bit: int) -> bytes:
    b = bytearray(data)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_flipped_bit_is_one_clear_error_naming_the_file_or_changes_nothing(tmp_path_factory, data):
    """A flipped bit anywhere (magic, length, header, payload) is a UserError naming the file;
    the only flips that pass are those that leave what is read identical (e.g. ``e`` -> ``E``
    in a JSON number)."""
    d = tmp_path_factory.mktemp("flip")
    path = checkpoints.write(d / "c.pt", _payload(1), kind="toy-mlp", step=3, meta={"toy": {"seed": 1, "big": 1e20}})
    raw = path.read_bytes()
    bit = data.draw(st.integers(0, len(raw) * 8 - 1))
    path.write_bytes(_flip(raw, bit))
    try:
        back = checkpoints.read(path)
    except UserError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
        return
    assert back.kind == "toy-mlp" and back.step == 3 and back.meta == {"toy": {"seed": 1, "big": 1e20}}
    assert _same(back.payload, _payload(1))


@settings(max_examples=30, deadline=None)
@given(cut=st.floats(0.0, 0.999))
def test_a_truncated_file_never_loads(tmp_path_factory, cut):
    d = tmp_path_factory.mktemp("cut")
    path = checkpoints.write(d / "c.pt", _payload(), kind="train", step=1)
    raw = path.read_bytes()
    path.write_bytes(raw[: int(cut * len(raw))])
    with pytest.raises(UserError, match="c.pt"):
        checkpoints.read(path)


def test_find_skips_newer_damaged_checkpoints_and_says_why(tmp_path, capsys):
    for step in (2, 4, 6):
        checkpoints.save(tmp_path, _payload(step), kind="train", step=step, keep_last=5)
    newest = checkpoints.checkpoint_path(tmp_path, 6)
    newest.write_bytes(_flip(newest.read_bytes(), 8 * (len(newest.read_bytes()) - 10)))
    found = checkpoints.find(tmp_path)
    assert found.path == checkpoints.checkpoint_path(tmp_path, 4) and found.header.step == 4
    assert [p for p, _ in found.skipped] == [newest] and "checksum" in found.skipped[0][1]
    err = capsys.readouterr().err
    assert "skipped" in err and "ckpt-00000006.pt" in err and "ckpt-00000004.pt" in err
    # a file named explicitly is never replaced by another
    with pytest.raises(UserError, match="corrupt"):
        checkpoints.find(newest)
    for step in (2, 4):
        checkpoints.checkpoint_path(tmp_path, step).write_bytes(b"PHYSGEN-CKPT\n" + b"\xff" * 8)
    with pytest.raises(UserError, match="no checkpoint in .* verifies"):
        checkpoints.find(tmp_path, log=None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no checkpoint in"):
        checkpoints.find(tmp_path / "empty")


def test_steps_order_numerically_and_keep_last_prunes(tmp_path):
    for step in (9, 10, 100000000, 99999999):  # 9 digits sorts after 8 by number, not by name
        checkpoints.save(tmp_path, _payload(), kind="train", step=step, keep_last=3)
    names = [p.name for p in checkpoints.list_checkpoints(tmp_path)]
    assert names == ["ckpt-100000000.pt", "ckpt-99999999.pt", "ckpt-00000010.pt"]


def test_legacy_plain_torch_files_load_with_a_note(tmp_path, capsys):
    path = tmp_path / "old.pt"
    torch.save({"format": "physgen-train/2", "step": 7, "model": {"w": torch.ones(2)}, "optimizer": {}, "process": {"name": "edm"}}, path)
    header = checkpoints.verify(path)
    assert header.legacy and header.kind == "train" and header.step == 7 and header.meta["process"] == {"name": "edm"}
    ckpt = checkpoints.read(path)
    assert torch.equal(ckpt.payload["model"]["w"], torch.ones(2))
    assert "no checksum: legacy format" in capsys.readouterr().err


class _Payload:
    """Unpickling this creates ``marker``: a file that would run code when loaded."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _new_format_with(path, obj) -> None:
    """A checkpoint of the new format whose payload is ``obj`` pickled by torch, with a valid
    checksum (an attacker can compute it): verification passes, loading must not run it."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    checkpoints.write(path, {}, kind="train", step=1)
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[13:21])
    head = raw[21:21 + n]
    h = json.loads(head)
    h.pop("checksum")
    digest = hashlib.sha256(json.dumps(h, sort_keys=True, separators=(",", ":")).encode() + buf.getvalue()).hexdigest()
    head = head.replace(head[head.index(b"sha256:") + 7: head.index(b"sha256:") + 71], digest.encode())
    path.write_bytes(raw[:21] + head + buf.getvalue())


@pytest.mark.parametrize("form", ["legacy", "new"])
def test_a_pickle_payload_never_runs(tmp_path, form):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    evil = {"model": _Payload(marker), "step": 1}
    if form == "legacy":
        torch.save(evil, path)
    else:
        _new_format_with(path, evil)
        checkpoints.verify(path)  # the checksum is right: only the loader stands in the way
    with pytest.raises(UserError, match="evil.pt"):
        checkpoints.read(path)
    assert not marker.exists()


def test_load_state_names_the_checkpoint_and_the_first_bad_tensor():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    good = {k: v.clone() for k, v in net.state_dict().items()}
    checkpoints.load_state(net, good, path="c.pt")
    wrong_shape = {**good, "1.weight": torch.zeros(5, 4)}
    with pytest.raises(UserError, match=r"'c.pt'.*'1.weight' has shape \[5, 4\], the network's is \[2, 4\]"):
        checkpoints.load_state(net, wrong_shape, path="c.pt")
    with pytest.raises(UserError, match="'0.bias' is a str"):
        checkpoints.load_state(net, {**good, "0.bias": "x"}, path="c.pt")
    with pytest.raises(UserError, match="lack the tensor '1.bias'"):
        checkpoints.load_state(net, {k: v for k, v in good.items() if k != "1.bias"}, path="c.pt")
    with pytest.raises(UserError, match="'extra'"):
        checkpoints.load_state(net, {**good, "extra": torch.zeros(1)}, path="c.pt")
    with pytest.raises(UserError, match="not a state dict"):
        checkpoints.load_state(net, [1, 2], path="c.pt")


def test_sweep_removes_killed_writers_temporaries_only(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    stale = [tmp_path / "checkpoints" / ".ckpt-00000004.pt.ab12cd_9.tmp", tmp_path / ".config.json.x1y2z3w4.tmp"]
    keep = [tmp_path / "notes.tmp", tmp_path / ".hidden", tmp_path / "checkpoints" / "ckpt-00000004.pt"]
    for p in stale + keep:
        p.write_bytes(b"x")
    assert sorted(checkpoints.sweep_temporaries(tmp_path)) == sorted(stale)
    assert all(p.exists() for p in keep) and not any(p.exists() for p in stale)


def test_checkpoint_files_honour_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        path = checkpoints.write(tmp_path / "c.pt", {}, kind="classifier", step=0)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o640
