"""What each editing method promises, checked on small batches (issue 23)."""
import pytest
import torch
from hypothesis import given, strategies as st

from physgen.data.mixture import GaussianMixture
from physgen.editing import conditional_mixture, inpaint, jump_schedule, ks_statistic, mixture_cdf, sdedit, smc_condition, smc_observe
from physgen.errors import UserError
from physgen.editing.steps import kernel_draw
from physgen.noise import SeededNoise
from physgen.sampling import grid, sample

from editing_cases import MASK, MIXTURE, observed, toy_process


@pytest.fixture(scope="module", params=["edm", "vp"])
def case(request):
    process = toy_process(request.param)
    return process, process.analytic_field(MIXTURE)


def test_conditional_mixture_is_bayes_rule_on_a_line():
    """Brute force: p(x1 | x0 = c) ∝ p(c, x1) on a fine grid, against the closed form's density."""
    c = 0.4
    cond = conditional_mixture(MIXTURE, [0], [c])
    x1 = torch.linspace(-5, 5, 20001, dtype=torch.float64)
    joint = MIXTURE.log_prob(torch.stack([torch.full_like(x1, c), x1], 1)).exp()
    brute = torch.cumsum(joint, 0) / joint.sum()
    assert torch.allclose(mixture_cdf(cond, x1), brute, atol=2e-3)
    assert torch.allclose(conditional_mixture(MIXTURE, [0], [0.0]).weights, torch.tensor([0.3, 0.7], dtype=torch.float64))


def test_ks_statistic_is_the_largest_gap_between_the_cdfs():
    cond = conditional_mixture(MIXTURE, [0], [0.0])
    x = torch.tensor([-1.5, 1.5, 1.5, 2.0], dtype=torch.float64)
    cdf = mixture_cdf(cond, x.sort().values)
    gaps = [abs(float(cdf[i]) - (i + 1) / 4) for i in range(4)] + [abs(float(cdf[i]) - i / 4) for i in range(4)]
    assert ks_statistic(x, cond) == pytest.approx(max(gaps))


@given(st.integers(1, 40), st.integers(1, 8), st.integers(1, 5))
def test_jump_schedule_walks_the_grid_with_repaints_jumps(steps, length, n_sample):
    visited = jump_schedule(steps, length, n_sample)
    moves = [b - a for a, b in zip(visited[:-1], visited[1:])]
    assert visited[0] == 0 and visited[-1] == steps and set(moves) <= {-1, 1} and min(visited) >= 0
    ups = moves.count(-1)
    levels = [lv for lv in range(1, steps - length + 1, length)]
    assert ups == (n_sample - 1) * length * len(levels)
    assert moves.count(1) == steps + ups
    if n_sample == 1:
        assert visited == list(range(steps + 1))


def heun_nfe(visited, s):
    """Heun's NFE over the visited down-steps: 2 per step, 1 for a step to s = 0."""
    return sum(1 if s[b] == 0.0 else 2 for a, b in zip(visited[:-1], visited[1:]) if b > a)


@pytest.mark.parametrize("length, n_sample", [(1, 1), (2, 3), (5, 2)])
def test_inpaint_keeps_the_known_values_and_counts_every_solver_step(case, length, n_sample):
    process, field = case
    known = observed(64, 0.25)
    sol = inpaint(process, field, known, MASK, jump_length=length, jump_n_sample=n_sample, seed=3)
    assert torch.equal(sol.x[:, 0], known[:, 0]) and bool(torch.isfinite(sol.x).all())
    s = grid(process).tolist()
    assert sol.stats.nfe == heun_nfe(jump_schedule(len(s) - 1, length, n_sample), s)
    assert sol.stats.extra["editing"] == ("blend" if n_sample == 1 else "repaint")


def test_blend_runs_any_solver_of_the_table(case):
    process, field = case
    sol = inpaint(process, field, observed(32), MASK, method="euler-ancestral", seed=1)
    assert sol.stats.nfe == len(grid(process)) - 1 and torch.equal(sol.x[:, 0], torch.zeros(32))


@pytest.mark.parametrize("method", ["heun", "euler-ancestral", "dpmpp-2m"])
def test_sdedit_at_strength_1_is_unconditional_sampling_with_the_same_seed(case, method):
    process, field = case
    x = observed(32, 3.0)
    sol = sdedit(process, field, x, strength=1.0, method=method, seed=7)
    noise = SeededNoise(7, range(32))  # physgen toy's draws
    x0 = process.sample_prior(x.shape, noise=noise)
    ref = sample(process, field, x0, grid(process, method=method), method, noise=noise)
    assert torch.equal(sol.x, ref.x) and sol.stats.nfe == ref.stats.nfe


def test_sdedit_at_strength_0_returns_the_input(case):
    process, field = case
    x = observed(16, 0.7)
    sol = sdedit(process, field, x, strength=0.0)
    assert torch.equal(sol.x, x) and sol.stats.nfe == 0


@pytest.mark.parametrize("strength", [0.25, 0.5])
def test_sdedit_runs_the_last_fraction_of_the_grid(case, strength):
    process, field = case
    s = grid(process).tolist()
    k = len(s) - 1 - round(strength * (len(s) - 1))
    sol = sdedit(process, field, MIXTURE.sample(16, generator=torch.Generator().manual_seed(0)), strength=strength)
    assert sol.stats.extra["grid"] == s[k:] and sol.stats.nfe == heun_nfe(list(range(len(s) - k)), s[k:])


def test_a_small_s_start_keeps_the_input_near_itself():
    """Hijacking late (s_start = 0.05 on EDM) moves mixture samples by about the kernel's scale."""
    process = toy_process("edm")
    x = MIXTURE.sample(256, generator=torch.Generator().manual_seed(2))
    sol = sdedit(process, process.analytic_field(MIXTURE), x, s_start=0.05)
    assert sol.stats.extra["grid"][0] == 0.05 and float((sol.x - x).norm(dim=1).median()) < 0.1


@pytest.mark.parametrize("D", [1, 4, 128])
def test_the_known_coordinates_are_drawn_from_the_kernels_exact_marginal(D):
    """PFGM++ (D): the kernel drawn on m = 2 coordinates has the law of the first two of the
    kernel drawn in N = 6 (a Student-t's marginal), compared by the radii's two-sample KS."""
    process = toy_process("pfgmpp", D=D)
    n, s = 20000, torch.full((20000,), 0.7)
    g = torch.Generator().manual_seed(D)
    full = process.perturb(torch.zeros(n, 6), s, generator=g)[:, :2].norm(dim=1)
    marginal = kernel_draw(process, torch.zeros(n, 2), 0.7, g).norm(dim=1)
    both = torch.cat([full, marginal]).double()
    order = both.argsort()
    steps = torch.where(order < n, 1.0 / n, -1.0 / n)
    assert float(torch.cumsum(steps, 0).abs().max()) < 1.63 * (2 / n) ** 0.5  # KS two-sample, 1%


def test_smc_keeps_one_population_per_observation_and_counts_its_nfe(case):
    process, field = case
    known = torch.cat([observed(64, 0.0), observed(32, 1.0)])
    sol = smc_condition(process, field, known, MASK, steps=20, seed=0)
    assert torch.equal(sol.x[:, 0], known[:, 0]) and sol.stats.extra["particles"] == [64, 32]
    positive = [v for v in grid(process, 20).tolist() if v > 0]
    assert sol.stats.nfe == len(positive) and len(sol.stats.extra["ess"]) == len(positive)
    upper = sol.x[64:, 1]  # given x0 = 1 the conditional is almost all the right mode
    assert float((upper > 0).double().mean()) > 0.9


def test_smc_observe_samples_the_gaussian_posterior_of_a_noisy_linear_observation():
    """One Gaussian N(μ, c² I), y = x0 + x1 + n, σ_y = 0.3: the posterior is Gaussian with
    Σ = (I/c² + AᵀA/σ_y²)⁻¹ and mean Σ(μ/c² + Aᵀy/σ_y²); particles' mean and covariance match."""
    gaussian = GaussianMixture([[0.5, -0.5]], [0.7])
    process = toy_process("edm")
    A, y = torch.tensor([[1.0, 1.0]]), torch.full((3000, 1), 1.2)
    sol = smc_observe(process, process.analytic_field(gaussian), y, A, (2,), noise_std=0.3, steps=60, seed=0)
    A64 = A.double()
    cov = torch.linalg.inv(torch.eye(2, dtype=torch.float64) / 0.49 + A64.T @ A64 / 0.09)
    mean = cov @ (torch.tensor([0.5, -0.5], dtype=torch.float64) / 0.49 + A64.T[:, 0] * 1.2 / 0.09)
    x = sol.x.double()
    assert torch.allclose(x.mean(0), mean, atol=0.05), (x.mean(0), mean)
    assert torch.allclose(torch.cov(x.T), cov, atol=0.04), (torch.cov(x.T), cov)
    assert sol.stats.extra["particles"] == [3000] and sol.stats.nfe == 60


def test_smc_observe_refuses_a_matrix_of_the_wrong_shape():
    process = toy_process("edm")
    with pytest.raises(UserError, match=r"\[m, 2\]"):
        smc_observe(process, process.analytic_field(MIXTURE), torch.zeros(4, 1), torch.ones(1, 3), (2,), noise_std=0.1)
