"""``physgen export MODEL --format safetensors --out DIR``: import then export gives the same
weights file byte for byte and the same field; the default format is safetensors; a wrong
format, --out onto the model itself, an existing --out or a missing model is one line, exit 2.
A physgen training run exports its EMA field bit for bit; a diffusers folder exports to a diffusers
folder that diffusers itself reads to the same network (slow, needs the extra); every other model
is refused --format diffusers in one line (EDM's layouts have no UNet2DModel counterpart)."""
from __future__ import annotations

import pytest
import torch

import edm_snapshots as W
from diffusers_folders import tiny_unet2d
import physgen.pretrained as P
from one_line import one_line
from physgen import checkpoints
from physgen.cli.main import main


@pytest.mark.parametrize("flags", [[], ["--format", "safetensors"]])
def test_import_export_round_trip_is_bit_for_bit(tmp_path, flags):
    W.tiny(tmp_path / "snap.pt", "pfgmpp", num_classes=2, seed=3)
    assert main(["import", str(tmp_path / "snap.pt"), "--out", str(tmp_path / "run")]) == 0
    assert main(["export", str(tmp_path / "run"), *flags, "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == (tmp_path / "out" / "model.safetensors").read_bytes()
    a, b = (checkpoints.verify(tmp_path / d / "model.header").meta for d in ("run", "out"))
    assert a == b and a["process"]["name"] == "pfgmpp" and a["process"]["D"] == 128
    run, out = P.load(tmp_path / "run"), P.load(tmp_path / "out")
    x, sigma = torch.randn(3, *run.shape), torch.tensor([0.05, 1.0, 20.0])
    labels = torch.eye(2)[[0, 1, 1]]
    assert torch.equal(run.denoise(x, sigma, labels), out.denoise(x, sigma, labels))


def test_export_refusals_areone_line(tmp_path, capsys):
    W.tiny(tmp_path / "snap.pkl", "edm")
    assert main(["import", str(tmp_path / "snap.pkl"), "--out", str(tmp_path / "run")]) == 0
    run = str(tmp_path / "run")
    one_line(capsys, ["export", run, "--format", "diffusers", "--out", str(tmp_path / "d")], "(physgen-model)", "UNet2DModel", "safetensors")
    one_line(capsys, ["export", run, "--format", "onnx", "--out", str(tmp_path / "d")], "'onnx'")
    one_line(capsys, ["export", run, "--out", run], "is the model itself")
    assert main(["export", run, "--out", str(tmp_path / "e")]) == 0
    one_line(capsys, ["export", run, "--out", str(tmp_path / "e")], "--overwrite")
    one_line(capsys, ["export", str(tmp_path / "nope"), "--out", str(tmp_path / "f")], "nope")
    assert not (tmp_path / "d").exists() and not (tmp_path / "f").exists()


TRAIN = ["train", "--process", "pfgmpp", "--D", "128", "--dataset", "digits", "--resolution", "8", "--arch", "tiny",
         "--batch", "8", "--warmup-steps", "0", "--sample-n", "4", "--sample-steps", "2", "--precision", "fp32"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny PFGM++ digits U-Net, conditional, trained 3 steps (EMA and raw weights differ)."""
    out = tmp_path_factory.mktemp("run")
    assert main(TRAIN + ["--steps", "3", "--cond", "--out", str(out)]) == 0
    return out


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("which", ["folder", "file"])
def test_a_training_run_exports_its_ema_field_bit_for_bit(trained, tmp_path, which):
    source = trained if which == "folder" else checkpoints.find(trained).path
    assert main(["export", str(source), "--out", str(tmp_path / "out")]) == 0
    run, out, raw = P.load(source), P.load(tmp_path / "out"), P.load(source, ema=False)
    desc = checkpoints.verify(tmp_path / "out" / "model.header").meta
    assert desc["source"]["weights"] == "ema" and desc["source"]["step"] == 3 and desc["network"]["class"] == "PhysgenUNet"
    assert out.process.describe() == run.process.describe() and out.shape == run.shape and out.num_classes == run.num_classes == 10
    ours, theirs = out.field.net.state_dict(), run.field.net.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert any(not torch.equal(ours[k], v) for k, v in raw.field.net.state_dict().items())  # EMA, not the raw weights
    g = torch.Generator().manual_seed(0)
    x, sigma = torch.randn(4, *run.shape, generator=g), torch.tensor([0.02, 0.5, 3.0, 40.0])
    labels = torch.eye(10)[[0, 3, 9, 9]]
    labels[3] = 0  # the null class
    assert torch.equal(run.denoise(x, sigma, labels), out.denoise(x, sigma, labels))
    s = torch.tensor([0.1, 1.0, 5.0, 20.0])
    assert torch.equal(run.field(x, s, labels.argmax(1)), out.field(x, s, labels.argmax(1)))


def test_a_training_run_is_refused_as_diffusers(trained, tmp_path, capsys):
    one_line(capsys, ["export", str(trained), "--format", "diffusers", "--out", str(tmp_path / "d")], "(physgen)", "UNet2DModel")
    assert not (tmp_path / "d").exists()


@pytest.mark.slow
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_diffusers_round_trip_reads_back_in_diffusers(tmp_path, prediction_type):
    diffusers = pytest.importorskip("diffusers")
    src = tmp_path / "pipe"
    model = tiny_unet2d(src, prediction_type, "squaredcos_cap_v2", seed=1, pipeline=True)  # a pipeline layout: unet/ + scheduler/
    assert main(["export", str(src), "--format", "diffusers", "--out", str(tmp_path / "out")]) == 0
    back = diffusers.UNet2DModel.from_pretrained(tmp_path / "out").eval()
    sched = diffusers.DDPMScheduler.from_pretrained(tmp_path / "out")
    assert sched.config.prediction_type == prediction_type and torch.equal(sched.betas, diffusers.DDPMScheduler.from_pretrained(src / "scheduler").betas)
    x, t = torch.randn(3, 3, 8, 8), torch.tensor([0, 417, 999])
    with torch.no_grad():
        assert torch.equal(back(x, t).sample, model.eval()(x, t).sample)
    ours, theirs = P.load(src), P.load(tmp_path / "out")
    sigma = torch.tensor([0.05, 1.0, 30.0])
    assert ours.process.describe() == theirs.process.describe()
    assert torch.equal(ours.denoise(x, sigma), theirs.denoise(x, sigma))


def test_a_bad_run_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    one_line(capsys, ["export", str(tmp_path / "empty"), "--out", str(tmp_path / "o")], "empty")
    (tmp_path / "junk.pt").write_bytes(b"PHYSGEN-CKPT but broken")
    one_line(capsys, ["export", str(tmp_path / "junk.pt"), "--out", str(tmp_path / "o")], "junk.pt")
    assert not (tmp_path / "o").exists()
