"""Issue 12's schedules: polyexponential (k-diffusion's), ``NAME:rho=R``, and the error-optimal
grid (a valid grid of K steps with the process's ends, cached per key and reused, lower
error than the default schedule on held-out draws, refused where it has no meaning)."""
from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import solvers
from physgen import optimal_schedule as opt_mod
from physgen.data import load_toy
from physgen.errors import UserError
from physgen.nets.mlp import MLP
from physgen.noise import SeededNoise
from physgen.processes import make_process
from physgen.sampling import grid, sample
from solvers.schedules import parse_schedule, polyexponential_schedule


@settings(max_examples=40)
@given(steps=st.integers(2, 40), s_min=st.floats(1e-4, 1.0), span=st.floats(1.5, 1e5), rho=st.floats(0.2, 8.0))
def test_polyexponential_is_kdiffusions_formula(steps, s_min, span, rho):
    s_max = s_min * span
    s = polyexponential_schedule(steps, s_min, s_max, rho=rho).numpy()
    ramp = np.linspace(1, 0, steps) ** rho  # get_sigmas_polyexponential, without its appended 0
    want = np.exp(ramp * (math.log(s_max) - math.log(s_min)) + math.log(s_min))
    assert s[0] == s_max and s[-1] == s_min and np.all(np.diff(s) < 0)
    np.testing.assert_allclose(s, want, rtol=1e-12)
    logu = solvers.log_uniform_schedule(steps, s_min, s_max).numpy()
    if rho > 1:  # points move towards s_min
        assert np.all(s[1:-1] <= logu[1:-1] * (1 + 1e-12))
    np.testing.assert_allclose(polyexponential_schedule(steps, s_min, s_max, rho=1.0).numpy(), logu, rtol=1e-12)
    assert polyexponential_schedule(steps, s_min, s_max, rho=rho, append_zero=True)[-1] == 0.0


def test_schedule_keywords_and_errors():
    p = make_process("edm", sigma_max=20.0)
    assert torch.equal(grid(p, 6, "polyexponential:rho=2"), p.grid(6, "polyexponential", rho=2.0))
    assert torch.equal(grid(p, 6, "edm:rho=3"), p.grid(6, "edm", rho=3.0)) and not torch.equal(grid(p, 6, "edm:rho=3"), grid(p, 6, "edm"))
    assert parse_schedule("log-uniform") == ("log-uniform", {})
    for bad, why in (("bogus", "unknown schedule 'bogus'"), ("uniform:rho=2", "takes no options"), ("edm:rho=x", "must be a number"),
                     ("edm:beta=1", "takes rho=VALUE"), ("polyexponential:rho=-1", "rho must be >= 0.1"),
                     ("edm:rho=1e300", "rho must be <= 1000, got 1e[+]300 [(].*log-uniform"), ("edm:rho=2,rho=3", "rho is given twice")):
        with pytest.raises(UserError, match=why):
            grid(p, 6, bad)
    with pytest.raises(UserError, match="optimal"):  # the unknown-name error lists optimal among the valid schedules
        grid(p, 6, "bogus")


def test_cli_bad_schedule_is_one_line_exit_2(capsys):
    from physgen.cli.main import main

    assert main(["toy", "--process", "edm", "--schedule", "polyexponential:rho=0", "--n-samples", "8", "--n-data", "16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rho" in err[0]


def _problem():
    p = make_process("edm", sigma_max=20.0)
    return p, p.analytic_field(load_toy("8gaussians").mixture)


def _held_out_error(p, field, g, method, n=256):
    x0 = p.sample_prior((n, 2), noise=SeededNoise(123, range(n)), dtype=torch.float64)
    span = torch.tensor([float(g[0]), float(g[-2]), 0.0], dtype=torch.float64)
    ref = sample(p, field, x0, span, "dopri5", rtol=1e-10, atol=1e-10).x
    return float((sample(p, field, x0, g, method).x - ref).norm(dim=1).pow(2).mean().sqrt())


def test_optimal_grid_is_valid_cached_reused_and_better(tmp_path, monkeypatch):
    p, field = _problem()
    kw = dict(sample_fn=sample, shape=(2,), cache_dir=tmp_path, n_pilot=64, max_evals=80)
    g = opt_mod.optimal_schedule(p, field, 6, method="dpmpp-2m", **kw)
    default = p.grid(6)
    assert g.dtype == torch.float64 and g.shape == default.shape
    assert g[0] == default[0] and g[-2] == default[-2] and g[-1] == 0.0 and bool((g[1:] < g[:-1]).all())
    assert _held_out_error(p, field, g, "dpmpp-2m") < 0.7 * _held_out_error(p, field, default, "dpmpp-2m")
    cache = json.loads((tmp_path / opt_mod.CACHE_NAME).read_text())
    (entry,) = cache.values()
    assert entry["grid"] == g.tolist() and entry["steps"] == 6 and entry["solver"] == "dpmpp-2m" and entry["pilot_rms_error"] <= min(
        entry["start_rms_errors"].values())

    def no_search(*a, **k):
        raise AssertionError("searched although the grid is cached")

    monkeypatch.setattr(opt_mod, "optimise_grid", no_search)
    assert torch.equal(opt_mod.optimal_schedule(p, field, 6, method="dpmpp-2m", **kw), g)  # reused
    for other in (dict(steps=7, method="dpmpp-2m"), dict(steps=6, method="heun"), dict(steps=6, method="unipc-bh2", options={"order": 3})):
        with pytest.raises(AssertionError, match="searched"):  # another key: not reused
            opt_mod.optimal_schedule(p, field, other.pop("steps"), **{**kw, **other})
    moved = p.analytic_field(load_toy("25gaussians").mixture)
    with pytest.raises(AssertionError, match="searched"):  # another field
        opt_mod.optimal_schedule(p, moved, 6, method="dpmpp-2m", **kw)
    # the cache is what is used: an edited entry is returned as it is
    entry["grid"] = default.tolist()
    (tmp_path / opt_mod.CACHE_NAME).write_text(json.dumps({k: entry for k in cache}))
    assert torch.equal(opt_mod.optimal_schedule(p, field, 6, method="dpmpp-2m", **kw), default)


def test_optimal_pilot_options_through_grid(tmp_path):
    p, field = _problem()
    g = grid(p, 5, "optimal:n_pilot=16,max_evals=5", method="dpmpp-2m", dim=2, field=field, cache_dir=tmp_path)
    assert g.shape == (6,) and g[0] == p.grid(5)[0] and g[-1] == 0.0
    (entry,) = json.loads((tmp_path / opt_mod.CACHE_NAME).read_text()).values()
    assert entry["n_pilot"] == 16 and entry["solves"] <= 3 + 5  # the starts and the budget: a hard bound
    for bad in ("optimal:n_pilot=1", "optimal:pilot=8", "optimal:max_evals=x", "optimal:n_pilot"):
        with pytest.raises(UserError, match="optimal"):
            grid(p, 5, bad, method="dpmpp-2m", dim=2, field=field, cache_dir=tmp_path)


def test_field_fingerprint_tells_fields_apart():
    p = make_process("pfgmpp", D=128, sigma_max=5.0)
    pts = torch.randn(50, 2, generator=torch.Generator().manual_seed(0))
    a, b = opt_mod.field_fingerprint(p.exact_field(pts)), opt_mod.field_fingerprint(p.exact_field(pts.clone()))
    assert a == b and a != opt_mod.field_fingerprint(p.exact_field(pts + 1e-6))
    assert a != opt_mod.field_fingerprint(make_process("pfgmpp", D=64, sigma_max=5.0).exact_field(pts))  # the kernel's D
    net = torch.nn.Linear(3, 2)
    before = opt_mod.field_fingerprint(net)
    with torch.no_grad():
        net.weight[0, 0] += 1e-3
    assert opt_mod.field_fingerprint(net) != before


@pytest.mark.parametrize("method,why", [("ddpm", "stochastic"), ("dopri5", "adaptive"), ("dpm-fast", "own steps")])
def test_optimal_refused_where_it_has_no_meaning(method, why, tmp_path):
    p, field = _problem()
    with pytest.raises(UserError, match=why):
        opt_mod.optimal_schedule(p, field, 5, method=method, sample_fn=sample, shape=(2,), cache_dir=tmp_path)
    with pytest.raises(UserError, match="fitted to a field"):
        grid(p, 5, "optimal", method="heun", dim=2)
    (tmp_path / opt_mod.CACHE_NAME).mkdir()  # no file can be kept there: refused before the fit
    with pytest.raises(UserError, match=f"{opt_mod.CACHE_NAME}' is not a file"):
        opt_mod.optimal_schedule(p, field, 5, method="heun", sample_fn=sample, shape=(2,), cache_dir=tmp_path)


# ----------------------------------------------------------------------------- the cache is not trusted
ENDS = [20.0, 0.002, 0.0]  # a 4-step grid of a process whose grid ends with the denoising step


def _grid_ok(g) -> bool:
    return (isinstance(g, list) and len(g) == 5 and all(type(v) in (int, float) and math.isfinite(v) for v in g)
            and all(a > b for a, b in zip(g, g[1:])) and g[0] == 20.0 and g[-2] == 0.002 and g[-1] == 0)


@settings(max_examples=300)
@given(st.one_of(
    st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 30), st.booleans(), st.none(), st.text(max_size=2)),
             max_size=7),
    st.lists(st.floats(0.002, 20.0), min_size=3, max_size=3).map(lambda mid: [20.0, *sorted(mid, reverse=True), 0.0]),
    st.one_of(st.floats(), st.text(max_size=3), st.dictionaries(st.text(max_size=2), st.integers(), max_size=2))))
def test_a_cache_grid_is_checked_like_a_users(grid_value):
    """An entry's grid is used only if it is a user's valid grid: K + 1 finite numbers,
    strictly decreasing, the process's ends; any other value gets a reason."""
    why = opt_mod.grid_problem(grid_value, 4, ENDS)
    assert (why is None) == _grid_ok(grid_value), (grid_value, why)


_FIT = dict(sample_fn=sample, shape=(2,), n_pilot=16, max_evals=3)
DAMAGES = {
    "negative end": lambda d: _each(d, lambda g: [*g[:-1], -1.0]), "true/false": lambda d: _each(d, lambda g: [True, *g[1:-1], False]),
    "start 1e6": lambda d: _each(d, lambda g: [1e6, *g[1:]]), "nested file": lambda d: "[" * 100000 + "]" * 100000,
    "a list": lambda d: [1, 2], "truncated": lambda d: json.dumps(d)[:40], "NaN": lambda d: json.dumps(d).replace("0.0]", "NaN]"),
}


def _each(data: dict, change) -> dict:
    return {k: {**v, "grid": change(v["grid"])} for k, v in data.items()}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_cache_is_refitted_with_a_warning_naming_it(damage, tmp_path, capsys):
    """The fit is reproducible, so a damaged cache costs a refit, never a wrong grid or a
    lost command: one warning line names the file, and the fit rewrites it."""
    p, field = _problem()
    clean = opt_mod.optimal_schedule(p, field, 4, method="heun", cache_dir=tmp_path, log=None, **_FIT)
    path = tmp_path / opt_mod.CACHE_NAME
    damaged = DAMAGES[damage](json.loads(path.read_text()))
    path.write_text(damaged if isinstance(damaged, str) else json.dumps(damaged))
    again = opt_mod.optimal_schedule(p, field, 4, method="heun", cache_dir=tmp_path, **_FIT)
    warning = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert torch.equal(again, clean)
    assert len(warning) == 1 and str(path) in warning[0] and "refitting" in warning[0], warning
    assert [e["grid"] for e in json.loads(path.read_text()).values()] == [clean.tolist()]


@pytest.mark.slow
def test_optimal_through_toy_and_compare_solvers(tmp_path):
    from physgen.cli.main import main

    out = tmp_path / "toy"
    args = ["--process", "edm", "--dataset", "8gaussians", "--field", "analytic", "--schedule", "optimal", "--n-samples", "200"]
    assert main(["toy", *args, "--solver", "unipc-bh2", "--steps", "5", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    cache = json.loads((out / opt_mod.CACHE_NAME).read_text())
    assert metrics["schedule"] == "optimal" and metrics["nfe"] == 5 and len(cache) == 1
    cmp_out = tmp_path / "cmp"
    assert main(["compare-solvers", *args, "--solvers", "euler,dpmpp-2m", "--steps", "4,6", "--out", str(cmp_out)]) == 0
    assert len(json.loads((cmp_out / opt_mod.CACHE_NAME).read_text())) == 4  # one grid per (solver, budget)


class _UnitGaussianDenoiser:
    """The exact denoiser of N(0, I) data in any shape (cheap: images without a network)."""

    kind = "denoiser"

    def __call__(self, x, s, label=None):
        return x / (1 + s.reshape(-1, *[1] * (x.dim() - 1)) ** 2)


def test_image_sized_samples_default_to_the_small_pilot_and_the_fit_logs_its_progress(tmp_path):
    import io

    p, log = make_process("edm", sigma_max=20.0), io.StringIO()
    g = opt_mod.optimal_schedule(p, _UnitGaussianDenoiser(), 4, method="dpmpp-2m", sample_fn=sample, shape=(3, 4, 8), cache_dir=tmp_path, log=log)
    (entry,) = json.loads((tmp_path / opt_mod.CACHE_NAME).read_text()).values()
    assert entry["n_pilot"] == opt_mod.N_PILOT_LARGE and entry["solves"] <= opt_mod.MAX_EVALS_LARGE + 3 and len(g) == 5
    lines = log.getvalue().splitlines()
    assert f"fitting a 4-step grid for dpmpp-2m on {opt_mod.N_PILOT_LARGE} pilot draws" in lines[0] and "solves in" in lines[-1]
    opt_mod.optimal_schedule(p, _UnitGaussianDenoiser(), 4, method="dpmpp-2m", sample_fn=sample, shape=(2,), cache_dir=tmp_path, log=log,
                             max_evals=3)
    assert f"on {opt_mod.N_PILOT} pilot draws" in log.getvalue().splitlines()[-2]  # toy samples: the large pilot


def test_the_pilot_teacher_is_solved_once_per_field_draws_and_ends(monkeypatch):
    """One command's fits (several solvers, 5 and 10 steps, an optimal grid and the coefficients on it) share
    the process's ends: one float64 teacher serves them, and another field, other weights, other draws or
    another span get their own (on an image field each teacher costs minutes)."""
    monkeypatch.setattr(opt_mod, "_REFERENCES", {})
    p, field = _problem()
    spans = []

    def counting(process, f, x0, span, method, **kw):
        spans.append(span.tolist())
        return sample(process, f, x0, span, method, **kw)

    def draws(seed):
        return p.sample_prior((16, 2), noise=SeededNoise(seed, range(16)), dtype=torch.float64)

    def ref(f, x0, g):
        return opt_mod.reference_solve(p, f, x0, g.tolist(), counting, None, {})

    first = ref(field, draws(0), p.grid(5))
    assert torch.equal(ref(field, draws(0), p.grid(10)), first) and len(spans) == 1  # same ends: one solve
    exact = sample(p, field, draws(0), torch.tensor(spans[0], dtype=torch.float64), "dopri5", rtol=opt_mod.REFERENCE_TOL,
                   atol=opt_mod.REFERENCE_TOL).x
    assert torch.equal(first, exact)  # the kept teacher is the solve itself
    ref(field, draws(1), p.grid(5))  # other draws
    ref(p.analytic_field(load_toy("25gaussians").mixture), draws(0), p.grid(5))  # another field
    ref(p.analytic_field(load_toy("8gaussians").mixture), draws(0), p.grid(5))  # equal values, another object: not trusted
    ref(field, draws(0), torch.cat([p.grid(5)[:-2], torch.tensor([0.01, 0.0], dtype=torch.float64)]))  # another last positive scale
    assert len(spans) == 5
    net = MLP(2, hidden=16, depth=2)
    nf = p.precondition(net).to(torch.float64)
    ref(nf, draws(0), p.grid(5))
    ref(copy.deepcopy(nf), draws(0), p.grid(10))  # a network: the same weights in another copy (the fit's float64 copy) reuse it
    assert len(spans) == 6
    with torch.no_grad():
        net.inp.weight[0, 0] += 1e-3
    ref(nf, draws(0), p.grid(5))  # other weights
    assert len(spans) == 7
