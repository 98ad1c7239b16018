"""The Kac kernel (physgen/kernels/kac.py): sampler vs a brute-force Kac simulation, the density
vs the telegrapher PDE, normalisation, moments, the diffusion limit, bad inputs."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from scipy import integrate, special, stats

from physgen.errors import UserError
from physgen.kernels import KacKernel
from physgen.kernels.kac import (
    kac_direction_densities,
    kac_flux,
    kac_log_density,
    kac_log_prob,
    kac_offsets,
    kac_sigma_rate,
    kac_t_of_sigma,
    kac_variance,
    kac_velocity,
)

F64 = torch.float64


def simulate_kac(n: int, t: float, a: float, c: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute force: exponential waiting times, one flip at a time (vectorised over particles)."""
    rng = np.random.default_rng(seed)
    pos, clock = np.zeros(n), np.zeros(n)
    direction = rng.choice([-1.0, 1.0], size=n)
    flips = np.zeros(n, dtype=int)
    running = np.ones(n, dtype=bool)
    while running.any():
        wait = rng.exponential(1.0 / a, size=n)
        step = np.where(running, np.minimum(wait, t - clock), 0.0)
        pos += c * direction * step
        clock += step
        flip = running & (clock < t)
        direction = np.where(flip, -direction, direction)
        flips += flip
        running = clock < t
    return pos, flips == 0


def density(d, t, a, c):
    return float(kac_log_density(torch.tensor(d, dtype=F64), torch.tensor(t, dtype=F64), a, c).exp())


def continuous_cdf(t, a, c, grid):
    """CDF of the continuous part (mass 1 − e^{−at}) on ``grid`` by cumulative quadrature."""
    dens = kac_log_density(torch.from_numpy(grid), torch.tensor(t, dtype=F64), a, c).exp().numpy()
    return np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(grid))])


@pytest.mark.parametrize("a,c,t", [(1.0, 1.0, 0.7), (3.0, 0.5, 1.5), (0.4, 2.0, 2.0)])
def test_sampler_matches_brute_force_kac_simulation(a, c, t):
    n = 20_000
    g = torch.Generator().manual_seed(1)
    draw, atom = kac_offsets((n,), torch.full((n,), t, dtype=F64), a, c, g, dtype=F64, return_atoms=True)
    draw, atom = draw.numpy(), atom.numpy()
    sim, sim_atom = simulate_kac(n, t, a, c, seed=2)
    p0 = math.exp(-a * t)
    se = math.sqrt(p0 * (1 - p0) / n)
    # atom masses: e^{-at} in total, split evenly between +ct and -ct, within binomial error
    for frac in (atom.mean(), sim_atom.mean()):
        assert abs(frac - p0) < 4.5 * se
    assert abs((draw[atom] > 0).mean() - 0.5) < 4.5 * math.sqrt(0.25 / atom.sum())
    assert np.allclose(np.abs(draw[atom]), c * t)
    assert np.all(np.abs(draw[~atom]) < c * t)
    # the continuous parts: sampler vs simulation (two-sample KS) and vs the density's CDF
    assert stats.ks_2samp(draw[~atom], sim[~sim_atom]).pvalue > 1e-3
    grid = np.linspace(-c * t, c * t, 4001)
    cdf = continuous_cdf(t, a, c, grid) / (1.0 - p0)
    assert stats.kstest(draw[~atom], lambda x: np.interp(x, grid, cdf)).pvalue > 1e-3


@settings(max_examples=25, deadline=None)
@given(a=st.floats(0.05, 50.0), c=st.floats(0.1, 10.0), t=st.floats(0.01, 20.0))
def test_normalisation_and_second_moment(a, c, t):
    """Continuous mass + atoms = 1 and E[δ²] = (c²/a)(t − (1 − e^{−2at})/(2a)), by quadrature."""
    ct = c * t
    f = lambda d: density(d, t, a, c)  # noqa: E731
    width = min(ct, 8 * math.sqrt(c * c * t / a))  # the bulk (Gaussian for large at)
    pts = [-width, 0.0, width] if width < ct else [0.0]
    mass = integrate.quad(f, -ct, ct, points=pts, limit=400, epsabs=1e-13, epsrel=1e-10)[0]
    second = integrate.quad(lambda d: d * d * f(d), -ct, ct, points=pts, limit=400, epsabs=1e-13, epsrel=1e-10)[0]
    atoms = math.exp(-a * t)
    assert mass + atoms == pytest.approx(1.0, abs=1e-7)
    var = float(kac_variance(torch.tensor(t, dtype=F64), a, c))
    assert second + atoms * ct * ct == pytest.approx(var, rel=1e-6, abs=1e-12)
    # the closed form's limits: ballistic c²t², diffusive c²t/a − c²/2a²
    assert var <= ct * ct * (1 + 1e-12) and var >= c * c * t / a - c * c / (2 * a * a) - 1e-12


@settings(max_examples=25, deadline=None)
@given(a=st.floats(0.1, 20.0), c=st.floats(0.2, 5.0), t=st.floats(0.1, 5.0), u=st.floats(0.05, 0.7), sign=st.sampled_from([-1.0, 1.0]))
def test_density_solves_the_telegrapher_equation_and_the_flux_its_continuity_equation(a, c, t, u, sign):
    """∂_t²p + 2a ∂_t p = c² ∂_δ²p, ∂_t p + ∂_δ j = 0, ∂_t j + 2a j = −c² ∂_δ p inside the cone."""
    d0 = torch.tensor(sign * u * c * t, dtype=F64)  # away from δ = 0, where j and ∂_δ p vanish
    t0 = torch.tensor(t, dtype=F64)
    sigma = min(c * t, c * math.sqrt(t / a))
    ht, hx = 1e-3 * min(t, 1.0 / a), 1e-3 * sigma
    p = lambda d, s: kac_log_density(d, s, a, c).exp()  # noqa: E731
    j = lambda d, s: kac_flux(d, s, a, c)  # noqa: E731
    p_t = (p(d0, t0 + ht) - p(d0, t0 - ht)) / (2 * ht)
    p_tt = (p(d0, t0 + ht) - 2 * p(d0, t0) + p(d0, t0 - ht)) / ht**2
    p_x = (p(d0 + hx, t0) - p(d0 - hx, t0)) / (2 * hx)
    p_xx = (p(d0 + hx, t0) - 2 * p(d0, t0) + p(d0 - hx, t0)) / hx**2
    j_t = (j(d0, t0 + ht) - j(d0, t0 - ht)) / (2 * ht)
    j_x = (j(d0 + hx, t0) - j(d0 - hx, t0)) / (2 * hx)
    scale = float(p_tt.abs() + 2 * a * p_t.abs() + c * c * p_xx.abs()) + 1e-300
    assert abs(float(p_tt + 2 * a * p_t - c * c * p_xx)) / scale < 2e-4
    assert abs(float(p_t + j_x)) / (float(p_t.abs() + j_x.abs()) + 1e-300) < 2e-4
    assert abs(float(j_t + 2 * a * j(d0, t0) + c * c * p_x)) / (float(j_t.abs() + 2 * a * j(d0, t0).abs() + c * c * p_x.abs()) + 1e-300) < 2e-4
    # the direction-resolved densities are non-negative and the velocity is j/p, |u| < c
    pp, pm = kac_direction_densities(d0, t0, a, c)
    assert float(pp) >= 0 and float(pm) >= 0
    v = kac_velocity(d0, t0, a, c)
    assert float(v * p(d0, t0)) == pytest.approx(float(j(d0, t0)), rel=1e-9, abs=1e-300)
    assert abs(float(v)) < c


def test_density_against_scipy_bessels_and_stability_at_large_at():
    a, c, t = 1.3, 0.7, 2.1
    d = np.linspace(-0.95 * c * t, 0.95 * c * t, 9)
    r = np.sqrt((c * t) ** 2 - d**2)
    z = a * r / c
    ref = a * np.exp(-a * t) / (2 * c) * (special.i0(z) + c * t / r * special.i1(z))
    got = kac_log_density(torch.tensor(d), torch.tensor(t, dtype=F64), a, c).exp().numpy()
    assert np.allclose(got, ref, rtol=1e-12)
    # at = 1e4: the bulk is N(0, σ²) and the velocity factor h -> 1/2, in float32 too
    a, c, t = 100.0, 10.0, 100.0
    var = float(kac_variance(torch.tensor(t, dtype=F64), a, c))
    for dtype in (torch.float32, F64):
        dd = torch.linspace(-3, 3, 7, dtype=dtype) * math.sqrt(var)
        lp = kac_log_density(dd, torch.tensor(t, dtype=dtype), a, c).double()
        gauss = -0.5 * dd.double() ** 2 / var - 0.5 * math.log(2 * math.pi * var)
        assert torch.allclose(lp, gauss, atol=2e-3), dtype
        v = kac_velocity(dd, torch.tensor(t, dtype=dtype), a, c).double()
        assert torch.allclose(v, dd.double() / (2 * t), rtol=2e-3, atol=1e-7), dtype


def test_conditional_velocity_limits_and_atoms():
    a, c = 2.0, 1.5
    t = torch.tensor(0.8, dtype=F64)
    ct = float(c * t)
    # near the cone from inside the velocity tends to ct/(t + 2/a) < c; on the atom it is ±c
    v_in = kac_velocity(torch.tensor(ct * (1 - 1e-9), dtype=F64), t, a, c)
    assert float(v_in) == pytest.approx(ct / (float(t) + 2 / a), rel=1e-6)
    assert float(kac_velocity(torch.tensor([-ct, ct], dtype=F64), t, a, c)[1]) == pytest.approx(c)
    # a -> 0: one flip at a uniform time, both directions equally likely: u -> 0 inside
    assert abs(float(kac_velocity(torch.tensor(0.3, dtype=F64), t, 1e-6, c))) < 1e-6


@settings(max_examples=30, deadline=None)
@given(a=st.floats(1e-3, 1e3), c=st.floats(1e-2, 1e2), logs=st.floats(-6, 4))
def test_sigma_inverse_and_rate(a, c, logs):
    sigma = 10.0**logs
    t = kac_t_of_sigma(sigma, a, c)
    assert math.sqrt(float(kac_variance(torch.tensor(t, dtype=F64), a, c))) == pytest.approx(sigma, rel=1e-9)
    tt = torch.tensor(t, dtype=F64)
    h = 1e-6 * t
    num = (kac_variance(tt + h, a, c).sqrt() - kac_variance(tt - h, a, c).sqrt()) / (2 * h)
    assert float(kac_sigma_rate(tt, a, c)) == pytest.approx(float(num), rel=1e-5)


def test_product_kernel_in_n_dims():
    kern = KacKernel(a=1.5, c=0.8)
    n, dim = 20_000, 3
    g = torch.Generator().manual_seed(3)
    t = torch.rand(n, generator=g, dtype=F64) * 2 + 0.2
    x, atom = kern.sample_offsets((n, dim), t, g, dtype=torch.float32, return_atoms=True)
    # coordinates independent given t: scaled coordinates uncorrelated; atoms per coordinate at rate e^{-at}
    z = (x.double() / kern.sigma(t)[:, None]).numpy()
    corr = np.corrcoef(z.T)
    assert np.abs(corr[np.triu_indices(dim, 1)]).max() < 4.5 / math.sqrt(n)
    expect = float(torch.exp(-kern.a * t).mean())
    assert abs(atom.double().mean().item() - expect) < 4.5 * math.sqrt(expect / (n * dim))
    # log_prob = Σ of per-coordinate log-densities, atoms (drawn in float64, stored in float32) at log(e^{-at}/2)
    lp = kern.log_prob(x, t)
    ref = kac_log_prob(x.double(), t[:, None], kern.a, kern.c, tol=16 * torch.finfo(torch.float32).eps).sum(1)
    assert torch.isfinite(lp).all() and torch.allclose(lp, ref)
    rows = atom.all(1)
    assert torch.allclose(lp[rows], dim * (-kern.a * t[rows] - math.log(2.0)))
    # the same generator seed gives the same draws
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    assert torch.equal(kern.sample_offsets((5, 2), t[:5], g1), kern.sample_offsets((5, 2), t[:5], g2))


def test_diffusion_limit_of_the_kernel():
    """a -> ∞ with c²/a = 1 fixed: the Kac law tends to N(0, t) (sup-distance of the CDFs falls)."""
    t, dists = 1.0, []
    for a in (1.0, 10.0, 100.0):
        c = math.sqrt(a)
        grid = np.linspace(-c * t, c * t, 20001)
        p0 = math.exp(-a * t)
        cdf = p0 / 2 + continuous_cdf(t, a, c, grid)  # atom at -ct included; +ct only at the end
        dists.append(float(np.max(np.abs(cdf - stats.norm.cdf(grid, scale=math.sqrt(t))))))
    assert dists[1] < 0.5 * dists[0] and dists[2] < 0.5 * dists[1]
    assert dists[2] < 0.02


@pytest.mark.parametrize("kwargs,match", [({"a": 0.0, "c": 1.0}, "a must be a positive"), ({"a": 1.0, "c": float("nan")}, "c must be a positive"),
                                          ({"a": 1.0, "c": 1.0, "atom_band": 0.0}, "atom_band")])
def test_bad_parameters(kwargs, match):
    with pytest.raises(UserError, match=match):
        KacKernel(**kwargs)
