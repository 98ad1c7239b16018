"""``physgen export MODEL --format safetensors --out DIR``: import then export gives the same
weights file byte for byte and the same field; the default format is safetensors; a wrong
format, --out onto the model itself, an existing --out or a missing model is one line, exit 2."""
from __future__ import annotations

import json

import pytest
import torch

import edm_snapshots as W
import physgen.pretrained as P
from one_line import one_line
from physgen.cli.main import main


@pytest.mark.parametrize("flags", [[], ["--format", "safetensors"]])
def test_import_export_round_trip_is_bit_for_bit(tmp_path, flags):
    W.tiny(tmp_path / "snap.pt", "pfgmpp", num_classes=2, seed=3)
    assert main(["import", str(tmp_path / "snap.pt"), "--out", str(tmp_path / "run")]) == 0
    assert main(["export", str(tmp_path / "run"), *flags, "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == (tmp_path / "out" / "model.safetensors").read_bytes()
    a, b = (json.loads((tmp_path / d / "model.json").read_text()) for d in ("run", "out"))
    assert a == b and a["process"]["name"] == "pfgmpp" and a["process"]["D"] == 128
    run, out = P.load(tmp_path / "run"), P.load(tmp_path / "out")
    x, sigma = torch.randn(3, *run.shape), torch.tensor([0.05, 1.0, 20.0])
    labels = torch.eye(2)[[0, 1, 1]]
    assert torch.equal(run.denoise(x, sigma, labels), out.denoise(x, sigma, labels))


def test_export_refusals_areone_line(tmp_path, capsys):
    W.tiny(tmp_path / "snap.pkl", "edm")
    assert main(["import", str(tmp_path / "snap.pkl"), "--out", str(tmp_path / "run")]) == 0
    run = str(tmp_path / "run")
    one_line(capsys, ["export", run, "--format", "diffusers", "--out", str(tmp_path / "d")], "'diffusers'", "safetensors")
    one_line(capsys, ["export", run, "--format", "onnx", "--out", str(tmp_path / "d")], "'onnx'")
    one_line(capsys, ["export", run, "--out", run], "is the model itself")
    assert main(["export", run, "--out", str(tmp_path / "e")]) == 0
    one_line(capsys, ["export", run, "--out", str(tmp_path / "e")], "--overwrite")
    one_line(capsys, ["export", str(tmp_path / "nope"), "--out", str(tmp_path / "f")], "nope")
    assert not (tmp_path / "d").exists() and not (tmp_path / "f").exists()
