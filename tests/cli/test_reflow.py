"""``physgen reflow`` (physgen/cli/reflow.py) end to end on a tiny toy run: the round trip toy ->
reflow -> reflow (3-rectified), its files' contents, kill-and-resume, and bad input as one line."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from one_line import one_line
from physgen import checkpoints
from physgen.cli.main import main
from physgen.compare.problems import load_toy_checkpoint
from physgen.reflow import path_noise, reflow_pairs
from physgen.sampling import grid

TOY = ["toy", "--process", "rectified-flow", "--field", "mlp", "--n-data", "300", "--train-steps", "40", "--batch", "64",
       "--hidden", "16", "--depth", "1", "--n-samples", "32", "--steps", "2", "--device", "cpu"]
REFLOW = ["reflow", "--n-pairs", "300", "--n-eval", "100", "--straightness-steps", "10", "--device", "cpu"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A `physgen toy --field mlp` run of rectified flow (40 steps): RUN."""
    out = tmp_path_factory.mktemp("reflow") / "rf1"
    assert main([*TOY, "--out", str(out)]) == 0
    return out


def _ema(folder):
    return checkpoints.read(checkpoints.find(folder, kind="train", log=None).path, log=None).payload["ema"]


def test_toy_mlp_run_writes_the_checkpoint_reflow_reads(run):
    loaded = load_toy_checkpoint(run)
    assert loaded["process"].name == "rectified-flow" and loaded["step"] == 40
    assert loaded["meta"]["toy"]["net"]["hidden"] == 16 and loaded["meta"]["toy"]["dataset"] == "moons"


def test_round_trip_pairs_metrics_and_a_third_rectification(run, tmp_path, capsys):
    """RUN2's pairs are RUN's flow's own Heun samples from seeded prior draws (in the path's noise
    coordinates), its metrics record the straightness before/after, and RUN2 is a run that reflow takes again."""
    rf2, rf3 = tmp_path / "rf2", tmp_path / "rf3"
    assert main([*REFLOW, "--ckpt", str(run), "--out", str(rf2)]) == 0
    assert "2-rectified flow: straightness" in capsys.readouterr().out
    pairs = np.load(rf2 / "pairs.npy")
    teacher = load_toy_checkpoint(run)
    process = teacher["process"]
    z, y = reflow_pairs(process, teacher["field"], 300, "heun", generator=torch.Generator().manual_seed(0), schedule=grid(process, None))
    assert pairs.shape == (300, 2, 2)
    assert np.allclose(pairs[:, 1], y.numpy(), atol=1e-5) and np.allclose(pairs[:, 0], path_noise(process, z).numpy(), atol=1e-5)
    m = json.loads((rf2 / "metrics.json").read_text())
    assert m["k"] == 2 and m["train_steps"] == 40 and m["from"].startswith(str(run))
    assert 0 <= m["straightness_after"] < m["straightness_before"]
    assert set(m["sliced_w2_euler_after"]) == {"1", "2", "4"} and m["reference"] == "moons"
    assert (rf2 / "trajectories.png").stat().st_size > 1000
    assert main([*REFLOW, "--ckpt", str(rf2), "--out", str(rf3), "--train-steps", "5"]) == 0
    m3 = json.loads((rf3 / "metrics.json").read_text())
    assert m3["k"] == 3 and m3["train_steps"] == 5 and m3["from"].startswith(str(rf2))


def test_a_killed_reflow_resumes_to_the_uninterrupted_weights(run, tmp_path):
    """Stopped after 20 of 40 steps (its checkpoint and pairs on disk), ``--resume`` continues to the
    same EMA weights bit for bit as the run that was never stopped."""
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert main([*REFLOW, "--ckpt", str(run), "--out", str(whole), "--n-pairs", "100"]) == 0
    assert main([*REFLOW, "--ckpt", str(run), "--out", str(cut), "--n-pairs", "100", "--train-steps", "20"]) == 0
    assert main([*REFLOW, "--ckpt", str(run), "--out", str(cut), "--n-pairs", "100", "--train-steps", "40", "--resume"]) == 0
    a, b = _ema(whole), _ema(cut)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((cut / "metrics.json").read_text())["straightness_after"] == json.loads((whole / "metrics.json").read_text())["straightness_after"]


@pytest.mark.parametrize("extra, needles", [
    (["--solver", "euler-maruyama"], ("euler-maruyama", "stochastic")),
    (["--solver", "nope"], ("nope",)),
    (["--n-pairs", "0"], ("--n-pairs", "0")),
    (["--n-pairs", "1"], ("--n-pairs", "1")),
    (["--train-steps", "-3"], ("--train-steps", "-3")),
    (["--lr", "nan"], ("--lr", "nan")),
    (["--init", "nope"], ("--init", "nope")),
    (["--steps", "0"], ("--steps", "0")),
    (["--resume", "--overwrite"], ("--resume", "--overwrite")),
])
def test_bad_options_are_one_line(run, tmp_path, capsys, extra, needles):
    one_line(capsys, [*REFLOW, "--ckpt", str(run), "--out", str(tmp_path / "o"), *extra], *needles)


def test_bad_sources_are_one_line(run, tmp_path, capsys):
    one_line(capsys, [*REFLOW, "--ckpt", str(tmp_path / "missing"), "--out", str(tmp_path / "o")], "missing")
    edm = tmp_path / "edm"
    assert main([*TOY[:2], "edm", *TOY[3:], "--train-steps", "2", "--out", str(edm)]) == 0
    one_line(capsys, [*REFLOW, "--ckpt", str(edm), "--out", str(tmp_path / "o2")], "'edm'", "flow-matching")
    one_line(capsys, [*REFLOW, "--ckpt", str(run), "--out", str(tmp_path / "o3"), "--resume"], "checkpoint")
    rf2 = tmp_path / "rf2"
    assert main([*REFLOW, "--ckpt", str(run), "--out", str(rf2), "--n-pairs", "50", "--train-steps", "2", "--checkpoint-every", "1"]) == 0
    np.save(rf2 / "pairs.npy", np.zeros((7, 2, 2), dtype=np.float32))
    one_line(capsys, [*REFLOW, "--ckpt", str(run), "--out", str(rf2), "--n-pairs", "50", "--train-steps", "3", "--resume"], "pairs.npy", "(7, 2, 2)")
    one_line(capsys, [*REFLOW, "--ckpt", str(run), "--out", str(rf2), "--n-pairs", "50"], "--overwrite")  # another run's outputs
