"""Per-sample seeded noise: a sample's randomness depends on (seed, sample index, step) only.

Sampling with one generator makes sample ``i`` depend on how many samples were drawn before
it (and on the batch size).  Here the indices are split into fixed blocks of ``BLOCK``
consecutive indices; each (seed, step, block) seeds its own generator and draws the whole
block, and each sample takes its row.  The loop runs over blocks touched by the batch, not
over samples, so the cost is a handful of generator seedings per step.  The result is the
same whatever batch, order or rank a sample is drawn in (tested).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor

from .runtime import mix_seed

__all__ = ["SeededNoise", "BLOCK"]

BLOCK = 1024


class SeededNoise:
    """Standard normal (or uniform) noise for the samples with global indices ``index``.

    ``noise(step, like)`` returns a tensor shaped like ``like`` whose row ``j`` depends only on
    ``(seed, index[j], step)``.  It is a ``solvers.NoiseFn``.  Use ``step = -1`` (the default
    of :meth:`randn`) for the prior draw.
    """

    def __init__(self, seed: int, index: Union[Tensor, Sequence[int], range]):
        self.seed = int(seed)
        index = torch.as_tensor(list(index) if isinstance(index, range) else index, dtype=torch.long).cpu()
        if index.ndim != 1:
            raise ValueError(f"index must be 1-D, got shape {tuple(index.shape)}")
        self.index = index
        self._blocks = torch.unique(index // BLOCK).tolist()
        # position of each sample inside the concatenation of the blocks it touches
        block_pos = {b: i for i, b in enumerate(self._blocks)}
        self._rows = torch.tensor([block_pos[int(b)] * BLOCK for b in (index // BLOCK).tolist()], dtype=torch.long) + index % BLOCK

    def __len__(self) -> int:
        return self.index.numel()

    def draw(self, step: int, sampler: Callable[[int, torch.Generator], Tensor], device=None) -> Tensor:
        """Rows of ``sampler(BLOCK, generator)`` for this batch's indices.

        ``sampler`` draws a whole block with the given generator (any law: a Gaussian,
        a PFGM++ or NIG kernel, uniforms); sample ``i`` gets row ``i % BLOCK`` of the block
        seeded by ``(seed, step, i // BLOCK)``.
        """
        device = torch.device(device or "cpu")
        chunks = []
        for block in self._blocks:
            g = torch.Generator(device=device)
            g.manual_seed(mix_seed(self.seed, step, block, stream="noise"))
            chunks.append(sampler(BLOCK, g))
        table = torch.cat(chunks) if len(chunks) > 1 else chunks[0]
        return table.index_select(0, self._rows.to(table.device))

    def _draw(self, step: int, shape: Sequence[int], device, dtype, uniform: bool) -> Tensor:
        if shape[0] != len(self):
            raise ValueError(f"noise asked for a batch of {shape[0]} but indexes {len(self)} samples")
        draw = torch.rand if uniform else torch.randn
        per_sample = tuple(shape[1:])
        return self.draw(step, lambda n, g: draw((n, *per_sample), generator=g, device=device, dtype=dtype), device)

    def __call__(self, step: int, like: Tensor) -> Tensor:
        return self._draw(step, like.shape, like.device, like.dtype, uniform=False)

    def randn(self, shape: Sequence[int], step: int = -1, device=None, dtype=torch.float32) -> Tensor:
        return self._draw(step, shape, torch.device(device or "cpu"), dtype, uniform=False)

    def rand(self, shape: Sequence[int], step: int = -1, device=None, dtype=torch.float32) -> Tensor:
        return self._draw(step, shape, torch.device(device or "cpu"), dtype, uniform=True)

    def subset(self, positions: Union[slice, Tensor]) -> "SeededNoise":
        """The noise of a sub-batch (same global indices, so the same values)."""
        return SeededNoise(self.seed, self.index[positions])


def sample_generator(seed: Optional[int], device=None) -> torch.Generator:
    """A generator on ``device`` seeded with ``seed`` (or from entropy if ``None``)."""
    g = torch.Generator(device=device or "cpu")
    if seed is None:
        g.seed()
    else:
        g.manual_seed(int(seed))
    return g
