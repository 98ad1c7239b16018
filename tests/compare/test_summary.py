"""The error summaries of issue 24's benchmark (physgen/compare/summary.py): the trimmed RMS and the
worst share against brute-force sums, and median/range across fields with a diverged run."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, strategies as st

from physgen.compare import rms_error
from physgen.compare.summary import median_range, per_sample_errors, trimmed_rms_error, worst_share

errors = st.lists(st.floats(0.0, 1e3, allow_nan=False), min_size=1, max_size=300)


def _points(e: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples whose per-sample distance to the reference is ``e`` (along a random direction each)."""
    g = torch.Generator().manual_seed(len(e))
    u = torch.randn(len(e), 3, generator=g, dtype=torch.float64)
    u = u / u.norm(dim=1, keepdim=True)
    ref = torch.randn(len(e), 3, generator=g, dtype=torch.float64)
    return ref + torch.tensor(e, dtype=torch.float64)[:, None] * u, ref


@given(errors, st.sampled_from([0.0, 0.01, 0.1, 0.5]))
def test_trimmed_rms_and_worst_share_are_the_brute_force_sums(e, q):
    x, ref = _points(e)
    k = math.floor(q * len(e))
    kept = sorted(e)[: len(e) - k]
    assert per_sample_errors(x, ref).numpy() == pytest.approx(e, abs=1e-9, rel=1e-9)
    assert trimmed_rms_error(x, ref, q) == pytest.approx(math.sqrt(sum(v * v for v in kept) / len(kept)), rel=1e-9, abs=1e-9)
    total = sum(v * v for v in e)
    worst = sum(v * v for v in sorted(e, reverse=True)[:k])
    assert worst_share(x, ref, q) == pytest.approx(worst / total if total else 0.0, rel=1e-9, abs=1e-12)
    assert trimmed_rms_error(x, ref, 0.0) == pytest.approx(rms_error(x, ref), rel=1e-9, abs=1e-9)


def test_one_far_sample_in_a_hundred_is_what_the_trimmed_error_leaves_out():
    """Issue 24's case: 1 of 100 samples carries most of the squared error; without it the error is the bulk's."""
    e = [0.01] * 99 + [1.0]
    x, ref = _points(e)
    assert rms_error(x, ref) == pytest.approx(math.sqrt((99e-4 + 1) / 100))
    assert trimmed_rms_error(x, ref) == pytest.approx(0.01)
    assert worst_share(x, ref) == pytest.approx(1 / (1 + 99e-4))


def test_diverged_samples_are_dropped_first_and_never_hidden():
    e = [0.1] * 200
    x, ref = _points(e)
    x[3] = math.nan
    assert trimmed_rms_error(x, ref, 0.01) == pytest.approx(0.1)  # 2 dropped: the NaN one and one other
    assert math.isnan(worst_share(x, ref))
    x[4:7] = math.nan
    assert math.isnan(trimmed_rms_error(x, ref, 0.01))  # 4 non-finite > the 2 dropped


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=9))
def test_median_range_is_the_sorted_middle(v):
    med, lo, hi = median_range(v)
    s = sorted(v)
    assert (lo, hi) == (s[0], s[-1])
    n = len(s)
    assert med == pytest.approx(s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2)


def test_median_range_counts_a_divergence_as_the_worst():
    assert median_range([0.1, math.nan, 0.3]) == (0.3, 0.1, math.inf)
    assert median_range([0.2, math.nan]) == (math.inf, 0.2, math.inf)
    with pytest.raises(ValueError):
        median_range([])
    with pytest.raises(ValueError):
        trimmed_rms_error(torch.zeros(3, 2), torch.zeros(3, 2), drop=1.0)
