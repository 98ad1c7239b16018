"""physgen.editing.conditional: the closed forms every editing method is measured against,
checked by brute force (Bayes' rule summed on a fine grid) and by their own draws."""
import re

import pytest
import torch
from hypothesis import given, settings, strategies as st

from physgen.data.mixture import GaussianMixture
from physgen.editing.conditional import LinearPosterior, conditional_mixture, linear_posterior
from physgen.errors import UserError

from editing_cases import MIXTURE

GRID = torch.linspace(-6, 6, 481, dtype=torch.float64)
POINTS = torch.stack([g.flatten() for g in torch.meshgrid(GRID, GRID, indexing="ij")], 1)


def brute_posterior(mixture, A, y, noise_std):
    """``p(x | y)`` on the grid, normalised: the mixture's density times the observation's likelihood."""
    res = POINTS @ torch.as_tensor(A, dtype=torch.float64).T - torch.as_tensor(y, dtype=torch.float64)
    return torch.softmax(mixture.log_prob(POINTS) - 0.5 * res.pow(2).sum(1) / noise_std**2, 0)


@settings(max_examples=8, deadline=None)
@given(a=st.lists(st.floats(-2, 2), min_size=2, max_size=2).filter(lambda r: abs(r[0]) + abs(r[1]) > 0.2),
       y=st.floats(-2, 2), noise=st.floats(0.2, 2.0))
def test_the_linear_posterior_is_bayes_rule_summed_on_a_grid(a, y, noise):
    """Weights (each component's share of the brute-force posterior), mean and covariance."""
    A = torch.tensor([a], dtype=torch.float64)
    post = linear_posterior(MIXTURE, A, torch.tensor([y]), noise)
    w = brute_posterior(MIXTURE, A, [y], noise)
    assert torch.allclose((w[:, None] * post.responsibilities(POINTS)).sum(0), post.weights, atol=2e-3)
    mean = (post.weights[:, None] * post.means).sum(0)
    second = (post.weights[:, None, None] * (post.covs + post.means[:, :, None] * post.means[:, None, :])).sum(0)
    assert torch.allclose((w[:, None] * POINTS).sum(0), mean, atol=2e-3)
    assert torch.allclose(torch.einsum("b,bi,bj->ij", w, POINTS, POINTS), second, atol=5e-3)


def test_observing_coordinates_with_vanishing_noise_is_the_coordinate_conditional():
    """``A = [1, 0]`` with σ_y -> 0 is ``x0 = c``: the weights of :func:`conditional_mixture`, x0 pinned at c."""
    post = linear_posterior(MIXTURE, torch.tensor([[1.0, 0.0]]), torch.tensor([0.4]), 1e-4)
    exact = conditional_mixture(MIXTURE, [0], [0.4])
    assert torch.allclose(post.weights, exact.weights, atol=1e-6)
    assert torch.allclose(post.means[:, 0], torch.full((2,), 0.4, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(post.means[:, 1], exact.means[:, 0]) and torch.allclose(post.covs[:, 1, 1], exact.stds**2)


def test_responsibility_moments_of_its_own_draws_are_its_parameters():
    """``E[r_k] = π'_k``, ``E[r_k x] = π'_k m_k``, ``E[r_k x xᵀ] = π'_k (Σ_k + m_k m_kᵀ)``, even where the
    components overlap (a three-component mixture whose posterior components share half their mass)."""
    mixture = GaussianMixture([[0.0, 0.0], [0.6, 0.2], [-2.0, 1.0]], [0.6, 0.5, 0.4], [0.5, 0.3, 0.2])
    post = linear_posterior(mixture, torch.tensor([[1.0, 1.0]]), torch.tensor([0.3]), 0.5)
    x = post.sample(100_000, torch.Generator().manual_seed(0))
    w, means, covs = post.component_moments(x)
    assert torch.allclose(w, post.weights, atol=5e-3)
    assert torch.allclose(means, post.means, atol=2e-2) and torch.allclose(covs, post.covs, atol=2e-2)
    overlap = post.responsibilities(x).max(1).values
    assert float((overlap < 0.9).double().mean()) > 0.2  # a hard assignment would be biased here


@pytest.mark.parametrize("A,y,noise,needle", [
    ([[1.0, 0.0, 0.0]], [0.0], 0.1, "[m, 2]"),
    ([[1.0, 0.0]], [0.0, 1.0], 0.1, "y (2,)"),
    ([[1.0, 0.0]], [0.0], 0.0, "> 0"),
    ([[1.0, 0.0]], [0.0], float("nan"), "> 0"),
])
def test_a_bad_observation_is_refused(A, y, noise, needle):
    with pytest.raises(UserError, match=re.escape(needle)):
        linear_posterior(MIXTURE, torch.tensor(A), torch.tensor(y), noise)


def test_the_record_round_trips_as_plain_numbers():
    post = linear_posterior(MIXTURE, torch.tensor([[1.0, -1.0]]), torch.tensor([0.5]), 0.3)
    again = LinearPosterior(*(torch.tensor(v, dtype=torch.float64) for v in post.to_dict().values()))
    assert torch.equal(again.means, post.means) and torch.equal(again.covs, post.covs)
