"""``physgen import SNAPSHOT --out RUN``: the run samples exactly as the snapshot does (same
PNG), its weights are the snapshot's bit for bit, and every bad input is one line, exit 2,
with nothing written (a crafted payload never runs).  The same for a diffusers folder (needs
the extra), whose imported run also exports back to the same diffusers files."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import crafted_files as C
import edm_snapshots as W
from diffusers_folders import tiny_unet2d
import physgen.pretrained as P
from one_line import one_line
from physgen.cli.main import main


@pytest.mark.parametrize("kind,name", [("edm", "snap.pkl"), ("pfgmpp", "snap.pt")])
def test_an_imported_run_samples_like_the_snapshot(tmp_path, kind, name):
    W.tiny(tmp_path / name, kind, num_classes=0, seed=2)
    run = tmp_path / "run"
    assert main(["import", str(tmp_path / name), "--out", str(run)]) == 0
    weights = load_file(str(run / "model.safetensors"))
    original = P.load(tmp_path / name).field.net.state_dict()
    assert weights.keys() == original.keys() and all(torch.equal(weights[k], original[k]) for k in original)
    grids = []
    for i, ckpt in enumerate((tmp_path / name, run)):
        out = tmp_path / f"g{i}" / "grid.png"
        assert main(["sample", "--ckpt", str(ckpt), "--solver", "dpmpp-3m", "--steps", "6", "--n", "8", "--out", str(out)]) == 0
        grids.append(np.asarray(Image.open(out)))
    assert np.array_equal(grids[0], grids[1]) and grids[0].std() > 0


def test_import_refusals_are_one_line_and_write_nothing(tmp_path, capsys):
    W.tiny(tmp_path / "snap.pkl", "vp")
    assert main(["import", str(tmp_path / "snap.pkl"), "--out", str(tmp_path / "run")]) == 0
    one_line(capsys, ["import", str(tmp_path / "snap.pkl"), "--out", str(tmp_path / "run")], "--overwrite")
    assert main(["import", str(tmp_path / "snap.pkl"), "--out", str(tmp_path / "run"), "--overwrite"]) == 0
    one_line(capsys, ["import", str(tmp_path / "missing.pkl"), "--out", str(tmp_path / "r2")], "missing.pkl", "does not exist")
    (tmp_path / "text.pkl").write_text("not a pickle")
    one_line(capsys, ["import", str(tmp_path / "text.pkl"), "--out", str(tmp_path / "r3")], "text.pkl")
    assert not (tmp_path / "r2").exists() and not (tmp_path / "r3").exists()


@pytest.mark.parametrize("payload", sorted(C.SNAPSHOT_PAYLOADS))
def test_a_crafted_snapshot_never_runs_and_names_its_global(tmp_path, capsys, payload):
    marker = tmp_path / "ran"
    make, global_name = C.SNAPSHOT_PAYLOADS[payload]
    path = make(tmp_path / ("x.pt" if "zip" in payload else "x.pkl"), marker)
    one_line(capsys, ["import", str(path), "--out", str(tmp_path / "run")], global_name)
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_an_imported_diffusers_folder_samples_and_exports_like_the_folder(tmp_path):
    """``import`` of a diffusers folder: ``sample --ckpt RUN`` writes the folder's own grid, and
    ``export RUN --format diffusers`` writes the files ``export FOLDER --format diffusers`` writes."""
    pytest.importorskip("diffusers")
    tiny_unet2d(tmp_path / "src", "v_prediction", width=8, seed=6)
    assert main(["import", str(tmp_path / "src"), "--out", str(tmp_path / "run")]) == 0
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if not p.name.startswith(".")) == ["model.header", "model.safetensors"]
    grids = []
    for i, ckpt in enumerate((tmp_path / "src", tmp_path / "run")):
        out = tmp_path / f"g{i}" / "grid.png"
        assert main(["sample", "--ckpt", str(ckpt), "--solver", "dpmpp-2m", "--steps", "3", "--n", "4", "--out", str(out)]) == 0
        grids.append(np.asarray(Image.open(out)))
        assert main(["export", str(ckpt), "--format", "diffusers", "--out", str(tmp_path / f"d{i}")]) == 0
    assert np.array_equal(grids[0], grids[1]) and grids[0].std() > 0
    for name in ("config.json", "diffusion_pytorch_model.safetensors", "scheduler_config.json"):
        assert (tmp_path / "d0" / name).read_bytes() == (tmp_path / "d1" / name).read_bytes(), name


def _scheduler(folder, **changes):
    cfg = json.loads((folder / "scheduler_config.json").read_text())
    (folder / "scheduler_config.json").write_text(json.dumps({**cfg, **changes}))


def _other_weights(folder):
    """The weights of a wider network under this folder's config: every tensor the wrong shape."""
    tiny_unet2d(folder.parent / "wide", width=16)
    shutil.copy(folder.parent / "wide" / "diffusion_pytorch_model.safetensors", folder / "diffusion_pytorch_model.safetensors")


@pytest.mark.parametrize("damage, needles", [
    (lambda f: (f / "config.json").unlink(), ("src", "no config.json")),
    (lambda f: (f / "scheduler_config.json").unlink(), ("src", "no scheduler_config.json")),
    (lambda f: _scheduler(f, prediction_type="noise"), ("scheduler_config.json", "'noise'")),
    (lambda f: _scheduler(f, beta_schedule="sigmoid"), ("scheduler_config.json", "'sigmoid'")),
    (_other_weights, ("diffusion_pytorch_model.safetensors", "has shape")),
])
def test_a_bad_diffusers_folder_is_refused_in_one_line(tmp_path, capsys, damage, needles):
    pytest.importorskip("diffusers")
    tiny_unet2d(tmp_path / "src", width=8)
    damage(tmp_path / "src")
    one_line(capsys, ["import", str(tmp_path / "src"), "--out", str(tmp_path / "run")], *needles)
    assert not (tmp_path / "run").exists()
