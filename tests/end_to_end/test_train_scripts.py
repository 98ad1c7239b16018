"""The GPU scripts still run end to end (on CPU, with tiny budgets): benchmarks/gpu_digits.py,
benchmarks/bench_images.py and benchmarks/gpu_check.py --smoke.  Slow tier: ``pytest -m slow``."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


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


@pytest.mark.slow
def test_gpu_check_smoke_runs_every_section_on_cpu(tmp_path):
    gc = _load("gpu_check")
    out = tmp_path / "gpu"
    rc = gc.main(["--smoke", "--time-scale", "4", "--out", str(out)])  # what runs is checked here, not how fast: CI's cores are shared
    summary = json.loads((out / "summary.json").read_text())
    assert rc == 0 and all(v["state"] == "ok" for v in summary["status"].values()), summary["status"]
    files = {p.name for p in out.iterdir()}
    assert len(files) <= gc.MAX_FILES and all(p.is_file() for p in out.iterdir())
    assert {"summary.json", "gpu_check.log", "pytest_cuda.log", "training.png", "digits_quality.png",
            "samples-D2048.png", "samples-Dinf.png"} <= files
    sec = summary["sections"]
    assert set(sec) >= {"tests", "train", "train_compile", "sample", "solvers", "exact", "digits_train_D2048",
                        "digits_train_Dinf", "digits_judge"}
    assert sec["tests"]["returncode"] == 0 and sec["tests"]["counts"].get("skipped", 0) > 0  # no CUDA here: every cuda test skips
    train = sec["train"]["configs"]
    assert set(train) == {"reference", "fp32-notf32", "fp32", "bf16+cl"}
    assert all(r["img_per_s"] > 0 and len(r["losses"]) == r["warmup_steps"] + 2 for r in train.values())
    # the reference loop and physgen start from the same weights: the same loss scale at step 1
    assert abs(train["reference"]["losses"][0] / train["fp32"]["losses"][0] - 1) < 0.5
    # physgen's Heun and the edm_sampler-style loop compute the same samples
    assert sec["sample"]["nfe"] == 35 and sec["sample"]["max_abs_diff_fp32_vs_reference"] < 1e-3
    methods = sec["solvers"]["methods"]
    assert [methods[m]["nfe"] for m in ("euler", "heun", "dpmpp-2m")] == [18, 35, 18] and methods["dopri5"]["nfe"] > 0
    assert sec["exact"]["matmul"]["pairs_per_s"] > 0 and all("s" in v for v in sec["exact"]["variants"].values())
    assert max(v["max_abs_diff_vs_default"] for v in sec["exact"]["variants"].values()) < 1e-4
    judge = sec["digits_judge"]
    assert [r["D"] for r in judge["runs"]] == ["2048", "inf"] and all(r["report"]["n"] == 24 for r in judge["runs"])
    targets = [v["target"] for v in summary["verdicts"]]
    assert any("2x the fp32 reference" in t for t in targets) and any("1.5x" in t for t in targets)
    assert all(v["verdict"] in ("meets", "misses", "not measured") for v in summary["verdicts"])
