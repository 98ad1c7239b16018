"""DDP: two gloo processes on localhost train exactly as one process on the global batch.

Each rank draws its slice of the same-seeded global batch and chunk-seeded noise and
dropout, so with ``micro_batch`` equal to the per-rank batch the two runs see the same
data, noise and masks; the gradients agree up to float summation order.  The EMA is
identical on both ranks, and only rank 0 writes files.
"""
from __future__ import annotations

import os
import socket

import pytest
import torch

from physgen import checkpoints
from physgen.training import TrainConfig


def _cfg(out, **train):
    from physgen.images.train import ImageTrainConfig

    t = dict(steps=2, batch=8, lr=2e-3, warmup_steps=0, warmup_mimg=None, ema_halflife=400.0, log_every=1,
             checkpoint_every=0, seed=5, precision="fp32", channels_last=False)
    t.update(train)
    return ImageTrainConfig(dataset="digits", resolution=8, process="edm", arch="tiny", out=str(out), device="cpu",
                            xflip=True, cond=True, label_dropout=0.3, unet={"dropout": 0.2},
                            sample_n=2, sample_steps=1, train=TrainConfig(**t))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str, side: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    import torch.distributed as dist

    from physgen.images.train import run_training

    def keep_ema(step, ema):
        if step == 2:
            torch.save(ema.state_dict(), os.path.join(side, f"ema-{rank}.pt"))

    try:
        run_training(_cfg(out), on_step=keep_ema, log_stream=open(os.devnull, "w"))
        assert dist.get_world_size() == world
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_two_process_gloo_step_equals_one_process_step(tmp_path, monkeypatch):
    import torch.multiprocessing as mp

    from physgen.images.train import run_training

    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    side = tmp_path / "side"
    side.mkdir()
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "ddp"), str(side)), nprocs=2, join=True)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_training(_cfg(tmp_path / "one", micro_batch=4), log_stream=open(os.devnull, "w"))
    finally:
        torch.set_num_threads(threads)

    ddp = checkpoints.read(checkpoints.find(tmp_path / "ddp").path).payload
    one = checkpoints.read(checkpoints.find(tmp_path / "one").path).payload
    assert ddp["world_size"] == 2 and one["world_size"] == 1 and ddp["step"] == one["step"] == 2
    for key in ("model", "ema"):
        for name, value in one[key].items():
            torch.testing.assert_close(ddp[key][name], value, atol=2e-6, rtol=1e-5, msg=f"{key}.{name}")
    assert ddp["losses"] == pytest.approx(one["losses"], rel=1e-5)
    e0, e1 = torch.load(side / "ema-0.pt", weights_only=True), torch.load(side / "ema-1.pt", weights_only=True)
    assert all(torch.equal(e0[k], e1[k]) for k in e0)  # the EMA is the same on every rank
    assert not (tmp_path / "ddp" / "checkpoints" / "ckpt-00000001.pt").exists()
