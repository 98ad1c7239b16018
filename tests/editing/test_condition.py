"""physgen.editing.condition: the ``xI=VALUE`` parser, the Condition's checks, and
sample_conditioned's contract (observed coordinates exact, each method's NFE and record)."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from physgen.editing import conditional_mixture, ks_statistic
from physgen.editing.condition import CONDITION_METHODS, MAX_OBSERVED_VALUE, Condition, parse_observation, sample_conditioned
from physgen.data.mixture import GaussianMixture
from physgen.editing import inpaint
from physgen.errors import UserError
from physgen.noise import SeededNoise
from physgen.sampling import grid, sample

from editing_cases import MIXTURE, toy_process


@given(st.integers(0, 999), st.floats(-MAX_OBSERVED_VALUE, MAX_OBSERVED_VALUE, allow_nan=False, allow_subnormal=False, width=32).filter(lambda v: v == 0 or abs(v) >= 1.2e-38))
def test_a_well_formed_observation_reads_back(index, value):
    i, v = parse_observation(f"x{index}={value!r}")
    assert i == index and v == pytest.approx(value, rel=1e-12, abs=1e-30)


@given(st.text(max_size=12))
@settings(max_examples=200)
def test_any_other_text_is_one_clear_error_or_a_valid_observation(text):
    try:
        i, v = parse_observation(text)
    except UserError as exc:
        assert "\n" not in str(exc) and "--condition" in str(exc)
    else:
        assert text.strip().startswith(f"x") and math.isfinite(v) and abs(v) <= MAX_OBSERVED_VALUE and i >= 0


@pytest.mark.parametrize("kwargs,needle", [
    (dict(observed=()), "at least one"),
    (dict(observed=((0, 1.0), (0, 2.0))), "x0 twice"),
    (dict(observed=((0, float("nan")),)), "nan"),
    (dict(observed=((0, 1.0),), method="nope"), "nope"),
    (dict(observed=((0, 1.0),), strength=0.3), "--strength"),
    (dict(observed=((0, 1.0),), method="sdedit", strength=2.0), "--strength"),
    (dict(observed=((0, 1.0),), method="repaint", jump_length=0), "--jump-length"),
    (dict(observed=((0, 1.0),), method="blend", jump_n_sample=2), "--jump-n-sample"),
])
def test_bad_conditions_are_refused(kwargs, needle):
    with pytest.raises(UserError, match=needle):
        Condition(**kwargs)


def test_the_data_must_keep_a_coordinate_to_sample():
    with pytest.raises(UserError, match="x2"):
        Condition(((2, 0.0),)).check_dim(2)
    with pytest.raises(UserError, match="all 2"):
        Condition(((0, 0.0), (1, 0.0))).check_dim(2)
    Condition(((0, 0.0), (1, 0.0))).check_dim(3)


NFE = {"smc": 40, "blend": 2 * 6 - 1, "repaint": None, "sdedit": 2 * 3 - 1}  # edm: heun ends with one Euler step


@pytest.mark.parametrize("method", CONDITION_METHODS)
def test_every_method_returns_full_points_with_the_observed_values(method):
    process = toy_process("edm")
    field = process.analytic_field(MIXTURE)
    cond = Condition(((0, 0.5),), method=method)
    steps = 40 if method == "smc" else 6
    sol = sample_conditioned(process, field, cond, 64, torch.tensor([0.0, 0.6]), steps=steps, seed=3)
    assert sol.x.shape == (64, 2) and bool((sol.x[:, 0] == 0.5).all()) and bool(torch.isfinite(sol.x).all())
    assert sol.stats.extra["editing"] == ("smc" if method == "smc" else method)
    if NFE[method] is not None:
        assert sol.stats.nfe == NFE[method]
    again = sample_conditioned(process, field, cond, 64, torch.tensor([0.0, 0.6]), steps=steps, seed=3)
    assert torch.equal(sol.x, again.x)  # seeded


def test_smc_on_the_two_mode_case_is_close_to_the_closed_form():
    """1000 particles, 60 steps: a quick check of the whole x1 law (the issue's target at 4000
    particles and 200 steps is in tests/cli/test_toy_condition.py and tests/editing/test_editing_targets.py)."""
    process = toy_process("vp")
    sol = sample_conditioned(process, process.analytic_field(MIXTURE), Condition(((0, 0.0),)), 1000, torch.zeros(2), steps=60, seed=0)
    closed = conditional_mixture(MIXTURE, [0], [0.0])
    assert ks_statistic(sol.x[:, 1], closed) < 0.1
    assert abs(float((sol.x[:, 1] < 0).double().mean()) - 0.3) < 0.08


def test_inpaint_starts_from_the_sampling_commands_own_prior_draw():
    """inpaint's start is ``SeededNoise(seed, range(B))``'s prior draw, the unconditional toy
    run's: with a field that is separable over coordinates (one isotropic Gaussian: ``D_i``
    reads only ``x_i``) the unknown coordinate of a blend run is the unconditional sample's,
    bit for bit, whatever the kernel draws on the known one."""
    process = toy_process("edm")
    field = process.analytic_field(GaussianMixture([[0.5, -0.5]], [0.7], [1.0]))
    n = 32
    blended = inpaint(process, field, torch.zeros(n, 2), torch.tensor([1.0, 0.0]), method="heun", steps=5, seed=4)
    noise = SeededNoise(4, range(n))
    x0 = process.sample_prior((n, 2), noise=noise)
    plain = sample(process, field, x0, grid(process, 5, method="heun"), "heun", noise=noise)
    assert torch.equal(blended.x[:, 1], plain.x[:, 1])
