"""Exact Yukawa fields of a point set: the PDE, the velocity E_x/E_z, the death rate κ, and the
transport field (GenPhys, arXiv 2304.02637; GENPHYS.md "Yukawa in detail")."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from physgen.genphys.fields import YukawaFields
from physgen.kernels.nig import nig_offsets, radial_speed, yukawa_green
from physgen.processes.yukawa import TransportField, Yukawa, YukawaExactField

F64 = torch.float64


def _points(n_dim: int, n: int = 5, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, n_dim, generator=g, dtype=F64)


def _queries(n_dim: int, n: int = 7, seed: int = 1, scale: float = 1.5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, n_dim, generator=g, dtype=F64)


@settings(max_examples=8, deadline=None)
@given(n_dim=st.sampled_from([1, 2, 3]), m=st.floats(0.1, 4.0), z=st.floats(0.3, 3.0))
def test_pde_residual_of_exact_fields(n_dim, m, z):
    """∂_z p + ∇·(p v) − R = 0 with p = mean_i P_m, v = (x − D)/z, R = −κ p (finite differences)."""
    f = YukawaFields(_points(n_dim), m)
    x = _queries(n_dim)
    h = 1e-4
    dp_dz = (f.density(x, z + h) - f.density(x, z - h)) / (2 * h)
    div = torch.zeros(x.shape[0], dtype=F64)
    for j in range(n_dim):
        e = torch.zeros(n_dim, dtype=F64)
        e[j] = h
        div += (f.flux(x + e, z)[:, j] - f.flux(x - e, z)[:, j]) / (2 * h)
    residual = dp_dz + div - f.source(x, z)
    scale = dp_dz.abs() + div.abs() + f.source(x, z).abs()
    assert float((residual.abs() / scale).max()) < 1e-5


@pytest.mark.parametrize("n_dim,m,z", [(1, 0.7, 0.5), (2, 1.0, 1.0), (2, 0.05, 2.0), (3, 2.5, 0.4)])
def test_exact_velocity_is_the_field_ratio(n_dim, m, z):
    """(x − D)/z from the posterior under the NIG kernel = E_x/E_z from φ = mean_i G(r_i)
    (central differences; torch's Bessel K has no usable autograd)."""
    pts = _points(n_dim)
    x = _queries(n_dim)

    def phi(xx, zz):
        r = torch.sqrt(torch.cdist(xx, pts).pow(2) + zz * zz)
        return yukawa_green(r, m, n_dim + 1).mean(1)

    h = 1e-6
    e_z = (phi(x, z + h) - phi(x, z - h)) / (2 * h)
    e_x = torch.stack([(phi(x + h * torch.eye(n_dim, dtype=F64)[j], z) - phi(x - h * torch.eye(n_dim, dtype=F64)[j], z)) / (2 * h) for j in range(n_dim)], 1)
    brute = e_x / e_z[:, None]  # E = −∇φ: E_x/E_z = ∂_xφ/∂_zφ
    d = YukawaExactField(pts, m)(x, torch.full((x.shape[0],), z, dtype=F64))
    assert torch.allclose((x - d) / z, brute, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("n_dim,m,z", [(1, 1.0, 0.5), (2, 0.3, 2.0), (2, 3.0, 0.2), (3, 1.0, 1.0), (5, 0.5, 1.5)])
def test_exact_death_rate_is_2m2_phi_over_p(n_dim, m, z):
    f = YukawaFields(_points(n_dim), m)
    x = _queries(n_dim)
    kappa = f.death_rate(x, z)
    assert torch.allclose(kappa, 2 * m * m * f.potential(x, z) / f.density(x, z), rtol=1e-9)
    # the process's exact field gives the same κ in the same pass as D
    d, k2 = YukawaExactField(_points(n_dim), m).denoise_and_rate(x, torch.full((x.shape[0],), z, dtype=F64))
    assert torch.allclose(k2, kappa, rtol=1e-9)


@pytest.mark.parametrize("m,z", [(0.5, 0.5), (1.0, 2.0), (2.0, 5.0), (0.2, 20.0)])
def test_p_weighted_mean_of_death_rate_is_m(m, z):
    """∫ κ p dx / ∫ p dx = m: draw x from the normalised marginal (a data point plus an NIG
    offset) and average κ (derived: ∫ 2m²φ dx = m e^{−mz} = m ∫ p dx)."""
    pts = _points(2, n=6)
    g = torch.Generator().manual_seed(3)
    n = 40000
    idx = torch.randint(0, pts.shape[0], (n,), generator=g)
    x = pts[idx] + nig_offsets((n, 2), torch.full((n,), z, dtype=F64), m, g, dtype=F64)
    kappa = YukawaExactField(pts, m).death_rate(x, torch.full((n,), z, dtype=F64))
    se = float(kappa.std()) / math.sqrt(n)
    assert abs(float(kappa.mean()) - m) < 5 * se + 1e-3 * m


@pytest.mark.parametrize("n_dim,m,z", [(2, 0.5, 1.0), (2, 5.0, 0.3), (3, 1.0, 0.7)])
def test_transport_field_is_posterior_average_of_conditional_velocity(n_dim, m, z):
    """u(x, z) = Σ_i w_i h_i (x − y_i)/z with w_i ∝ k_z(x − y_i) (brute force over the points)."""
    pts = _points(n_dim)
    x = _queries(n_dim)
    zz = torch.full((x.shape[0],), z, dtype=F64)
    field = YukawaExactField(pts, m)
    sq = torch.cdist(x, pts).pow(2)
    logw = field.log_profile(sq, zz[:, None])
    w = torch.softmax(logw, 1)
    h = radial_speed(sq, zz[:, None], m, n_dim)
    u = ((w * h)[:, :, None] * (x[:, None, :] - pts[None])).sum(1) / z
    t = field.transport_denoise(x, zz)
    assert torch.allclose((x - t) / z, u, rtol=1e-9, atol=1e-12)
    assert torch.allclose(TransportField(field)(x, zz), t)


def test_yukawa_tends_to_pfgm_as_m_to_0():
    """m → 0: the NIG posterior is PFGM's (Cauchy weights ∝ (ρ² + z²)^{-(N+1)/2})."""
    pts = _points(2, n=20)
    x = _queries(2, n=30)
    z = torch.full((30,), 1.3, dtype=F64)
    from physgen.fields.exact import posterior_mean

    cauchy = posterior_mean(x, pts, z, lambda sq, s: -1.5 * torch.log(sq + s * s))
    assert torch.allclose(YukawaExactField(pts, 1e-7)(x, z), cauchy, atol=1e-6)
    # and the transport field tends to the same flow (h → 1)
    assert torch.allclose(YukawaExactField(pts, 1e-7).transport_denoise(x, z), cauchy, atol=1e-6)


def test_exact_field_labels_restrict_the_posterior():
    pts = torch.tensor([[-2.0, 0.0], [2.0, 0.0]], dtype=F64)
    field = Yukawa(m=1.0).exact_field(pts, torch.tensor([0, 1]))
    x = torch.zeros(3, 2, dtype=F64)
    z = torch.full((3,), 1.0, dtype=F64)
    d = field(x, z, torch.tensor([0, 1, 0]))
    assert torch.allclose(d, pts[[0, 1, 0]])
    dd, k = field.denoise_and_rate(x, z, torch.tensor([1, 1, 1]))
    assert torch.allclose(dd, pts[[1, 1, 1]]) and torch.isfinite(k).all()
