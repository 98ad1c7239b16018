"""End-to-end sampling with exact and analytic fields: the target law is recovered."""
import pytest
import torch

import solvers
from physgen.data import load_toy, two_mode_mixture
from physgen.metrics import mode_weights, sample_metrics, sliced_w2
from physgen.noise import SeededNoise
from physgen.processes import EDM, VE, VP
from physgen.sampling import sample
from toy_fields import CountingDenoiser

CENTERS = torch.tensor([[-2.0, 0.0], [2.0, 0.0]])


def _check_two_modes(x, tol_w=0.03, tol_std=0.15):
    w = mode_weights(x, CENTERS)
    assert abs(float(w[0]) - 0.2) < tol_w, w
    for k, c in enumerate(CENTERS):
        pts = x[((x - c) ** 2).sum(1) < 1.0]
        std = pts.std(0)
        assert torch.all((std / 0.3 - 1).abs() < tol_std), (k, std)


@pytest.mark.parametrize(
    "proc,field_kind,method,steps",
    [
        (EDM(sigma_max=10.0), "analytic", "heun", 18),
        (EDM(sigma_max=10.0), "exact", "heun", 18),
        (VE(sigma_max=10.0), "analytic", "rk4", 12),
        (VP(), "analytic", "heun", 60),
        (VE(sigma_max=10.0, sigma_min=0.01), "analytic", "euler-maruyama", 400),
        (EDM(sigma_max=10.0), "analytic", "dopri5", 8),
    ],
    ids=["edm-analytic-heun", "edm-exact-heun", "ve-analytic-rk4", "vp-analytic-heun", "ve-analytic-em", "edm-analytic-dopri5"],
)
def test_sampling_recovers_weighted_two_mode_mixture(proc, field_kind, method, steps):
    mix = two_mode_mixture()
    g = torch.Generator().manual_seed(0)
    if field_kind == "exact":
        field = proc.exact_field(mix.sample(4000, g))
    else:
        field = proc.analytic_field(mix)
    n = 3000
    noise = SeededNoise(1, range(n))
    x0 = proc.sample_prior((n, 2), noise=noise)
    options = {"rtol": 1e-4, "atol": 1e-4} if method == "dopri5" else {}
    with torch.no_grad():
        sol = sample(proc, field, x0, proc.grid(steps), method, noise=noise, **options)
    _check_two_modes(sol.x)


def test_heun_nfe_on_the_process_schedule_is_2k_minus_1():
    proc = EDM(sigma_max=10.0)
    field = proc.analytic_field(two_mode_mixture())
    counting = CountingDenoiser(field)
    x0 = proc.sample_prior((10, 2), generator=torch.Generator().manual_seed(0))
    sol = sample(proc, counting, x0, proc.grid(18), "heun")
    assert sol.stats.nfe == counting.calls == 2 * 18 - 1


def test_stochastic_sample_does_not_depend_on_its_batch():
    """Per-sample seeded noise: sample i is the same drawn alone, in a batch, or at an offset."""
    proc = VE(sigma_max=10.0)
    field = proc.analytic_field(two_mode_mixture())
    schedule = proc.grid(30)

    def draw(indices):
        noise = SeededNoise(7, indices)
        x0 = proc.sample_prior((len(indices), 2), noise=noise, dtype=torch.float64)
        return sample(proc, field, x0, schedule, "euler-maruyama", noise=noise).x

    full = draw(range(0, 1500))
    part = draw(range(1000, 1300))
    assert torch.allclose(full[1000:1300], part, atol=1e-12)
    shuffled = torch.tensor([5, 1400, 3, 1028])
    assert torch.allclose(draw(shuffled), full[shuffled], atol=1e-12)


def test_trained_mlp_beats_a_gaussian_fit_on_moons():
    from physgen.toy import ToyConfig, run_toy

    config = ToyConfig(process="edm", dataset="moons", field="mlp", n_data=5000, train_steps=600, batch=256, hidden=64, depth=2, n_samples=1500, seed=0, device="cpu")
    metrics = run_toy(config)
    ds = load_toy("moons")
    g = torch.Generator().manual_seed(3)
    data = ds.sample(5000, g)
    ref = ds.sample(1500, torch.Generator().manual_seed(0 + 1_000_003))
    gauss = data.mean(0) + torch.randn(1500, 2, generator=g) @ torch.linalg.cholesky(torch.cov(data.T)).T
    baseline = sliced_w2(gauss, ref)
    assert metrics["sliced_w2"] < 0.6 * baseline, (metrics["sliced_w2"], baseline)
