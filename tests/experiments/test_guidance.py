"""Smoke test of ``physgen experiment guidance`` (slow: it trains small fields and classifiers)."""
import csv

import pytest

from physgen.cli.main import main


@pytest.mark.slow
def test_guidance_experiment_writes_its_tables_and_figures(tmp_path):
    out = tmp_path / "g"
    rc = main(["experiment", "guidance", "--out", str(out), "--quick", "--D", "8", "--w", "0", "1", "3",
               "--field-steps", "150", "--digits-field-steps", "150", "--classifier-steps", "60", "--n-per-class", "20",
               "--digits-per-class", "4"])
    assert rc == 0
    for name in ("guidance.csv", "shift_error.csv", "summary.json", "shift_error.png", "toy_guidance.png", "toy_samples.png",
                 "digits_guidance.png", "digits_samples.png"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "guidance.csv").open()))
    assert {r["dataset"] for r in rows} == {"8gaussians", "digits"}
    assert {r["process"] for r in rows} == {"edm", "pfgmpp-D8"}
    # classifier-free guidance at w = 1 on 8 Gaussians puts most samples in the requested mode even after 150 steps
    hit = [float(r["hit_rate"]) for r in rows if r["dataset"] == "8gaussians" and r["guidance"] == "cfg" and float(r["w"]) == 1.0]
    assert min(hit) > 0.8, hit
    # NFE: CFG at w = 3 costs two network evaluations per flow call
    r = next(r for r in rows if r["guidance"] == "cfg" and float(r["w"]) == 3.0)
    assert int(r["nfe"]) == 2 * int(r["flow_evaluations"])
    shift = list(csv.DictReader((out / "shift_error.csv").open()))
    gauss = [float(r["rel_error"]) for r in shift if r["family"] == "pfgmpp" and r["D"] == "inf"]
    assert max(gauss) < 1e-9
