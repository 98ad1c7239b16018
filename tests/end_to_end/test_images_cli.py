"""``physgen train`` / ``sample`` / ``eval`` end to end on CPU with the tiny U-Net at 8x8,
sharded sampling equal to unsharded, and one-line errors."""
from __future__ import annotations

import json
import math

import pytest
import torch

from physgen.cli.main import main
from physgen.errors import UserError
from physgen import checkpoints

TRAIN = ["train", "--process", "edm", "--dataset", "digits", "--resolution", "8", "--arch", "tiny", "--batch", "8",
         "--warmup-steps", "0", "--log-every", "1", "--sample-n", "4", "--sample-steps", "2", "--precision", "fp32"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main(TRAIN + ["--steps", "3", "--out", str(out)]) == 0
    return out


def _payload(path):
    return checkpoints.read(path).payload


def _one_line_error(capsys, argv, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, err
    return err


def test_train_writes_its_files(run_dir):
    assert (run_dir / "checkpoints" / "ckpt-00000003.pt").is_file()
    assert (run_dir / "samples" / "grid-00000003.png").is_file()
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["arch"] == "tiny" and cfg["train"]["steps"] == 3 and cfg["train"]["duration_mimg"] is None
    ck = _payload(run_dir / "checkpoints" / "ckpt-00000003.pt")
    assert ck["step"] == 3 and ck["meta"]["image"]["unet"]["arch"] == "tiny" and ck["process"]["name"] == "edm"
    assert set(ck) >= {"model", "ema", "optimizer", "generator", "torch_rng", "sampler", "losses", "config"}


def test_sample_grid_and_folder(run_dir, tmp_path, capsys):
    from PIL import Image

    grid = tmp_path / "grid.png"
    assert main(["sample", "--ckpt", str(run_dir), "--n", "5", "--steps", "2", "--out", str(grid), "--device", "cpu"]) == 0
    assert Image.open(grid).size == (3 * 10 + 2, 2 * 10 + 2)  # 3 per row, 8px tiles + 2px padding
    out = tmp_path / "s"
    ckpt = run_dir / "checkpoints" / "ckpt-00000003.pt"
    assert main(["sample", "--ckpt", str(ckpt), "--n", "6", "--steps", "2", "--out", str(out), "--batch", "4"]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == [f"{i:06d}.png" for i in range(6)]
    assert json.loads((out / "sampling.json").read_text())["steps"] == 2
    assert "wrote 6 PNGs" in capsys.readouterr().out


def test_shards_over_two_ranks_equal_one_rank(run_dir, tmp_path):
    from physgen.images.generate import generate, sample_to_dir, shard
    from physgen.images.train import load_trained

    m = load_trained(run_dir)
    kw = dict(steps=3, batch=3, seed=7, device="cpu")
    one, two = tmp_path / "one", tmp_path / "two"
    sample_to_dir(m.process, m.field, 6, one, m.shape, **kw)
    for rank in (1, 0):
        sample_to_dir(m.process, m.field, 6, two, m.shape, rank=rank, world_size=2, **kw)
    assert [shard(6, r, 2) for r in (0, 1)] == [range(0, 3), range(3, 6)]
    for i in range(6):
        assert (one / f"{i:06d}.png").read_bytes() == (two / f"{i:06d}.png").read_bytes()
    # the images themselves do not depend on the batch (or the order) they are drawn in
    a = torch.cat([x for _, x, _ in generate(m.process, m.field, range(6), m.shape, batch=6, steps=3, seed=7)])
    b = torch.cat([x for _, x, _ in generate(m.process, m.field, [5, 4, 3, 2, 1, 0], m.shape, batch=4, steps=3, seed=7)])
    torch.testing.assert_close(a, b.flip(0), atol=1e-5, rtol=0)


def test_cli_resume_with_new_total_equals_straight_run(run_dir, tmp_path):
    import shutil

    resumed = tmp_path / "resumed"
    shutil.copytree(run_dir, resumed)
    straight = tmp_path / "straight"
    assert main(TRAIN + ["--steps", "5", "--out", str(straight)]) == 0
    assert main(["train", "--resume", str(resumed), "--steps", "5"]) == 0
    a = checkpoints.read(checkpoints.find(straight).path).payload
    b = checkpoints.read(checkpoints.find(resumed).path).payload
    assert a["step"] == b["step"] == 5
    for key in ("model", "ema"):
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), (key, k)


def test_resume_refuses_model_changes(run_dir, capsys):
    _one_line_error(capsys, ["train", "--resume", str(run_dir), "--arch", "small"], "--arch", "cannot change")
    _one_line_error(capsys, TRAIN + ["--steps", "3", "--out", str(run_dir)], "already holds another run", "--resume")


def test_missing_dataset_path_is_one_line(tmp_path, capsys):
    _one_line_error(capsys, TRAIN + ["--steps", "1", "--dataset", f"cifar10:{tmp_path}/nope", "--out", str(tmp_path / "o")], "does not exist", "nope")
    _one_line_error(capsys, TRAIN + ["--steps", "1", "--dataset", "mnist", "--out", str(tmp_path / "o")], "valid forms")


def test_config_file_and_flags(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('dataset = "digits"\narch = "tiny"\nprocess = "edm"\n[train]\nbatch = 16\nduration_mimg = 200\n')
    dumped = tmp_path / "resolved.json"
    assert main(["train", "--config", str(cfg), "--lr", "3e-4", "--steps", "7", "--dump-config", str(dumped)]) == 0
    d = json.loads(dumped.read_text())
    assert d["train"]["batch"] == 16 and d["train"]["lr"] == 3e-4 and d["train"]["steps"] == 7 and d["train"]["duration_mimg"] is None
    cfg.write_text('dataset = "digits"\nbatch = 16\n')
    _one_line_error(capsys, ["train", "--config", str(cfg)], "unknown config key 'batch'")


def test_label_needs_a_conditional_checkpoint(run_dir, tmp_path, capsys):
    _one_line_error(capsys, ["sample", "--ckpt", str(run_dir), "--n", "2", "--steps", "2", "--label", "3", "--out", str(tmp_path / "g.png")], "class-conditional")


def test_conditional_training_and_label(tmp_path):
    out = tmp_path / "cond"
    assert main(TRAIN + ["--steps", "2", "--cond", "--out", str(out)]) == 0
    assert checkpoints.read(checkpoints.find(out).path).payload["meta"]["image"]["unet"]["num_classes"] == 10
    assert main(["sample", "--ckpt", str(out), "--n", "3", "--steps", "2", "--label", "7", "--out", str(tmp_path / "g.png")]) == 0


def test_eval_fid_with_feature_nets_and_ssim(run_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PHYSGEN_CACHE", str(tmp_path / "cache"))
    samples = tmp_path / "s"
    assert main(["sample", "--ckpt", str(run_dir), "--n", "12", "--steps", "2", "--out", str(samples)]) == 0
    mod = tmp_path / "mods"
    mod.mkdir()
    (mod / "featnet_for_test.py").write_text(
        "import torch\n"
        "def make():\n"
        "    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Tanh(), torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())\n"
    )
    monkeypatch.syspath_prepend(str(mod))
    out = tmp_path / "fid.json"
    assert main(["eval", "fid", "--samples", str(samples), "--ref", "digits", "--feature-net", "featnet_for_test:make", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["fid"] > 0 and res["n_samples"] == 12 and res["n_ref"] == 1797 and res["kid_mean"] is not None and res["is_mean"] is None
    cached = list((tmp_path / "cache" / "fid").glob("*.npz"))
    assert len(cached) == 1
    # the cached statistics file works as --ref and gives the same number
    out2 = tmp_path / "fid-cached.json"
    assert main(["eval", "fid", "--samples", str(samples), "--ref", str(cached[0]), "--feature-net", "featnet_for_test:make", "--out", str(out2)]) == 0
    assert json.loads(out2.read_text())["fid"] == pytest.approx(res["fid"], rel=1e-6)
    # network files (torch.export .pt2, TorchScript) can run code when loaded: refused, module:callable named
    from featnet_for_test import make

    pt2 = tmp_path / "net.pt2"
    torch.export.save(torch.export.export(make(), (torch.zeros(2, 1, 8, 8),), dynamic_shapes=({0: torch.export.Dim("batch")},)), str(pt2))
    capsys.readouterr()
    _one_line_error(capsys, ["eval", "fid", "--samples", str(samples), "--ref", str(cached[0]), "--feature-net", str(pt2)], "module:callable", str(pt2))
    _one_line_error(capsys, ["eval", "fid", "--samples", str(samples), "--ref", "digits"], "--inception")
    out3 = tmp_path / "ssim.json"
    assert main(["eval", "ssim", "--a", str(samples), "--b", str(samples), "--out", str(out3)]) == 0
    assert json.loads(out3.read_text())["ssim_mean"] == pytest.approx(1.0)


@pytest.mark.slow
def test_eval_fid_with_inception_weights_gives_kid_and_is(tmp_path, monkeypatch):
    """The --inception path end to end, with randomly initialised FID-flavour weights."""
    from physgen.images.data import save_pngs
    from physgen.nets.inception import InceptionV3

    monkeypatch.setenv("PHYSGEN_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    weights = tmp_path / "inception.pth"
    torch.save(InceptionV3("fid").state_dict(), weights)
    g = torch.Generator().manual_seed(1)
    save_pngs(torch.rand(6, 3, 16, 16, generator=g) * 2 - 1, tmp_path / "samples")
    save_pngs(torch.rand(6, 3, 16, 16, generator=g) * 2 - 1, tmp_path / "ref")
    out = tmp_path / "fid.json"
    assert main(["eval", "fid", "--samples", str(tmp_path / "samples"), "--ref", f"folder:{tmp_path / 'ref'}", "--inception", str(weights),
                 "--batch", "3", "--kid-subset-size", "4", "--kid-subsets", "5", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["feature_net"].startswith("inception-fid") and res["is_mean"] is not None and res["kid_mean"] is not None
    # 6 samples in 2048 dimensions: rank-deficient covariances, so only finiteness is meaningful here
    assert math.isfinite(res["fid"]) and not any("not the standard FID" in n for n in res["notes"])


@pytest.mark.parametrize("length, batch, warmup_mimg", [(["--steps", "2000"], "512", 0.0512), (["--steps", "100"], "8", 0.05 * 800 / 1e6),
                                                       (["--duration-mimg", "1"], "100", 0.05), (["--duration-mimg", "400"], "512", 10.0)])
def test_a_shortened_run_warms_up_for_edms_share_of_it(tmp_path, length, batch, warmup_mimg):
    """`train --steps N` with no warm-up flag: EDM's 5 % of the run (at most 10 Mimg), so the lr is reached."""
    dumped = tmp_path / "c.json"
    assert main(["train", "--dataset", "digits", "--batch", batch, *length, "--dump-config", str(dumped)]) == 0
    t = json.loads(dumped.read_text())["train"]
    assert t["warmup_steps"] == 0 and t["warmup_mimg"] == pytest.approx(warmup_mimg)
    total = t["steps"] if t["duration_mimg"] is None else math.ceil(t["duration_mimg"] * 1e6 / int(batch))
    assert math.ceil(t["warmup_mimg"] * 1e6 / int(batch)) <= math.ceil(0.05 * total) + 1  # the lr is at its value for 95 % of the run


def test_a_given_warmup_is_kept_and_a_long_one_is_named(tmp_path, capsys):
    dumped = tmp_path / "c.json"
    assert main(["train", "--dataset", "digits", "--steps", "50", "--warmup-mimg", "10", "--dump-config", str(dumped)]) == 0
    assert json.loads(dumped.read_text())["train"]["warmup_mimg"] == 10.0  # what the user wrote
    cfg = tmp_path / "c.toml"
    cfg.write_text('dataset = "digits"\n[train]\nwarmup_steps = 40\n')  # a file's warm-up in steps is the warm-up (10 Mimg no longer overrides it)
    assert main(["train", "--config", str(cfg), "--steps", "60", "--dump-config", str(dumped)]) == 0
    t = json.loads(dumped.read_text())["train"]
    assert (t["warmup_steps"], t["warmup_mimg"], t["steps"]) == (40, None, 60)
    cfg.write_text('dataset = "digits"\n[train]\nsteps = 1000\nbatch = 100\n')  # a file's length alone: EDM's share, as the flags get
    assert main(["train", "--config", str(cfg), "--dump-config", str(dumped)]) == 0
    assert json.loads(dumped.read_text())["train"]["warmup_mimg"] == pytest.approx(0.005)
    assert main(["train", "--config", str(cfg), "--steps", "4000", "--dump-config", str(dumped)]) == 0  # a flag's new length rescales it
    assert json.loads(dumped.read_text())["train"]["warmup_mimg"] == pytest.approx(0.02)
    capsys.readouterr()
    no_warmup = TRAIN[:TRAIN.index("--warmup-steps")] + TRAIN[TRAIN.index("--warmup-steps") + 2:]
    assert main(no_warmup + ["--warmup-steps", "5", "--steps", "2", "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert "warm-up (5 steps) is longer than half of the run (2 steps)" in err and "40 % of lr" in err
