"""The analytical first step (solvers/afs.py, served by physgen.sampling for every eligible row):
one NFE fewer, the first denoiser value is the data's mean (the prior's centre), the result
stays within a few percent of the full solver's error against the exact ODE solution when the
prior is centred on the data's mean (EDM and VP's σ form), and it is refused where it has no
meaning (a solver with more than one call per step, a non-Gaussian kernel, a non-bool value)."""
from __future__ import annotations

import json

import pytest
import torch

from physgen.cli.main import main
from physgen.data import load_toy
from physgen.errors import UserError
from physgen.noise import SeededNoise
from physgen.processes import make_process
from physgen.sampling import sample
from solvers.afs import FirstCallMean

MIX = load_toy("two_mode").mixture  # mean (1.2, 0)


def test_the_first_call_is_the_mean_and_the_rest_the_target():
    calls = []

    class T:
        def denoise(self, x, s):
            calls.append(float(s[0]))
            return 0 * x + 7.0

        def __call__(self, x, s):
            return (x - self.denoise(x, s)) / s[:, None]

    w = FirstCallMean(T(), torch.tensor([1.0, -1.0]))
    x = torch.randn(3, 2)
    assert torch.equal(w.denoise(x, torch.full((3,), 80.0)), torch.tensor([[1.0, -1.0]] * 3)) and calls == [] and w.saved == 1
    assert torch.equal(w.denoise(x, torch.full((3,), 5.0)), torch.full((3, 2), 7.0)) and calls == [5.0]
    v = FirstCallMean(T(), torch.zeros(2))(x, torch.full((3,), 2.0))
    assert torch.allclose(v, x / 2.0)


@pytest.mark.parametrize("name", ["edm", "vp"])
@pytest.mark.parametrize("method", ["dpmpp-2m", "ipndm", "unipc-bh2"])
def test_one_nfe_fewer_at_the_same_error_on_a_centred_prior(name, method):
    p = make_process(name, prior_mean=[1.2, 0.0])
    f, n = p.analytic_field(MIX), 1000
    x0 = p.sample_prior((n, 2), noise=SeededNoise(0, range(n)), dtype=torch.float64)
    g = p.grid(10)
    span = torch.tensor([g[0].item(), g[-2].item(), 0.0] if p.ends_at_zero else [g[0].item(), g[-1].item()], dtype=torch.float64)
    ref = sample(p, f, x0, span, "dopri5", rtol=1e-9, atol=1e-9).x
    full, afs = sample(p, f, x0, g, method), sample(p, f, x0, g, method, afs=True)
    assert afs.stats.nfe == full.stats.nfe - 1 == 9 and afs.stats.extra["afs"] is True
    err = [float((s.x - ref).norm(dim=1).pow(2).mean().sqrt()) for s in (full, afs)]
    assert err[1] < 1.05 * err[0], err
    assert not torch.equal(full.x, afs.x)  # it did replace a call
    off = sample(p, f, x0, g, method, afs=False)
    assert torch.equal(off.x, full.x) and off.stats.nfe == full.stats.nfe


def test_refused_where_it_has_no_meaning():
    p = make_process("edm")
    f, x0 = p.exact_field(torch.zeros(3, 2)), p.sample_prior((4, 2), noise=SeededNoise(0, range(4)))
    with pytest.raises(UserError, match="'heun' is not one"):
        sample(p, f, x0, p.grid(5), "heun", afs=True)
    with pytest.raises(UserError, match="afs must be"):
        sample(p, f, x0, p.grid(5), "dpmpp-2m", afs="yes")
    pf = make_process("pfgmpp", D=128)
    with pytest.raises(UserError, match="needs a Gaussian kernel.*pfgmpp"):
        sample(pf, pf.exact_field(torch.zeros(3, 2)), pf.sample_prior((4, 2)), pf.grid(5), "dpmpp-2m", afs=True)


def test_through_the_cli(tmp_path, capsys):
    base = ["toy", "--process", "edm", "--dataset", "two_mode", "--field", "analytic", "--n-samples", "64", "--solver", "ipndm", "--steps", "6"]
    assert main([*base, "--sampler-opt", "afs=true", "--out", str(tmp_path / "o")]) == 0
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["nfe"] == 5
    capsys.readouterr()
    assert main([*base, "--solver", "heun", "--sampler-opt", "afs=true", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "afs" in err[0]
