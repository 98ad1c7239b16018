"""``physgen demo``'s worker processes (issue 19): running the processes' trainings side by side
changes where they run, not what they compute.  (What the demo recovers at its defaults is
tests/end_to_end/test_demo.py; its recipe being the toy's is tests/cli/test_toy.py.)"""
from __future__ import annotations

import json

import numpy as np
import pytest

from physgen.cli.demo import DEMO_PROCESSES
from physgen.cli.main import main
from physgen.runtime import available_cpus

SMALL = ["demo", "--train-steps", "20", "--n-samples", "300", "--seed", "3"]


def _rows(out):
    return [{k: v for k, v in row.items() if k != "wall_s"} for row in json.loads((out / "metrics.json").read_text())]


def test_two_workers_give_bit_identical_results_to_one(tmp_path, capsys):
    """Each process's run seeds all it draws from ``--seed``: two spawned workers (one thread
    each) write the same samples and metrics, in the same order, as one process running them
    one after the other; each progress line names its process."""
    assert main([*SMALL, "--workers", "1", "--out", str(tmp_path / "one")]) == 0
    assert main([*SMALL, "--workers", "2", "--out", str(tmp_path / "two")]) == 0
    assert [r["process"] for r in _rows(tmp_path / "two")] == list(DEMO_PROCESSES)
    assert _rows(tmp_path / "one") == _rows(tmp_path / "two")
    for name in DEMO_PROCESSES:
        assert np.array_equal(np.load(tmp_path / "one" / name / "samples.npy"), np.load(tmp_path / "two" / name / "samples.npy")), name
    err = capsys.readouterr().err  # the in-process run's lines (the workers write to the inherited stderr)
    steps = [line for line in err.splitlines() if "step 20/20" in line]
    assert sorted(line.split(":")[0] for line in steps) == sorted(f"[demo] {p}" for p in DEMO_PROCESSES), steps


@pytest.mark.parametrize("value", ["0", "-1", "abc", "2.5", str(available_cpus() + 1)])
def test_a_bad_worker_count_is_refused_in_one_line(value, tmp_path, capsys):
    assert main(["demo", "--workers", value, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "--workers" in err[-1] and value in err[-1] and "Traceback" not in "\n".join(err)
    assert not (tmp_path / "o").exists()
