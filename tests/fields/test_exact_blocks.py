"""The exact field's block shapes and weight floor (issue 13): the one-block path, the streamed
path and a brute-force float64 softmax give the same posterior mean."""
import math

import pytest
import torch

from physgen.fields.exact import DEFAULT_CHUNK_ELEMS, ONE_BLOCK_MIN_ROWS, flush_floor, posterior_mean
from physgen.processes import EDM, make_process

F64 = torch.float64


def _softmax_reference(x, points, s, log_profile, labels=None, label=None):
    """``softmax(log w) @ y`` in float64 over all pairs at once (subnormal weights kept exactly)."""
    xd, yd, sd = x.double(), points.double(), s.double()
    sq = torch.cdist(xd, yd).pow(2)
    logw = log_profile(sq, sd[:, None])
    if label is not None:
        logw = logw.masked_fill(labels[None, :] != label[:, None], -math.inf)
    return torch.softmax(logw, 1) @ yd


def _data(q, p, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(q, 2, generator=g, dtype=dtype) * 2, torch.randn(p, 2, generator=g, dtype=dtype)


def test_flush_floor_is_log_tiny_over_eps():
    for dtype in (torch.float32, torch.float64):
        info = torch.finfo(dtype)
        assert flush_floor(dtype) == pytest.approx(math.log(info.tiny / info.eps), rel=1e-12)
        # raised weights stay normal numbers, and multiplying them by eps does not underflow
        w = torch.exp(torch.tensor(flush_floor(dtype), dtype=dtype))
        assert w >= info.tiny and w * info.eps >= info.tiny * (1 - 1e-6)


@pytest.mark.parametrize("sigma", [0.003, 0.05, 0.5, 5.0])
@pytest.mark.parametrize("process", ["edm", "pfgmpp"])
def test_streamed_equals_one_block_equals_softmax(sigma, process):
    # sigma = 0.003: almost every relative weight is below exp(floor), so the floor is active
    proc = EDM() if process == "edm" else make_process("pfgmpp", D=64)
    x, points = _data(40, 3000)
    s = torch.full((40,), sigma, dtype=F64)
    field = proc.exact_field(points)
    one = posterior_mean(x, points, s, field.log_profile, chunk_elems=ONE_BLOCK_MIN_ROWS * 3000)
    streamed = posterior_mean(x, points, s, field.log_profile, chunk_elems=ONE_BLOCK_MIN_ROWS * 3000 - 1)  # 32 rows x 93 cols
    profile = field.log_profile if process == "pfgmpp" else (lambda sq, sv: -0.5 * sq / sv**2)
    ref = _softmax_reference(x, points, s, profile)
    torch.testing.assert_close(streamed, one, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(one, ref, rtol=1e-12, atol=1e-12)


def test_default_chunk_switches_to_streaming_above_the_threshold_with_the_same_result():
    # with the default block the switch is at P = DEFAULT_CHUNK_ELEMS / ONE_BLOCK_MIN_ROWS points
    p = DEFAULT_CHUNK_ELEMS // ONE_BLOCK_MIN_ROWS + 1
    x, points = _data(6, p, seed=1, dtype=torch.float32)
    s = torch.full((6,), 0.05)
    field = EDM().exact_field(points)
    streamed = field(x, s)  # default chunk: p is one point too many for the one-block path
    field.chunk_elems = ONE_BLOCK_MIN_ROWS * p
    one = field(x, s)
    ref = _softmax_reference(x, points, s, lambda sq, sv: -0.5 * sq / sv**2)
    torch.testing.assert_close(streamed, one, rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(streamed.double(), ref, rtol=2e-4, atol=2e-4)


def test_labels_and_pair_values_agree_between_block_shapes():
    x, points = _data(30, 500, seed=2)
    labels = torch.arange(500) % 3
    label = torch.tensor([0, 1, 2, -1, 1, 0] * 5)
    s = torch.full((30,), 0.02, dtype=F64)
    prof = lambda sq, sv: -0.5 * sq / sv**2
    runs = [posterior_mean(x, points, s, prof, point_labels=labels, label=label, pair_value=lambda sq, sv: sq, chunk_elems=c)
            for c in (4 * 500, 4 * 500 - 1, 37)]
    for mean, extra in runs[1:]:
        torch.testing.assert_close(mean, runs[0][0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(extra, runs[0][1], rtol=1e-12, atol=1e-12)
    uncond = label < 0
    cond_ref = _softmax_reference(x[~uncond], points, s[~uncond], prof, labels, label[~uncond])
    torch.testing.assert_close(runs[1][0][~uncond], cond_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(runs[1][0][uncond], _softmax_reference(x[uncond], points, s[uncond], prof), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("chunk", [4 * 50, 4 * 50 - 1, 7])
def test_a_label_without_points_still_raises(chunk):
    x, points = _data(3, 50, seed=3)
    labels = torch.zeros(50, dtype=torch.long)  # class 1 has no points
    with pytest.raises(ValueError, match="no points"):
        posterior_mean(x, points, torch.full((3,), 0.1, dtype=F64), lambda sq, sv: -0.5 * sq / sv**2,
                       point_labels=labels, label=torch.tensor([0, 1, 0]), chunk_elems=chunk)


@pytest.mark.parametrize("chunk", [4 * 400, 4 * 400 - 1])
def test_the_field_stays_differentiable_on_both_paths(chunk):
    # the likelihood differentiates the exact field; the in-place fast path must step aside under autograd
    x, points = _data(12, 400, seed=4)
    x.requires_grad_(True)
    s = torch.full((12,), 0.3, dtype=F64)
    prof = lambda sq, sv: -0.5 * sq / sv**2
    (g,) = torch.autograd.grad(posterior_mean(x, points, s, prof, chunk_elems=chunk).pow(2).sum(), x)
    (ref,) = torch.autograd.grad(_softmax_reference(x, points, s, prof).pow(2).sum(), x)
    torch.testing.assert_close(g, ref, rtol=1e-10, atol=1e-10)
