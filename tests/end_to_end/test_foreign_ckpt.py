"""Models trained elsewhere through every command that takes ``--ckpt`` (issue 21): a tiny
EDM-format snapshot (tests/helpers/edm_snapshots.py, EDM's persistence records, nothing in
it runs) is read by :func:`physgen.pretrained.load` in ``physgen sample``,
``compare-solvers``, ``nll``, ``train-classifier`` (and ``eval fid`` on the samples), and each
command's result is the loaded model's: same process, same samples as the library call."""
from __future__ import annotations

import csv
import json
import math
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import edm_snapshots as W
import physgen.pretrained as P
from one_line import one_line
from physgen.cli.main import main
from physgen.images.generate import sample_grid
from PIL import Image
from safetensors.torch import save_file

RES, CH = 8, 3


def _images(tmp_path, n=64, labels=False):
    """An ``npz:`` image set of the snapshot's shape (uniform pixels, ``labels``: 2 classes)."""
    rng = np.random.RandomState(0)
    arrays = {"x": (rng.rand(n, CH, RES, RES) * 255).astype(np.uint8)}
    if labels:
        arrays["y"] = np.arange(n) % 2
    path = tmp_path / "imgs.npz"
    np.savez(path, **arrays)
    return f"npz:{path}"


@pytest.mark.parametrize("kind,name", [("edm", "snap.pkl"), ("pfgmpp", "snap.pt"), ("vp", "snap.pkl")])
def test_sample_grid_from_a_snapshot_is_the_library_sample(tmp_path, kind, name):
    """``physgen sample --ckpt SNAPSHOT --solver dpmpp-3m --steps 10 --n 16 --out grid.png``: the
    grid's pixels are the loaded field's samples (same seeds), and the record names the file."""
    path = tmp_path / name
    W.tiny(path, kind)
    out = tmp_path / "grid.png"
    assert main(["sample", "--ckpt", str(path), "--solver", "dpmpp-3m", "--steps", "10", "--n", "16", "--out", str(out)]) == 0
    record = json.loads((tmp_path / "sampling.json").read_text())
    assert record["format"] == {"pkl": "edm-pickle", "pt": "edm-torch"}[name.split(".")[1]]
    assert record["process"]["name"] == kind and record["nfe"] == 10 and record["step"] is None
    model = P.load(path)
    _, x, _ = sample_grid(model.process, model.field, 16, tmp_path / "library.png", model.shape, seed=0, solver="dpmpp-3m", steps=10)
    assert torch.isfinite(x).all() and x.std() > 0.01  # the snapshot's network made images, not a constant
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(tmp_path / "library.png")))

def test_sample_to_a_folder_then_eval_fid(tmp_path, monkeypatch):
    path = tmp_path / "snap.pkl"
    W.tiny(path, "vp", num_classes=3)
    samples = tmp_path / "samples"
    assert main(["sample", "--ckpt", str(path), "--solver", "euler", "--steps", "4", "--n", "12", "--label", "1", "--guidance", "cfg",
                 "--w", "2", "--out", str(samples)]) == 0
    assert len(list(samples.glob("*.png"))) == 12
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "featnet_foreign.py").write_text("import torch\ndef make():\n    torch.manual_seed(0)\n"
                                            "    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Tanh(), torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())\n")
    monkeypatch.syspath_prepend(str(mods))
    out = tmp_path / "fid.json"
    assert main(["eval", "fid", "--samples", str(samples), "--ref", _images(tmp_path), "--feature-net", "featnet_foreign:make",
                 "--no-ref-cache", "--no-is", "--kid-subset-size", "6", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["n_samples"] == 12 and res["fid"] > 0


def test_compare_solvers_on_a_snapshot(tmp_path, capsys):
    path = tmp_path / "snap.pt"
    W.tiny(path, "pfgmpp")
    out = tmp_path / "cmp"
    argv = ["compare-solvers", "--ckpt", str(path), "--solvers", "euler,dpmpp-3m", "--steps", "3,6", "--n-samples", "8",
            "--ref-rtol", "1e-3", "--ref-atol", "1e-3", "--no-ref-check", "--out", str(out)]
    assert main(argv + ["--dataset", _images(tmp_path)]) == 0
    rows = json.loads((out / "results.json").read_text())
    text = json.dumps(rows)
    assert "pfgmpp" in text and "snap.pt" in text
    one_line(capsys, argv + ["--overwrite"], "does not record its dataset", "--dataset")
    one_line(capsys, argv + ["--overwrite", "--process", "edm", "--dataset", _images(tmp_path)], "'pfgmpp'")
    one_line(capsys, argv + ["--overwrite", "--D", "64"], "come from the checkpoint")


def test_nll_of_a_snapshot(tmp_path, capsys):
    path = tmp_path / "snap.pkl"
    W.tiny(path, "edm")
    out = tmp_path / "nll"
    assert main(["nll", "--ckpt", str(path), "--dataset", _images(tmp_path), "--n", "2", "--solver", "euler", "--steps", "4",
                 "--out", str(out)]) == 0
    res = json.loads((out / "nll.json").read_text())
    text = json.dumps(res)
    assert "snap.pkl" in text
    one_line(capsys, ["nll", "--ckpt", str(path), "--n", "2", "--out", str(tmp_path / "nll2")], "does not record its dataset")


def test_train_classifier_for_a_snapshot_guides_it(tmp_path, capsys):
    """The classifier is trained on the snapshot's process (VP with the file's betas), so
    ``sample --guidance classifier`` accepts it for that (conditional) snapshot."""
    path = tmp_path / "snap.pkl"
    W.tiny(path, "vp", num_classes=2)
    data = _images(tmp_path, labels=True)
    out = tmp_path / "clf"
    assert main(["train-classifier", "--ckpt", str(path), "--dataset", data, "--steps", "5", "--batch", "8", "--width", "8",
                 "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    model = P.load(path)
    assert config["resolved_process"] == {"name": "vp", **json.loads(json.dumps(model.process.config()))}
    assert main(["sample", "--ckpt", str(path), "--n", "4", "--steps", "3", "--label", "1", "--guidance", "classifier",
                 "--classifier-ckpt", str(out / "classifier.pt"), "--out", str(tmp_path / "g.png")]) == 0
    one_line(capsys, ["train-classifier", "--ckpt", str(path), "--dataset", data, "--D", "64", "--out", str(tmp_path / "c2")], "--D")
    one_line(capsys, ["train-classifier", "--ckpt", str(path), "--dataset", data, "--resolution", "4", "--out", str(tmp_path / "c3")],
              "shape")


@pytest.mark.parametrize("command", [
    ["sample", "--n", "2", "--out", "{tmp}/g.png"],
    ["compare-solvers", "--steps", "2", "--out", "{tmp}/cmp"],
    ["nll", "--dataset", "digits", "--out", "{tmp}/nll"],
    ["train-classifier", "--dataset", "digits", "--out", "{tmp}/clf"],
])
def test_a_diffusers_folder_without_diffusers_isone_line(tmp_path, capsys, monkeypatch, command):
    """Each command that takes ``--ckpt``: a diffusers folder when the extra is missing names the extra."""
    monkeypatch.setitem(sys.modules, "diffusers", None)  # import diffusers raises ImportError
    folder = tmp_path / "unet"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel", "sample_size": 8, "in_channels": 3}))
    save_file({"w": torch.zeros(1)}, str(folder / "diffusion_pytorch_model.safetensors"))
    (folder / "scheduler_config.json").write_text(json.dumps({"_class_name": "DDPMScheduler", "num_train_timesteps": 1000}))
    argv = [a.replace("{tmp}", str(tmp_path)) for a in command]
    one_line(capsys, argv[:1] + ["--ckpt", str(folder)] + argv[1:], 'pip install "physgen[diffusers]"')


def _results_command(prefix: str) -> list:
    """The command line of benchmarks/RESULTS.md's section on pretrained checkpoints that starts with ``prefix``."""
    text = (Path(__file__).resolve().parents[2] / "benchmarks" / "RESULTS.md").read_text()
    section = text[text.index("## Pretrained EDM / PFGM++ checkpoints"):]
    line = next(line for line in section.splitlines() if line.startswith(prefix))
    return shlex.split(line)[1:]  # without "physgen"


def _override(argv: list, **values) -> list:
    """``argv`` with the value after each ``--flag`` (``flag_name`` -> ``--flag-name``) replaced."""
    argv = list(argv)
    for key, value in values.items():
        argv[argv.index("--" + key.replace("_", "-")) + 1] = str(value)
    return argv


def _without(argv: list, *flags) -> list:
    """``argv`` without each ``--flag VALUE`` pair."""
    argv = list(argv)
    for flag in flags:
        i = argv.index(flag)
        del argv[i:i + 2]
    return argv


@pytest.mark.slow
def test_the_results_fid_command_runs(tmp_path, monkeypatch, capsys):
    """RESULTS.md's ONE command (5/10/18 steps for the deterministic solver table) runs as written
    on a tiny VP snapshot, with the files, sizes and device replaced: every solver at every budget
    gives a row, the multistep solvers at 5/10/18 NFE.  The FID column itself is left out here: on
    2048 Inception features each FID takes about a minute of CPU (a 2048x2048 matrix square root),
    48 of them are beyond the slow tier; the first command (reference statistics) runs, and the
    command's --fid-ref without --inception is refused."""
    from physgen.nets.inception import InceptionV3  # noqa: PLC0415  (only this slow test builds one)

    monkeypatch.setenv("PHYSGEN_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    weights = tmp_path / "inception.pth"
    torch.save(InceptionV3("fid").state_dict(), weights)
    name = "edm-cifar10-32x32-uncond-vp.pkl"  # a tiny VP snapshot (the PFGM++ path is the same command with another file)
    W.tiny(tmp_path / name, "vp")
    data, stats = _images(tmp_path, n=16), tmp_path / "stats.npz"
    assert main(_override(_results_command("physgen eval ref-stats"), ref=data, inception=weights, out=stats)) == 0
    argv = _override(_results_command("physgen compare-solvers"), ckpt=tmp_path / name, dataset=data, n_samples=2, solve_batch=2,
                     inception=weights, fid_ref=stats, ref_rtol=1e-3, ref_atol=1e-3, device="cpu", out=tmp_path / "out")
    one_line(capsys, _without(argv, "--inception"), "--fid-ref needs --inception")
    assert main(_without(argv, "--inception", "--fid-ref")) == 0
    rows = list(csv.DictReader((tmp_path / "out" / "results.csv").open()))
    solvers_named = argv[argv.index("--solvers") + 1].split(",")
    assert sorted({(r["solver"], r["steps"]) for r in rows}) == sorted((s, b) for s in solvers_named for b in ("5", "10", "18"))
    assert {r["nfe"] for r in rows if r["solver"] in ("dpmpp-3m", "unipc-bh2", "ipndm")} == {"5", "10", "18"}
