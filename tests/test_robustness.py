"""physgen.robustness (PFGM++ §6.2 perturbations) and the d-sweep experiment end to end."""
import csv
import math

import pytest
import torch

import solvers
from physgen.errors import UserError
from physgen.noise import SeededNoise
from physgen.processes.pfgmpp import PFGMpp
from physgen.robustness import budget_schedule, noisy_solve, quantize_tensor, quantize_weights, sample_with_noise
from physgen.sampling import sample


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ quantisation
@pytest.mark.parametrize("bits", [5, 6, 7, 8, 9])
def test_quantize_tensor(bits):
    w = torch.randn(300, 40, generator=gen(bits))
    q = quantize_tensor(w, bits)
    levels = 2 ** (bits - 1) - 1
    step = float(w.abs().max()) / levels
    assert len(torch.unique(q)) <= 2 * levels + 1
    assert float((q - w).abs().max()) <= step / 2 + 1e-6
    assert float(q.abs().max()) == pytest.approx(float(w.abs().max()))
    assert torch.equal(quantize_tensor(-w, bits), -q)  # symmetric
    assert torch.equal(quantize_tensor(torch.zeros(3), bits), torch.zeros(3))


def test_quantize_weights_copies():
    from physgen.nets.mlp import MLP

    torch.manual_seed(0)
    net = MLP(2, hidden=16, depth=1)
    torch.nn.init.normal_(net.out[1].weight)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    q = quantize_weights(net, 5)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])  # original untouched
    for (name, p), (_, p0) in zip(q.named_parameters(), net.named_parameters()):
        assert len(torch.unique(p)) <= 31, name
        assert not torch.equal(p, p0) or len(torch.unique(p0)) <= 31
    for (_, b), (_, b0) in zip(q.named_buffers(), net.named_buffers()):
        assert torch.equal(b, b0)  # buffers are not weights


@pytest.mark.parametrize("bad", [1, 17, 5.5, True, "8"])
def test_quantize_bad_bits(bad):
    with pytest.raises(UserError, match="bits"):
        quantize_weights(torch.nn.Linear(2, 2), bad)


# ------------------------------------------------------------------ noise injection
def _setup(n=64):
    pts = torch.randn(200, 2, generator=gen(1))
    p = PFGMpp(D=8, sigma_max=6.0, sigma_data=1.0)
    x0 = p.sample_prior((n, 2), noise=SeededNoise(0, range(n)))
    return p, p.exact_field(pts), x0


@pytest.mark.parametrize("method", ["euler", "heun", "rk4"])
def test_alpha_zero_is_the_plain_solve(method):
    p, field, x0 = _setup()
    sched = p.grid(8)
    plain = sample(p, field, x0, sched, method)
    split = sample_with_noise(p, field, x0, sched, method, alpha=0.0)
    assert torch.allclose(split.x, plain.x, atol=1e-5)
    assert split.stats.nfe == plain.stats.nfe
    assert split.stats.steps == plain.stats.steps


def test_noise_placement_exact():
    """With a zero flow, x_K = x_0 + Σ_i α s_{i+1} ε_i, and nothing after the step to s = 0."""
    x0 = torch.randn(10, 3, generator=gen(2))
    sched = torch.tensor([5.0, 2.0, 0.5, 0.0], dtype=torch.float64)
    noise = SeededNoise(4, range(10))
    out = noisy_solve(lambda x, s: torch.zeros_like(x), x0, sched, "heun", alpha=0.2, noise=noise)
    expect = x0 + 0.2 * 2.0 * noise(0, x0) + 0.2 * 0.5 * noise(1, x0)
    assert torch.allclose(out.x, expect, atol=1e-6)
    assert out.stats.nfe == 2 * 2 + 1  # two Heun steps and the final Euler step


def test_noise_is_per_sample():
    p, field, x0 = _setup(64)
    sched = p.grid(6)
    full = sample_with_noise(p, field, x0, sched, "heun", alpha=0.1, noise=SeededNoise(9, range(64)))
    part = sample_with_noise(p, field, x0[10:20], sched, "heun", alpha=0.1, noise=SeededNoise(9, range(10, 20)))
    assert torch.allclose(full.x[10:20], part.x, atol=1e-5)
    plain = sample(p, field, x0, sched, "heun")
    assert not torch.allclose(full.x, plain.x, atol=1e-3)


def test_noisy_solve_validation():
    p, field, x0 = _setup(4)
    with pytest.raises(UserError, match="alpha"):
        sample_with_noise(p, field, x0, p.grid(4), "heun", alpha=-0.1)
    with pytest.raises(UserError, match="stochastic"):
        noisy_solve(p.flow(field), x0, p.grid(4), "euler-maruyama", alpha=0.1)
    assert torch.equal(budget_schedule(p, 7), p.grid(7))
    with pytest.raises(UserError, match="--steps must be >= 1, got 0"):
        budget_schedule(p, 0)


def test_noisy_dopri5_runs():
    p, field, x0 = _setup(16)
    sol = sample_with_noise(p, field, x0, p.grid(5), "dopri5", alpha=0.1, generator=gen(3), rtol=1e-3, atol=1e-3)
    assert bool(torch.isfinite(sol.x).all()) and sol.stats.nfe > 0


# ------------------------------------------------------------------ the experiment
def test_spearman():
    from physgen.experiments.d_sweep import spearman

    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 2], [1, 2]))


def test_hd_dataset_shape():
    from physgen.experiments.d_sweep import make_dataset

    name, train, test = make_dataset("hd", "moons", 0, n_train=500, n_test=100)
    assert train.shape == (500, 1000) and test.shape == (100, 1000)
    # it lives on a 10-dim subspace
    s = torch.linalg.svdvals(train - train.mean(0))
    assert float(s[10] / s[0]) < 1e-4


def test_d_sweep_tiny(tmp_path, capsys):
    from physgen.cli.main import main

    out = tmp_path / "ds"
    rc = main(["experiment", "d-sweep", "--out", str(out), "--dims", "toy,hd", "--D-values", "1,16,inf", "--train-steps", "15",
               "--batch", "64", "--hidden", "32", "--depth", "1", "--n-samples", "60", "--steps", "3", "--few-steps", "2",
               "--bits", "5", "--alphas", "0.2", "--device", "cpu", "--dataset", "moons"])
    assert rc == 0
    for name in ("results.csv", "d_sweep.png", "summary.md"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 2 * 3 * 4
    assert {r["D"] for r in rows} == {"1", "16", "inf"}
    summary = (out / "summary.md").read_text()
    assert "Verdict" in summary and "Smaller D more robust" in summary
    assert "[d-sweep]" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--D-values", "0,4"], ["--dims", "toy,cifar"], ["--bits", "x"]])
def test_d_sweep_bad_flags(argv, tmp_path, capsys):
    from physgen.cli.main import main

    assert main(["experiment", "d-sweep", "--out", str(tmp_path / "x"), *argv]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
