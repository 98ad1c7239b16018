"""A stray tail is never silent (issue 19): ``stray_fraction`` in ``metrics.json`` (toy),
``sampling.json`` (sample) and compare-solvers' results, with one warning line on stderr.

The field :class:`FarDenoiser` is the exact denoiser except on every 100th row of the batch,
where it returns a point 1000 data scales away: the final denoising step puts exactly 1% of the
samples there, which the median divergence test cannot see.
"""
from __future__ import annotations

import json
import sys

import pytest
import torch
from hypothesis import given, settings, strategies as st

import physgen.toy
from physgen.processes import make_process
from physgen.sampling import STRAY_RATIO, DivergenceError, check_result, grid, pooled_stray_fraction, sample, stray_fraction
from physgen.toy import ToyConfig, run_toy

FAR = 1000.0


class FarDenoiser:
    """``inner`` with rows ``0, 100, 200, ...`` of every call sent to ``(FAR, 0, ...)``."""

    kind = "denoiser"

    def __init__(self, inner):
        self.inner = inner
        self.num_classes = getattr(inner, "num_classes", None) or 0

    def __call__(self, x, s, label=None):
        d = self.inner(x, s, label).clone()
        d[::100] = 0.0
        d[::100, 0] = FAR
        return d

    def parameters(self):
        return getattr(self.inner, "parameters", lambda: iter(()))()


def _toy(tmp_path, far: bool, monkeypatch, capsys):
    if far:
        build = physgen.toy.build_field
        monkeypatch.setattr(physgen.toy, "build_field", lambda *a, **k: (FarDenoiser(build(*a, **k)[0]), None))
    config = ToyConfig(process="edm", dataset="two_mode", field="exact", n_data=500, n_samples=1000, device="cpu", out=str(tmp_path / "run"))
    run_toy(config)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    return metrics, capsys.readouterr().err


def test_toy_reports_a_one_percent_tail_in_metrics_and_one_warning_line(tmp_path, monkeypatch, capsys):
    metrics, err = _toy(tmp_path, True, monkeypatch, capsys)
    assert metrics["stray_fraction"] == pytest.approx(0.01)
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "10 of 1000 samples" in warnings[0] and "stray_fraction" in warnings[0], err


def test_a_clean_toy_run_reports_zero_and_prints_no_warning(tmp_path, monkeypatch, capsys):
    metrics, err = _toy(tmp_path, False, monkeypatch, capsys)
    assert metrics["stray_fraction"] == 0.0
    assert "warning" not in err, err


def test_the_median_test_still_refuses_real_divergence():
    x0 = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    with pytest.raises(DivergenceError, match="median distance"):
        check_result(x0 * 10, x0, "euler", 3)
    with pytest.raises(DivergenceError, match="NaN"):
        check_result(torch.where(torch.arange(64)[:, None] == 5, float("nan"), x0), x0, "euler", 3)
    check_result(torch.cat([x0[:60] * 0.1, x0[60:] * 1e6]), x0, "euler", 3)  # a tail: not a divergence ...
    assert stray_fraction(torch.cat([x0[:60] * 0.1, x0[60:] * 1e6]), x0) == pytest.approx(4 / 64)  # ... but strays


@settings(max_examples=40, deadline=None)
@given(n=st.integers(8, 300), seed=st.integers(0, 10_000), scale=st.floats(0.01, 100.0), far=st.floats(0.0, 3.0))
def test_stray_fraction_counts_the_samples_beyond_the_ratio_of_the_priors_median_radius(n, seed, scale, far):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(n, 3, generator=g, dtype=torch.float64) * scale + 5.0
    x = torch.randn(n, 3, generator=g, dtype=torch.float64) * scale * far + 5.0
    centre = x0.median(0).values
    r0 = (x0 - centre).norm(dim=1).median()
    assert stray_fraction(x, x0) == float(((x - centre).norm(dim=1) > STRAY_RATIO * r0).double().mean())


def test_too_few_samples_are_not_measured_and_batches_pool_by_size():
    x0 = torch.randn(7, 2)
    assert stray_fraction(x0, x0) is None
    assert pooled_stray_fraction([(0.5, 10), (None, 3), (0.0, 30)]) == pytest.approx(5 / 40)
    assert pooled_stray_fraction([(None, 3)]) is None


def test_vps_strays_are_measured_in_the_datas_units():
    """VP's prior ``N(a μ, b² I)`` has ``b ≈ 1``: in ``x`` the data lie outside it, in ``x/a`` far inside."""
    p = make_process("vp", prior_mean=[3.0, 0.0])
    field = p.exact_field(torch.tensor([[3.0, 0.0], [3.5, 0.0], [2.5, 0.5]]).repeat(20, 1))
    x0 = p.sample_prior((200, 2), generator=torch.Generator().manual_seed(0))
    sol = sample(p, field, x0, grid(p, 12), "heun")
    assert float((sol.x - x0.median(0).values).norm(dim=1).median()) > float((x0 - x0.median(0).values).norm(dim=1).median())
    assert sol.stats.extra["stray_fraction"] == 0.0


def test_image_sampling_pools_the_fraction_over_its_batches(tmp_path, capsys):
    from physgen.images.generate import sample_grid, sample_to_dir

    edm, field = make_process("edm"), FarDenoiser(lambda x, s, label=None: torch.zeros_like(x))
    kw = dict(steps=2, batch=100, device="cpu")
    _, _, record = sample_grid(edm, field, 250, tmp_path / "grid.png", (1, 4, 4), **kw)
    assert record["stray_fraction"] == pytest.approx(3 / 250)  # row 0 of the batches of 100, 100 and 50
    summary = sample_to_dir(edm, field, 250, tmp_path / "dir", (1, 4, 4), **kw)
    assert summary["record"]["stray_fraction"] == pytest.approx(3 / 250)
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2 and all("3 of 250 samples" in w for w in warnings), warnings


@pytest.mark.slow
def test_sample_command_records_the_stray_fraction_of_all_batches(tmp_path, monkeypatch, capsys):
    """``physgen sample`` (grid and folder) pools the fraction over its batches into sampling.json
    (the checkpoint's field replaced by the exact denoiser of one image, with the far rows)."""
    import physgen.images.train as images_train
    from physgen.cli.main import main

    run = tmp_path / "run"
    assert main(["train", "--process", "edm", "--dataset", "digits", "--resolution", "8", "--arch", "tiny", "--batch", "8", "--steps", "1",
                 "--warmup-steps", "0", "--sample-every", "0", "--precision", "fp32", "--out", str(run)]) == 0
    load = images_train.load_trained

    def far_model(*a, **k):  # the data: one image (zeros), so a clean run has no strays
        model = load(*a, **k)
        model.field = FarDenoiser(lambda x, s, label=None: torch.zeros_like(x))
        return model

    monkeypatch.setattr(images_train, "load_trained", far_model)
    # `physgen sample` reads its --ckpt through physgen.pretrained.load, which holds its own name for it
    monkeypatch.setattr(sys.modules["physgen.pretrained.load"], "load_trained", far_model)
    capsys.readouterr()
    args = ["sample", "--ckpt", str(run), "--n", "300", "--batch", "100", "--steps", "2", "--device", "cpu"]
    assert main(args + ["--out", str(tmp_path / "grid.png")]) == 0
    assert json.loads((tmp_path / "sampling.json").read_text())["stray_fraction"] == pytest.approx(0.01)  # row 0 of each batch
    assert main(args + ["--out", str(tmp_path / "dir")]) == 0
    assert json.loads((tmp_path / "dir" / "sampling.json").read_text())["stray_fraction"] == pytest.approx(0.01)
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2 and all("3 of 300 samples" in w for w in warnings), warnings


def test_compare_solvers_records_the_fraction_per_run_and_warns_once(tmp_path, monkeypatch, capsys):
    from physgen.compare.problems import ToyProblem
    from physgen.compare.run import compare

    problem = ToyProblem.from_config(ToyConfig(process="edm", dataset="two_mode", field="exact", n_data=300, n_samples=200, device="cpu"))
    problem.field = FarDenoiser(problem.field)
    capsys.readouterr()
    result = compare(problem, ["euler", "heun"], [4, 6], check_reference=False)
    assert [r.metrics["stray_fraction"] for r in result.rows] == pytest.approx([0.01] * 4)
    assert [ref["stray_fraction"] for ref in result.references] == pytest.approx([0.01])  # one span, one reference
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "in 5 of 5 runs" in warnings[0], warnings
