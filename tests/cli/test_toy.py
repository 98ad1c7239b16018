"""The toy CLI: every promised file, one-line errors for a user's mistakes."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from physgen.cli.main import main
from physgen.config import read_json

FILES = ("config.json", "samples.npy", "metrics.json", "samples.png", "trajectories.png")


@pytest.mark.parametrize("process", ["edm", "ve", "vp"])
def test_toy_writes_every_file(tmp_path, process):
    out = tmp_path / process
    rc = main(["toy", "--process", process, "--dataset", "8gaussians", "--field", "exact", "--n-data", "500",
               "--n-samples", "300", "--steps", "10", "--seed", "1", "--device", "cpu", "--out", str(out)])
    assert rc == 0
    for name in FILES:
        assert (out / name).stat().st_size > 0, name
    samples = np.load(out / "samples.npy")
    assert samples.shape == (300, 2) and np.isfinite(samples).all()
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("sliced_w2", "mmd", "energy", "nfe", "wall_s"):
        assert key in metrics
    # Heun, 10 steps: the denoiser-form processes end with one Euler step to s = 0
    assert metrics["nfe"] == (2 * 10 - 1 if process != "vp" else 2 * 10)
    config = json.loads((out / "config.json").read_text())
    assert config["process"] == process and config["n_samples"] == 300


def test_toy_config_json_is_strict_json_with_an_infinite_D(tmp_path):
    """``--D inf`` is recorded as ``"inf"`` (the codec), never Python's non-JSON ``Infinity``,
    and the file reads back through the strict reader."""
    out = tmp_path / "inf"
    assert main(["toy", "--process", "pfgmpp", "--D", "inf", "--n-data", "300", "--n-samples", "100", "--steps", "4",
                 "--device", "cpu", "--out", str(out)]) == 0
    text = (out / "config.json").read_text()
    assert "Infinity" not in text
    config = read_json(out / "config.json")
    assert config["process_options"]["D"] == "inf" and config["resolved_process"]["D"] == "inf"


def test_toy_reads_user_files(tmp_path):
    pts = np.random.default_rng(0).normal(size=(400, 2)).astype(np.float32)
    np.save(tmp_path / "pts.npy", pts)
    (tmp_path / "mix.json").write_text(json.dumps({"means": [[-2, 0], [2, 0]], "stds": [0.3, 0.3], "weights": [0.2, 0.8]}))
    samples = {}
    for spec, field in ((tmp_path / "pts.npy", "exact"), (tmp_path / "mix.json", "analytic")):
        out = tmp_path / f"run_{field}"
        assert main(["toy", "--dataset", str(spec), "--field", field, "--n-samples", "1000", "--steps", "8", "--device", "cpu", "--out", str(out)]) == 0
        assert json.loads((out / "config.json").read_text())["dataset"] == str(spec)
        samples[field] = np.load(out / "samples.npy")
        assert samples[field].shape == (1000, 2) and np.isfinite(samples[field]).all()
    # the exact field of a point set carries every sample onto one of its points (measured: < 0.01 away)
    nearest = np.sqrt(((samples["exact"][:, None, :] - pts[None]) ** 2).sum(-1)).min(1)
    assert nearest.max() < 0.05, np.sort(nearest)[-5:]
    # the mixture file's analytic field: its weights (0.2 / 0.8, 4 binomial sd) and each mode's place and spread
    # (8 Heun steps leave a bias: measured spread 0.34-0.37 for 0.3, centres 0.22 off)
    left = samples["analytic"][:, 0] < 0
    assert abs(left.mean() - 0.2) < 0.05
    for side, centre in ((left, -2.0), (~left, 2.0)):
        mode = samples["analytic"][side]
        assert abs(mode[:, 0].mean() - centre) < 0.35 and abs(mode[:, 1].mean()) < 0.1
        assert ((mode.std(0) > 0.2) & (mode.std(0) < 0.5)).all(), mode.std(0)
        assert np.abs(mode - [centre, 0.0]).max() < 2.0  # no sample far from its mode


def test_toy_mlp_run_is_reproducible_from_its_seed(tmp_path):
    """The MLP's initial weights come from --seed (runtime.initial_weights), not from torch's
    global generator: two runs of one command agree bit for bit, whatever was drawn between them.
    The other commands that build a network: tests/end_to_end/test_seeded_init.py."""
    args = ["toy", "--process", "edm", "--field", "mlp", "--train-steps", "30", "--batch", "64", "--hidden", "16", "--depth", "2",
            "--n-samples", "100", "--steps", "4", "--seed", "3", "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    torch.rand(5)  # the global generator moves between the runs: no effect
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    assert np.array_equal(np.load(tmp_path / "a" / "samples.npy"), np.load(tmp_path / "b" / "samples.npy"))


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--process", "nope"], "unknown process 'nope'; valid: "),
        (["--dataset", "nope"], "unknown dataset 'nope'; valid: "),
        (["--solver", "nope"], "unknown solver 'nope'; valid: "),
        (["--field", "nope"], "unknown field 'nope'; valid: analytic, exact, mlp"),
        (["--steps", "0"], "argument --steps: must be >= 1, got '0'"),
        (["--steps", "1000000000"], "argument --steps: must be <= 100000"),
        (["--solver", "heun", "--levels", "5"], "--levels applies to annealed Langevin (--solver ald)"),
        (["--solver", "heun", "--rtol", "1e-3"], "solver 'heun' has no option 'rtol'"),
        (["--solver", "heun", "--snr", "0.1"], "solver 'heun' has no option 'snr'"),
        (["--n-samples", "-5"], "argument --n-samples: must be >= 1, got '-5'"),
        (["--sigma-min", "5", "--sigma-max", "1"], "sigma_min=5.0 must be < sigma_max=1.0"),
        (["--field", "analytic", "--dataset", "moons"], "--field analytic needs a Gaussian-mixture dataset"),
        (["--dataset", "/nonexistent/pts.npy"], "/nonexistent/pts.npy"),
        (["--process", "pfgmpp", "--D", "4", "--solver", "euler-maruyama"], "solver 'euler-maruyama' needs a reverse-time SDE"),
        (["--process", "pfgm", "--solver", "dpm2"], "solver 'dpm2' needs the denoiser form"),
        (["--process", "pfgm", "--field", "exact", "--solver", "euler", "--steps", "2", "--n-data", "500"], "solver 'euler' with 2 steps diverged"),
    ],
)
def test_user_mistakes_are_one_line_errors(tmp_path, capsys, args, fragment):
    rc = main(["toy", "--n-data", "50", "--n-samples", "20", "--steps", "2", "--device", "cpu", "--out", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert fragment in lines[0], lines[0]


def test_console_script_exits_nonzero_with_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "physgen.cli.main", "toy", "--process", "nope"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "unknown process 'nope'" in proc.stderr


def test_toy_and_demo_train_with_one_recipe(tmp_path, monkeypatch):
    """The training recipe has one home (``ToyConfig``'s defaults, issue 19): ``physgen toy``'s
    flags default to it, and ``physgen demo`` trains every process with it."""
    from dataclasses import fields

    from physgen import toy
    from physgen.cli.demo import DEMO_PROCESSES
    from physgen.cli.main import build_parser

    recipe = {f.name: f.default for f in fields(toy.ToyConfig) if f.name in ("train_steps", "batch", "lr", "hidden", "depth")}
    args = build_parser().parse_args(["toy"])
    assert {k: getattr(args, k) for k in recipe} == recipe
    seen = []

    def record(config, log_stream=None):
        seen.append(config)
        raise _Stop  # the recipe is what is checked; the run itself is test_demo's

    from physgen.cli import demo

    monkeypatch.setattr(toy, "run_toy", record)
    monkeypatch.setattr(demo, "run_toy", record, raising=False)  # should demo import it at module level
    with pytest.raises(_Stop):
        main(["demo", "--workers", "1", "--out", str(tmp_path / "demo")])  # in this process, where run_toy is patched
    assert [c.process for c in seen] == [DEMO_PROCESSES[0]] and all(getattr(seen[0], k) == v for k, v in recipe.items())


class _Stop(Exception):
    pass
