"""The sampling core as users meet it: every solver of the table on every process (samples, or the
one refusal naming what is missing), one grid for the same --steps/--schedule in every command,
solvers.solve for every name it lists, and --list-solvers."""
from __future__ import annotations

import json
import math

import pytest
import torch

import solvers
from physgen.cli.main import main
import physgen.config as config
from physgen.config import parse_int
from physgen.errors import UserError
from physgen.noise import SeededNoise
from physgen.processes import PROCESSES, make_process
from physgen.sampling import DivergenceError, grid, sample
from solvers.fitted import neutral
from toy_fields import UnitGaussianVE

POINTS = torch.randn(60, 2, generator=torch.Generator().manual_seed(0)) * 0.5 + torch.tensor([1.0, 0.0])
CASES = [(name, {}) for name in sorted(PROCESSES)] + [("pfgmpp", {"D": 4}), ("pfgmpp", {"D": math.inf})]
MODES = {"yukawa": [{"birth_death": m} for m in ("transport", "off", "smc", "weights")]}
CHEAP = {"ald": {"steps_per_level": 2}, "langevin": {"n_steps": 5}, "pc": {"corrector_steps": 1}}


def _process(name, opts):
    base = {"sigma_max": 10.0} if "sigma_max" in __import__("inspect").signature(PROCESSES[name].__init__).parameters else {}
    return make_process(name, **base, **opts)


@pytest.mark.parametrize("name,opts", CASES, ids=[f"{n}{o}" for n, o in CASES])
def test_every_solver_on_every_process_samples_or_names_what_is_missing(name, opts):
    for modes in MODES.get(name, [{}]):
        process = _process(name, opts)
        field = process.exact_field(POINTS)
        caps = process.capabilities(**modes)
        for method, spec in solvers.SOLVERS.items():
            n = 12
            noise = SeededNoise(0, range(n))
            x0 = process.sample_prior((n, 2), noise=noise, dtype=torch.float64)
            runs = all(k in caps for k in spec.needs) or ("births" in caps and method in ("heun", "euler"))
            options = {**CHEAP.get(method, {}), **({"rtol": 1e-3, "atol": 1e-3} if spec.adaptive else {})}
            if solvers.is_fitted(method):  # routed as its base; the fit itself: tests/test_fitted_solver.py
                options["coefficients"] = neutral(16)
            try:
                schedule = grid(process, 16, method=method, dim=2) if runs else process.grid(16)
                sol = sample(process, field, x0, schedule, method, noise=noise, **options, **modes)
            except (DivergenceError, solvers.SolverError):
                assert runs, (name, modes, method)  # it ran (and said it diverged, or hit its step limit: one clear line)
                continue
            except UserError as e:
                assert not runs, (name, modes, method, str(e))
                missing = next((k for k in spec.needs if k not in caps), spec.needs[0])
                assert f"solver {method!r} needs {solvers.NEEDS[missing]}" in str(e) and "\n" not in str(e), str(e)
                continue
            assert runs, (name, modes, method)
            assert sol.x.shape == x0.shape and bool(torch.isfinite(sol.x).all()) and sol.stats.nfe > 0, (name, method)


def test_capabilities_and_offers_agree():
    for name, opts in CASES:
        for modes in MODES.get(name, [{}]):
            p = _process(name, opts)
            offers = p.offers(p.exact_field(POINTS), **modes)
            assert set(offers) == set(p.capabilities(**modes)) - {"gaussian"}, (name, modes)


@pytest.mark.parametrize("method", [m for m in solvers.solver_names() if m != "births"])
def test_solvers_solve_works_for_every_name_it_lists(method):
    x0 = torch.randn(64, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 5
    spec = solvers.get_solver(method)
    options = {**CHEAP.get(method, {}), **({"generator": torch.Generator().manual_seed(2)} if spec.stochastic else {})}
    sol = solvers.solve(UnitGaussianVE(), x0, solvers.edm_schedule(12, 0.01, 5.0), method=method, **options)
    assert sol.x.shape == x0.shape and bool(torch.isfinite(sol.x).all()) and sol.stats.nfe > 0
    if not spec.stochastic:  # the PF-ODE of N(0, I) data from σ = 5 ends near x0 / sqrt(26) (denoised at the end)
        assert float((sol.x - x0 / math.sqrt(26)).abs().max()) < 0.5


def test_solvers_solve_births_and_clear_errors_for_the_wrong_object():
    x0 = torch.randn(32, 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    sol = solvers.solve(lambda x, s: (torch.zeros_like(x), torch.zeros(x.shape[0], dtype=torch.float64)), x0, [2.0, 1.0], "births")
    assert sol.stats.nfe == 2
    with pytest.raises(TypeError, match="euler-maruyama needs sde"):
        solvers.solve(lambda x, s: x, x0, [2.0, 1.0], "euler-maruyama")
    with pytest.raises(solvers.DenoiserFormError, match="dpmpp-2m needs a flow of the denoiser form"):
        solvers.solve(lambda x, s: x, x0, [2.0, 1.0], "dpmpp-2m")
    with pytest.raises(solvers.OptionError, match="solver 'heun' has no option 'snr'; it takes: check_every, return_trajectory"):
        solvers.solve(lambda x, s: x, x0, [2.0, 1.0], "heun", snr=0.1)
    with pytest.raises(solvers.OptionError, match="option snr must be >= 0, got -1"):
        solvers.solve(UnitGaussianVE(), x0, [2.0, 1.0], "pc", snr=-1, generator=torch.Generator())


def test_list_solvers_in_every_sampling_command(capsys):
    for argv in (["toy", "--process", "pfgmpp", "--D", "4"], ["compare-solvers", "--process", "vp"], ["sample"]):
        assert main([*argv, "--list-solvers"]) == 0
        out = capsys.readouterr().out
        for name, spec in solvers.SOLVERS.items():
            assert name in out
        assert "needs" in out and "nfe_per_step" in out and "stochastic" in out
        if argv[0] == "toy":
            assert "no: needs score" in out and "pfgmpp' (D=4)" in out  # ald, for a Student-t kernel


TINY_TRAIN = ["train", "--process", "edm", "--dataset", "digits", "--resolution", "8", "--arch", "tiny", "--batch", "8", "--steps", "2",
              "--warmup-steps", "0", "--log-every", "1", "--sample-n", "2", "--sample-steps", "2", "--precision", "fp32", "--device", "cpu"]


def test_one_grid_for_the_same_steps_and_schedule_in_every_command(tmp_path):
    """--steps K --schedule S: the same K-step grid and NFE in toy, compare-solvers, sample and nll
    (each command records it: metrics.json, results.json, sampling.json, nll.json)."""
    run = tmp_path / "run"
    assert main([*TINY_TRAIN, "--out", str(run)]) == 0  # an EDM process with sigma in [0.002, 80]
    edm = ["--process", "edm", "--sigma-min", "0.002", "--sigma-max", "80"]
    for schedule in ("edm", "uniform"):
        grids, nfes = {}, {}
        out = tmp_path / f"toy-{schedule}"
        assert main(["toy", *edm, "--dataset", "8gaussians", "--n-data", "50", "--n-samples", "16", "--steps", "7", "--schedule", schedule,
                     "--device", "cpu", "--out", str(out)]) == 0
        m = json.loads((out / "metrics.json").read_text())
        grids["toy"], nfes["toy"] = m["grid"], m["nfe"]
        out = tmp_path / f"cmp-{schedule}"
        assert main(["compare-solvers", *edm, "--dataset", "8gaussians", "--n-data", "50", "--n-samples", "16", "--solvers", "heun",
                     "--steps", "7", "--schedule", schedule, "--device", "cpu", "--no-ref-check", "--out", str(out)]) == 0
        r = json.loads((out / "results.json").read_text())
        grids["compare-solvers"], nfes["compare-solvers"] = r["settings"]["grids"]["7"], r["rows"][0]["nfe"]
        out = tmp_path / f"sample-{schedule}" / "grid.png"
        assert main(["sample", "--ckpt", str(run), "--n", "2", "--steps", "7", "--schedule", schedule, "--device", "cpu", "--out", str(out)]) == 0
        s = json.loads((out.parent / "sampling.json").read_text())
        grids["sample"], nfes["sample"] = s["grid"], s["nfe"]
        out = tmp_path / f"nll-{schedule}"
        assert main(["nll", *edm, "--dataset", "8gaussians", "--field", "analytic", "--n", "8", "--solver", "heun", "--steps", "7",
                     "--schedule", schedule, "--device", "cpu", "--out", str(out)]) == 0
        grids["nll"] = json.loads((out / "nll.json").read_text())["grid"]
        assert len(grids["toy"]) == 8 and grids["toy"][-1] == 0.0, schedule  # 7 steps, the last to sigma = 0
        for where, g in grids.items():
            assert g == pytest.approx(grids["toy"], rel=1e-12, abs=0), (schedule, where)
        assert set(nfes.values()) == {2 * 7 - 1}, (schedule, nfes)  # Heun, 7 steps, the last one Euler


@pytest.mark.parametrize("process,steps", [("vp", 10), ("pfgm", 10), ("edm", 10), ("yukawa", 10)])
def test_steps_k_is_k_steps_for_every_process(process, steps):
    p = _process(process, {})
    g = grid(p, steps)
    assert g.dtype == torch.float64 and len(g) == steps + 1 and bool((g[1:] < g[:-1]).all())
    assert (g[-1] == 0.0) == p.ends_at_zero
    with pytest.raises(UserError, match=r"^--steps must be <= 100000 \(each step is at least one field evaluation"):
        grid(p, 10**12)


@pytest.mark.parametrize("schedule,method", [(None, "heun"), ("uniform", "euler"), (None, "ald")])
@pytest.mark.parametrize("bad", [0, -3, 2.5, "ten", True, 100_001])
def test_a_bad_step_count_is_one_line_at_the_python_entry(monkeypatch, schedule, method, bad):
    """physgen.sampling.grid checks the step count once (config.parse_steps) for every kind of
    grid: one line naming --steps; a good count is checked once on the whole path."""
    p = make_process("edm", sigma_max=10.0)
    with pytest.raises(UserError) as exc:
        grid(p, bad, schedule, method=method, dim=2)
    assert str(exc.value).startswith("--steps ") and "\n" not in str(exc.value)
    checks = []
    monkeypatch.setattr(config, "parse_int", lambda *a, **k: checks.append(a[1]) or parse_int(*a, **k))
    assert len(grid(p, 7, schedule, method=method, dim=2)) == 8 and checks == ["--steps"]


def test_the_readme_names_every_solver_schedule_and_process_users_can_type():
    """The README is where users find the names: each one the tables register (the torchdiffeq
    methods are named as ``torchdiffeq:METHOD``) appears there in backticks."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    names = [n for n in solvers.SOLVERS if not n.startswith("torchdiffeq:")] + ["torchdiffeq:METHOD"]
    names += list(solvers.SCHEDULES) + ["optimal", "gits", "file:SIGMAS.json"] + list(PROCESSES)
    assert [n for n in names if f"`{n}`" not in readme] == []


def test_the_divergence_check_applies_to_prior_starts_only():
    """A start that is no prior draw (an editing method's perturbed input: all rows near one
    point) has no prior spread to compare with: ``from_prior=False`` skips the check, which
    would otherwise call a sound result diverged; non-finite results are refused either way."""
    process = make_process("edm", sigma_max=10.0)
    field = process.exact_field(POINTS)
    start = torch.tensor([0.5, 0.0]) + 1e-3 * torch.randn(16, 2, generator=torch.Generator().manual_seed(1))
    schedule = torch.tensor([0.3, 0.0], dtype=torch.float64)
    with pytest.raises(DivergenceError, match="prior's own"):
        sample(process, field, start, schedule, "euler")
    sol = sample(process, field, start, schedule, "euler", from_prior=False)
    assert bool(torch.isfinite(sol.x).all()) and "stray_fraction" not in sol.stats.extra
    with pytest.raises(DivergenceError, match="NaN or Inf"):
        sample(process, field, torch.full((16, 2), float("nan")), schedule, "euler", from_prior=False)
