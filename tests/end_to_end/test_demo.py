"""``physgen demo`` (the README's first command) recovers moons with the toy recipe (issue 19).

What a user runs: ``physgen demo --n-samples 10000 --seed 0``, every other option at its
default: the toy's training defaults (``ToyConfig``) for EDM, VE, VP and PFGM++ (D = 128),
sampled with the demo's solver (Heun, 32 steps), the processes trained side by side in the
default worker processes.  Per process:

* the whole law: sliced W2 against fresh data is at most ``SW2_LIMIT`` = 1.4 x the floor
  (0.045; the floor, 0.032, is the median sliced W2 between two independent 10,000-point moons
  draws, 0.014-0.056 over the draws measured in benchmarks/RESULTS.md);
* the gap between the moons (where the old recipe smeared samples): the fraction of samples
  farther than 0.6 (3 noise stds) from both moons' centre arcs (data: 0.23%) stays under
  ``GAP_LIMIT``, and none lies farther than 1.5 (VP's far tail, samples 3-8 away, went when
  its MLP was fed ``4 t`` instead of ``999 t``);
* the weights: the upper moon holds 0.5 +- 0.03 of the samples.

One seed, not three: the Done-when of issue 19 asks for the *median over seeds 0-2*; that full
check is ``python benchmarks/bench_demo.py`` (recorded in RESULTS.md, "The demo's recipe").  A
seed now gives one number (the initial weights come from ``--seed``, and the workers change
nothing: tests/cli/test_demo.py), so this test holds seed 0 to the target itself (a per-seed
bound, stricter for that seed than the median) at a third of the three seeds' cost in CI's
slow tier; what it no longer covers is seeds 1 and 2.

Before issue 19 (width 128, batch 256, 1200 steps, lr 2e-3, Heun 18) the medians were edm 0.059,
ve 0.047, vp 0.123, pfgmpp 0.063 and the gap fractions 1.6%, 4.4%, 6.0%, 1.6%.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from physgen.cli.demo import DEMO_PROCESSES

FLOOR = 0.032  # median sliced W2 between two independent 10,000-point moons draws
SEED = 0
SW2_LIMIT = 1.4 * FLOOR
GAP_LIMIT = {"edm": 0.013, "pfgmpp": 0.013, "ve": 0.03, "vp": 0.03}  # measured, seeds 0-2: <= 0.0107, 0.0101, 0.0236, 0.0245

# moons (physgen/data/toy.py): half circles of radius 2 (after the x2 scaling), upper centred
# at (-1, -0.2) over y >= -0.2, lower at (1, 0.8) under y <= 0.8, noise std 0.2 per coordinate
ARCS = (((-1.0, -0.2), 1.0), ((1.0, 0.8), -1.0))


def arc_distances(p: np.ndarray) -> np.ndarray:
    """``[n, 2]``: each point's distance to the upper and to the lower moon's centre arc."""
    out = []
    for centre, side in ARCS:
        c = np.asarray(centre)
        v = p - c
        on_arc_side = side * v[:, 1] >= 0
        ends = np.stack([c + (2.0, 0.0), c - (2.0, 0.0)])
        to_end = np.linalg.norm(p[:, None, :] - ends[None], axis=2).min(1)
        out.append(np.where(on_arc_side, np.abs(np.hypot(v[:, 0], v[:, 1]) - 2.0), to_end))
    return np.stack(out, 1)


def test_arc_distance_puts_moons_data_on_its_arcs():
    """The shape measure itself: fresh moons data lies within 3 noise stds of an arc (but 0.3%)."""
    import torch

    from physgen.data import load_toy

    x, y = load_toy("moons").sample_labelled(20_000, torch.Generator().manual_seed(5))
    d = arc_distances(x.numpy())
    assert np.mean(d.min(1) > 0.6) < 0.004 and d.min(1).max() < 1.5
    assert np.mean(d.argmin(1) == y.numpy()) > 0.99  # the nearer arc is the point's moon


@pytest.mark.slow
def test_demo_recovers_moons_for_every_process(tmp_path):
    # a fresh process, as a user runs it (the MLP's initial weights come from --seed alone: runtime.initial_weights)
    run = subprocess.run([sys.executable, "-m", "physgen.cli.main", "demo", "--n-samples", "10000", "--seed", str(SEED), "--out", str(tmp_path)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr.decode()[-500:]
    rows = json.loads((tmp_path / "metrics.json").read_text())
    assert [row["process"] for row in rows] == list(DEMO_PROCESSES)
    for row in rows:
        d = arc_distances(np.load(tmp_path / row["process"] / "samples.npy"))
        nearest, name = d.min(1), row["process"]
        assert np.mean(nearest > 0.6) <= GAP_LIMIT[name], (name, np.mean(nearest > 0.6))
        assert nearest.max() <= 1.5, (name, nearest.max())
        assert abs(np.mean(d.argmin(1) == 0) - 0.5) <= 0.03, name
    assert all(row["sliced_w2"] <= SW2_LIMIT for row in rows), {row["process"]: row["sliced_w2"] for row in rows}
