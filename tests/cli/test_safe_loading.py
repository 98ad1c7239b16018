"""No file a user passes runs code when loaded: one crafted file per route (a pickle whose
unpickling would create a marker file); each command exits 2 with one line and the marker
never appears."""
from __future__ import annotations

import pytest
import torch

from crafted_files import new_format_checkpoint, npy_pickle, npz_pickle, pt2_pickle, torch_pickle
from physgen.cli.main import main

IMG = ["--process", "edm", "--dataset", "digits", "--resolution", "8", "--arch", "tiny", "--batch", "8", "--warmup-steps", "0",
       "--log-every", "1", "--sample-n", "2", "--sample-steps", "2", "--precision", "fp32"]


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("img")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    assert main(["train", *IMG, "--steps", "1", "--out", str(out)]) == 0
    torch.set_num_threads(n)
    return out


@pytest.fixture
def featnet(tmp_path, monkeypatch):
    mod = tmp_path / "mods"
    mod.mkdir()
    (mod / "featnet_safe.py").write_text("import torch\n\ndef make():\n    return torch.nn.Flatten()\n")
    monkeypatch.syspath_prepend(str(mod))
    return "featnet_safe:make"


def _route(tmp_path, name, image_run, featnet):
    """(crafted file maker, argv using {f}) of each route."""
    samples = tmp_path / "pngs"
    return {
        "sample --ckpt (legacy)": (torch_pickle, ["sample", "--ckpt", "{f}", "--n", "2", "--out", str(tmp_path / "o")]),
        "sample --ckpt (checksummed)": (new_format_checkpoint, ["sample", "--ckpt", "{f}", "--n", "2", "--out", str(tmp_path / "o")]),
        "sample --classifier-ckpt": (torch_pickle, ["sample", "--ckpt", str(image_run), "--n", "2", "--steps", "2", "--label", "0",
                                                    "--guidance", "classifier", "--classifier-ckpt", "{f}", "--out", str(tmp_path / "o")]),
        "toy --classifier-ckpt": (torch_pickle, ["toy", "--dataset", "8gaussians", "--n-data", "40", "--n-samples", "8", "--steps", "2",
                                                 "--label", "0", "--guidance", "classifier", "--classifier-ckpt", "{f}", "--out", str(tmp_path / "o")]),
        "toy --classifier-ckpt (checksummed)": (lambda p, m: new_format_checkpoint(p, m, kind="classifier"),
                                                ["toy", "--dataset", "8gaussians", "--n-data", "40", "--n-samples", "8", "--steps", "2",
                                                 "--label", "0", "--guidance", "classifier", "--classifier-ckpt", "{f}", "--out", str(tmp_path / "o")]),
        "compare-solvers --ckpt": (torch_pickle, ["compare-solvers", "--ckpt", "{f}", "--out", str(tmp_path / "o")]),
        "nll --ckpt": (new_format_checkpoint, ["nll", "--ckpt", "{f}", "--out", str(tmp_path / "o")]),
        "train --resume": (torch_pickle, ["train", "--resume", "{f}"]),
        "eval --inception": (torch_pickle, ["eval", "fid", "--samples", "digits", "--ref", "digits", "--inception", "{f}"]),
        "eval --feature-net .pt2": (pt2_pickle, ["eval", "fid", "--samples", "digits", "--ref", "digits", "--feature-net", "{f}"]),
        "eval --ref stats.npz": (npz_pickle, ["eval", "fid", "--samples", "digits", "--ref", "{f}", "--feature-net", featnet]),
        "eval --samples .npz": (npz_pickle, ["eval", "fid", "--samples", "{f}", "--ref", "digits", "--feature-net", featnet]),
        "toy --dataset .npy": (npy_pickle, ["toy", "--dataset", "{f}", "--out", str(tmp_path / "o")]),
        "toy --dataset .npz": (npz_pickle, ["toy", "--dataset", "{f}", "--out", str(tmp_path / "o")]),
        "train --dataset npz:": (npz_pickle, ["train", *IMG[:2], "--dataset", "npz:{f}", "--out", str(tmp_path / "o")]),
        "train-classifier --dataset .npz": (npz_pickle, ["train-classifier", "--dataset", "{f}", "--out", str(tmp_path / "o")]),
    }[name]


SUFFIX = {"eval --feature-net .pt2": ".pt2", "eval --ref stats.npz": ".npz", "eval --samples .npz": ".npz", "toy --dataset .npy": ".npy",
          "toy --dataset .npz": ".npz", "train --dataset npz:": ".npz", "train-classifier --dataset .npz": ".npz"}
ROUTES = ["sample --ckpt (legacy)", "sample --ckpt (checksummed)", "sample --classifier-ckpt", "toy --classifier-ckpt",
          "toy --classifier-ckpt (checksummed)", "compare-solvers --ckpt", "nll --ckpt", "train --resume", "eval --inception",
          "eval --feature-net .pt2", "eval --ref stats.npz", "eval --samples .npz", "toy --dataset .npy", "toy --dataset .npz",
          "train --dataset npz:", "train-classifier --dataset .npz"]


@pytest.mark.parametrize("route", ROUTES)
def test_crafted_file_never_runs_and_is_one_line_exit_2(tmp_path, capsys, image_run, featnet, route):
    marker = tmp_path / "PAYLOAD-RAN"
    make, argv = _route(tmp_path, route, image_run, featnet)
    crafted = make(tmp_path / f"crafted{SUFFIX.get(route, '.pt')}", marker)
    capsys.readouterr()
    rc = main([a.replace("{f}", str(crafted)) for a in argv])
    err = capsys.readouterr().err.strip()
    assert not marker.exists(), f"{route}: the payload ran"
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "crafted" in err or "module:callable" in err, err  # names the file (or the one plug-in point)
