"""The GenPhys framework: C1/C2 checks, the catalogue's verdicts, density-flow fields, the CLI."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from physgen.cli.main import main
from physgen.errors import UserError
from physgen.genphys.catalogue import CATALOGUE, classify_all, get_physical_process, physical_process_names
from physgen.genphys.framework import PhysicalProcess, check_c1, check_c2, hankel_inverse

F64 = torch.float64

# GENPHYS.md's catalogue: (C1, C2) at N = 2
EXPECTED = {
    "heat": (True, True),
    "poisson": (True, True),
    "laplace": (True, True),
    "yukawa": (True, True),
    "helmholtz": (False, False),
    "wave": (False, False),  # C2 fails (GENPHYS.md); the 2-D displacement kernel also changes sign
    "damped-wave": (False, True),  # damping fixes C2; the isotropic 2-D Green's function still changes sign
    "telegrapher": (True, True),  # the damped wave per coordinate: Kac flows
    "klein-gordon": (False, False),
    "schrodinger": (True, False),
    "hyper-diffusion": (False, True),
}


def test_catalogue_verdicts_at_n2():
    verdicts = {v.name: v for v in classify_all(2)}
    assert set(verdicts) == set(EXPECTED) == set(physical_process_names())
    for name, (c1, c2) in EXPECTED.items():
        v = verdicts[name]
        assert (v.c1, v.c2) == (c1, c2), (name, v.c1_detail, v.c2_detail)
        assert v.reason and v.pde and v.omega
    assert verdicts["yukawa"].verdict == "s-generative -> yukawa"
    assert verdicts["heat"].generative_process == "edm"
    assert verdicts["hyper-diffusion"].verdict == "fails C1"
    assert verdicts["wave"].verdict.startswith("fails")
    # the samplers of the passing kernels draw their kernel's radial law
    for name in ("heat", "poisson", "laplace", "yukawa", "telegrapher"):
        assert verdicts[name].extra["sampler_ks"] < 0.04
    assert verdicts["telegrapher"].verdict == "s-generative -> telegrapher"


@pytest.mark.parametrize("n_dim", [1, 3])
def test_c2_is_dimension_free_and_c1_holds_for_the_generative_ones(n_dim):
    for v in classify_all(n_dim, ["heat", "poisson", "laplace", "yukawa", "telegrapher", "hyper-diffusion", "schrodinger"]):
        assert v.c2 == EXPECTED[v.name][1]
        assert v.c1 == EXPECTED[v.name][0], (v.name, v.c1_detail)


class _Toy(PhysicalProcess):
    name = "toy"

    def __init__(self, branches, kernel=None):
        self._branches, self._kernel = branches, kernel

    def dispersion(self, k):
        return np.stack([b(np.asarray(k, dtype=float)) for b in self._branches])

    def kernel(self, rho, t, n_dim):
        return None if self._kernel is None else self._kernel(np.asarray(rho), t)


def test_c2_branch_logic():
    # second order: one admissible branch suffices
    ok, why = check_c2(_Toy([lambda k: 1j * k, lambda k: -1j * np.sqrt(k**2 + 4)]))
    assert ok and "branch 2/2" in why
    # every branch must be checked against its own zero mode
    ok, why = check_c2(_Toy([lambda k: -1j * (k - 1) ** 2]))  # Im ω(0) = -1, Im ω(1) = 0: k = 1 decays slower
    assert not ok and "branch 1" in why
    ok, _ = check_c2(_Toy([lambda k: 0 * k + 0j]))  # nothing decays
    assert not ok


def test_c1_detects_sign_changes():
    ok, why, _ = check_c1(_Toy([lambda k: -1j * k**2], kernel=lambda r, t: np.exp(-r * r / t)))
    assert ok
    ok, why, extra = check_c1(_Toy([lambda k: -1j * k**2], kernel=lambda r, t: np.cos(r / t) * np.exp(-r / (5 * t))))
    assert not ok and "changes sign" in why and extra["negative_at"]


@pytest.mark.parametrize("n_dim", [1, 2, 3, 4])
def test_hankel_inverse_of_a_gaussian(n_dim):
    rho = np.linspace(0, 4, 30)
    got = hankel_inverse(lambda k: np.exp(-0.5 * k**2), rho, n_dim, k_max=12.0)
    ref = (2 * np.pi) ** (-n_dim / 2) * np.exp(-0.5 * rho**2)
    assert np.allclose(got, ref, atol=1e-6)


def test_unknown_and_bad_parameters():
    with pytest.raises(UserError, match="unknown PDE .nope.; valid: damped-wave, heat, helmholtz"):
        get_physical_process("nope")
    with pytest.raises(UserError, match="D must be a positive integer"):
        get_physical_process("laplace", D=0)
    with pytest.raises(UserError, match="m must be > 0"):
        get_physical_process("yukawa", m=-1)
    assert get_physical_process("yukawa", m=0.3).params == {"m": 0.3}


@pytest.mark.parametrize("name,t", [("heat", 0.4), ("poisson", 0.8), ("laplace", 1.1), ("yukawa", 0.9)])
def test_density_flow_residual_of_point_fields(name, t):
    """∂_t p + ∇·(p v) − R = 0 for the fields of a point set (finite differences)."""
    proc = get_physical_process(name)
    g = torch.Generator().manual_seed(0)
    f = proc.point_fields(torch.randn(6, 2, generator=g, dtype=F64))
    x = 1.5 * torch.randn(9, 2, generator=g, dtype=F64)
    h = 1e-4
    dp = (f.density(x, t + h) - f.density(x, t - h)) / (2 * h)
    div = sum((f.flux(x + h * e, t)[:, j] - f.flux(x - h * e, t)[:, j]) / (2 * h) for j, e in enumerate(torch.eye(2, dtype=F64)))
    res = dp + div - f.source(x, t)
    assert float((res.abs() / (dp.abs() + div.abs())).max()) < 1e-5
    if name != "yukawa":
        assert torch.equal(f.source(x, t), torch.zeros(9, dtype=F64))


def test_make_process_maps_to_physgen_processes():
    from physgen.processes.yukawa import Yukawa

    y = get_physical_process("yukawa", m=0.7).make_process(sigma_max=5.0)
    assert isinstance(y, Yukawa) and y.m == 0.7
    assert get_physical_process("heat").make_process().name == "edm"
    assert get_physical_process("laplace", D=8).make_process().D == 8
    assert get_physical_process("poisson").make_process().name == "pfgm"
    with pytest.raises(UserError, match="not a generative process"):
        get_physical_process("wave").make_process()
    tg = get_physical_process("telegrapher", a=2.0, c=0.5).make_process(sigma_max=3.0)
    assert tg.name == "telegrapher" and (tg.a, tg.c) == (2.0, 0.5)


@pytest.mark.parametrize("name", ["damped-wave", "telegrapher"])
def test_damped_wave_classification_follows_from_its_dispersion(name):
    """C2 is read off ω = −ia ± √(c²k² − a²): the slow branch passes, the fast one alone fails, a = 0 fails like the wave."""
    a, c = 1.5, 2.0
    proc = get_physical_process(name, a=a, c=c)
    ok, why = check_c2(proc)
    assert ok and "branch 1/2" in why
    k = np.array([0.0, 1e-3, 1e-2, 2 * a / c, 100.0])
    slow, fast = proc.dispersion(k)
    assert slow[0] == 0 and np.allclose(fast[0], -2j * a)
    assert np.imag(slow[1:3]) == pytest.approx(-(c * k[1:3]) ** 2 / (2 * a), rel=1e-3)  # diffusive: Im ω ≈ −c²k²/2a
    assert np.imag(slow[3:]) == pytest.approx([-a, -a]) and np.imag(fast[3:]) == pytest.approx([-a, -a])  # ck > a: −a
    assert not check_c2(_Toy([lambda kk: proc.dispersion(kk)[1]]))[0]  # the fast branch alone: Im ω(k) > Im ω(0) = −2a
    undamped = get_physical_process(name, a=0.0, c=c)
    ok0, why0 = check_c2(undamped)
    assert not ok0 and "no admissible branch" in why0
    assert np.allclose(undamped.dispersion(k[1:]), get_physical_process("wave", c=c).dispersion(k[1:]))
    assert classify_all(2, [name])[0].verdict.startswith("fails C1" if name == "damped-wave" else "s-generative")


def test_damped_wave_c1_depends_on_dimension_and_the_kac_kernel_is_a_product():
    iso = get_physical_process("damped-wave")
    assert check_c1(iso, n_dim=1)[0]  # in 1-D the Green's function is the Kac law
    ok, why, _ = check_c1(iso, n_dim=2)
    assert not ok and "changes sign" in why
    ok, why, extra = check_c1(get_physical_process("telegrapher"), n_dim=3)
    assert ok and "product of this 1-D kernel" in why and extra["sampler_ks"] < 0.04


def test_cli_check_table(capsys):
    assert main(["genphys", "check"]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0]
    for col in ("name", "PDE", "ω(k)", "C1", "C2", "verdict", "reason"):
        assert col in header
    for name in CATALOGUE:
        assert any(line.startswith(name) for line in out.splitlines())
    assert "s-generative -> yukawa" in out and "fails C1" in out


def test_cli_check_one_pde_and_errors(capsys):
    assert main(["genphys", "check", "--pde", "yukawa", "--param", "m=0.5", "--format", "markdown", "--details"]) == 0
    out = capsys.readouterr().out
    assert "| yukawa |" in out and "m=0.5" in out and "C1:" in out
    assert main(["genphys", "check", "--pde", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "unknown PDE 'nope'; valid: damped-wave, heat, helmholtz, hyper-diffusion, klein-gordon, laplace, poisson, schrodinger, telegrapher, wave, yukawa" in err
    assert main(["genphys", "check", "--dim", "7"]) == 2
    assert "--dim" in capsys.readouterr().err
