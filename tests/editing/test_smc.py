"""physgen.editing.smc: twisted SMC given a noisy linear observation recovers the closed-form
posterior of a Gaussian mixture (weights and each component's moments), default options."""
import pytest
import torch

from physgen.editing import smc_observe
from physgen.editing.conditional import linear_posterior
from physgen.editing.smc import SMC_STEPS
from physgen.errors import UserError

from editing_cases import MIXTURE, toy_process

# y = x0 - x1 + n, σ_y = 0.3, y = 0.5: the prior's 0.3 / 0.7 become 0.5 / 0.5, each component
# squeezed along (1, -1) (covariances [[0.144, 0.106], [0.106, 0.144]]) and moved along it
A, Y, NOISE = torch.tensor([[1.0, -1.0]]), torch.tensor([0.5]), 0.3


@pytest.mark.parametrize("name", ["edm", "vp"])
def test_smc_observe_recovers_the_closed_form_posterior_of_a_mixture(name):
    """4000 particles, the default chain: each component's weight within 0.03 of the closed form,
    its mean within 0.05 and covariance within 0.04 (measured over seeds 0-9: at most 0.026,
    0.022 and 0.020); responsibilities weigh the samples, no assignment by nearest mode."""
    process = toy_process(name)
    post = linear_posterior(MIXTURE, A, Y, NOISE)
    assert torch.allclose(post.weights, torch.tensor([0.5, 0.5], dtype=torch.float64), atol=1e-3)  # the case moves the weights
    sol = smc_observe(process, process.analytic_field(MIXTURE), Y.repeat(4000, 1), A, (2,), noise_std=NOISE, seed=0)
    w, means, covs = post.component_moments(sol.x)
    assert (w - post.weights).abs().max() <= 0.03, w
    assert (means - post.means).abs().max() <= 0.05, means
    assert (covs - post.covs).abs().max() <= 0.04, covs
    assert sol.stats.nfe == SMC_STEPS + (name == "vp") and sol.stats.extra["particles"] == [4000]
    # no particle far outside both components: its squared Mahalanobis distance to the nearer one below 6²
    d2 = 2 * (post.component_log_prob(post.means).diagonal() - post.component_log_prob(sol.x))
    assert float(d2.min(1).values.max()) < 36


def test_a_noise_free_observation_is_refused():
    process = toy_process("edm")
    with pytest.raises(UserError, match="noise_std"):
        smc_observe(process, process.analytic_field(MIXTURE), Y.repeat(8, 1), A, (2,), noise_std=0.0)
