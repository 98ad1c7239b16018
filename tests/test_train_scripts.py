"""The GPU scripts still run end to end (on CPU, with tiny budgets): benchmarks/gpu_digits.py
and benchmarks/bench_images.py.  Slow tier: ``pytest -m slow``."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.slow
def test_gpu_digits_script_runs_on_cpu(tmp_path):
    from physgen.processes import PROCESSES

    if "pfgmpp" not in PROCESSES:
        pytest.skip("pfgmpp not registered")
    gd = _load("gpu_digits")
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n## Other\n\nkept\n")
    rc = gd.main(["--steps", "3", "--resolution", "8", "--arch", "tiny", "--batch", "16", "--n-samples", "24", "--sample-steps", "3",
                  "--classifier-steps", "20", "--log-every", "1", "--warmup-steps", "1", "--device", "cpu", "--out", str(tmp_path / "gd"),
                  "--write", "--results", str(results)])
    assert rc == 0
    res = json.loads((tmp_path / "gd" / "results.json").read_text())
    assert [r["D"] for r in res["runs"]] == ["2048", "inf"] and all(r["steps"] == 3 for r in res["runs"])
    rep = res["runs"][0]["report"]
    assert rep["n"] == 24 and sum(rep["class_counts"]) == 24 and 0 <= rep["class_entropy"] <= 1
    assert (tmp_path / "gd" / "quality.png").is_file() and (tmp_path / "gd" / "samples-Dinf.png").is_file()
    text = results.read_text()
    assert "## Other\n\nkept" in text and "## Images (issue 7)" in text and "PFGM++ D=2048" in text


@pytest.mark.slow
def test_bench_images_skips_without_cuda_and_smoke_runs_on_cpu(capsys):
    bi = _load("bench_images")
    if not torch.cuda.is_available():
        assert bi.main([]) == 0
        assert "skipped: no CUDA device" in capsys.readouterr().out
    assert bi.main(["--device", "cpu", "--arch", "tiny", "--batch", "8", "--steps", "1", "--warmup", "1", "--sample-batch", "4",
                    "--sample-batches", "1", "--configs", "fp32"]) == 0
    assert "| fp32 |" in capsys.readouterr().out
