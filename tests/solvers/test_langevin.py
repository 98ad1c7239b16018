"""Plain and annealed Langevin dynamics: conventions, NCSN's mode-weight demonstration, NFE,
per-sample noise, and divergence reporting (hypothesis: no NaN/Inf escapes silently)."""
from __future__ import annotations

import json
import math
import re

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import solvers
from physgen.cli.main import main
from physgen.data import ncsn_mixture
from physgen.noise import SeededNoise
from physgen.processes import make_process


def _gaussian_score(x, s):
    """Score of N(0, (1 + σ²) I): unit Gaussian data perturbed at σ."""
    return -x / (1.0 + s.to(x.dtype)[:, None] ** 2)


def test_annealed_langevin_recovers_mode_weights_and_plain_langevin_does_not():
    from physgen.experiments.langevin_mixture import run_mixture

    res = run_mixture(n=2000, seed=0, plain_steps=200, ncsnv2=False)
    rows = {r["sampler"]: r for r in res["rows"]}
    # NCSN §3.2: from a uniform start, plain Langevin keeps the 0.5/0.5 of the start ...
    assert abs(rows["plain"]["weight_(5,5)"] - 0.8) > 0.2
    assert abs(rows["plain"]["weight_(5,5)"] - 0.5) < 0.05
    # ... while annealing through wide levels splits the mass 0.8/0.2
    assert abs(rows["annealed"]["weight_(5,5)"] - 0.8) < 0.03
    assert abs(rows["annealed"]["weight_(-5,-5)"] - 0.2) < 0.03
    assert rows["plain"]["nfe"] == 200 and rows["annealed"]["nfe"] == 1000


def test_step_convention_gives_the_ula_stationary_variance():
    # x <- x + (α/2) s + √α z on N(0, v): stationary variance v / (1 - α/(4v)) (paper convention);
    # the NCSN-code convention x + a s + √(2a) z with a = α/2 is the same chain
    v, alpha = 2.0, 0.4
    x0 = torch.zeros(40_000, 1, dtype=torch.float64)
    sol = solvers.langevin(lambda x, s: -x / v, x0, [1.0, 0.0], sigma=0.0, step=alpha, n_steps=100, generator=torch.Generator().manual_seed(0))
    assert float(sol.x.var()) == pytest.approx(v / (1 - alpha / (4 * v)), rel=0.025)  # 5% above v: the convention shows
    assert sol.stats.nfe == 100


def test_annealed_langevin_step_sizes_nfe_and_final_denoising():
    seen = []

    def score(x, s):
        seen.append(float(s[0]))
        return torch.zeros_like(x)

    levels = [4.0, 2.0, 1.0]
    x0 = torch.zeros(3, 2, dtype=torch.float64)
    z = torch.ones(3, 2, dtype=torch.float64)
    sol = solvers.annealed_langevin(score, x0, levels, eps=0.01, steps_per_level=2, noise=lambda k, like: z)
    assert sol.stats.nfe == 3 * 2 + 1 and seen == [4.0, 4.0, 2.0, 2.0, 1.0, 1.0, 1.0]
    # zero score: x = Σ_i T √α_i with α_i = ε σ_i²/σ_L²
    expected = sum(2 * math.sqrt(0.01 * s**2 / 1.0) for s in levels)
    torch.testing.assert_close(sol.x, torch.full((3, 2), expected, dtype=torch.float64))
    # NCSNv2's final step x + σ_L² s(x, σ_L) is Tweedie's denoiser: exact for Gaussian data
    x = torch.randn(5, 2, dtype=torch.float64)
    out = solvers.annealed_langevin(lambda x, s: -x / (s[:, None] ** 2), x, [0.5], eps=1e-30, steps_per_level=1,
                                    noise=lambda k, like: torch.zeros_like(like))
    torch.testing.assert_close(out.x, torch.zeros_like(x), atol=1e-12, rtol=0)


def test_trajectory_holds_one_state_per_level():
    sol = solvers.annealed_langevin(_gaussian_score, torch.zeros(4, 2), [3.0, 2.0, 1.0], eps=0.1, steps_per_level=5,
                                    generator=torch.Generator().manual_seed(1), return_trajectory=True)
    assert sol.stats.trajectory.shape == (4, 4, 2)  # start, then after each level (the last one ends with the final denoising)
    torch.testing.assert_close(sol.stats.trajectory[-1], sol.x)


def test_a_sample_does_not_depend_on_its_batch():
    mix = ncsn_mixture()
    p = make_process("ncsn", sigma_min=0.1, sigma_max=15.0, num_levels=6)
    f = p.analytic_field(mix)
    score = lambda x, s: p.score(f, x, s)  # noqa: E731
    noise = SeededNoise(3, range(64))
    x0 = p.sample_prior((64, 2), noise=noise)
    full = solvers.annealed_langevin(score, x0, p.levels(), eps=1e-3, steps_per_level=4, noise=noise)
    part = solvers.annealed_langevin(score, x0[10:20], p.levels(), eps=1e-3, steps_per_level=4, noise=noise.subset(slice(10, 20)))
    torch.testing.assert_close(part.x, full.x[10:20], rtol=1e-6, atol=1e-6)
    one = solvers.langevin(score, x0, [0.5, 0.0], step=1e-3, n_steps=10, noise=noise)
    two = solvers.langevin(score, x0[:7], [0.5, 0.0], step=1e-3, n_steps=10, noise=noise.subset(slice(0, 7)))
    torch.testing.assert_close(two.x, one.x[:7], rtol=1e-6, atol=1e-6)


def test_divergence_names_the_first_bad_step_and_its_level():
    levels = [8.0, 4.0, 2.0, 1.0]

    def score(x, s):
        bad = float(s[0]) == 2.0  # the score breaks at level 2
        return torch.full_like(x, math.nan) if bad else -x

    with pytest.raises(FloatingPointError) as info:
        solvers.annealed_langevin(score, torch.zeros(6, 2), levels, eps=0.01, steps_per_level=5,
                                  generator=torch.Generator().manual_seed(0))
    msg = str(info.value)
    assert "step 10 (level 2 of 4" in msg and "σ=2" in msg and "6 of 6 samples" in msg
    calls = []

    def breaks_at_7(x, s):
        calls.append(1)
        return torch.full_like(x, math.inf) if len(calls) == 8 else -x

    with pytest.raises(FloatingPointError, match=r"step 7 \(level 0 of 1, σ=1, step 7 of 50 at that level\)"):
        solvers.langevin(breaks_at_7, torch.ones(3, 2), [1.0, 0.0], step=0.1, n_steps=50,
                         generator=torch.Generator().manual_seed(0), check_every=20)
    assert len(calls) == 20  # stopped at the first check after the divergence
    with pytest.raises(FloatingPointError, match="initial state"):
        solvers.langevin(_gaussian_score, torch.full((2, 2), math.inf), [1.0, 0.0], step=0.1, n_steps=3)


def test_argument_errors_name_the_value():
    x = torch.zeros(2, 2)
    with pytest.raises(ValueError, match="eps"):
        solvers.annealed_langevin(_gaussian_score, x, [2.0, 1.0], eps=0.0, steps_per_level=2)
    with pytest.raises(ValueError, match="steps_per_level"):
        solvers.annealed_langevin(_gaussian_score, x, [2.0, 1.0], eps=0.1, steps_per_level=0)
    with pytest.raises(ValueError, match="decrease"):
        solvers.annealed_langevin(_gaussian_score, x, [1.0, 2.0], eps=0.1, steps_per_level=1)
    with pytest.raises(ValueError, match="positive"):
        solvers.annealed_langevin(_gaussian_score, x, [1.0, -1.0], eps=0.1, steps_per_level=1)
    with pytest.raises(ValueError, match="step"):
        solvers.langevin(_gaussian_score, x, [1.0, 0.0], step=-1.0, n_steps=3)


_STEP = re.compile(r"step \d+")
_LEVEL = re.compile(r"level")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(log_eps=st.floats(-4.0, 5.0), n_levels=st.integers(1, 4), steps=st.integers(1, 80), seed=st.integers(0, 2**31 - 1),
       plain=st.booleans())
def test_no_nonfinite_value_escapes_silently(log_eps, n_levels, steps, seed, plain):
    eps = 10.0**log_eps
    levels = [2.0 ** (n_levels - 1 - i) for i in range(n_levels)]
    x0 = torch.randn(8, 2, generator=torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed + 1)
    try:
        if plain:
            sol = solvers.langevin(_gaussian_score, x0, [levels[-1], 0.0], step=eps, n_steps=steps * n_levels, generator=g, check_every=7)
        else:
            sol = solvers.annealed_langevin(_gaussian_score, x0, levels, eps=eps, steps_per_level=steps, generator=g)
    except FloatingPointError as e:
        assert _STEP.search(str(e)) and _LEVEL.search(str(e)), str(e)
    except ValueError as e:  # refused before the loop: past the last level's stability limit α < 4 b² (b = levels[-1] here)
        assert eps >= 4 * levels[-1] ** 2 and "4 b²" in str(e), str(e)
    else:
        assert bool(torch.isfinite(sol.x).all())


def test_langevin_mixture_experiment_writes_its_files(tmp_path, capsys):
    out = tmp_path / "exp"
    rc = main(["experiment", "langevin-mixture", "--out", str(out), "--n", "300", "--plain-steps", "100",
               "--steps-per-level", "10", "--no-ncsnv2"])
    assert rc == 0
    for name in ("langevin_mixture.png", "weights.json", "weights.csv"):
        assert (out / name).is_file()
    data = json.loads((out / "weights.json").read_text())
    assert [r["sampler"] for r in data["samplers"]] == ["data", "plain", "annealed"]
    assert data["true_weights"] == [0.8, 0.2]
    assert (out / "weights.csv").read_text().splitlines()[0].startswith("sampler,")
