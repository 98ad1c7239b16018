"""NCSN process (VE with discrete geometric levels) and NCSNv2's hyper-parameter techniques."""
from __future__ import annotations

import json
import math

import pytest
import torch

from physgen.cli.main import main
from physgen.data import GaussianMixture, ncsn_mixture
from physgen.errors import UserError
from physgen.processes import VE, make_process, process_names
from physgen.processes.ncsn import NCSN
from physgen.ncsnv2_plan import ncsnv2_levels
from physgen.processes.ncsnv2 import choose_num_levels, max_pairwise_distance, shell_overlap
from solvers.langevin import choose_eps, variance_ratio


def test_ncsn_is_registered_and_is_ve_with_geometric_levels():
    assert "ncsn" in process_names()
    p = make_process("ncsn", sigma_min=0.1, sigma_max=10.0, num_levels=5)
    assert isinstance(p, NCSN) and isinstance(p, VE) and "score" in p.capabilities() and p.network_kind == "score"
    lv = p.levels()
    assert lv.dtype == torch.float64 and lv.tolist()[0] == 10.0 and lv.tolist()[-1] == 0.1
    ratios = lv[:-1] / lv[1:]
    assert torch.allclose(ratios, torch.full_like(ratios, 100 ** 0.25), rtol=1e-12)
    assert torch.equal(p.grid(18), VE(0.1, 10.0).grid(18))  # ODE solvers integrate on VE's grid: 18 steps
    assert torch.equal(p.langevin_levels(2), lv)  # annealed Langevin runs on the levels
    x = p.sample_prior((4000, 2), generator=torch.Generator().manual_seed(0))
    assert abs(float(x.std()) - 10.0) < 0.3  # prior N(0, σ_1² I)


def test_training_scales_are_the_levels_with_a_uniform_index():
    p = make_process("ncsn", sigma_min=0.1, sigma_max=10.0, num_levels=5)
    s = p.sample_scales(50_000, generator=torch.Generator().manual_seed(1))
    lv = p.levels().float()
    idx = (s[:, None] == lv[None, :]).float().argmax(1)
    assert bool((s[:, None] == lv[None, :]).any(1).all()), "every training scale is one of the levels"
    counts = torch.bincount(idx, minlength=5).double()
    assert float((counts - 10_000).abs().max()) < 5 * math.sqrt(10_000 * 0.8)


class _PointScore:
    """A score field of the data δ_0: s(x, σ) = -x/σ²."""

    kind = "score"

    def __call__(self, x, s, label=None):
        return -x / s[:, None] ** 2


def test_loss_is_denoising_score_matching_with_lambda_sigma_squared():
    # with s = -x/σ², σ s(y + σ ε) + ε = -y/σ, so the per-sample loss is mean(y²)/σ² at a level σ
    p = make_process("ncsn", sigma_min=0.5, sigma_max=4.0, num_levels=4)
    y = torch.randn(256, 3, generator=torch.Generator().manual_seed(2)) + 2.0
    loss = p.loss(_PointScore(), y, generator=torch.Generator().manual_seed(3))
    sigma = (y.pow(2).mean(1) / loss).sqrt()
    lv = p.levels().float()
    assert float((sigma[:, None] - lv[None, :]).abs().min(1).values.max()) < 1e-4
    assert p.dim == 3  # the loss bound the data dimension


def test_levels_follow_the_data_dimension_once_known():
    p = make_process("ncsn", sigma_min=0.01, sigma_max=20.0)
    assert p.num_levels is None
    assert len(p.grid(7)) == 8  # 7 steps, whatever the dimension
    with pytest.raises(UserError, match="num_levels"):
        p.levels()
    p.analytic_field(ncsn_mixture())  # binds N = 2
    L, gamma, _, reason = choose_num_levels(20.0, 0.01, 2)
    assert p.num_levels == L and reason == "ratio cap" and gamma <= 1.5
    assert torch.equal(p.langevin_levels(2), p.levels())
    with pytest.raises(UserError, match="2-dimensional"):
        p.exact_field(torch.zeros(10, 3))
    q = make_process("ncsn", **p.config())
    assert q.config() == p.config() and torch.equal(q.levels(), p.levels())


def test_ncsn_shares_the_ve_fields_and_ode():
    mix = ncsn_mixture()
    ve = make_process("ve", sigma_min=0.01, sigma_max=20.0)
    nc = make_process("ncsn", sigma_min=0.01, sigma_max=20.0, num_levels=12)
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(4)) * 6
    s = torch.full((64,), 3.0)
    fv, fn = ve.analytic_field(mix), nc.analytic_field(mix)
    assert torch.equal(ve.score(fv, x, s), nc.score(fn, x, s))
    assert torch.equal(ve.velocity(fv, x, s), nc.velocity(fn, x, s))


# ----------------------------------------------------------------------------- NCSNv2 helper
def test_technique_4_reproduces_ncsnv2_cifar10_step_size():
    # NCSNv2 CIFAR-10: σ_1 = 50, σ_L = 0.01, L = 232, T = 5, step_lr = 6.2e-6 (code convention)
    plan = ncsnv2_levels(dim=3072, sigma_max=50.0, sigma_min=0.01, num_levels=232, steps_per_level=5)
    assert plan.eps_code == pytest.approx(6.2e-6, rel=0.02)
    assert plan.eps == pytest.approx(2 * plan.eps_code)  # ours is NCSN's α/2-convention
    assert plan.ratio == pytest.approx(5000 ** (1 / 231))


def test_technique_2_overlap_rule_in_high_dimension():
    L, gamma, overlap, reason = choose_num_levels(50.0, 0.01, 3072)
    assert reason == "overlap rule" and overlap >= 0.5
    assert shell_overlap(5000 ** (1 / (L - 2)), 3072) < 0.5  # one level fewer would break the rule
    assert 200 <= L <= 240  # the paper used 232 (overlap 0.57)


def test_equation_6_matches_a_langevin_simulation():
    # data δ_0, level σ reached from level γσ: T steps give variance ratio s_T²/σ² of Eq. (6)
    import solvers

    sigma, gamma, T = 0.5, 1.4, 7
    eps, ratio = choose_eps(gamma, sigma, T)
    x0 = gamma * sigma * torch.randn(200_000, 1, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    sol = solvers.annealed_langevin(lambda x, s: -x / s[:, None] ** 2, x0, [sigma], eps=eps, steps_per_level=T,
                                    generator=torch.Generator().manual_seed(6), final_denoise=False)
    emp = float(sol.x.var() / sigma**2)
    assert emp == pytest.approx(ratio, abs=0.015)
    assert variance_ratio(eps, gamma, sigma, T) == pytest.approx(ratio)
    assert abs(ratio - 1) < abs(variance_ratio(0.5 * eps, gamma, sigma, T) - 1)
    assert abs(ratio - 1) < abs(variance_ratio(2.0 * eps, gamma, sigma, T) - 1) + 1e-12


def test_helper_picks_sigma_max_from_the_data_and_explains_every_value():
    mix = GaussianMixture(torch.tensor([[5.0, 5.0], [-5.0, -5.0]]), torch.tensor([1.0, 1.0]), torch.tensor([0.8, 0.2]))
    data = mix.sample(500, torch.Generator().manual_seed(7)).float()
    plan = ncsnv2_levels(data)
    brute = max(float((data[i] - data).norm(dim=1).max()) for i in range(data.shape[0]))
    assert plan.sigma_max == pytest.approx(brute, rel=1e-6)
    assert max_pairwise_distance(data) == pytest.approx(brute, rel=1e-6)
    assert plan.dim == 2 and plan.num_levels >= 2 and plan.steps_per_level == 1000 // plan.num_levels
    text = plan.explain()
    for value in (f"{plan.sigma_max:.6g}", f"{plan.sigma_min:.6g}", f"L = {plan.num_levels}", f"{plan.ratio:.6g}",
                  f"T = {plan.steps_per_level}", f"{plan.eps:.6g}", f"{plan.eps_code:.6g}", f"{plan.variance_ratio:.6g}",
                  f"{plan.nfe}"):
        assert value in text, value
    for reason in ("technique 1", "technique 2", "technique 4", "ratio cap"):
        assert reason in text
    torch.testing.assert_close(plan.levels[0], torch.tensor(plan.sigma_max, dtype=torch.float64))
    given = ncsnv2_levels(data, num_levels=7, steps_per_level=3, eps=1e-4)
    assert (given.num_levels, given.steps_per_level, given.eps) == (7, 3, 1e-4)
    assert given.explain().count("given") >= 3


@pytest.mark.parametrize("kwargs, match", [
    ({"dim": 2, "sigma_max": 0.005}, "sigma_max"),
    ({"sigma_max": 5.0}, "dim"),
    ({"dim": 2}, "sigma_max"),
    ({"dim": 2, "sigma_max": 5.0, "num_levels": 1}, "levels"),
    ({"dim": 2, "sigma_max": 5.0, "eps": -1.0}, "eps"),
    ({"dim": 2, "sigma_max": 5.0, "steps_per_level": 0}, "steps-per-level"),
])
def test_helper_rejects_bad_values(kwargs, match):
    with pytest.raises(UserError, match=match):
        ncsnv2_levels(**kwargs)


@pytest.mark.parametrize("kwargs, match", [({"num_levels": 1}, "num_levels"), ({"max_ratio": 1.0}, "max_ratio"),
                                           ({"sigma_min": 2.0, "sigma_max": 1.0}, "sigma_min")])
def test_process_rejects_bad_values(kwargs, match):
    with pytest.raises(UserError, match=match):
        make_process("ncsn", **kwargs)


# ----------------------------------------------------------------------------- CLI
@pytest.fixture
def mog_json(tmp_path):
    path = tmp_path / "mog.json"
    path.write_text(json.dumps({"means": [[5, 5], [-5, -5]], "stds": [1, 1], "weights": [0.8, 0.2]}))
    return path


def test_toy_ncsn_ald_analytic_writes_all_files(tmp_path, mog_json, capsys):
    out = tmp_path / "run"
    rc = main(["toy", "--process", "ncsn", "--solver", "ald", "--field", "analytic", "--dataset", str(mog_json),
               "--n-samples", "300", "--n-data", "500", "--device", "cpu", "--out", str(out)])
    assert rc == 0
    for name in ("config.json", "samples.npy", "metrics.json", "samples.png", "trajectories.png"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    # the NCSNv2 plan: σ_1 = the process's σ_max (the toy's prior-matching rule), L by the ratio rule, 1000-NFE budget
    assert metrics["nfe"] == metrics["levels"] * metrics["steps_per_level"] + 1
    assert metrics["levels"] >= 10 and metrics["sigma_min"] == pytest.approx(0.01)
    config = json.loads((out / "config.json").read_text())
    assert metrics["sigma_max"] == pytest.approx(config["resolved_process"]["sigma_max"])


def test_toy_ald_options_override_the_plan(tmp_path, mog_json):
    out = tmp_path / "run"
    rc = main(["toy", "--process", "ncsn", "--solver", "ald", "--field", "analytic", "--dataset", str(mog_json),
               "--levels", "6", "--steps-per-level", "7", "--eps", "3e-5", "--n-samples", "100", "--n-data", "300",
               "--device", "cpu", "--out", str(out)])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["levels"], metrics["steps_per_level"], metrics["nfe"]) == (6, 7, 43)
    assert metrics["eps"] == pytest.approx(3e-5)


@pytest.mark.parametrize("solver", ["ald", "langevin", "pc", "edm-sde"])
def test_toy_process_without_score_gives_one_line_error(tmp_path, solver, capsys):
    rc = main(["toy", "--process", "pfgmpp", "--D", "4", "--solver", solver, "--n-samples", "20", "--n-data", "100",
               "--device", "cpu", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1
    assert f"solver '{solver}' needs " in err and "process 'pfgmpp' (D=4)" in err
