"""The one step loop (solvers/_loop.py): a fixed-step method is its step function, the state it
carries is handed in and back, and a new sampler is that function plus one table row."""
from __future__ import annotations

import math

import pytest
import torch

import solvers
from solvers._loop import Run, fixed_step, run_steps
from solvers.spec import Option, OptionError
from toy_fields import GaussianPF


def two_step_dpmpp(run: Run, i: int, x, old):
    """DPM-Solver++(2M) (arXiv 2211.01095, Alg. 2) written as the paper's update, with the previous
    data prediction as the state: D' = (1 + 1/(2r)) D_i - 1/(2r) D_{i-1}, r = h_{i-1}/h_i,
    x_{i+1} = (s_{i+1}/s_i) x_i + (1 - s_{i+1}/s_i) D'."""
    s, s_next = run.s[i], run.s[i + 1]
    d = run.f.denoise(x, run.at(s))
    d_prime = d
    if old is not None:
        r = math.log(run.s[i - 1] / s) / math.log(s / s_next)
        d_prime = (1 + 1 / (2 * r)) * d - 1 / (2 * r) * old
    return s_next / s * x + (1 - s_next / s) * d_prime, d


def _x(n=64, dim=2, scale=20.0):
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * scale


def test_a_new_sampler_is_a_step_function_and_one_row():
    """The step function above plus one row runs through solvers.solve like every row, and agrees
    with the library's dpmpp-2m (its own step function) to rounding on the closed-form flow."""
    name = "test-my-2m"
    try:
        solvers.register_solver(solvers.Spec(name, fixed_step(name, two_step_dpmpp, need="denoiser"), ("denoiser",), 2, 1, "a test"))
        flow, x = GaussianPF(0.3, 1.0), _x()
        sched = solvers.edm_schedule(12, 0.002, 20.0)
        mine = solvers.solve(flow, x, sched, method=name)
        ref = solvers.solve(flow, x, sched, method="dpmpp-2m")
        assert mine.stats.nfe == ref.stats.nfe == 12
        assert torch.allclose(mine.x, ref.x, rtol=0, atol=1e-11)
        assert mine.stats.trajectory is None
        assert solvers.solve(flow, x, sched, method=name, return_trajectory=True).stats.trajectory.shape == (13, *x.shape)
        with pytest.raises(OptionError, match="has no option 'eta'"):
            solvers.solve(flow, x, sched, method=name, eta=1.0)
    finally:
        solvers.SOLVERS.pop(name, None)


def count_step(run: Run, i: int, x, taken: tuple, *, weight: float):
    return torch.lerp(x, run.f.denoise(x, run.at(run.s[i])), weight), taken + (i,)


@pytest.mark.parametrize("own_final", [False, True])
def test_the_state_is_handed_through_every_step_and_to_finish(own_final):
    seen = {}

    def finish(run, x, taken):
        seen["taken"] = taken
        return x

    sched = [4.0, 2.0, 1.0, 0.0]
    out = run_steps(lambda run, i, x, st: count_step(run, i, x, st, weight=0.5), GaussianPF(), _x(), sched, name="count", state=(),
                    need="denoiser", own_final=own_final, finish=finish)
    # without own_final the loop takes the step to 0 itself (to_zero: one NFE, no state)
    assert seen["taken"] == ((0, 1, 2) if own_final else (0, 1))
    assert out.stats.nfe == 3 and out.stats.steps == 3


def test_fixed_step_types_the_step_functions_own_options():
    name = "test-weighted"
    fn = fixed_step(name, count_step, Option("weight", float, 0.5, "the lerp weight", lo=0.0, hi=1.0), state=(), need="denoiser")
    flow, x = GaussianPF(), _x(8)
    assert torch.equal(fn(flow, x, [4.0, 2.0, 1.0], weight=0.0).x, x)  # weight 0 never moves
    half = fn(flow, x, [4.0, 2.0, 1.0]).x  # the default reaches the step function
    assert torch.equal(half, fn(flow, x, [4.0, 2.0, 1.0], weight="0.5").x)
    with pytest.raises(OptionError, match="weight must be <= 1"):
        fn(flow, x, [4.0, 2.0, 1.0], weight=2.0)


def test_the_schedule_check_runs_before_any_evaluation():
    flow = GaussianPF()

    def refuse(s):
        raise ValueError(f"refused {s[:2]}")

    with pytest.raises(ValueError, match="refused"):
        run_steps(lambda run, i, x, st: count_step(run, i, x, st, weight=0.5), flow, _x(), [2.0, 1.0], name="c", state=(),
                  need="denoiser", check=refuse)
    assert flow.calls == 0


def noisy_step(run: Run, i: int, x, state):
    return x + run.noise(i, x), state


def test_stochastic_step_functions_get_the_noise_and_deterministic_ones_refuse_it():
    x = torch.zeros(4, 3)
    fn = fixed_step("test-noisy", noisy_step, stochastic=True)
    a = fn(GaussianPF(), x, [3.0, 2.0, 1.0], generator=torch.Generator().manual_seed(5)).x
    b = fn(GaussianPF(), x, [3.0, 2.0, 1.0], generator=torch.Generator().manual_seed(5)).x
    assert torch.equal(a, b) and a.std() > 0.5
    drawn = []

    def noise(k, like):  # a NoiseFn: the draw for step k, shaped like the state
        drawn.append(k)
        return torch.full_like(like, float(k + 1))

    assert torch.equal(fn(GaussianPF(), x, [3.0, 2.0, 1.0], noise=noise).x, torch.full_like(x, 3.0)) and drawn == [0, 1]
    with pytest.raises(ValueError, match="deterministic: it takes no noise"):
        run_steps(noisy_step, GaussianPF(), x, [3.0, 2.0, 1.0], name="quiet", generator=torch.Generator())


def test_scales_reach_the_target_as_batch_tensors_of_the_samples_dtype():
    got = []

    class Probe:
        def __call__(self, x, s):
            got.append(s)
            return torch.zeros_like(x)

    run_steps(lambda run, i, x, st: (run.f(x, run.at(run.s[i])), st), Probe(), torch.zeros(5, 2, dtype=torch.float32), [0.3, 0.1],
              name="probe")
    assert got[0].shape == (5,) and got[0].dtype == torch.float32
    assert torch.equal(got[0], torch.tensor([0.3] * 5, dtype=torch.float64).to(torch.float32))  # rounded once from the host value
