"""``physgen toy --observe-A A --observe-y Y --observe-noise σ`` (issue 23): the posterior given a
noisy linear observation, by twisted SMC, against the closed form; its record; bad values."""
import json

import numpy as np
import pytest
import torch

from physgen.cli.main import main
from physgen.data.mixture import GaussianMixture
from physgen.editing.conditional import linear_posterior

from cli_errors import error_line

MIX = {"means": [[-1, -1.5], [1, 1.5]], "stds": [0.5, 0.5], "weights": [0.3, 0.7]}
OBSERVE = ["--observe-A", "1,-1", "--observe-y", "0.5", "--observe-noise", "0.3"]  # y = x0 - x1 + n: weights 0.3/0.7 -> 0.5/0.5


@pytest.fixture()
def mix(tmp_path):
    path = tmp_path / "mix.json"
    path.write_text(json.dumps(MIX))
    return str(path)


def test_the_default_run_recovers_the_closed_form_posterior_and_records_the_observation(tmp_path, mix):
    """4000 particles, analytic field, no option but the observation: each component's weight
    within 0.03 of the closed form, its mean within 0.05 and covariance within 0.04."""
    out = tmp_path / "obs"
    assert main(["toy", "--dataset", mix, "--field", "analytic", "--n-samples", "4000", "--device", "cpu", "--out", str(out), *OBSERVE]) == 0
    x = np.load(out / "samples.npy")
    metrics = json.loads((out / "metrics.json").read_text())
    post = linear_posterior(GaussianMixture(MIX["means"], MIX["stds"], MIX["weights"]), torch.tensor([[1.0, -1.0]]), torch.tensor([0.5]), 0.3)
    w, means, covs = post.component_moments(torch.from_numpy(x))
    assert x.shape == (4000, 2) and np.isfinite(x).all()
    assert (w - post.weights).abs().max() <= 0.03 and metrics["weight_error"] == pytest.approx(float((w - post.weights).abs().max()))
    assert (means - post.means).abs().max() <= 0.05 and (covs - post.covs).abs().max() <= 0.04
    assert metrics["posterior_weights"] == pytest.approx(post.weights.tolist())
    assert metrics["observation"] == {"A": [[1.0, -1.0]], "y": [0.5], "noise_std": 0.3}
    assert metrics["solver"] == "smc" and metrics["particles"] == 4000 and metrics["nfe"] == 200 and metrics["steps"] == 200
    assert 1 < metrics["distinct"] <= 4000 and "sliced_w2" in metrics  # compared with draws of the closed-form posterior
    assert json.loads((out / "config.json").read_text())["observe"]["noise_std"] == 0.3


def test_a_dataset_without_closed_form_still_runs_and_records(tmp_path):
    out = tmp_path / "moons"
    assert main(["toy", "--n-data", "200", "--n-samples", "64", "--steps", "20", "--device", "cpu", "--out", str(out),
                 "--observe-A", "[[0, 1]]", "--observe-y", "0.25", "--observe-noise", "0.1"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["particles"] == 64 and metrics["nfe"] == 20 and "weight_error" not in metrics
    assert abs(float(np.load(out / "samples.npy")[:, 1].mean()) - 0.25) < 0.15


BAD = [
    (["--observe-A", "1,-1,0"], ("--observe-A", "3 column", "2 coordinates")),
    (["--observe-A", "1,nan"], ("--observe-A", "nan")),
    (["--observe-A", "[[1, Infinity]]"], ("--observe-A", "Infinity")),
    (["--observe-A", "1,-1;1"], ("--observe-A", "one length")),
    (["--observe-A", "a,b"], ("--observe-A", "'a'")),
    (["--observe-y", "0.5,1"], ("--observe-y has 2",)),
    (["--observe-y", "inf"], ("--observe-y", "inf")),
    (["--observe-noise", "-0.3"], ("--observe-noise", "-0.3")),
    (["--observe-noise", "0"], ("--observe-noise", "0")),
    (["--observe-noise", "nan"], ("--observe-noise", "nan")),
    (["--condition", "x0=1"], ("--condition", "--observe-A")),
    (["--condition-method", "blend"], ("--observe-A", "SMC", "blend")),
    (["--solver", "euler"], ("--solver", "smc")),
    (["--sampler-opt", "s_churn=1"], ("--sampler-opt",)),
    (["--guidance", "cfg", "--label", "0"], ("--guidance",)),
]


@pytest.mark.parametrize("flags,needles", BAD, ids=[" ".join(f) for f, _ in BAD])
def test_bad_observations_are_one_line(tmp_path, capsys, flags, needles):
    given = dict(zip(OBSERVE[::2], OBSERVE[1::2]))
    for flag, value in zip(flags[::2], flags[1::2]):
        if flag in given:
            given[flag] = value
    extra = [f for pair in zip(flags[::2], flags[1::2]) if pair[0] not in given for f in pair]
    argv = [f for pair in given.items() for f in pair] + extra
    error_line(capsys, ["toy", "--n-data", "50", "--n-samples", "8", "--device", "cpu", "--out", str(tmp_path / "o"), *argv], *needles)
    assert not (tmp_path / "o" / "samples.npy").exists()


@pytest.mark.parametrize("missing", ["--observe-A", "--observe-y", "--observe-noise"])
def test_each_flag_alone_is_refused_naming_the_missing_ones(tmp_path, capsys, missing):
    given = [f for flag, value in zip(OBSERVE[::2], OBSERVE[1::2]) if flag != missing for f in (flag, value)]
    error_line(capsys, ["toy", "--n-samples", "8", "--device", "cpu", "--out", str(tmp_path / "o"), *given], missing, "missing")
