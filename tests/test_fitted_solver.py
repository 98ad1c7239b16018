"""``--solver fitted:BASE`` (physgen/fitted_solver.py): on a closed-form Gaussian flow the fitted
coefficients lower the error against the exact ODE solution on held-out draws compared with
BASE on the same grid (its own and ``optimal``); the fit is cached beside the optimal grids,
read back without refitting, and refitted (one warning naming the file) when an entry is
tampered with or from another version; the commands toy, compare-solvers and sample run it."""
from __future__ import annotations

import json

import pytest
import torch

from physgen import fitted_solver as fs
from physgen.cli.main import main
from physgen.data.mixture import GaussianMixture
from physgen.noise import SeededNoise
from physgen.optimal_schedule import CACHE_NAME, reference_solve
from physgen.processes import make_process
from physgen.sampling import grid, sample


@pytest.fixture
def small_fit(monkeypatch):
    """A cheap fit (128 pilot draws, 100 // K solves) and no fit remembered from another test."""
    monkeypatch.setattr(fs, "N_PILOT", 128)
    monkeypatch.setattr(fs, "MAX_STEPS", 100)
    monkeypatch.setattr(fs, "_MEMO", {})


def _gaussian():
    """EDM with one Gaussian as data: the analytic field is the exact denoiser of a linear ODE."""
    p = make_process("edm", sigma_max=20.0)
    return p, p.analytic_field(GaussianMixture(torch.tensor([[1.0, -0.5]]), torch.tensor([0.3])))


def _held_out_error(p, field, g, method, n=512) -> float:
    x0 = p.sample_prior((n, 2), noise=SeededNoise(0, range(n)), dtype=torch.float64)
    with torch.no_grad():
        ref = reference_solve(p, field, x0, g.tolist(), sample, None, {})
        x = sample(p, field, x0, g, method).x
    return float((x - ref).pow(2).sum(1).mean().sqrt())


@pytest.mark.parametrize("base,schedule", [("euler", None), ("ipndm", None), ("dpmpp-2m", "optimal:n_pilot=64,max_evals=20")])
def test_fitted_beats_its_base_on_the_same_grid_on_held_out_draws(base, schedule, small_fit, tmp_path):
    p, field = _gaussian()
    g = grid(p, 4, schedule, method="fitted:" + base, dim=2, field=field, cache_dir=tmp_path)
    assert torch.equal(g, grid(p, 4, schedule, method=base, dim=2, field=field, cache_dir=tmp_path))  # BASE's grid (optimal: fitted for BASE)
    e_base, e_fit = _held_out_error(p, field, g, base), _held_out_error(p, field, g, "fitted:" + base)
    assert e_fit < 0.5 * e_base, (base, schedule, e_fit, e_base)


def _entries(path) -> dict:
    return {k: v for k, v in json.loads(path.read_text()).items() if "coefficients" in v}


TAMPER = {
    "out of bounds": lambda e: e["coefficients"][0].__setitem__(0, 99.0),
    "a string": lambda e: e["coefficients"][1].__setitem__(1, "0.1"),
    "too few": lambda e: e["coefficients"].pop(),
    "older version": lambda e: e.__setitem__("version", fs.VERSION - 1),
    "another grid": lambda e: e["grid"].__setitem__(1, e["grid"][1] * 1.01),
    "not an object": None,
}


@pytest.mark.parametrize("damage", list(TAMPER))
def test_the_cache_is_hit_and_a_tampered_entry_refitted(damage, small_fit, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(fs, "MAX_STEPS", 12)
    p, field = _gaussian()
    g = grid(p, 2, method="fitted:euler", dim=2, field=field, cache_dir=tmp_path)
    cache = tmp_path / CACHE_NAME
    (key, entry), = _entries(cache).items()
    fitted = fs._MEMO[key]
    assert entry["coefficients"] == fitted and entry["grid"] == g.tolist() and entry["pilot_rms_error"] < entry["neutral_pilot_rms_error"]

    real_fit = fs._fit
    monkeypatch.setattr(fs, "_MEMO", {})
    monkeypatch.setattr(fs, "_fit", lambda *a, **k: pytest.fail("refitted a valid entry"))
    assert fs.fitted_coefficients(p, field, g, "fitted:euler", sample_fn=sample, shape=(2,), cache_dir=tmp_path) == fitted  # a hit
    capsys.readouterr()

    data = json.loads(cache.read_text())
    if TAMPER[damage] is None:
        data[key] = [1, 2]
    else:
        TAMPER[damage](data[key])
    cache.write_text(json.dumps(data))
    monkeypatch.setattr(fs, "_MEMO", {})
    monkeypatch.setattr(fs, "_fit", real_fit)
    assert fs.fitted_coefficients(p, field, g, "fitted:euler", sample_fn=sample, shape=(2,), cache_dir=tmp_path) == fitted  # refitted
    err = capsys.readouterr().err
    assert "warning" in err and str(cache) in err and "refitting" in err
    assert _entries(cache)[key]["coefficients"] == fitted  # rewritten


TOY = ["--process", "edm", "--sigma-max", "20", "--dataset", "8gaussians", "--field", "analytic", "--n-samples", "100", "--steps", "4"]


def test_toy_and_compare_solvers_run_it_and_read_the_cache(small_fit, tmp_path, capsys):
    assert main(["toy", *TOY, "--solver", "fitted:ipndm", "--out", str(tmp_path / "toy")]) == 0
    assert capsys.readouterr().err.count("fitted:ipndm: fitting 8 coefficients") == 1
    metrics = json.loads((tmp_path / "toy" / "metrics.json").read_text())
    assert metrics["solver"] == "fitted:ipndm" and metrics["nfe"] == 4 and len(_entries(tmp_path / "toy" / CACHE_NAME)) == 1
    cmp = ["compare-solvers", *TOY, "--solvers", "ipndm,fitted:ipndm", "--out"]
    assert main([*cmp, str(tmp_path / "a")]) == 0
    assert capsys.readouterr().err.count("fitting") == 1  # one fit serves the grid's call and every solve of the row
    rows = {r["solver"]: r for r in json.loads((tmp_path / "a" / "results.json").read_text())["rows"]}
    assert rows["fitted:ipndm"]["nfe"] == rows["ipndm"]["nfe"] == 4
    assert rows["fitted:ipndm"]["error_vs_reference"] < 0.5 * rows["ipndm"]["error_vs_reference"]
    fs._MEMO.clear()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / CACHE_NAME).write_bytes((tmp_path / "a" / CACHE_NAME).read_bytes())
    assert main([*cmp, str(tmp_path / "b")]) == 0
    assert "fitting" not in capsys.readouterr().err  # read from the cache
    again = {r["solver"]: r for r in json.loads((tmp_path / "b" / "results.json").read_text())["rows"]}
    assert again["fitted:ipndm"]["error_vs_reference"] == rows["fitted:ipndm"]["error_vs_reference"]


TINY_TRAIN = ["train", "--process", "edm", "--dataset", "digits", "--resolution", "8", "--arch", "tiny", "--batch", "8", "--steps", "2",
              "--warmup-steps", "0", "--log-every", "1", "--sample-n", "2", "--sample-steps", "2", "--precision", "fp32", "--device", "cpu"]


@pytest.mark.slow  # a tiny U-Net trained for 2 steps, then a fit through it: about 5 s on one idle core
def test_sample_runs_it_on_an_image_network(monkeypatch, tmp_path, capsys):
    for name in ("N_PILOT", "N_PILOT_LARGE"):  # 1 x 8 x 8 = 64 numbers is still a "small" sample (optimal_schedule.SMALL_DIM)
        monkeypatch.setattr(fs, name, 4)
    monkeypatch.setattr(fs, "MAX_STEPS", 9)
    monkeypatch.setattr(fs, "MAX_EVALS_LARGE", 3)
    monkeypatch.setattr(fs, "_MEMO", {})
    run = tmp_path / "run"
    assert main([*TINY_TRAIN, "--out", str(run)]) == 0
    out = tmp_path / "s" / "grid.png"
    argv = ["sample", "--ckpt", str(run), "--n", "2", "--steps", "3", "--solver", "fitted:euler", "--device", "cpu", "--out", str(out)]
    assert main(argv) == 0
    assert "fitted:euler: fitting 6 coefficients" in capsys.readouterr().err and out.is_file()
    record = json.loads((tmp_path / "s" / "sampling.json").read_text())
    assert record["solver"] == "fitted:euler" and record["nfe"] == 3
    (entry,) = _entries(tmp_path / "s" / CACHE_NAME).values()
    assert len(entry["coefficients"]) == 3 and entry["n_pilot"] == 4


@pytest.mark.parametrize("max_evals", [2, 3, 5, 8, 13])
def test_the_fit_spends_at_most_its_budget_of_solves(max_evals):
    """``at most max_evals solves`` (the fit's log line and cache entry): L-BFGS-B alone overshoots its maxfun
    within a line search; a hard objective (a cubic and a fast sine of the coefficients) that no few
    steps solve shows it."""
    calls = []

    def solve(c):
        calls.append(1)
        return torch.cat([c[:, 0] ** 3 - 2.0, torch.sin(5.0 * c[:, 1]) - 0.9])[None, :]

    s = [80.0, 10.0, 1.0, 0.1, 0.0]
    pairs, (neutral_rms, best_rms), evals = fs._fit(solve, torch.zeros(1, 8, dtype=torch.float64), s, max_evals, "fitted:euler", None)
    assert evals == len(calls) <= max_evals and best_rms <= neutral_rms and len(pairs) == 4
