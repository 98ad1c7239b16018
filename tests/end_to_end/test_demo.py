"""``physgen demo`` (the README's first command) recovers moons with the toy recipe (issue 19).

What a user runs: ``physgen demo --n-samples 10000 --seed S``, every other option at its
default: the toy's training defaults (``ToyConfig``) for EDM, VE, VP and PFGM++ (D = 128),
sampled with the demo's solver.  Sliced W2 against fresh data at 10,000 samples is noisy: two
independent 10,000-point moons draws differ by 0.032 (median of 5 seeds; 0.014-0.056 over
the draws measured in benchmarks/RESULTS.md), so the test takes the median over three seeds, per process:

* the whole law: the median sliced W2 is at most ``SW2_LIMIT`` (the target, 1.4 x that floor =
  0.045, for EDM and PFGM++; VE and VP do not reach it yet (medians 0.046 and 0.049 in
  benchmarks/RESULTS.md): their limits, 0.06, guard against going back (VP: 0.069-0.100
  before its MLP saw ``4 t`` instead of ``999 t``, 0.123 with the old recipe));
* the gap between the moons (where the old recipe smeared samples): the fraction of samples
  farther than 0.6 (3 noise stds) from both moons' centre arcs (data: 0.23%) stays under
  ``GAP_LIMIT`` (measured after/before in RESULTS.md), and none lies farther than 1.5 (VP's
  far tail, samples 3-8 away, went with ``4 t``: its largest distance is now 1.09-1.22);
* the weights: the upper moon holds 0.5 +- 0.03 of the samples.

Before issue 19 (width 128, batch 256, 1200 steps, lr 2e-3) the medians were edm 0.059,
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
SEEDS = (0, 1, 2)
SW2_LIMIT = {"edm": 1.4 * FLOOR, "pfgmpp": 1.4 * FLOOR, "ve": 0.06, "vp": 0.06}
GAP_LIMIT = {"edm": 0.013, "pfgmpp": 0.013, "ve": 0.03, "vp": 0.03}  # measured: <= 0.0105, 0.0115, 0.0236, 0.0238

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
    sw2 = {p: [] for p in DEMO_PROCESSES}
    # one fresh process per seed, as a user runs it (the MLP's initial weights come from --seed alone:
    # runtime.initial_weights); the seeds run side by side, one thread each, to keep CI's slow tier short
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = {seed: subprocess.Popen([sys.executable, "-c", "import sys; from physgen.cli.main import main; sys.exit(main(sys.argv[1:]))",
                                    "demo", "--n-samples", "10000", "--seed", str(seed), "--out", str(tmp_path / f"s{seed}")],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env) for seed in SEEDS}
    errors = {seed: run.communicate()[1] for seed, run in runs.items()}
    assert all(run.returncode == 0 for run in runs.values()), {s: e.decode()[-500:] for s, e in errors.items() if runs[s].returncode}
    for seed in SEEDS:
        out = tmp_path / f"s{seed}"
        for row in json.loads((out / "metrics.json").read_text()):
            sw2[row["process"]].append(row["sliced_w2"])
            d = arc_distances(np.load(out / row["process"] / "samples.npy"))
            nearest, name = d.min(1), row["process"]
            assert np.mean(nearest > 0.6) <= GAP_LIMIT[name], (name, seed, np.mean(nearest > 0.6))
            assert nearest.max() <= 1.5, (name, seed, nearest.max())
            assert abs(np.mean(d.argmin(1) == 0) - 0.5) <= 0.03, (name, seed)
    assert all(np.median(sw2[p]) <= SW2_LIMIT[p] for p in DEMO_PROCESSES), sw2
