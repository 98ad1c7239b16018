"""kill -9 during checkpoint writes: the next start leaves no temporary files, resume skips a
corrupted newest checkpoint (and says so), and the run ends bit-identical to one never killed."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from physgen import checkpoints
from physgen.io import stale_temporaries

ROOT = Path(__file__).resolve().parents[1]
STEPS = 14

# A toy MLP large enough (~2.4M parameters: ~40 MB a checkpoint with EMA and Adam) that most
# of the wall time is spent writing checkpoints, so that kills land inside writes.
SCRIPT = """
import sys, torch
torch.set_num_threads(1)
from physgen.data import load_toy
from physgen.nets.mlp import MLP
from physgen.processes import make_process
from physgen.training import TrainConfig, train
out, resume = sys.argv[1], sys.argv[2] == "resume"
data = load_toy("moons").sample(2000, torch.Generator().manual_seed(0))
process = make_process("edm", sigma_max=4.0)
torch.manual_seed(0)
field = process.precondition(MLP(2, hidden=640, depth=3))
def batch(n, g):
    return data[torch.randint(0, data.shape[0], (n,), generator=g)], None
cfg = TrainConfig(steps=%d, batch=64, lr=1e-3, log_every=1, checkpoint_every=1, keep_checkpoints=4, seed=5, warmup_steps=2)
train(process, field, batch, cfg, out_dir=out, resume=resume)
print("done", flush=True)
""" % STEPS


def _start(out: Path, resume: bool) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(out), "resume" if resume else "fresh"], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _final_state(out: Path) -> dict:
    found = checkpoints.find(out, log=None)
    assert found.header.step == STEPS
    return checkpoints.read(found.path).payload


def _same(a, b, where="") -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.mark.slow
def test_kill_during_checkpoint_writes_then_resume_past_a_corrupt_newest_is_bit_identical(tmp_path):
    straight = tmp_path / "straight"
    proc = _start(straight, resume=False)
    assert proc.wait(timeout=600) == 0, proc.stderr.read()

    killed = tmp_path / "killed"
    rng = random.Random(1)
    kills, left_behind = 0, 0
    def newest_step() -> int:
        found = checkpoints.list_checkpoints(killed)
        return int(found[0].name[5:-3]) if found else 0

    for attempt in range(12):
        old_temps, start_step = set(stale_temporaries(killed)), newest_step()
        proc = _start(killed, resume=start_step > 0)
        deadline = time.monotonic() + 120
        # let this start write one checkpoint (progress), then kill it inside its next write
        while time.monotonic() < deadline and proc.poll() is None:
            if newest_step() > start_step and set(stale_temporaries(killed)) - old_temps:
                break
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.02))
        if proc.poll() is not None:  # finished before we could kill it: start over from scratch
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        left_behind += len(stale_temporaries(killed))
        if kills >= 4:
            break
    assert kills >= 3 and left_behind >= 1, (kills, left_behind)
    assert checkpoints.list_checkpoints(killed), "no checkpoint survived the kills"

    newest = checkpoints.list_checkpoints(killed)[0]
    if len(checkpoints.list_checkpoints(killed)) < 2:  # need an older one to fall back to
        pytest.skip("the kills left a single checkpoint")
    raw = bytearray(newest.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    newest.write_bytes(bytes(raw))

    proc = _start(killed, resume=True)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert "skipped" in err and newest.name in err  # says which it skipped
    assert not stale_temporaries(killed)  # swept at the start, none left by the finished run
    _same(_final_state(straight), _final_state(killed))
