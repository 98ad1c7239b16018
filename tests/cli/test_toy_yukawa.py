"""Yukawa from the command line: physgen toy with each --birth-death mode, and the experiment."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from physgen.cli.main import main

FILES = ("config.json", "samples.npy", "metrics.json", "samples.png", "trajectories.png")


@pytest.mark.parametrize("mode", ["transport", "smc"])
def test_toy_exact_field_writes_all_files(tmp_path, mode, capsys):
    out = tmp_path / mode
    args = ["toy", "--process", "yukawa", "--m", "1", "--field", "exact", "--birth-death", mode, "--dataset", "two_mode",
            "--n-data", "200", "--n-samples", "300", "--steps", "10", "--out", str(out)]
    assert main(args) == 0
    for name in FILES:
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["nfe"] == 19 and metrics["nonfinite"] == 0
    if mode == "smc":
        assert 0 < metrics["ess_final"] <= 1 and "resamples" in metrics
    config = json.loads((out / "config.json").read_text())
    assert config["resolved_process"]["name"] == "yukawa" and config["resolved_process"]["m"] == 1.0
    assert config["sampler_options"]["birth_death"] == mode


def test_toy_mlp_trains_and_samples(tmp_path):
    out = tmp_path / "mlp"
    args = ["toy", "--process", "yukawa", "--m", "1", "--field", "mlp", "--dataset", "two_mode", "--train-steps", "60",
            "--batch", "128", "--hidden", "32", "--depth", "2", "--n-samples", "200", "--steps", "8", "--birth-death", "smc", "--out", str(out)]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["nonfinite"] == 0 and math.isfinite(metrics["final_loss"]) and metrics["stray_fraction"] == 0
    assert metrics["nfe"] == 15 and metrics["solver"] == "heun" and 0 < metrics["ess_final"] <= 1  # what ran: 8 Heun steps, SMC
    samples = np.load(out / "samples.npy")
    # 60 steps of training do not learn the two modes (that is the slow experiment's job), but the samples are
    # where the data is: its modes sit at (±2, 0) with spread 0.15
    assert samples.shape == (200, 2) and np.isfinite(samples).all() and np.abs(samples).max() < 3.5
    assert main(args[:-2] + ["--birth-death", "transport", "--out", str(tmp_path / "mlp2")]) == 0


def test_toy_bad_mode_is_one_line(tmp_path, capsys):
    assert main(["toy", "--process", "yukawa", "--m", "1", "--birth-death", "sideways", "--n-data", "20", "--n-samples", "20", "--steps", "3", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "option birth_death must be one of transport, smc, weights, off; got " in err
    assert main(["toy", "--process", "yukawa", "--m", "-1", "--out", str(tmp_path)]) == 2
    assert "m=-1" in capsys.readouterr().err


@pytest.mark.slow
def test_experiment_quick_writes_outputs(tmp_path):
    out = tmp_path / "exp"
    assert main(["experiment", "yukawa", "--out", str(out), "--quick", "--masses", "0.01,1", "--no-genphys-rows"]) == 0
    for name in ("results.csv", "ess.csv", "summary.md", "tradeoff.png", "ess_over_z.png", "samples.png", "neural.png", "config.json"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert {r["sampler"] for r in rows} == {"off", "weights", "smc", "transport"}
    assert {r["field"] for r in rows} == {"exact", "mlp"}
    text = (out / "summary.md").read_text()
    assert "Which samplers work where" in text and "m → 0 is PFGM" in text
