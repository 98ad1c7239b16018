import torch
from hypothesis import given
from hypothesis import strategies as st

from physgen.noise import BLOCK, SeededNoise


@given(start=st.integers(0, 5000), length=st.integers(1, 700), seed=st.integers(0, 2**31), step=st.integers(-1, 50))
def test_noise_of_a_sample_depends_only_on_seed_index_and_step(start, length, seed, step):
    idx = torch.arange(start, start + length)
    wide = SeededNoise(seed, torch.arange(0, start + length + BLOCK))(step, torch.empty(start + length + BLOCK, 3))
    sub = SeededNoise(seed, idx)(step, torch.empty(length, 3))
    assert torch.equal(wide[start : start + length], sub)


def test_noise_differs_across_steps_seeds_and_is_standard_normal():
    n = SeededNoise(0, range(20000))
    a, b = n(0, torch.empty(20000, 2)), n(1, torch.empty(20000, 2))
    c = SeededNoise(1, range(20000))(0, torch.empty(20000, 2))
    assert not torch.equal(a, b) and not torch.equal(a, c)
    assert abs(float(a.mean())) < 0.02 and abs(float(a.std()) - 1) < 0.02
    # neighbouring samples are independent (no shared rows between blocks)
    assert abs(float(torch.corrcoef(torch.stack([a[:-1, 0], a[1:, 0]]))[0, 1])) < 0.03
