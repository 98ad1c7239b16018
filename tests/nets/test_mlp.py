"""The toy MLP's noise embedding: ``c_noise`` divided by its unit, so a process that feeds
DDPM's ``999 t`` (VP) reaches the embedding as the O(1) ``4 t`` it was designed for."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from physgen import checkpoints
from physgen.compare.problems import ToyProblem, load_toy_checkpoint
from physgen.data import load_toy
from physgen.fields.neural import c_noise_unit
from physgen.nets.mlp import MLP
from physgen.processes import make_process
from physgen.runtime import initial_weights
from physgen.toy import ToyConfig, build_field


@settings(deadline=None, max_examples=25)
@given(st.floats(1e-3, 1e3), st.floats(-5.0, 5.0))
def test_the_unit_only_rescales_the_noise_input(unit, c):
    with initial_weights(0):
        plain = MLP(2, hidden=8, depth=1)
    scaled = MLP(2, hidden=8, depth=1, c_noise_unit=unit)
    scaled.load_state_dict(plain.state_dict())
    for p in plain.out.parameters():  # the zero-initialised output layer would hide any difference
        torch.nn.init.normal_(p, generator=torch.Generator().manual_seed(1))
    scaled.out.load_state_dict(plain.out.state_dict())
    # float64: in float32 the rounding of c * unit alone, amplified by the embedding, reaches 3e-5 (CI saw it)
    plain, scaled = plain.double(), scaled.double()
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    c_in = torch.full((4,), c, dtype=torch.float64)
    torch.testing.assert_close(scaled(x, c_in * unit), plain(x, c_in), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("unit", [0.0, -1.0, math.inf, math.nan])
def test_a_unit_that_is_not_positive_and_finite_is_refused(unit):
    with pytest.raises(ValueError, match="c_noise_unit"):
        MLP(2, c_noise_unit=unit)


@pytest.mark.parametrize("process,unit", [("vp", 999.0 / 4), ("edm", 1.0), ("ve", 1.0), ("pfgmpp", 1.0), ("pfgm", 1.0)])
def test_the_toy_mlp_takes_its_process_unit(process, unit):
    """What ``physgen toy --field mlp`` builds: VP's 999 t reaches the embedding as 4 t in [0, 4]."""
    data = load_toy("moons").sample(64, torch.Generator().manual_seed(0))
    proc = make_process(process)
    cfg = ToyConfig(process=process, field="mlp", train_steps=1, batch=8, hidden=8, depth=1, device="cpu")
    field, _ = build_field(proc, "mlp", load_toy("moons"), data, None, cfg, torch.device("cpu"), log_stream=open("/dev/null", "w"))
    assert field.net.c_noise_unit == unit == c_noise_unit(field)


def test_a_toy_checkpoint_keeps_the_unit_and_an_older_one_reads_as_1(tmp_path):
    """compare-solvers' saved MLP records its unit; a checkpoint written before it was recorded
    (no ``c_noise_unit`` in its spec) was trained with 1 and is rebuilt with 1."""
    cfg = ToyConfig(process="vp", dataset="moons", field="mlp", n_data=128, n_samples=16, train_steps=2, batch=8, hidden=8, depth=1,
                    device="cpu")
    trained = ToyProblem.from_config(cfg, out=str(tmp_path / "run"), log_stream=open("/dev/null", "w"))
    path = trained.info["checkpoint"]
    loaded = load_toy_checkpoint(path)
    assert loaded["meta"]["toy"]["net"]["c_noise_unit"] == loaded["field"].net.c_noise_unit == 999.0 / 4
    x, t = torch.randn(5, 2), torch.full((5,), 0.3)
    torch.testing.assert_close(loaded["field"](x, t), trained.field(x, t))
    ckpt = checkpoints.read(path)
    meta = {**ckpt.meta, "toy": {**ckpt.meta["toy"], "net": {k: v for k, v in ckpt.meta["toy"]["net"].items() if k != "c_noise_unit"}}}
    checkpoints.save(tmp_path / "old", {**ckpt.payload, "meta": meta}, kind="toy-mlp", step=ckpt.step, meta=meta)
    assert load_toy_checkpoint(tmp_path / "old")["field"].net.c_noise_unit == 1.0
