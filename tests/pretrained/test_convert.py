"""physgen.pretrained.convert: a snapshot written as a model folder (safetensors + model.json)
loads as the same process and the same field, bit for bit, for every preconditioner and
network kind; a folder that was tampered with is one line naming the file."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import edm_snapshots as W
import physgen.pretrained as P
from physgen.errors import UserError
from physgen.pretrained.convert import DESCRIPTION, WEIGHTS, save_model


@pytest.mark.parametrize("kind,name,classes", [("edm", "s.pkl", 0), ("pfgmpp", "s.pt", 0), ("vp", "s.pkl", 3), ("ve", "s.pt", 2)])
def test_folder_round_trips_bit_for_bit(tmp_path, kind, name, classes):
    W.tiny(tmp_path / name, kind, num_classes=classes, seed=1)
    original = P.load(tmp_path / name)
    save_model(original, tmp_path / "a")
    folder = P.load(tmp_path / "a")
    save_model(folder, tmp_path / "b")  # a folder written again from a folder
    assert folder.format == "physgen-model" and folder.process.name == kind and folder.num_classes == classes
    assert folder.process.config() == original.process.config() and folder.shape == original.shape
    assert (tmp_path / "a" / WEIGHTS).read_bytes() == (tmp_path / "b" / WEIGHTS).read_bytes()
    stored = load_file(str(tmp_path / "a" / WEIGHTS))
    want = original.field.net.state_dict()
    assert stored.keys() == want.keys() and all(torch.equal(stored[k], want[k]) for k in want)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, *original.shape, generator=gen)
    sigma = torch.tensor([0.01, 0.3, 2.0, 40.0])
    labels = torch.nn.functional.one_hot(torch.arange(4) % classes, classes).float() if classes else None
    assert torch.equal(folder.denoise(x, sigma, labels), original.denoise(x, sigma, labels))


def _folder(tmp_path):
    W.tiny(tmp_path / "s.pkl", "edm")
    save_model(P.load(tmp_path / "s.pkl"), tmp_path / "m")
    return tmp_path / "m"


def _edit_description(folder, **changes):
    desc = json.loads((folder / DESCRIPTION).read_text())
    desc.update(changes)
    (folder / DESCRIPTION).write_text(json.dumps(desc))


@pytest.mark.parametrize("tamper, expect", [
    (lambda f: (f / WEIGHTS).write_bytes((f / WEIGHTS).read_bytes()[:-1] + b"\x01"), "does not match the checksum"),
    (lambda f: (f / WEIGHTS).unlink(), "no model.safetensors"),
    (lambda f: _edit_description(f, format="other"), "not a physgen model description"),
    (lambda f: _edit_description(f, network={"class": "Evil"}), "network class must be one of"),
    (lambda f: _edit_description(f, preconditioning={"name": "nope"}), "preconditioning is invalid"),
    (lambda f: (f / DESCRIPTION).write_text("{not json"), DESCRIPTION),
])
def test_a_tampered_folder_is_one_line(tmp_path, tamper, expect):
    folder = _folder(tmp_path)
    tamper(folder)
    with pytest.raises(UserError, match=expect) as info:
        P.load(folder)
    assert "\n" not in str(info.value)


def test_a_network_that_does_not_fit_the_weights_names_the_file(tmp_path):
    folder = _folder(tmp_path)
    desc = json.loads((folder / DESCRIPTION).read_text())
    _edit_description(folder, network={**desc["network"], "model_channels": 8})
    with pytest.raises(UserError, match="does not fit the network"):
        P.load(folder)


def test_physgen_and_diffusers_models_are_refused_by_name(tmp_path):
    model = P.load(_folder(tmp_path))
    model.info, model.format = {}, "diffusers"
    with pytest.raises(UserError, match="is a diffusers model"):
        save_model(model, tmp_path / "x")
