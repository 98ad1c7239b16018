"""Solver options are bounded where they are declared (issue 19): every bound carries its
reason, a value past it is one error naming the solver, the option, the value and the reason,
and within the bounds the samplers give finite results and the adaptive controllers finish."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

import solvers
from solvers._loop import TOLERANCE_FLOOR
from solvers.spec import OptionError

MU, C = 0.5, 0.7


class GaussianDenoiser:
    """The exact denoiser of N(MU, C²) data under x = y + σ ε."""

    def denoise(self, x, s):
        s = s.reshape(-1, *[1] * (x.dim() - 1))
        return MU + C**2 / (C**2 + s**2) * (x - MU)

    def __call__(self, x, s):
        return (x - self.denoise(x, s)) / s.reshape(-1, *[1] * (x.dim() - 1))


BOUNDED = [(name, o) for name, spec in solvers.SOLVERS.items() for o in spec.options if o.kind is float and o.why
           and not name.startswith("torchdiffeq:")] + [("torchdiffeq:dopri5", o) for o in solvers.get_solver("torchdiffeq:dopri5").options if o.why]


def test_the_bounds_this_issue_added_carry_their_reason():
    """eta, s_noise, r, snr, the PID controller, accept_safety, h_init and every tolerance."""
    named = {(n, o.name) for n, o in BOUNDED}
    for want in [("euler-ancestral", "eta"), ("dpmpp-3m-sde", "eta"), ("euler-ancestral", "s_noise"), ("dpmpp-sde", "r"), ("dpmpp-2s", "r"), ("pc", "snr"),
                 ("edm-sde", "s_noise"), ("dpm-adaptive", "icoeff"), ("dpm-adaptive", "pcoeff"), ("dpm-adaptive", "dcoeff"),
                 ("dpm-adaptive", "accept_safety"), ("dpm-adaptive", "h_init"), ("dpm-adaptive", "rtol"), ("dopri5", "atol"),
                 ("torchdiffeq:dopri5", "rtol")]:
        assert want in named, want
    for _, o in BOUNDED:
        assert o.lo is not None and o.hi is not None and len(o.why) > 30, o


@settings(max_examples=120, deadline=None)
@given(pick=st.sampled_from(BOUNDED), over=st.floats(1e-6, 1e30), below=st.booleans())
def test_a_value_past_a_bound_is_one_error_with_the_reason(pick, over, below):
    name, option = pick
    value = (option.lo - over * max(1.0, abs(option.lo))) if below else option.hi + over * max(1.0, abs(option.hi))
    if not math.isfinite(value):
        return
    with pytest.raises(OptionError) as err:
        option.parse(value, f"solver {name!r}")
    text = str(err.value)
    assert f"solver {name!r}: option {option.name}" in text and option.why in text and err.value.option == option.name


def _two_modes(n: int = 64, steps: int = 12):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 1, generator=g, dtype=torch.float64) * 20.0, solvers.edm_schedule(steps, 0.01, 20.0)


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(["euler-ancestral", "dpm2-ancestral", "dpmpp-sde", "dpmpp-2m-sde", "dpmpp-3m-sde"]),
       eta=st.one_of(st.just(0.0), st.floats(1e-30, 10.0)), s_noise=st.floats(0.75, 1.5), seed=st.integers(0, 2**31 - 1))
def test_ancestral_samplers_within_their_bounds_stay_on_the_data(name, eta, s_noise, seed):
    """Any eta and s_noise within the bounds: finite samples whose mean and spread stay of the
    data's order (N(0.5, 0.7²); 40 steps: measured 0.35-1.25 over the bounds' corners), never the
    prior's 20 or a point.  (At 12 steps 3M-SDE's spread reaches 3.2 at eta = 5: large eta needs steps.)"""
    x0, s = _two_modes(256, steps=40)
    x = solvers.solve(GaussianDenoiser(), x0, s, name, eta=eta, s_noise=s_noise, generator=torch.Generator().manual_seed(seed)).x
    assert bool(torch.isfinite(x).all())
    assert abs(float(x.mean()) - MU) < 0.3 and 0.25 < float(x.std()) < 2.0


@settings(max_examples=40, deadline=None)
@given(pcoeff=st.one_of(st.just(0.0), st.floats(1e-30, 1.0)), icoeff=st.floats(0.5, 2.0), dcoeff=st.one_of(st.just(0.0), st.floats(1e-30, 1.0)),
       safety=st.floats(0.25, 1.0),
       rtol=st.sampled_from([1e-2, 1e-4, 1e-5]), h_init=st.floats(1e-3, 1.0))
def test_dpm_adaptive_within_its_bounds_finishes_and_is_accurate(pcoeff, icoeff, dcoeff, safety, rtol, h_init):
    """Any controller within the bounds finishes well inside max_steps, near the exact solution
    (the flow of a Gaussian is linear: x(σ) = MU + √(C² + σ²)/√(C² + σ0²) (x0 - MU))."""
    x0, s = _two_modes(16)
    sol = solvers.solve(GaussianDenoiser(), x0, s[:-1], "dpm-adaptive", pcoeff=pcoeff, icoeff=icoeff, dcoeff=dcoeff,
                        accept_safety=safety, rtol=rtol, atol=rtol, h_init=h_init, max_steps=5000)
    exact = MU + math.sqrt(C**2 + float(s[-2]) ** 2) / math.sqrt(C**2 + float(s[0]) ** 2) * (x0 - MU)
    assert sol.stats.steps < 3000
    assert float((sol.x - exact).abs().max()) < 1000 * rtol  # a per-step tolerance, over up to ~1700 steps


@pytest.mark.parametrize("name", ["dopri5", "dpm-adaptive", "torchdiffeq:dopri5"])
@pytest.mark.parametrize("rtol,atol", [(1e-30, 1e-30), (0.0, 1e-16), (1e-20, 0.0)])
def test_a_tolerance_pair_below_float64_resolution_is_refused_before_the_solve(name, rtol, atol):
    x0, s = _two_modes(4)
    f = GaussianDenoiser()
    calls = []
    target = f if name == "dpm-adaptive" else (lambda x, t: calls.append(1) or f(x, t))
    with pytest.raises(ValueError, match=f"rtol={rtol:g} and atol={atol:g} are both below {TOLERANCE_FLOOR:.1e}"):
        solvers.solve(target, x0, s, name, rtol=rtol, atol=atol)
    assert not calls


def test_torchdiffeq_step_size_past_the_grid_limit_or_the_span_is_refused():
    x0, s = _two_modes(2)
    with pytest.raises(ValueError, match="step_size=1e-09 takes more than 100000 steps"):
        solvers.solve(GaussianDenoiser(), x0, s, "torchdiffeq:rk4", step_size=1e-9)
    with pytest.raises(ValueError, match="step_size=1000 is longer than the span 20 -> 0.01"):
        solvers.solve(GaussianDenoiser(), x0, s, "torchdiffeq:rk4", step_size=1e3)


@settings(max_examples=60, deadline=None)
@given(value=st.floats(allow_nan=False, allow_infinity=False), name=st.sampled_from(["eta", "s_noise", "r"]))
def test_a_float_option_must_fit_the_samples_float32(value, name):
    """Overflowing float32 (a traceback when it met a tensor) or underflowing it to 0 is refused by name."""
    option = solvers.get_solver("dpmpp-sde").option(name)
    fits = value == 0 or 1.1754943508222875e-38 <= abs(value) <= 3.4028234663852886e38
    try:
        option.parse(value, "solver 'dpmpp-sde'")
    except OptionError as exc:
        assert exc.option == name and (not fits or "must be" in str(exc))
    else:
        assert fits


def test_langevin_steps_past_stability_and_levels_outside_the_schedule_are_refused():
    x0, s = _two_modes(2)
    score = lambda x, t: -x / (C**2 + t.reshape(-1, 1) ** 2)  # noqa: E731  (b = the level for a bare score)
    with pytest.raises(ValueError, match=r"langevin: step=1 is at least 4 b² = 0.0004"):
        solvers.solve(score, x0, s, "langevin", step=1.0)
    with pytest.raises(ValueError, match=r"ald: eps=1 is at least 4 b² = 0.0004"):
        solvers.solve(score, x0, s[:-1], "ald", eps=1.0)
    with pytest.raises(ValueError, match=r"langevin: sigma=1e\+06 is outside the schedule's scales \[0.01, 20\]"):
        solvers.solve(score, x0, s, "langevin", sigma=1e6)
