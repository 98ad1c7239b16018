"""Slow tier: NCSN end to end (denoising score matching on the discrete levels, then annealed
Langevin with the NCSNv2 plan) and the langevin-mixture experiment at its default size."""
from __future__ import annotations

import io
import json

import pytest
import torch

from physgen.metrics import mmd, mode_weights

pytestmark = pytest.mark.slow


def test_trained_ncsn_samples_the_weighted_mixture_with_annealed_langevin():
    from physgen.data import load_toy
    from physgen.nets.mlp import MLP
    from physgen.noise import SeededNoise
    from physgen.processes import make_process
    from physgen.processes.ncsnv2 import max_pairwise_distance
    from physgen.sampling import sample
    from physgen.training import TrainConfig, train

    torch.manual_seed(0)
    ds = load_toy("ncsn_mog")  # 0.8 N((5,5), I) + 0.2 N((-5,-5), I)
    data = ds.sample(20_000, torch.Generator().manual_seed(0))
    ref = ds.sample(2000, torch.Generator().manual_seed(1))
    p = make_process("ncsn", sigma_max=max_pairwise_distance(data), sigma_min=0.01, sigma_data=float(data.std()))
    field = p.precondition(MLP(2, hidden=128, depth=3))

    def batch(n, g):
        return data[torch.randint(0, data.shape[0], (n,), generator=g)], None

    res = train(p, field, batch, TrainConfig(steps=3000, batch=256, lr=2e-3, log_every=500, ema_halflife=20_000),
                log_stream=io.StringIO())
    assert p.num_levels == 20  # the NCSNv2 ratio rule for N = 2 (ratio cap 1.5), bound by training
    noise = SeededNoise(0, range(2000))
    x0 = p.sample_prior((2000, 2), noise=noise)
    with torch.no_grad():
        sol = sample(p, res.ema, x0, p.grid(18), "ald", noise=noise)
    w = mode_weights(sol.x, ds.mixture.means)
    assert abs(float(w[0]) - 0.8) < 0.05
    assert mmd(sol.x, ref) < 0.03
    near = torch.cdist(sol.x.double(), ds.mixture.means).min(1).values < 4.0
    assert float(near.double().mean()) > 0.99


def test_langevin_mixture_experiment_at_default_size(tmp_path):
    from physgen.cli.main import main

    assert main(["experiment", "langevin-mixture", "--out", str(tmp_path)]) == 0
    rows = {r["sampler"]: r for r in json.loads((tmp_path / "weights.json").read_text())["samplers"]}
    assert abs(rows["annealed"]["weight_(5,5)"] - 0.8) < 0.03
    assert abs(rows["plain"]["weight_(5,5)"] - 0.5) < 0.05
    assert abs(rows["ncsnv2"]["weight_(5,5)"] - 0.8) < 0.05
