"""Couplings for flow matching (physgen/processes/couplings.py): minibatch OT against the
closed-form W2, the Sinkhorn plan's marginals and limits, the global coupling under gloo, and
what a coupled process offers."""
from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from physgen.cli.main import main
from physgen.processes import NoScoreError, make_process
from physgen.processes.couplings import couple, partners, sinkhorn_log_plan


def two_gaussians(n: int, seed: int = 0):
    """``y ~ N((3, 0), 0.5² I)``, ``z ~ N(0, I)``: ``W2² = ‖m‖² + d (s - 1)² = 9 + 2 · 0.25 = 9.5``."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(n, 2, generator=g, dtype=torch.float64) * 0.5 + torch.tensor([3.0, 0.0], dtype=torch.float64)
    return y, torch.randn(n, 2, generator=g, dtype=torch.float64), 9.5


def mean_sq(y, z) -> float:
    return float((y - z).pow(2).sum(1).mean())


def test_minibatch_ot_pairs_cost_the_closed_form_w2_at_batch_1024():
    y, z, w2sq = two_gaussians(1024)
    index = partners(y, z, "ot")
    assert sorted(index.tolist()) == list(range(1024))  # a permutation: both marginals kept
    assert abs(mean_sq(y, z[index]) - w2sq) / w2sq < 0.05
    assert mean_sq(y, z) > 1.1 * w2sq  # the independent pairs cost ‖m‖² + d(s² + 1) = 11.5


def test_sinkhorn_plan_has_uniform_marginals_and_its_limits():
    y, z, _ = two_gaussians(128, seed=1)
    cost = torch.cdist(y, z).pow(2)
    plan = sinkhorn_log_plan(cost / cost.mean(), 0.05).exp()
    assert torch.allclose(plan.sum(1), torch.full((128,), 1 / 128, dtype=torch.float64), rtol=1e-4)
    assert torch.allclose(plan.sum(0), torch.full((128,), 1 / 128, dtype=torch.float64), rtol=1e-4)
    ot = mean_sq(y, z[partners(y, z, "ot")])
    sharp = float((sinkhorn_log_plan(cost / cost.mean(), 1e-3).exp() * cost).sum())
    flat = float((sinkhorn_log_plan(cost / cost.mean(), 1e3).exp() * cost).sum())
    assert ot <= sharp < 1.01 * ot  # ε -> 0: the OT plan
    assert abs(flat - float(cost.mean())) < 0.01 * float(cost.mean())  # ε -> ∞: the independent plan
    # each data row draws its partner from its row of the plan: the pairs cost the plan's cost on average
    planned = float((plan * cost).sum())
    drawn = [mean_sq(y, z[partners(y, z, "sinkhorn", 0.05, torch.Generator().manual_seed(k))]) for k in range(20)]
    assert abs(sum(drawn) / 20 - planned) < 0.02 * planned


def test_independent_coupling_keeps_the_batch():
    y, z, _ = two_gaussians(8)
    assert couple(y, z, "independent")[1] is z


def _worker(rank: int, world: int, init_file: str, coupling: str, out: str):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        y, z, _ = two_gaussians(64, seed=5)
        b = 64 // world
        generator = torch.Generator().manual_seed(11)
        _, paired = couple(y[rank * b:(rank + 1) * b], z[rank * b:(rank + 1) * b], coupling, 0.05, generator)
        torch.save(paired, f"{out}.{world}.{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("coupling", ["ot", "sinkhorn"])
def test_global_coupling_under_gloo_does_not_depend_on_the_process_count(tmp_path, coupling):
    out = str(tmp_path / "pairs")
    for world in (1, 2):
        mp.spawn(_worker, args=(world, str(tmp_path / f"init{world}"), coupling, out), nprocs=world, join=True)
    one = torch.load(f"{out}.1.0.pt")
    two = torch.cat([torch.load(f"{out}.2.{r}.pt") for r in range(2)])
    y, z, _ = two_gaussians(64, seed=5)
    assert torch.equal(one, two)
    assert torch.equal(one, z[partners(y, z, coupling, 0.05, torch.Generator().manual_seed(11))])


def test_a_coupled_process_refuses_the_score_naming_its_coupling():
    p = make_process("rectified-flow", coupling="ot")
    field = p.exact_field(torch.randn(10, 2))
    assert set(p.offers(field)) == {"flow", "denoiser"} and "sde" not in p.capabilities()
    with pytest.raises(NoScoreError, match="'ot' coupling"):
        p.score(field, torch.randn(4, 2), torch.full((4,), 0.5))


def test_toy_refuses_a_score_sampler_for_a_coupled_flow_in_one_line(tmp_path, capsys):
    data = tmp_path / "mix.json"
    data.write_text('{"means": [[-2.0, 0.0], [2.0, 0.0]], "stds": [0.3, 0.3], "weights": [0.2, 0.8]}')
    argv = ["toy", "--process", "rectified-flow", "--coupling", "ot", "--dataset", str(data), "--field", "exact", "--n-data", "50",
            "--n-samples", "20", "--solver", "euler-maruyama", "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "euler-maruyama" in err[0] and "'ot' coupling: not Gaussian given the data, no score" in err[0], err


def test_toy_trains_with_the_ot_coupling(tmp_path):
    data = tmp_path / "mix.json"
    data.write_text('{"means": [[-2.0, 0.0], [2.0, 0.0]], "stds": [0.3, 0.3], "weights": [0.2, 0.8]}')
    out = tmp_path / "run"
    assert main(["toy", "--process", "rectified-flow", "--coupling", "sinkhorn", "--sinkhorn-eps", "0.1", "--dataset", str(data),
                 "--field", "mlp", "--train-steps", "5", "--batch", "64", "--n-samples", "20", "--out", str(out)]) == 0
    assert '"sinkhorn_eps": 0.1' in (out / "config.json").read_text()

