"""Reflow's pieces (physgen/reflow.py): straightness on fields with known paths, and the pairs."""
from __future__ import annotations

import torch

from physgen.processes import make_process
from physgen.reflow import reflow_pairs, straightness


def test_one_point_rectified_flow_paths_are_straight_and_a_mixture_bends_them():
    """Towards one point ``y0`` the exact RF velocity ``(x - y0)/t`` is constant along each path
    (``S = 0``); towards two separated modes the paths bend where they choose a mode."""
    rf = make_process("rectified-flow")
    x0 = rf.sample_prior((256, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    one = rf.exact_field(torch.tensor([[1.0, 2.0]], dtype=torch.float64))
    assert straightness(rf, one, x0, steps=50) < 1e-12
    two = rf.exact_field(torch.tensor([[-3.0, 0.0], [3.0, 0.0]], dtype=torch.float64))
    assert straightness(rf, two, x0, steps=50) > 0.5


def test_rectified_flow_paths_to_one_gaussian_are_straighter_than_vps():
    """For data ``N((2, 0), 0.5² I)`` RF's paths bend only where they contract to the data's
    spread; VP's path (``a = exp(-½∫β)``) bends every path: measured 0.45 against 2.27."""
    mix = type("Mix", (), {"means": torch.tensor([[2.0, 0.0]]), "stds": torch.tensor([0.5]), "weights": torch.ones(1)})()
    rf, vp = make_process("rectified-flow"), make_process("fm-vp")
    g = torch.Generator().manual_seed(1)
    s_rf = straightness(rf, rf.analytic_field(mix), rf.sample_prior((256, 2), generator=g, dtype=torch.float64))
    s_vp = straightness(vp, vp.analytic_field(mix), vp.sample_prior((256, 2), generator=g, dtype=torch.float64))
    assert s_rf < 0.5 * s_vp


def test_reflow_pairs_end_at_the_data_of_a_one_point_field():
    rf = make_process("rectified-flow")
    field = rf.exact_field(torch.tensor([[1.0, -1.0]]))
    z, y = reflow_pairs(rf, field, 64, "heun", 10, generator=torch.Generator().manual_seed(0))
    assert z.shape == y.shape == (64, 2)
    assert torch.allclose(y, torch.tensor([[1.0, -1.0]]).expand(64, 2) * (1 - rf.s_min) + rf.s_min * z, atol=1e-4)
