"""Reflow's pieces (physgen/reflow.py): straightness on fields with known paths, and the pairs."""
from __future__ import annotations

import io

import torch

from physgen.processes import make_process
from physgen.reflow import PairRegression, ReflowConfig, path_noise, reflow_pairs, run_reflow, straightness
from physgen.data import load_toy
from physgen.toy import ToyConfig, build_field, toy_process


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


def test_path_noise_inverts_the_prior_draw_around_its_centre():
    rf = make_process("rectified-flow", prior_mean=[0.5, -1.0])
    x = rf.sample_prior((512, 2), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    z = path_noise(rf, x)
    a, b = rf.coefficients(torch.tensor([rf.s_max], dtype=torch.float64))
    assert torch.allclose(b * z + a * torch.tensor([0.5, -1.0], dtype=torch.float64), x, atol=1e-12)
    assert abs(float(z.mean())) < 0.1 and abs(float(z.std()) - 1.0) < 0.05  # the N(0, I) the path was trained with


def test_pair_regression_vanishes_on_the_pairs_of_a_field_that_is_the_straight_line():
    """Pairs ``(z, y)`` and a velocity field ``u = z - y`` given by an oracle: the regression is 0;
    any other field pays ``‖u - (z - y)‖²`` (rectified flow's ``a' = -1, b' = 1``)."""
    rf = make_process("rectified-flow")
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(64, 2, generator=g), torch.randn(64, 2, generator=g) + 3.0

    class Oracle(torch.nn.Module):
        kind = "velocity"

        def forward(self, x, t, label=None):
            return z - y

    pairs = torch.stack([z, y], 1)
    assert float(PairRegression(rf).loss(Oracle(), pairs, generator=g).max()) < 1e-10
    assert PairRegression(rf).name == "rectified-flow" and PairRegression(rf).config() == rf.config()


def test_reflow_straightens_a_tiny_rectified_flow_and_its_one_step_samples(tmp_path):
    """A 1-rectified flow trained briefly on moons (toy's MLP training, checkpoint in RUN), reflowed
    on 600 of its own pairs with the same budget: the straightness and Euler's 1-NFE sliced W2
    both fall (measured 1.2 -> 0.02 and 1.1 -> 0.3)."""
    run = tmp_path / "rf1"
    config = ToyConfig(process="rectified-flow", field="mlp", n_data=600, train_steps=80, batch=128, hidden=32, depth=2)
    dataset = load_toy("moons")
    data = dataset.sample(600, torch.Generator().manual_seed(0))
    build_field(toy_process(config, data), "mlp", dataset, data, None, config, torch.device("cpu"), io.StringIO(), out_dir=run)
    m = run_reflow(ReflowConfig(ckpt=str(run), out=str(tmp_path / "rf2"), n_pairs=600, n_eval=400, straightness_steps=20), log_stream=io.StringIO())
    assert m["k"] == 2 and m["train_steps"] == 80  # RUN's budget by default
    assert m["straightness_after"] < 0.5 * m["straightness_before"]
    assert m["sliced_w2_euler_after"]["1"] < m["sliced_w2_euler_before"]["1"]
