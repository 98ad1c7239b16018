"""``physgen import SNAPSHOT --out RUN``: the run samples exactly as the snapshot does (same
PNG), its weights are the snapshot's bit for bit, and every bad input is one line, exit 2,
with nothing written (a crafted payload never runs)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import crafted_files as C
import edm_snapshots as W
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
