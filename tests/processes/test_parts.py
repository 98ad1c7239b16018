"""The parts processes are composed of (physgen/processes/parts.py): the kernel part decides what a
denoiser-form process offers, the training laws draw the laws they name, and the VE/VP losses have
their closed-form minima at the true field."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from physgen.kernels import GaussianKernel, StudentTKernel
from physgen.pretrained.load import Pretrained
from physgen.processes import make_process
from physgen.processes.base import NoScoreError
from physgen.processes.parts import (GAUSSIAN_NEEDS, GaussianKernelPart, LogUniformSigma, RadialKernelPart, UniformTime,
                                     eps_matching_loss, kernel_part, score_matching_loss)
from physgen.errors import UserError


class CentredGaussianScore:
    """The true field of data N(0, c² I) on the marginal x = a y + b ε, as a ``score`` field."""

    kind = "score"

    def __init__(self, process, c: float):
        self.process, self.c = process, c

    def __call__(self, x, s, label=None):
        a, b = self.process.coefficients(s)
        var = (a**2 * self.c**2 + b**2).reshape(-1, *[1] * (x.dim() - 1))
        return -x / var


def test_the_kernel_part_follows_the_kernels_declaration():
    assert isinstance(kernel_part(GaussianKernel()), GaussianKernelPart)
    assert isinstance(kernel_part(StudentTKernel(4)), RadialKernelPart)
    for D, gaussian in ((4, False), (math.inf, True)):
        p = make_process("pfgmpp", D=D)
        assert (GAUSSIAN_NEEDS <= p.capabilities()) == gaussian
        assert ({"sde", "transition", "score"} <= set(p.offers(CentredGaussianScore(p, 1.0)))) == gaussian


def test_a_radial_kernel_refuses_the_score_and_other_field_kinds():
    p = make_process("pfgmpp", D=4)
    field = CentredGaussianScore(p, 1.0)
    x, s = torch.zeros(3, 2), torch.ones(3)
    with pytest.raises(NoScoreError, match="its kernel is not Gaussian"):
        p.score(field, x, s)
    with pytest.raises(UserError, match="needs a denoiser field, got a 'score' field"):
        p.denoise(field, x, s)
    with pytest.raises(UserError, match="no analytic Gaussian-mixture field"):
        p.analytic_field(None)


def test_the_gaussian_part_gives_tweedies_denoiser_from_a_score():
    p = make_process("edm")
    c, x, s = 0.7, torch.randn(5, 2, dtype=torch.float64), torch.full((5,), 0.9, dtype=torch.float64)
    d = p.denoise(CentredGaussianScore(p, c), x, s)
    assert torch.allclose(d, c**2 / (c**2 + 0.81) * x, atol=1e-12)  # E[y | x] for N(0, c²) data


@pytest.mark.parametrize("law", [LogUniformSigma(0.01, 50.0), UniformTime(1e-3, 1.0)])
def test_the_training_laws_draw_their_laws(law):
    g = torch.Generator().manual_seed(0)
    s = law.draw(40000, generator=g).double()
    if isinstance(law, LogUniformSigma):
        lo, hi, u = law.s_min, law.s_max, (s.log() - math.log(law.s_min)) / math.log(law.s_max / law.s_min)
    else:
        lo, hi, u = law.t_eps, law.t_max, (s - law.t_eps) / (law.t_max - law.t_eps)
    assert float(s.min()) >= lo * (1 - 1e-6) and float(s.max()) <= hi * (1 + 1e-6)
    # u is uniform on [0, 1): its deciles hold a tenth each (binomial sd 0.0015)
    counts = torch.histc(u.float(), bins=10, min=0.0, max=1.0) / u.numel()
    assert float((counts - 0.1).abs().max()) < 0.008


def test_ve_and_vp_train_at_their_laws_scales():
    ve, vp = make_process("ve", sigma_min=0.02, sigma_max=30.0), make_process("vp", t_eps=0.01)
    assert (ve.training_law.s_min, ve.training_law.s_max) == (0.02, 30.0)
    assert (vp.training_law.t_eps, vp.training_law.t_max) == (0.01, 1.0)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(ve.sample_scales(7, generator=g1), ve.training_law.draw(7, generator=g2))


@pytest.mark.parametrize("name", ["ve", "vp"])
def test_the_losses_have_their_closed_form_minimum_at_the_true_field(name):
    """At the true score of N(0, c²) data, VE's σ² ‖s + ε/σ‖² has mean c²/(c² + σ²) per coordinate and
    VP's ‖ε̂ - ε‖² has mean a²c²/(a²c² + b²) (the posterior variance of ε)."""
    p, c, n = make_process(name), 0.8, 200000
    s = torch.full((n,), 0.6 if name == "ve" else 0.3, dtype=torch.float64)
    y = c * torch.randn(n, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    field = CentredGaussianScore(p, c)
    g = torch.Generator().manual_seed(2)
    loss = (score_matching_loss if name == "ve" else eps_matching_loss)(p, field, y, s, generator=g)
    a, b = (float(v[0]) for v in p.coefficients(s[:1]))
    want = c**2 / (c**2 + b**2) if name == "ve" else a**2 * c**2 / (a**2 * c**2 + b**2)
    # the per-sample loss is a mean of 2 squared Gaussians (sd of the mean <= want * 1/sqrt(n))
    assert abs(float(loss.mean()) - want) < 5 * want / math.sqrt(n)


def test_pretrained_maps_sigma_to_time_only_where_the_scale_is_not_sigma():
    """VP's scale is a time: σ -> t(σ) and x -> a x.  The telegrapher's scale is σ although it has a
    t_of_sigma (its Kac time): its denoiser is called at σ itself."""
    y = torch.tensor([[0.5, -0.25]], dtype=torch.float64)
    x, sigma = torch.tensor([[0.9, 0.1]], dtype=torch.float64), torch.tensor([0.7], dtype=torch.float64)
    for name in ("vp", "telegrapher", "edm"):
        p = make_process(name)
        field = p.exact_field(y)
        got = Pretrained(p, field, (2,), 0, Path("."), "physgen").denoise(x, sigma)
        if p.scale_is_sigma:
            want = p.denoise(field, x, sigma)
        else:
            t = p.t_of_sigma(sigma)
            want = p.denoise(field, p.coefficients(t)[0].reshape(-1, 1) * x, t)
        assert torch.allclose(got, want, atol=1e-12), name
    assert not make_process("vp").scale_is_sigma and make_process("telegrapher").scale_is_sigma
