"""physgen.runtime: the seed mixer (bit-identical to the two it replaced), devices, threads, DDP env."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, strategies as st

from physgen.errors import UserError
from physgen.nets.mlp import MLP
from physgen.runtime import available_cpus, dist_info, initial_weights, mix_seed, resolve_device, resolve_precision, set_threads

M64 = (1 << 64) - 1


def _old_chunk_seed(seed, step, chunk):  # physgen.training.chunk_seed before runtime.mix_seed (kept verbatim)
    h = (int(seed) * 0x9E3779B97F4A7C15 + (step + 1) * 0xBF58476D1CE4E5B9 + (chunk + 1) * 0x94D049BB133111EB + 0x2545F4914F6CDD1D) & M64
    h ^= h >> 29
    h = (h * 0xD6E8FEB86659FD93) & M64
    h ^= h >> 32
    return h & ((1 << 63) - 1)


def _old_noise_mix(seed, step, block):  # physgen.noise._mix before runtime.mix_seed (kept verbatim)
    h = (seed * 0x9E3779B97F4A7C15 + (step + 1) * 0xBF58476D1CE4E5B9 + (block + 1) * 0x94D049BB133111EB) & M64
    h ^= h >> 31
    return h & ((1 << 63) - 1)


@given(st.integers(-2**64, 2**64), st.integers(-1, 10**9), st.integers(0, 10**7))
def test_mix_seed_is_bit_identical_to_the_mixers_it_replaced(seed, step, index):
    assert mix_seed(seed, step, index, stream="train") == _old_chunk_seed(seed, step, index)
    assert mix_seed(seed, step, index, stream="noise") == _old_noise_mix(seed, step, index)
    assert 0 <= mix_seed(seed, step, index, stream="train") < 2**63


def test_mix_seed_pins_the_values_files_depend_on():
    """Recorded from main before the move: resumed runs and per-sample noise depend on them."""
    assert [mix_seed(0, 0, 0, stream="train"), mix_seed(7, 123, 4, stream="train")] == [22108243461892586, 8557561456299960371]
    assert [mix_seed(0, -1, 0, stream="noise"), mix_seed(12345, 17, 3, stream="noise")] == [1499779740109734557, 7539886433758339804]
    with pytest.raises(ValueError, match="unknown seed stream"):
        mix_seed(0, 0, 0, stream="other")


def test_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("gpu", "cuda:x", "cudafoo", "cpu:0"):
        with pytest.raises(UserError, match="unknown device"):
            resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available"):
            resolve_device("cuda:0")
    else:
        with pytest.raises(UserError, match="CUDA device"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_precision():
    assert resolve_precision("fp32", "cpu") is None and resolve_precision("bf16", "cpu") is None
    with pytest.raises(UserError, match="unknown precision"):
        resolve_precision("fp16", "cpu")


def test_threads_are_bounded_by_the_cpus_available():
    before = torch.get_num_threads()
    try:
        set_threads(1)
        assert torch.get_num_threads() == 1
        set_threads(0)  # torch's default: unchanged
        assert torch.get_num_threads() == 1
        for bad in (-1, available_cpus() + 1, 1_000_000, True, 2.0):
            with pytest.raises(UserError, match=r"--threads must be an integer in \[0, "):
                set_threads(bad)
    finally:
        torch.set_num_threads(before)


def test_dist_info_from_the_environment(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    info = dist_info()
    assert (info.rank, info.world_size, info.is_main) == (2, 4, False)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(UserError, match="RANK=4, WORLD_SIZE=4"):
        dist_info()
    monkeypatch.setenv("RANK", "one")
    with pytest.raises(UserError, match="RANK='one'"):
        dist_info()


def _weights(seed):
    with initial_weights(seed):
        net = MLP(2, hidden=8, depth=1)
    return torch.cat([p.detach().flatten() for p in net.parameters()])


@given(st.integers(0, 2**63 - 1))
def test_initial_weights_depend_on_the_seed_alone_and_leave_the_callers_generator(seed):
    torch.manual_seed(12345)
    torch.rand(3)  # the caller's generator somewhere in its stream
    state = torch.random.get_rng_state()
    first = _weights(seed)
    assert torch.equal(torch.random.get_rng_state(), state)  # not advanced, not reseeded
    torch.rand(7)  # whatever the caller drew before does not matter
    assert torch.equal(_weights(seed), first)
    assert not torch.equal(_weights(seed ^ 1), first)  # a seed of its own
