"""``physgen experiment editing`` (issue 23): the mode-weight rule, and a quick run's table
(refusals where a process has no Gaussian transition, D = inf = EDM, NFE growing with steps)."""
import csv
import json

import pytest
import torch

from physgen.cli.main import main
from physgen.data.mixture import GaussianMixture
from physgen.experiments.editing import PROCESSES, mode_weights


def test_mode_weights_group_components_by_mean_and_count_nearest_samples():
    closed = GaussianMixture([[2.0], [-2.0], [2.0], [0.0]], [0.3, 0.3, 0.3, 0.3], [0.2, 0.3, 0.4, 0.1])
    x1 = torch.tensor([1.9, 2.5, -1.0, -2.2, 0.4, 0.9, 1.1, 3.0])  # nearest: 2, 2, -2, -2, 0, 0, 2, 2
    means, got, want = mode_weights(x1, closed)
    assert means == [2.0, -2.0, 0.0]
    assert got == pytest.approx([4 / 8, 2 / 8, 2 / 8]) and want == pytest.approx([0.6, 0.3, 0.1])
    # a negligible mode is left out: its samples go to the nearest real mode
    means, got, want = mode_weights(x1, closed, least=0.15)
    assert means == [2.0, -2.0] and got == pytest.approx([6 / 8, 2 / 8]) and want == pytest.approx([0.6, 0.3])


@pytest.mark.slow
def test_quick_run_writes_its_table_and_refuses_with_the_reason(tmp_path):
    out = tmp_path / "e"
    assert main(["experiment", "editing", "--quick", "--parts", "table", "--out", str(out)]) == 0
    for name in ("editing.csv", "summary.json", "ks_vs_nfe.png", "weight_error_vs_nfe.png"):
        assert (out / name).stat().st_size > 0, name
    rows = list(csv.DictReader((out / "editing.csv").open()))
    assert {r["process"] for r in rows} == set(PROCESSES)
    refused = {(r["process"], r["method"]) for r in rows if r["refused"]}
    assert refused == {(p, m) for p in ("pfgmpp-D4", "pfgmpp-D128", "yukawa") for m in ("smc", "repaint")}
    assert all("transition" in r["refused"] for r in rows if r["refused"])
    ran = [r for r in rows if not r["refused"]]
    key = lambda r: (r["dataset"], r["c"], r["method"], r["steps"])  # noqa: E731
    edm = {key(r): r["ks"] for r in ran if r["process"] == "edm" and r["field"] == "analytic"}
    dinf = {key(r): r["ks"] for r in ran if r["process"] == "pfgmpp-Dinf"}
    assert edm == dinf  # PFGM++ at D = inf is EDM, sample for sample
    for r in ran:
        assert 0 <= float(r["ks"]) <= 1 and int(r["nfe"]) > 0
    by_steps = {}
    for r in ran:
        by_steps.setdefault((r["dataset"], r["c"], r["process"], r["field"], r["method"]), []).append((int(r["steps"]), int(r["nfe"])))
    assert all(sorted(v) == sorted(v, key=lambda t: t[1]) and v[0][1] < v[-1][1] for v in by_steps.values())
    # the asymptotically exact sampler on the analytic fields: both modes of two-mode x0 = 0, 300 particles, 40 steps
    smc = [r for r in ran if r["method"] == "smc" and r["field"] == "analytic" and r["dataset"] == "two-mode" and float(r["c"]) == 0
           and r["steps"] == "40"]
    assert smc and all(float(r["weight_error"]) < 0.1 for r in smc), smc
    summary = json.loads((out / "summary.json").read_text())
    assert summary["closed_forms"]["two-mode x0=0"]["weights"] == pytest.approx([0.3, 0.7])
