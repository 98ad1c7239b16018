"""Issue 23's targets on 0.3 N((-1,-1.5), 0.5² I) + 0.7 N((1,1.5), 0.5² I) observed at x0 = 0,
whose conditional is 0.3 N(-1.5, 0.25) + 0.7 N(1.5, 0.25): 4000 samples, analytic field,
each method's whole x1 distribution (KS, the left mode's weight, each mode's spread, the
farthest sample) against the closed form.

The measured values (``MEASURED``: mean and standard deviation over seeds 0-7, produced by
:func:`measure` below) are pinned for blend and RePaint within 4 seed-sds, so a change to a
method shows; SMC is held to the issue's targets.
"""
import statistics

import pytest

from physgen.editing import inpaint, ks_statistic, smc_condition

from editing_cases import CONDITIONAL, MASK, MIXTURE, left_weight, mode_stds, observed, toy_process

pytestmark = pytest.mark.slow

METHODS = {
    "blend": lambda p, f, seed: inpaint(p, f, observed(4000), MASK, seed=seed),  # default options: heun, the process's grid
    "repaint": lambda p, f, seed: inpaint(p, f, observed(4000), MASK, seed=seed, method="ddpm", steps=100, jump_length=10,
                                          jump_n_sample=5),  # RePaint's own sampler and jumps (scaled to 100 steps)
    "smc": lambda p, f, seed: smc_condition(p, f, observed(4000), MASK, seed=seed),  # default options
}

MEASURED = {  # (process, method): {statistic: (mean, sd)} over seeds 0-7
    ("edm", "blend"): {"ks": (0.0407, 0.0092), "left": (0.3172, 0.0088), "spread": (0.549, 0.007)},
    ("vp", "blend"): {"ks": (0.0424, 0.0098), "left": (0.3167, 0.0109), "spread": (0.544, 0.006)},
    ("edm", "repaint"): {"ks": (0.0171, 0.0064), "left": (0.3112, 0.0069), "spread": (0.507, 0.007)},
    ("vp", "repaint"): {"ks": (0.0147, 0.0051), "left": (0.3045, 0.0092), "spread": (0.501, 0.008)},
}
"""Blend widens each mode by about 9% (spread 0.55 against 0.5) and moves 0.017 of weight to
the left mode; RePaint's jumps remove most of it (at 13x blend's NFE: 460 against 35)."""

NFE = {("edm", "blend"): 35, ("vp", "blend"): 36, ("edm", "repaint"): 460, ("vp", "repaint"): 460, ("edm", "smc"): 200,
       ("vp", "smc"): 201}


def statistics_of(x):
    sd_left, sd_right = mode_stds(x)
    return {"ks": ks_statistic(x[:, 1], CONDITIONAL), "left": left_weight(x), "spread": 0.5 * (sd_left + sd_right),
            "sd_left": sd_left, "sd_right": sd_right, "farthest": float((x[:, 1].abs() - 1.5).max())}


@pytest.fixture(scope="module", params=["edm", "vp"])
def case(request):
    process = toy_process(request.param)
    return request.param, process, process.analytic_field(MIXTURE)


def test_smc_recovers_the_closed_form_conditional_with_default_options(case):
    name, process, field = case
    sol = smc_condition(process, field, observed(4000), MASK, seed=0)
    got = statistics_of(sol.x)
    assert got["ks"] <= 0.05, got
    assert abs(got["left"] - 0.3) <= 0.03, got
    assert abs(got["sd_left"] - 0.5) <= 0.05 and abs(got["sd_right"] - 0.5) <= 0.05, got  # measured: within 0.04 over 8 seeds
    assert got["farthest"] < 6 * 0.5, got  # no sample beyond 6 component stds of its mode
    assert bool((sol.x[:, 0] == 0).all()) and sol.stats.nfe == NFE[name, "smc"]


@pytest.mark.parametrize("method", ["blend", "repaint"])
def test_replacement_bias_is_the_measured_one(case, method):
    name, process, field = case
    sol = METHODS[method](process, field, 0)
    got = statistics_of(sol.x)
    for key, (mean, sd) in MEASURED[name, method].items():
        assert abs(got[key] - mean) <= 4 * sd, (key, got)
    assert got["farthest"] < 6 * 0.5, got
    assert sol.stats.nfe == NFE[name, method]
    if method == "blend":  # a bias, not noise: blend's modes are wider than the conditional's 0.5 in this run too
        assert got["spread"] > 0.52, got


def measure(seeds=range(8)):  # pragma: no cover - how MEASURED was produced
    out = {}
    for name in ("edm", "vp"):
        process = toy_process(name)
        field = process.analytic_field(MIXTURE)
        for method in ("blend", "repaint"):
            rows = [statistics_of(METHODS[method](process, field, seed).x) for seed in seeds]
            out[name, method] = {k: (statistics.mean(r[k] for r in rows), statistics.stdev(r[k] for r in rows)) for k in ("ks", "left", "spread")}
    return out
