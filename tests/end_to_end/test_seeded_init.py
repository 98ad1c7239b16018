"""Every command that builds a network takes its initial weights from --seed
(:func:`physgen.runtime.initial_weights`), not from torch's global generator: two runs of one
command, with the global generator moved between them, agree bit for bit.  (``physgen toy
--field mlp``: tests/cli/test_toy.py.)"""
from __future__ import annotations

import json

import torch

from physgen import checkpoints
from physgen.cli.main import main


def _twice(tmp_path, argv):
    """The command's two output folders: run, draw from the global generator, run again (both
    on one thread: bit-exact comparisons need one thread count, and tiny networks run fastest so)."""
    outs, threads = (tmp_path / "a", tmp_path / "b"), torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([*argv, "--out", str(outs[0])]) == 0
        torch.rand(7)
        assert main([*argv, "--out", str(outs[1])]) == 0
    finally:
        torch.set_num_threads(threads)
    return outs


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_nll_with_an_mlp_trained_here(tmp_path):
    a, b = _twice(tmp_path, ["nll", "--process", "edm", "--dataset", "moons", "--field", "mlp", "--train-steps", "20",
                             "--hidden", "16", "--depth", "1", "--n-data", "300", "--n", "20", "--solver", "heun", "--steps", "4",
                             "--seed", "5", "--device", "cpu"])
    got = [json.loads((out / "nll.json").read_text()) for out in (a, b)]
    assert got[0]["field"] == "mlp"
    assert got[0]["nll_nats"] == got[1]["nll_nats"]


def test_compare_solvers_with_an_mlp_trained_here(tmp_path):
    a, b = _twice(tmp_path, ["compare-solvers", "--process", "edm", "--dataset", "moons", "--field", "mlp", "--train-steps", "20",
                             "--hidden", "16", "--depth", "1", "--n-data", "300", "--n-samples", "32", "--solvers", "euler",
                             "--steps", "3", "--no-ref-check", "--ref-rtol", "1e-4", "--ref-atol", "1e-4", "--seed", "5", "--device", "cpu"])
    weights = [checkpoints.read(next((out / "checkpoints").glob("ckpt-*.pt"))).payload["model"] for out in (a, b)]
    assert _same_state(*weights)
    rows = [(out / "results.csv").read_text().splitlines()[1].split(",") for out in (a, b)]
    assert rows[0][:6] == rows[1][:6]


def test_train_classifier(tmp_path):
    a, b = _twice(tmp_path, ["train-classifier", "--dataset", "8gaussians", "--steps", "10", "--batch", "64", "--hidden", "16",
                             "--depth", "1", "--n-data", "300", "--seed", "5", "--device", "cpu"])
    states = [checkpoints.read(out / "classifier.pt", kind="classifier").payload["state_dict"] for out in (a, b)]
    assert _same_state(*states)


def test_train_an_image_unet(tmp_path):
    a, b = _twice(tmp_path, ["train", "--process", "edm", "--dataset", "digits", "--resolution", "8", "--arch", "tiny", "--batch", "8",
                             "--warmup-steps", "0", "--sample-n", "4", "--sample-steps", "2", "--precision", "fp32", "--steps", "2",
                             "--seed", "5"])
    weights = [checkpoints.read(next((out / "checkpoints").glob("ckpt-*.pt"))).payload["model"] for out in (a, b)]
    assert _same_state(*weights)
