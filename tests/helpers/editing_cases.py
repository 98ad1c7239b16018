"""The case every editing test measures: a two-mode mixture observed at x0 = 0 (issue 23)."""
import torch

from physgen.data.mixture import GaussianMixture
from physgen.editing import conditional_mixture
from physgen.processes import data_defaults, make_process

MIXTURE = GaussianMixture([[-1.0, -1.5], [1.0, 1.5]], [0.5, 0.5], [0.3, 0.7])
CONDITIONAL = conditional_mixture(MIXTURE, [0], [0.0])  # 0.3 N(-1.5, 0.25) + 0.7 N(1.5, 0.25)
MASK = torch.tensor([1.0, 0.0])


def toy_process(name: str, **options):
    """The process with the toy defaults ``physgen toy`` gives it on this mixture's data."""
    data = MIXTURE.sample(20000, generator=torch.Generator().manual_seed(0)).float()
    return make_process(name, **{**data_defaults(name, data, options), **options})


def observed(n: int, value: float = 0.0) -> torch.Tensor:
    known = torch.zeros(n, 2)
    known[:, 0] = value
    return known


def left_weight(x: torch.Tensor) -> float:
    """The weight of the conditional's left mode (x1 < 0; the modes are 6 stds apart)."""
    return float((x[:, 1] < 0).double().mean())


def mode_stds(x: torch.Tensor) -> tuple[float, float]:
    x1 = x[:, 1]
    return float(x1[x1 < 0].std()), float(x1[x1 >= 0].std())
