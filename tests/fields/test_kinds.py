"""The converters between field kinds (physgen.fields.kinds) on an affine path x = a y + b ε.

Conditioned on one data point the posterior is a point mass, so each kind has a known value:
D = y, eps = ε, score = -ε/b, v = a ε - b y, velocity = a' y + b' ε.  Every converter, and
convert_gaussian for every ordered pair of kinds, must map one to the other.
"""
import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from physgen.fields.kinds import FIELD_KINDS, convert_gaussian

positive = st.floats(0.05, 20.0)
slope = st.floats(-5.0, 5.0).filter(lambda v: abs(v) > 1e-2)


def _truth(a, b, da, db, seed):
    g = torch.Generator().manual_seed(seed)
    y, eps = torch.randn(6, 3, generator=g, dtype=torch.float64), torch.randn(6, 3, generator=g, dtype=torch.float64)
    x = a * y + b * eps
    return x, {"denoiser": y, "eps": eps, "score": -eps / b, "v": a * eps - b * y, "velocity": da * y + db * eps}


@settings(max_examples=60, deadline=None)
@given(a=positive, b=positive, da=slope, db=slope, seed=st.integers(0, 2**31 - 1))
def test_every_pair_of_kinds_converts_on_an_affine_path(a, b, da, db, seed):
    if abs(da * b - a * db) < 1e-3 * (abs(da * b) + abs(a * db)):  # a'/a = b'/b: the velocity does not determine D
        return
    x, truth = _truth(a, b, da, db, seed)
    col = lambda v: torch.full((6,), v, dtype=torch.float64)  # noqa: E731
    for source, target in itertools.permutations(FIELD_KINDS, 2):
        got = convert_gaussian(truth[source], source, target, x, col(a), col(b), col(da), col(db))
        scale = 1.0 + truth[target].abs().max()
        assert torch.allclose(got, truth[target], rtol=1e-7, atol=1e-7 * float(scale)), (source, target)


def test_velocity_without_the_path_derivatives_is_refused():
    x = torch.randn(4, 2, dtype=torch.float64)
    one = torch.ones(4, dtype=torch.float64)
    with pytest.raises(ValueError, match="needs the path's derivatives"):
        convert_gaussian(x, "velocity", "denoiser", x, one, one)
    with pytest.raises(ValueError, match="needs the path's derivatives"):
        convert_gaussian(x, "eps", "velocity", x, one, one)
    with pytest.raises(ValueError, match="no Gaussian conversion from a 'flux' field"):
        convert_gaussian(x, "flux", "denoiser", x, one, one)


def test_v_is_salimans_and_ho_on_vp():
    """On VP (a² + b² = 1) v = a ε - b y and D = a x - b v (arXiv 2202.00512, §4)."""
    t = torch.linspace(0.1, 1.4, 6, dtype=torch.float64)
    a, b = torch.cos(t), torch.sin(t)
    x, truth = _truth(a[:, None], b[:, None], 0.0, 0.0, 3)
    assert torch.allclose(convert_gaussian(truth["v"], "v", "denoiser", x, a, b), a[:, None] * x - b[:, None] * truth["v"], atol=1e-12)
