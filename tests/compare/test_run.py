"""``physgen compare-solvers`` (issue 6): the files it promises, numbers that agree with each
other and with an independent NFE count, every registered process, and one-line errors."""
from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from physgen.cli.main import main
from physgen.compare import ToyProblem, adaptive_tolerance, compare, rms_error
from physgen.compare.run import CSV_COLUMNS
from physgen.processes import PROCESSES, make_process, process_names
from physgen.toy import ToyConfig

FIGURES = ("error_vs_nfe.png", "quality_vs_nfe.png", "time_vs_nfe.png")
TINY = ["--n-data", "200", "--n-samples", "64", "--seed", "3", "--device", "cpu", "--ref-rtol", "1e-7", "--ref-atol", "1e-7"]


def _rows(path):
    with open(path / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def _by_solver(rows):
    out = {}
    for r in rows:
        out.setdefault(r["solver"], []).append(r)
    for rs in out.values():
        rs.sort(key=lambda r: int(r["steps"]))
    return out


def test_outputs_exist_and_are_consistent(tmp_path, capsys):
    out = tmp_path / "cmp"
    rc = main(["compare-solvers", "--process", "edm", "--dataset", "moons", "--field", "exact",
               "--solvers", "euler,heun,dpmpp-2m,dopri5", "--steps", "4,8,16", *TINY, "--out", str(out)])
    assert rc == 0
    for name in ("results.csv", "results.json", "config.json", *FIGURES):
        assert (out / name).stat().st_size > 0, name
    rows = _rows(out)
    assert set(CSV_COLUMNS) <= set(rows[0])
    by = _by_solver(rows)
    assert list(by) == ["euler", "heun", "dpmpp-2m", "dopri5"]
    for solver, rs in by.items():
        nfes = [int(r["nfe"]) for r in rs]
        assert nfes == sorted(nfes), (solver, nfes)  # more steps never report fewer NFE
        for r in rs:
            assert math.isfinite(float(r["error_vs_reference"])) and float(r["wall_s"]) >= 0
            assert math.isfinite(float(r["sliced_w2"])) and math.isfinite(float(r["mmd"]))
    heun = [float(r["error_vs_reference"]) for r in by["heun"]]
    assert all(b < a for a, b in zip(heun, heun[1:])), heun  # Heun's reference error falls as steps grow
    # fixed-step NFE on a schedule ending at 0: euler K, heun 2K-1, dpmpp-2m K
    assert [int(r["nfe"]) for r in by["euler"]] == [4, 8, 16]
    assert [int(r["nfe"]) for r in by["heun"]] == [7, 15, 31]
    assert [float(r["tol"]) for r in by["dopri5"]] == pytest.approx([adaptive_tolerance(k) for k in (4, 8, 16)])
    printed = capsys.readouterr().out
    assert "| solver | steps | NFE | error vs reference |" in printed and "| heun | 8 | 15 |" in printed
    result = json.loads((out / "results.json").read_text())
    ref = result["references"][0]
    assert ref["rtol"] == 1e-7 and ref["reference_error"] < 1e-4  # the reference is far tighter than any solver
    assert result["problem"]["process"]["name"] == "edm"


class CountingField:
    """Counts the calls a solver makes on the full float32 batch (the reference solve runs
    in float64 and the pre-flight on two samples, so neither is counted)."""

    def __init__(self, field, n):
        self.field, self.n, self.calls = field, n, 0
        self.kind = field.kind

    def __call__(self, x, s, label=None):
        if x.dtype == torch.float32 and x.shape[0] == self.n:
            self.calls += 1
        return self.field(x, s, label)


def _toy(process="edm", dataset="8gaussians", n_data=200, n_samples=48, **kw):
    cfg = ToyConfig(process=process, dataset=dataset, field="exact", n_data=n_data, n_samples=n_samples, seed=1, device="cpu", **kw)
    return ToyProblem.from_config(cfg)


def test_nfe_equals_an_independent_count_at_the_field():
    """For every row, the CSV's NFE equals the calls a wrapper around the field counted
    between this row's progress line and the previous one."""
    problem = _toy()
    counter = CountingField(problem.field, problem.n_samples)
    problem.field = counter
    seen = []
    result = compare(problem, ["euler", "heun", "dpmpp-2m", "rk4", "dopri5"], [3, 6], ref_rtol=1e-6, ref_atol=1e-6,
                     check_reference=False, log=lambda line: seen.append(counter.calls) if line.startswith("[") else None)
    counts = [b - a for a, b in zip([0, *seen], seen)]
    assert len(counts) == len(result.rows) == 10
    assert [r.nfe for r in result.rows] == counts
    assert all(c > 0 for c in counts)


def test_error_metric_is_rms_of_per_sample_l2():
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    ref = torch.zeros(2, 2)
    assert rms_error(x, ref) == pytest.approx(math.sqrt((0 + 25) / 2))


def test_reference_agrees_with_a_fine_rk4_solve_of_the_same_ode():
    """On a smooth (analytic mixture) field, RK4 with many steps converges to the reference;
    both end with the same Euler step x <- D(x, s_min)."""
    cfg = ToyConfig(process="edm", dataset="8gaussians", field="analytic", n_data=64, n_samples=16, seed=1, device="cpu")
    problem = ToyProblem.from_config(cfg)
    result = compare(problem, ["rk4"], [24, 48], ref_rtol=1e-9, ref_atol=1e-9, check_reference=False)
    coarse, fine = (r.error_vs_reference for r in result.rows)
    assert fine < 1e-4 and fine < coarse / 4, (coarse, fine)
    assert result.references[0]["span"][-1] == 0.0


def test_edm_with_an_analytic_field(tmp_path):
    """(The exact field's CLI run is test_outputs_exist_and_are_consistent.)"""
    field = "analytic"
    out = tmp_path / field
    rc = main(["compare-solvers", "--process", "edm", "--dataset", "8gaussians", "--field", field, "--solvers", "euler,heun",
               "--steps", "3,6", *TINY, "--out", str(out)])
    assert rc == 0
    rows = _rows(out)
    assert len(rows) == 4 and all(math.isfinite(float(r["error_vs_reference"])) for r in rows)
    assert all((out / f).exists() for f in FIGURES)


def _exact_problem(name):
    """A tiny exact-field problem for process ``name``, or None if it has no exact field."""
    cfg = ToyConfig(process=name, dataset="8gaussians", field="exact", n_data=150, n_samples=32, seed=2, device="cpu")
    try:
        return ToyProblem.from_config(cfg)
    except (NotImplementedError, ValueError, TypeError) as e:
        if "exact" in str(e) or isinstance(e, NotImplementedError):
            return None
        raise


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "telegrapher" else n for n in process_names()])
def test_every_registered_process_with_an_exact_field(name):
    """(The telegrapher's exact velocity jumps at every point's light cone: its dopri5 reference
    needs thousands of NFE, so it runs in the slow tier.)"""
    problem = _exact_problem(name)
    if problem is None:
        pytest.skip(f"process {name!r} has no exact field")
    result = compare(problem, ["euler", "heun"], [3, 12], ref_rtol=1e-6, ref_atol=1e-6, check_reference=False)
    assert len(result.rows) == 4
    for r in result.rows:  # a row is measured, or recorded as diverged (3 Euler steps of PFGM's ln z flow, 3 Heun steps of VP)
        assert r.nfe > 0, (name, r)
        assert (r.status == "ok" and math.isfinite(r.error_vs_reference) and math.isfinite(r.sliced_w2)) or (
            r.steps == 3 and r.status.startswith("diverged: ") and math.isnan(r.error_vs_reference)), (name, r)
    assert all(r.status == "ok" for r in result.rows if r.steps == 12), name
    heun = [r for r in result.rows if r.solver == "heun"]
    assert heun[1].nfe > heun[0].nfe


@pytest.mark.skipif("pfgmpp" not in PROCESSES, reason="pfgmpp is not registered yet")
def test_pfgmpp_D128(tmp_path):
    out = tmp_path / "pfgmpp"
    rc = main(["compare-solvers", "--process", "pfgmpp", "--D", "128", "--dataset", "moons", "--field", "exact",
               "--solvers", "euler,heun,dpmpp-2m", "--steps", "4,8", *TINY, "--out", str(out)])
    assert rc == 0
    rows = _rows(out)
    assert {r["solver"] for r in rows} == {"euler", "heun", "dpmpp-2m"}
    assert json.loads((out / "results.json").read_text())["problem"]["process"]["D"] == 128


def test_stochastic_samplers_get_metrics_but_no_reference_error():
    problem = _toy(n_samples=32)
    result = compare(problem, ["heun", "euler-maruyama"], [4, 8], ref_rtol=1e-6, ref_atol=1e-6, check_reference=False)
    em = [r for r in result.rows if r.solver == "euler-maruyama"]
    assert len(em) == 2 and all(r.kind == "stochastic" and math.isnan(r.error_vs_reference) for r in em)
    assert all(math.isfinite(r.sliced_w2) and r.nfe > 0 for r in em)
    assert all(math.isfinite(r.error_vs_reference) for r in result.rows if r.solver == "heun")


def test_default_solvers_skip_what_cannot_run():
    """PFGM offers only its flow: the DPM-Solver and stochastic defaults are skipped with the reason, not fatal;
    VP offers the denoiser form (x/a, σ = b/a), so DPM-Solver runs there."""
    problem = _toy("pfgm", n_samples=16)
    result = compare(problem, None, [6], ref_rtol=1e-6, ref_atol=1e-6, check_reference=False)
    names = result.solvers()
    assert "heun" in names and "dpmpp-2m" not in names and "needs the denoiser form" in result.skipped["dpmpp-2m"]
    assert "pc" in result.skipped and "euler-maruyama" in result.skipped
    vp = compare(_toy("vp", n_samples=16), ["dpmpp-2m", "heun"], [8], ref_rtol=1e-6, ref_atol=1e-6, check_reference=False)
    assert all(r.status == "ok" and math.isfinite(r.error_vs_reference) for r in vp.rows)


def test_mlp_is_saved_and_reloaded_with_ckpt(tmp_path):
    """--field mlp trains and saves a checkpoint; --ckpt rebuilds the same field (process,
    dataset and network sizes from the checkpoint) and reproduces the numbers."""
    out1, out2 = tmp_path / "train", tmp_path / "reuse"
    cfg = ToyConfig(process="edm", dataset="8gaussians", field="mlp", n_data=256, n_samples=32, train_steps=20, batch=64,
                    hidden=32, depth=2, seed=0, device="cpu")
    trained = ToyProblem.from_config(cfg, out=str(out1))
    assert list((out1 / "checkpoints").glob("ckpt-*.pt"))
    first = compare(trained, ["euler"], [3], ref_rtol=1e-6, ref_atol=1e-6, check_reference=False).rows[0]
    assert main(["compare-solvers", "--ckpt", str(out1), "--solvers", "euler", "--steps", "3", "--n-data", "256", "--n-samples", "32",
                 "--seed", "0", "--device", "cpu", "--ref-rtol", "1e-6", "--ref-atol", "1e-6", "--no-ref-check", "--out", str(out2)]) == 0
    row = _rows(out2)[0]
    assert float(row["sliced_w2"]) == pytest.approx(first.sliced_w2, rel=1e-6)
    assert float(row["error_vs_reference"]) == pytest.approx(first.error_vs_reference, rel=1e-4)
    assert json.loads((out2 / "results.json").read_text())["problem"]["dataset"] == "8gaussians"


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--solvers", "euler,nope"], "unknown solver 'nope'; valid: "),
        (["--steps", "4,0"], "--steps must be >= 1, got '0'"),
        (["--steps", "4,-2"], "--steps must be >= 1, got '-2'"),
        (["--steps", "four"], "--steps got 'four', not an integer"),
        (["--steps", "4,1e12"], "--steps must be <= 100000 (each step"),
        (["--field", "nope"], "unknown field 'nope'; valid: analytic, exact, mlp"),
        (["--process", "nope"], "unknown process 'nope'; valid: "),
        (["--process", "pfgm", "--solvers", "dpmpp-2m"], "solver 'dpmpp-2m' cannot run on process 'pfgm'"),
        (["--field", "analytic", "--dataset", "moons"], "--field analytic needs a Gaussian-mixture dataset"),
        (["--n-samples", "0"], "argument --n-samples: must be >= 1"),
        (["--ckpt", "/nonexistent/ckpt.pt"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_with_exit_2(tmp_path, capsys, args, fragment):
    rc = main(["compare-solvers", "--dataset", "8gaussians", "--n-data", "50", "--n-samples", "8", "--device", "cpu",
               "--out", str(tmp_path / "bad"), *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and fragment in err, err


def test_stochastic_sampler_on_a_process_without_score_is_refused(tmp_path, capsys):
    rc = main(["compare-solvers", "--process", "pfgmpp", "--D", "128", "--dataset", "8gaussians", "--solvers", "euler-maruyama",
               "--n-data", "50", "--n-samples", "8", "--device", "cpu", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "solver 'euler-maruyama' needs a reverse-time SDE" in err


@pytest.mark.slow
def test_image_checkpoint_problem(tmp_path):
    """An image checkpoint of ``physgen train`` (a tiny U-Net, two steps on 8x8 digits) is
    loaded lazily and compared with pixel-space sliced W2 / MMD."""
    images_train = pytest.importorskip("physgen.images.train")
    from physgen.compare import ImageProblem
    from physgen.training import TrainConfig

    run = tmp_path / "run"
    process = "pfgmpp" if "pfgmpp" in PROCESSES else "edm"
    cfg = images_train.ImageTrainConfig(dataset="digits", resolution=8, process=process, arch="tiny", out=str(run), sample_n=2,
                                        sample_steps=2, train=TrainConfig(steps=2, batch=8, warmup_steps=0, log_every=1, seed=0, precision="fp32"))
    images_train.run_training(cfg, log_stream=open(tmp_path / "train.log", "w"))
    problem = ImageProblem(run, n_samples=6, seed=0, device="cpu")
    assert "model" not in problem.__dict__  # nothing is read before it is needed
    result = compare(problem, ["euler", "heun"], [2, 3], ref_rtol=1e-4, ref_atol=1e-4, check_reference=False)
    assert problem.x0.shape == (6, 1, 8, 8)
    assert [r.nfe for r in result.rows] == [2, 3, 3, 5]
    assert all(math.isfinite(r.error_vs_reference) and math.isfinite(r.sliced_w2) and math.isfinite(r.mmd) for r in result.rows)
    assert result.problem["kind"] == "image" and result.problem["shape"] == [1, 8, 8]


def test_solving_in_chunks_gives_the_same_rows():
    """--solve-batch splits the samples; per-sample solvers and seeded noise make the result batch-independent."""
    whole = _toy(n_samples=24)
    chunked = _toy(n_samples=24)
    chunked.batch = 10
    a = compare(whole, ["heun", "dopri5"], [4], ref_rtol=1e-6, ref_atol=1e-6, check_reference=False).rows
    b = compare(chunked, ["heun", "dopri5"], [4], ref_rtol=1e-6, ref_atol=1e-6, check_reference=False).rows
    assert a[0].nfe == b[0].nfe and b[0].nfe_total == 3 * b[0].nfe
    for ra, rb in zip(a, b):
        assert rb.error_vs_reference == pytest.approx(ra.error_vs_reference, rel=1e-4, abs=1e-6)
        assert rb.sliced_w2 == pytest.approx(ra.sliced_w2, rel=1e-4)
