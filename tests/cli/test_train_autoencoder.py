"""``physgen train-autoencoder`` (physgen.cli.train_autoencoder): the run folder it leaves, bad
inputs in one line with exit status 2, and kill -9 then --resume ends bit-identical (slow)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from physgen import checkpoints
from physgen.cli.main import main
from physgen.latent.train import load_autoencoder

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--batch", "8", "--warmup-steps", "2", "--log-every", "1", "--device", "cpu"]


def _one_line_error(capsys, argv, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and all(n in err for n in needles), err


def test_run_folder_holds_the_autoencoder_that_encode_reads(tmp_path, capsys):
    out = tmp_path / "ae"
    assert main(["train-autoencoder", "--out", str(out), "--steps", "3", *SMALL]) == 0
    assert {p.name for p in out.iterdir()} >= {"autoencoder.pt", "config.json", "summary.json", "checkpoints", "samples"}
    assert load_autoencoder(out).spec.latent_shape == (4, 4, 4)  # the digits preset, found through the folder
    assert main(["encode", "--ae", str(out), "--out", str(tmp_path / "z.npz"), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "img/s" in err and "ETA" in err  # progress with rate and ETA
    _one_line_error(capsys, ["train-autoencoder", "--out", str(out), "--steps", "3", *SMALL], str(out), "--resume")
    _one_line_error(capsys, ["train-autoencoder", "--resume", str(out), "--beta", "0.5"], "--beta", "cannot change")
    _one_line_error(capsys, ["train-autoencoder", "--resume", str(out), "--disc-weight", "0.1"], "--disc-weight", "cannot change")
    assert main(["train-autoencoder", "--resume", str(out), "--steps", "4", "--log-every", "1"]) == 0
    assert checkpoints.find(out, log=None).header.step == 4


def test_disc_weight_trains_a_patch_discriminator_that_the_checkpoint_keeps(tmp_path):
    """Off by default (no discriminator state); --disc-weight 0.1 --disc-start 1 trains one from
    step 1 on, recorded in config.json and carried by the checkpoint for --resume."""
    plain, gan = tmp_path / "plain", tmp_path / "gan"
    assert main(["train-autoencoder", "--out", str(plain), "--steps", "2", *SMALL]) == 0
    assert main(["train-autoencoder", "--out", str(gan), "--steps", "2", "--disc-weight", "0.1", "--disc-start", "1", *SMALL]) == 0
    p, g = (checkpoints.read(checkpoints.find(d, log=None).path).payload for d in (plain, gan))
    assert p["extra"] == {} and set(g["extra"]) == {"discriminator", "optimizer"}
    assert g["process"]["disc_weight"] == 0.1 and g["process"]["disc_start"] == 1
    assert p["losses"][0] == g["losses"][0] and p["losses"][1] != g["losses"][1]  # the term enters at step 1


@pytest.mark.parametrize("argv, needles", [
    (["--dataset", "npz:{rgb}.npz"], ("rgb.npz", "channel")),
    (["--dataset", "mnist"], ("mnist",)),
    (["--preset", "huge"], ("--preset", "huge")),
    (["--beta", "-1"], ("--beta",)),
    (["--recon", "l3"], ("--recon", "l3")),
    (["--disc-weight", "-1"], ("--disc-weight",)),
    (["--disc-weight", "inf"], ("--disc-weight",)),
    (["--disc-start", "-1"], ("--disc-start",)),
    (["--steps", "0"], ("--steps",)),
    (["--batch", "0"], ("--batch",)),
    (["--micro-batch", "3"], ("micro_batch", "3")),
    (["--lr", "nan"], ("--lr",)),
    (["--ema-halflife", "0"], ("--ema-halflife",)),
    (["--seed", "-1"], ("--seed",)),
    (["--device", "tpu"], ("tpu",)),
    (["--resume", "{tmp}/nothing"], ("nothing",)),
    (["--resume", "{tmp}"], ("checkpoint",)),
])
def test_bad_inputs_are_one_line_with_exit_status_2(tmp_path, capsys, argv, needles):
    np.savez(tmp_path / "rgb.npz", x=np.zeros((40, 16, 16, 3), np.uint8))
    fill = {"rgb": str(tmp_path / "rgb"), "tmp": str(tmp_path)}
    argv = [a.format(**fill) for a in argv]
    _one_line_error(capsys, ["train-autoencoder", "--out", str(tmp_path / "o"), "--steps", "2", "--batch", "8", *argv], *needles)


def _start(out: Path, resume: bool) -> subprocess.Popen:
    argv = ["--resume", str(out)] if resume else ["--out", str(out), "--steps", "10", "--checkpoint-every", "1", "--keep-checkpoints", "3", *SMALL]
    return subprocess.Popen([sys.executable, "-m", "physgen.cli.main", "train-autoencoder", *argv], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_kill_then_resume_is_bit_identical(tmp_path):
    """kill -9 mid-run (checkpoint every step), --resume: the final checkpoint and autoencoder.pt
    equal an uninterrupted run's, bit for bit."""
    straight = _start(tmp_path / "straight", resume=False)
    assert straight.wait(timeout=600) == 0, straight.stderr.read()
    killed = _start(tmp_path / "killed", resume=False)
    deadline = time.time() + 300
    while not checkpoints.list_checkpoints(tmp_path / "killed") or checkpoints.find(tmp_path / "killed", log=None).header.step < 3:
        assert time.time() < deadline and killed.poll() is None
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "killed" / "autoencoder.pt").exists()
    resumed = _start(tmp_path / "killed", resume=True)
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()
    a, b = (checkpoints.read(checkpoints.find(tmp_path / d, log=None).path).payload for d in ("straight", "killed"))
    assert a["step"] == b["step"] == 10 and a["losses"] == b["losses"]
    for key in ("model", "ema", "optimizer", "sampler"):
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    wa, wb = (load_autoencoder(tmp_path / d).state_dict() for d in ("straight", "killed"))
    torch.testing.assert_close(wa, wb, rtol=0, atol=0)
