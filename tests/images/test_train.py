"""Image training (physgen.training + physgen.images.train): the loss falls, resume is
bit-exact, durations and configs behave, and user mistakes give one clear line."""
from __future__ import annotations

import json
import math

import pytest
import torch

from physgen.errors import UserError
from physgen.images.train import ImageTrainConfig, config_from_dict, dump_config, load_config, run_training
from physgen import checkpoints
from physgen.nets.mlp import MLP
from physgen.processes import make_process
from physgen.training import TrainConfig, train


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _cfg(out, process="edm", **train):
    t = dict(steps=6, batch=8, lr=2e-3, warmup_steps=0, warmup_mimg=None, ema_halflife=500.0, log_every=1,
             checkpoint_every=0, keep_checkpoints=5, seed=3, precision="fp32", channels_last=False)
    t.update(train)
    return ImageTrainConfig(dataset="digits", resolution=8, process=process, arch="tiny", out=str(out),
                            sample_n=4, sample_steps=2, train=TrainConfig(**t))


def _state(path):
    return checkpoints.read(path).payload


def _assert_same_tensors(a, b, what):
    assert a.keys() == b.keys(), what
    for k in a:
        if isinstance(a[k], dict):
            _assert_same_tensors(a[k], b[k], f"{what}.{k}")
        elif isinstance(a[k], torch.Tensor):
            assert torch.equal(a[k], b[k]), f"{what}.{k} differs"
        else:
            assert a[k] == b[k], f"{what}.{k}: {a[k]} != {b[k]}"


def test_tiny_unet_loss_falls_on_digits(tmp_path):
    cfg = _cfg(tmp_path, steps=60, batch=32, lr=4e-3)
    result = run_training(cfg, log_stream=open(tmp_path / "log.txt", "w"))
    losses = result.losses
    assert len(losses) == 60 and all(math.isfinite(v) for v in losses)
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.75 * first, (first, last)
    assert (tmp_path / "samples" / "grid-00000060.png").is_file()
    assert json.loads((tmp_path / "summary.json").read_text())["step"] == 60


@pytest.mark.parametrize("micro", [None, 4])
def test_resume_after_kill_is_bit_identical(tmp_path, micro):
    """2k straight == k, killed, resumed to 2k (sampler with flips, dropout, accumulation)."""
    common = dict(steps=6, checkpoint_every=3, micro_batch=micro)

    def cfg(out):
        c = _cfg(out, **common)
        c.xflip = True
        c.unet = {"dropout": 0.2}
        return c

    straight = run_training(cfg(tmp_path / "a"), log_stream=open(tmp_path / "a.log", "w"))

    def kill(step, ema):
        if step == 4:
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        run_training(cfg(tmp_path / "b"), log_stream=open(tmp_path / "b.log", "w"), on_step=kill)
    assert checkpoints.find(tmp_path / "b").path.name == "ckpt-00000003.pt"
    resumed = run_training(cfg(tmp_path / "b"), resume=True, log_stream=open(tmp_path / "b.log", "a"))
    assert straight.step == resumed.step == 6
    a, b = _state(checkpoints.find(tmp_path / "a").path), _state(checkpoints.find(tmp_path / "b").path)
    for key in ("model", "ema", "optimizer", "sampler"):
        _assert_same_tensors(a[key], b[key], key)
    assert a["losses"] == b["losses"] and len(a["losses"]) == 6


def test_resume_with_a_new_steps_total(tmp_path):
    run_training(_cfg(tmp_path / "a", steps=5), log_stream=open(tmp_path / "a.log", "w"))
    run_training(_cfg(tmp_path / "b", steps=2), log_stream=open(tmp_path / "b.log", "w"))
    with pytest.raises(UserError, match="--resume"):
        run_training(_cfg(tmp_path / "b", steps=5), log_stream=open(tmp_path / "b.log", "w"))
    run_training(_cfg(tmp_path / "b", steps=5), resume=True, log_stream=open(tmp_path / "b.log", "a"))
    a, b = _state(checkpoints.find(tmp_path / "a").path), _state(checkpoints.find(tmp_path / "b").path)
    for key in ("model", "ema", "optimizer"):
        _assert_same_tensors(a[key], b[key], key)


def test_duration_and_warmup_in_images():
    c = TrainConfig(steps=7, batch=100, duration_mimg=0.001, warmup_mimg=0.0005)
    assert c.total_steps == 10 and c.warmup == 5
    assert TrainConfig(steps=7, batch=100).total_steps == 7
    with pytest.raises(UserError, match="micro_batch"):
        TrainConfig(batch=10, micro_batch=4)
    with pytest.raises(UserError, match="precision"):
        TrainConfig(precision="fp16")


def test_pfgmpp_trains_when_registered(tmp_path):
    from physgen.processes import PROCESSES

    if "pfgmpp" not in PROCESSES:
        pytest.skip("pfgmpp not registered yet")
    cfg = _cfg(tmp_path, process="pfgmpp", steps=3)
    cfg.D = 2048
    result = run_training(cfg, log_stream=open(tmp_path / "log.txt", "w"))
    ck = _state(result.checkpoint)
    assert ck["process"]["name"] == "pfgmpp" and ck["process"]["D"] == 2048


# --------------------------------------------------------------------------- configs


def _example():
    c = ImageTrainConfig(dataset="cifar10:/data/c10", process="pfgmpp", D=math.inf, arch="ddpmpp", unet={"dropout": 0.1},
                         process_options={"p_std": 1.1}, out="runs/x", sample_every=100)
    c.train = TrainConfig(**{**vars(c.train), "batch": 256, "lr": 5e-4, "duration_mimg": 20.0, "grad_clip": None, "micro_batch": 128})
    return c


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_config_file_round_trip(tmp_path, suffix):
    c = _example()
    path = dump_config(c, tmp_path / f"run{suffix}")
    back = load_config(path)
    assert back == c
    assert back.D == math.inf and back.train.grad_clip is None and back.train.total_steps == math.ceil(20e6 / 256)


def test_handwritten_toml_and_defaults(tmp_path):
    (tmp_path / "c.toml").write_text('dataset = "digits"\nD = 2048\narch = "tiny"\n[train]\nbatch = 64\nsteps = 10\ngrad_clip = "none"\n')
    c = load_config(tmp_path / "c.toml")
    assert c.D == 2048 and c.train.batch == 64 and c.train.grad_clip is None and c.train.lr == 1e-3


@pytest.mark.parametrize(
    "data, key",
    [({"dataset": "digits", "batchsize": 3}, "'batchsize'"), ({"train": {"stepz": 3}}, "'train.stepz'")],
)
def test_unknown_config_key_is_named(tmp_path, data, key):
    (tmp_path / "c.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match=key) as err:
        load_config(tmp_path / "c.json")
    assert "valid" in str(err.value) and "\n" not in str(err.value)


def test_bad_config_values():
    with pytest.raises(UserError, match="train.steps"):
        config_from_dict({"train": {"steps": "many"}})
    with pytest.raises(UserError, match="'D' must be"):
        config_from_dict({"D": -3})
    with pytest.raises(UserError, match="--arch"):
        config_from_dict({"arch": "resnet"})
    with pytest.raises(UserError, match="process"):
        config_from_dict({"process": "nope"})


@pytest.mark.parametrize("steps,due", [(7, [3, 6, 7]), (6, [3, 6])])
def test_trainer_writes_the_sample_grid_every_period_and_once_at_the_end(steps, due):
    """``Trainer.sample_grid``: every ``sample_every`` steps, plus the last step when it is not
    one of them (never twice), always of the EMA the run returns."""
    torch.manual_seed(0)
    process = make_process("edm", sigma_max=5.0)
    data = torch.randn(64, 2)
    calls = []
    result = train(process, process.precondition(MLP(2, hidden=16, depth=1)),
                   lambda n, g: (data[torch.randint(0, 64, (n,), generator=g)], None),
                   TrainConfig(steps=steps, batch=8, log_every=2, warmup_steps=0), log_stream=open("/dev/null", "w"),
                   sample_grid=lambda step, ema: calls.append((step, ema)), sample_every=3)
    assert [s for s, _ in calls] == due
    assert all(ema is result.ema for _, ema in calls)


def test_the_network_defaults_to_the_data_space_and_bad_ones_are_named():
    assert ImageTrainConfig().network_arch == "ddpmpp" and ImageTrainConfig(latent="ae.pt").network_arch == "tiny"
    assert ImageTrainConfig(latent="ae.pt", arch="mlp").network_arch == "mlp"
    for kwargs, needle in (({"arch": "nope"}, "'nope'"), ({"arch": "mlp", "unet": {"hidden": 0}}, "hidden"),
                           ({"arch": "mlp", "latent": "ae.pt", "unet": {"dropout": 0.1}}, "'dropout'"), ({"arch": 3}, "arch")):
        with pytest.raises(UserError, match=needle):
            ImageTrainConfig(**kwargs)
