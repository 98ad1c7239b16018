"""physgen.pretrained.convert: a snapshot or a diffusers folder written as a model folder
(safetensors + the checksummed physgen header) loads as the same process and the same field,
bit for bit, for every preconditioner and network kind; its header is a physgen checkpoint
header (kind ``model``), verified and schema-checked by physgen.checkpoints; a folder that was
tampered with, or of the earlier format, is one line naming the file."""
from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file

import edm_snapshots as W
import physgen.pretrained as P
from diffusers_folders import tiny_unet2d
from physgen import checkpoints
from physgen.errors import UserError
from physgen.pretrained.convert import EARLIER_DESCRIPTION, HEADER, WEIGHTS, save_model
from physgen.pretrained.diffusers import save_diffusers


@pytest.mark.parametrize("kind,name,classes", [("edm", "s.pkl", 0), ("pfgmpp", "s.pt", 0), ("vp", "s.pkl", 3), ("ve", "s.pt", 2)])
def test_folder_round_trips_bit_for_bit(tmp_path, kind, name, classes):
    W.tiny(tmp_path / name, kind, num_classes=classes, seed=1)
    original = P.load(tmp_path / name)
    save_model(original, tmp_path / "a")
    folder = P.load(tmp_path / "a" / HEADER)  # the header stands for its folder
    save_model(folder, tmp_path / "b")  # a folder written again from a folder
    assert folder.format == "physgen-model" and folder.process.name == kind and folder.num_classes == classes
    assert folder.process.config() == original.process.config() and folder.shape == original.shape
    assert (tmp_path / "a" / WEIGHTS).read_bytes() == (tmp_path / "b" / WEIGHTS).read_bytes()
    header = checkpoints.verify(tmp_path / "a" / HEADER)  # the one checkpoint header format, checksum checked
    assert header.kind == "model" and header.meta["num_classes"] == classes and header.meta["process"]["name"] == kind
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


def rewrite_header(folder, **changes):
    """Rewrite the folder's header with ``changes`` to its meta, through the checkpoints writer
    (a valid checksum): what the reader's own checks must then catch."""
    meta = checkpoints.read_header(folder / HEADER).meta
    checkpoints.write(folder / HEADER, {}, kind="model", step=0, meta={**meta, **changes})


def _flip_header_byte(folder):
    data = bytearray((folder / HEADER).read_bytes())
    at = data.index(b'"num_classes":0') + len(b'"num_classes":')
    data[at] = ord("7")  # still valid JSON and schema: only the checksum can tell
    (folder / HEADER).write_bytes(bytes(data))


@pytest.mark.parametrize("tamper, expect", [
    (lambda f: (f / WEIGHTS).write_bytes((f / WEIGHTS).read_bytes()[:-1] + b"\x01"), "does not match the checksum"),
    (lambda f: (f / WEIGHTS).unlink(), "no model.safetensors"),
    (_flip_header_byte, "checksum does not match"),
    (lambda f: rewrite_header(f, num_classes=-1), "meta.num_classes must be an integer"),
    (lambda f: rewrite_header(f, shape=[3, "8", 8]), "meta.shape[1] must be an integer"),
    (lambda f: rewrite_header(f, network={"class": "Evil"}), "network class must be one of"),
    (lambda f: rewrite_header(f, preconditioning={"name": "nope"}), "preconditioning is invalid"),
    (lambda f: (f / HEADER).write_bytes(b"{not a header"), "no checkpoint header"),
    (lambda f: (f / HEADER).rename(f / EARLIER_DESCRIPTION), "model.json' is a model folder of an earlier physgen"),
])
def test_a_tampered_folder_is_one_line_naming_the_file(tmp_path, tamper, expect):
    folder = _folder(tmp_path)
    tamper(folder)
    with pytest.raises(UserError) as info:
        P.load(folder)
    assert expect in str(info.value) and str(folder) in str(info.value) and "\n" not in str(info.value)


def test_a_network_that_does_not_fit_the_weights_names_the_file(tmp_path):
    folder = _folder(tmp_path)
    network = checkpoints.read_header(folder / HEADER).meta["network"]
    rewrite_header(folder, network={**network, "model_channels": 8})
    with pytest.raises(UserError, match="does not fit the network"):
        P.load(folder)


def test_models_without_a_description_are_refused_by_name(tmp_path):
    model = P.load(_folder(tmp_path))
    model.info, model.format = {}, "callable"
    with pytest.raises(UserError, match="is a callable model"):
        save_model(model, tmp_path / "x")


# --------------------------------------------------------------------------- diffusers folders (need the extra)


@pytest.mark.parametrize("prediction_type, classes, pipeline", [("epsilon", None, False), ("v_prediction", 3, True)])
def test_an_imported_diffusers_folder_is_the_folder_bit_for_bit(tmp_path, prediction_type, classes, pipeline):
    """Imported once, the model folder gives the diffusers folder's denoiser bit for bit without
    the folder (deleted before loading), and exports back to the same diffusers files."""
    pytest.importorskip("diffusers")
    tiny_unet2d(tmp_path / "src", prediction_type, "squaredcos_cap_v2", num_classes=classes, seed=4, pipeline=pipeline)
    original = P.load(tmp_path / "src")
    save_model(original, tmp_path / "m")
    save_diffusers(original, tmp_path / "d0")
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    sigma = torch.tensor([0.01, 0.4, 3.0, 80.0])
    labels = torch.eye(3)[[0, 2, 1, 1]] if classes else None
    want = original.denoise(x, sigma, labels)
    shutil.rmtree(tmp_path / "src")  # later runs never read the diffusers folder
    folder = P.load(tmp_path / "m")
    assert folder.format == "physgen-model" and folder.num_classes == (classes or 0) and folder.shape == (3, 8, 8)
    assert folder.process.config() == original.process.config() and folder.field.kind == original.field.kind
    assert torch.equal(folder.denoise(x, sigma, labels), want)
    save_diffusers(folder, tmp_path / "d1")  # export --format diffusers of the imported folder
    for name in ("config.json", "diffusion_pytorch_model.safetensors", "scheduler_config.json"):
        assert (tmp_path / "d0" / name).read_bytes() == (tmp_path / "d1" / name).read_bytes(), name
    save_model(P.load(tmp_path / "d1"), tmp_path / "m2")  # and imported again: the same weights and header
    assert (tmp_path / "m" / WEIGHTS).read_bytes() == (tmp_path / "m2" / WEIGHTS).read_bytes()
    a, b = (checkpoints.verify(tmp_path / d / HEADER).meta for d in ("m", "m2"))
    assert {k: v for k, v in a.items() if k != "source"} == {k: v for k, v in b.items() if k != "source"}


def test_a_tampered_diffusers_header_is_one_line(tmp_path):
    pytest.importorskip("diffusers")
    tiny_unet2d(tmp_path / "src", width=8)
    save_model(P.load(tmp_path / "src"), tmp_path / "m")
    pre = checkpoints.read_header(tmp_path / "m" / HEADER).meta["preconditioning"]
    for changes, expect in ((dict(preconditioning={**pre, "prediction_type": "noise"}), "prediction_type 'noise'"),
                            (dict(preconditioning={"name": "edm"}), "needs preconditioning 'diffusers'"),
                            (dict(preconditioning=pre, network={"class": "UNet2DModel"}), "records no config")):
        rewrite_header(tmp_path / "m", **changes)
        with pytest.raises(UserError) as info:
            P.load(tmp_path / "m")
        assert expect in str(info.value) and HEADER in str(info.value) and "\n" not in str(info.value)
