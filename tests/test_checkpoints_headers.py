"""A checkpoint's header is input like any file a user passes (issue 19): its schema is checked
on read (types, sizes, no NaN), a header that describes more weights than its file can hold is
refused before the network is allocated, every refusal is one line naming the file, and a run
folder falls back past a newest checkpoint whose header fails, as it does past a corrupt one."""
from __future__ import annotations

import hashlib
import json
import math
import shutil
import struct

import pytest
import torch
from hypothesis import given, settings, strategies as st

from physgen import checkpoints
from physgen.cli.main import main
from physgen.errors import UserError
from physgen.nets.mlp import MLP, mlp_weight_floor
from physgen.nets.unet import build_unet, unet_weight_floor

MAGIC = checkpoints.MAGIC


def rehead(path, mutate) -> None:
    """Rewrite ``path``'s header with ``mutate`` applied and a recomputed checksum (anyone can)."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[len(MAGIC): len(MAGIC) + 8])
    header, payload = json.loads(raw[len(MAGIC) + 8: len(MAGIC) + 8 + n]), raw[len(MAGIC) + 8 + n:]
    header.pop("checksum")
    mutate(header)
    canon = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()  # NaN stays NaN
    header["checksum"] = "sha256:" + hashlib.sha256(canon + payload).hexdigest()
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    path.write_bytes(MAGIC + struct.pack("<Q", len(text)) + text + payload)


def _set(header: dict, path: tuple, value) -> None:
    node = header
    for key in path[:-1]:
        node = node.setdefault(key, {}) if not isinstance(node, list) else node[key]
    node[path[-1]] = value


FULL_META = {"world_size": 1, "process": {"name": "edm"},
             "image": {"config": {}, "dataset": {}, "unet": {"arch": "tiny", "overrides": {}, "img_resolution": 8, "channels": 1,
                                                             "num_classes": 0}, "shape": [1, 8, 8]},
             "toy": {"net": {"dim": 2, "hidden": 8, "depth": 1, "embed_dim": 64, "num_classes": 0, "out_dim": 2}, "dataset": "moons",
                     "n_data": 10, "seed": 0},
             "arch": {"type": "mlp"}}
PATHS = [p for p in checkpoints.HEADER_SCHEMA if "*" not in p] + [("meta", "image", "shape", 1)]
VALUES = st.one_of(st.integers(-3, 5), st.integers(10**4, 10**20), st.floats(allow_nan=True, allow_infinity=False), st.booleans(),
                   st.none(), st.text(max_size=3), st.lists(st.integers(1, 3), max_size=2), st.dictionaries(st.sampled_from("ab"), st.integers(), max_size=1))


def _obeys(value, rule) -> bool:
    kind = rule[0]
    if kind is int:
        return type(value) is int and rule[1] <= value <= rule[2]
    return isinstance(value, kind)


@settings(max_examples=150, deadline=None)
@given(path=st.sampled_from(PATHS), value=VALUES)
def test_a_header_field_is_read_only_if_it_obeys_the_schema(tmp_path_factory, path, value):
    """Any value in any field of the schema: the header reads iff the value obeys its rule
    (a NaN never does); otherwise one UserError naming the file and the field."""
    d = tmp_path_factory.mktemp("h")
    ckpt = checkpoints.write(d / "c.pt", {"w": torch.zeros(2)}, kind="train", step=1, meta=FULL_META)
    rehead(ckpt, lambda h: _set(h, path, value))
    rule = checkpoints.HEADER_SCHEMA[path[:3] + ("*",)] if path[-1] == 1 and path[:3] == ("meta", "image", "shape") else checkpoints.HEADER_SCHEMA[path]
    nan = isinstance(value, float) and math.isnan(value)
    if _obeys(value, rule) and not nan:
        checkpoints.read_header(ckpt)
        return
    with pytest.raises(UserError) as err:
        checkpoints.read_header(ckpt)
    message = str(err.value)
    assert "c.pt" in message and len(message.splitlines()) == 1
    assert "NaN" in message if nan else ".".join(str(p) for p in path[:-1] if not isinstance(p, int)) in message.replace("[", ".")


@settings(max_examples=30, deadline=None)
@given(arch=st.sampled_from(["tiny", "small"]), mc=st.sampled_from([8, 16, 32]), blocks=st.integers(1, 2),
       mult=st.lists(st.integers(1, 3), min_size=1, max_size=2), classes=st.integers(0, 11), channels=st.integers(1, 3))
def test_unet_weight_floor_is_a_lower_bound(arch, mc, blocks, mult, classes, channels):
    """The floor never exceeds the real U-Net's weights (no real checkpoint is refused), and is
    within a small factor of them (it catches a header that claims a far larger network)."""
    side = 2 ** len(mult) * 2
    kw = dict(model_channels=mc, num_blocks=blocks, channel_mult=mult, attn_resolutions=[])
    n = sum(p.numel() for p in build_unet(arch, side, channels, num_classes=classes, **kw).parameters())
    floor = unet_weight_floor(arch, channels, classes, **kw)
    assert floor <= n < 6 * floor


@settings(max_examples=40, deadline=None)
@given(dim=st.integers(1, 5), hidden=st.integers(1, 40), depth=st.integers(1, 4), embed=st.sampled_from([2, 16, 64]),
       classes=st.integers(0, 5), out=st.one_of(st.none(), st.integers(1, 6)))
def test_mlp_weight_floor_is_a_lower_bound(dim, hidden, depth, embed, classes, out):
    n = sum(p.numel() for p in MLP(dim, hidden=hidden, depth=depth, embed_dim=embed, num_classes=classes, out_dim=out).parameters())
    floor = mlp_weight_floor(dim, hidden, depth, embed, classes, out)
    assert floor <= n < 2 * floor


def test_find_falls_back_past_a_header_the_reader_refuses(tmp_path, capsys):
    run = tmp_path / "run"
    for step in (1, 2):
        checkpoints.save(run, {"w": torch.zeros(2)}, kind="train", step=step, meta=FULL_META)
    rehead(checkpoints.checkpoint_path(run, 2), lambda h: _set(h, ("meta", "image"), "x"))
    found = checkpoints.find(run, kind="train")
    assert found.header.step == 1 and "meta.image must be an object" in found.skipped[0][1]

    def refuse_step_3(header):
        if header.step == 3:
            raise UserError(f"checkpoint {str(header.path)!r}: its spec cannot be built")

    checkpoints.save(run, {"w": torch.zeros(2)}, kind="train", step=3, meta=FULL_META)
    found = checkpoints.find(run, kind="train", check=refuse_step_3)
    assert found.header.step == 1 and [s[1].split(": ")[-1] for s in found.skipped][0] == "its spec cannot be built"
    with pytest.raises(UserError, match="ckpt-00000003.pt.*cannot be built"):  # a file is never replaced by another
        checkpoints.find(checkpoints.checkpoint_path(run, 3), kind="train", check=refuse_step_3)


TRAIN = ["train", "--process", "edm", "--dataset", "digits", "--resolution", "8", "--arch", "tiny", "--batch", "8", "--warmup-steps", "0",
         "--log-every", "1", "--sample-n", "2", "--sample-steps", "2", "--precision", "fp32", "--device", "cpu"]
DAMAGE = {  # what a hostile header can claim, and the words of its refusal
    "huge model_channels": ((("meta", "image", "unet", "overrides"), {"model_channels": 10**9}), "at least"),
    "huge class table": ((("meta", "image", "unet", "num_classes"), 10**7), "at least"),
    "shape not the network's": ((("meta", "image", "shape"), [1, 16, 16]), "shape"),
    "meta a list": ((("meta",), [1]), "meta must be an object"),
    "unknown process": ((("meta", "process", "name"), "nope"), "unknown process 'nope'"),
}


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("img")
    assert main([*TRAIN, "--steps", "2", "--checkpoint-every", "1", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_image_headers_through_sample_and_the_run_folder_fallback(damage, image_run, tmp_path, capsys):
    (path, value), words = DAMAGE[damage]
    run = tmp_path / "run"
    shutil.copytree(image_run, run)
    newest = checkpoints.checkpoint_path(run, 2)
    rehead(newest, lambda h: _set(h, path, value))
    capsys.readouterr()
    assert main(["sample", "--ckpt", str(newest), "--n", "2", "--steps", "2", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "ckpt-00000002.pt" in err and words in err, err
    assert main(["sample", "--ckpt", str(run), "--n", "2", "--steps", "2", "--out", str(tmp_path / "b")]) == 0  # the older one
    err = capsys.readouterr().err
    assert "skipped" in err and "ckpt-00000001.pt" in err, err
    assert json.loads((tmp_path / "b" / "sampling.json").read_text())["step"] == 1
