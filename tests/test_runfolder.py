"""physgen.runfolder: another run's outputs are refused (or, with --overwrite, cleared), a lock keeps
two runs out of one folder, stale locks are taken over, outputs honour the umask."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from physgen import checkpoints, runfolder
from physgen.cli.main import main
from physgen.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
TOY = ["toy", "--n-data", "60", "--n-samples", "20", "--steps", "2", "--device", "cpu"]


def _err_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_refuses_another_runs_outputs_and_overwrite_clears_only_its_own(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    for name in ("a.json", "b.png", "notes.txt"):
        (out / name).write_text("x")
    with pytest.raises(UserError, match=r"already holds another run's outputs \(a.json, b.png\); pass --overwrite"):
        runfolder.prepare(out, "cmd", ("a.json", "*.png"))
    with runfolder.prepare(out, "cmd", ("a.json", "*.png"), overwrite=True) as folder:
        assert sorted(p.name for p in folder.cleared) == ["a.json", "b.png"]
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # the user's own file is not ours to delete
    (out / "b.png").write_text("x")
    runfolder.prepare(out, "cmd", ("a.json", "*.png"), resume=True).release()  # continuing is not another run
    assert (out / "b.png").exists()


def test_out_paths_through_a_file_are_one_clear_line(tmp_path):
    f = tmp_path / "FILE"
    f.write_text("x")
    with pytest.raises(UserError, match=r"--out '.*FILE/sub': '.*FILE' is a file, not a directory"):
        runfolder.prepare(f / "sub", "cmd", ("x",))
    with pytest.raises(UserError, match="is a file, not a directory"):
        runfolder.prepare(f, "cmd", ("x",))
    with pytest.raises(UserError, match="is a directory; name a file"):
        runfolder.prepare_file(tmp_path, "cmd")


def test_a_failed_run_leaves_no_empty_folder(tmp_path):
    out = tmp_path / "a" / "b"
    folder = runfolder.prepare(out, "cmd", ("x",))
    assert out.is_dir() and (out / runfolder.LOCK_NAME).exists()
    folder.release()
    assert not (tmp_path / "a").exists()


_HOLD = """
import sys, time
from physgen import runfolder
runfolder.prepare(sys.argv[1], "train", ("x",))
print("held", flush=True)
time.sleep(120)
"""


def _holder(out: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(out)], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_into_a_locked_folder_exits_2_naming_the_lock_and_a_dead_holder_is_taken_over(tmp_path, capsys):
    out = tmp_path / "run"
    holder = _holder(out)
    try:
        assert main([*TOY, "--out", str(out)]) == 2
        line = _err_line(capsys)
        assert f"in use by physgen train (pid {holder.pid}" in line and runfolder.LOCK_NAME in line
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (out / runfolder.LOCK_NAME).exists()  # killed: its lock file stays, but nobody holds it
    assert main([*TOY, "--out", str(out)]) == 0
    assert not (out / runfolder.LOCK_NAME).exists()


def test_stale_lock_file_with_a_dead_pid_is_taken_over(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / runfolder.LOCK_NAME).write_text(f'{{"pid": {dead.pid}, "host": "here", "command": "train"}}\n')
    folder = runfolder.prepare(out, "toy", ("x",))
    try:  # the lock is ours now: it names this process and command, no longer the dead run
        holder = json.loads((out / runfolder.LOCK_NAME).read_text())
        assert holder["pid"] == os.getpid() and holder["command"] == "toy"
    finally:
        folder.release()
    assert not (out / runfolder.LOCK_NAME).exists()  # released: the lock file goes with it


def test_toy_twice_refuses_then_overwrite_replaces(tmp_path, capsys):
    out = tmp_path / "toy"
    assert main([*TOY, "--out", str(out)]) == 0
    capsys.readouterr()
    assert main([*TOY, "--out", str(out)]) == 2
    line = _err_line(capsys)
    assert "config.json" in line and "--overwrite" in line
    before = (out / "samples.npy").stat().st_mtime_ns
    time.sleep(0.01)
    assert main([*TOY, "--out", str(out), "--overwrite"]) == 0
    assert (out / "samples.npy").stat().st_mtime_ns > before


def test_compare_solvers_mlp_twice_leaves_one_checkpoint(tmp_path, capsys):
    argv = ["compare-solvers", "--field", "mlp", "--batch", "16", "--hidden", "8", "--depth", "1", "--n-data", "40",
            "--n-samples", "8", "--solvers", "euler", "--steps", "2", "--device", "cpu", "--no-ref-check", "--out", str(tmp_path / "c")]
    assert main(argv + ["--train-steps", "3"]) == 0
    assert main(argv + ["--train-steps", "4", "--overwrite"]) == 0
    assert [p.name for p in checkpoints.list_checkpoints(tmp_path / "c")] == ["ckpt-00000004.pt"]
    capsys.readouterr()
    # nll then reads the only checkpoint there is
    assert main(["nll", "--ckpt", str(tmp_path / "c"), "--n", "8", "--batch", "8", "--device", "cpu", "--out", str(tmp_path / "n")]) == 0


def test_sample_8_then_4_with_overwrite_leaves_4_pngs(tmp_path, capsys):
    run = tmp_path / "train"
    assert main(["train", "--process", "edm", "--dataset", "digits", "--resolution", "8", "--arch", "tiny", "--batch", "8", "--steps", "1",
                 "--warmup-steps", "0", "--log-every", "1", "--sample-n", "2", "--sample-steps", "2", "--precision", "fp32", "--out", str(run)]) == 0
    s = ["sample", "--ckpt", str(run), "--steps", "2", "--device", "cpu", "--out", str(tmp_path / "s")]
    assert main(s + ["--n", "8"]) == 0
    capsys.readouterr()
    assert main(s + ["--n", "4"]) == 2
    assert "000000.png" in _err_line(capsys)
    assert main(s + ["--n", "4", "--start", "8"]) == 0  # disjoint indices: the documented way to add samples
    assert main(s + ["--n", "4", "--overwrite"]) == 0
    assert sorted(p.name for p in (tmp_path / "s").glob("*.png")) == [f"{i:06d}.png" for i in range(4)]
    assert main(s + ["--n", "6", "--skip-existing"]) == 0  # finishing a run is not another run
    assert len(list((tmp_path / "s").glob("*.png"))) == 6
    grid = tmp_path / "g.png"
    assert main(s[:-2] + ["--n", "2", "--out", str(grid)]) == 0
    capsys.readouterr()
    assert main(s[:-2] + ["--n", "2", "--out", str(grid)]) == 2 and "already exists" in _err_line(capsys)


def test_outputs_honour_the_umask(tmp_path):
    old = os.umask(0o002)
    try:
        assert main([*TOY, "--out", str(tmp_path / "t")]) == 0
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "t").iterdir()}
    assert set(modes.values()) == {0o664}, modes


def test_every_experiment_declares_the_outputs_its_run_folder_guards():
    from physgen.cli.experiment import EXPERIMENTS

    for name, module in EXPERIMENTS.items():
        outputs = getattr(module, "OUTPUTS", None)
        assert isinstance(outputs, tuple) and outputs and all(isinstance(o, str) for o in outputs), name
