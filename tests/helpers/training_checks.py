"""Does training lower a process's loss?  One check shared by the process tests."""
from __future__ import annotations

import io

import torch

from physgen.training import TrainConfig, train


def held_out_loss_before_after(process, field, data: torch.Tensor, steps: int, log_every: int) -> tuple[float, float]:
    """The mean loss on the first 1024 points (with a fixed generator) before and after ``steps`` of
    training on ``data`` (batch 256, lr 3e-3, 20 warm-up steps)."""
    held = data[:1024]

    def held_out_loss() -> float:
        with torch.no_grad():
            return float(process.loss(field, held, generator=torch.Generator().manual_seed(123)).mean())

    def batch(n, g):
        return data[torch.randint(0, data.shape[0], (n,), generator=g)], None

    before = held_out_loss()
    train(process, field, batch, TrainConfig(steps=steps, batch=256, lr=3e-3, warmup_steps=20, log_every=log_every), log_stream=io.StringIO())
    return before, held_out_loss()
