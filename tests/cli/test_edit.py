"""``physgen edit`` end to end on a tiny checkpoint, and its bad input (issue 23)."""
import json

import numpy as np
import pytest
from PIL import Image

from physgen.cli.main import main

from cli_errors import error_line

pytestmark = pytest.mark.slow  # the fixture trains a checkpoint (about 40 s on a loaded 2-core machine)

TRAIN = ["train", "--process", "edm", "--dataset", "digits", "--resolution", "8", "--arch", "tiny", "--batch", "8",
         "--warmup-steps", "0", "--device", "cpu", "--steps", "2"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("edit") / "run"
    assert main(TRAIN + ["--out", str(out)]) == 0
    return out


def png(path, array):
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return str(path)


@pytest.fixture()
def inputs(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        png(folder / f"{i}.png", rng.integers(0, 256, (8, 8)))
    mask = np.zeros((8, 8))
    mask[:4] = 255  # top half kept, bottom half generated
    return folder, png(tmp_path / "mask.png", mask)


@pytest.mark.parametrize("method", ["blend", "repaint", "sdedit", "smc"])
def test_edit_writes_images_a_figure_and_its_record(run_dir, inputs, tmp_path, method):
    folder, mask = inputs
    out = tmp_path / "out"
    assert main(["edit", "--ckpt", str(run_dir), "--input", str(folder), "--mask", mask, "--method", method, "--steps", "3",
                 "--particles", "2", "--out", str(out), "--device", "cpu"]) == 0
    record = json.loads((out / "edit.json").read_text())
    assert record["method"] == method and record["nfe"] > 0 and (out / "figure.png").stat().st_size > 0
    for i in range(2):
        result = np.asarray(Image.open(out / f"{i:06d}.png"))
        source = np.asarray(Image.open(folder / f"{i}.png"))
        assert result.shape[:2] == (8, 8)
        if method != "sdedit":  # the kept half is the input's, to the 8-bit rounding
            assert np.abs(result.reshape(8, 8, -1)[:4, :, 0].astype(int) - source[:4].astype(int)).max() <= 1


def test_bad_inputs_are_one_line(run_dir, inputs, tmp_path, capsys):
    folder, mask = inputs
    base = ["edit", "--ckpt", str(run_dir), "--out", str(tmp_path / "o"), "--device", "cpu"]
    rgb = png(tmp_path / "rgb.png", np.zeros((8, 8, 3)))
    big = png(tmp_path / "big.png", np.zeros((9, 9)))
    grey = png(tmp_path / "grey.png", np.full((8, 8), 128))
    error_line(capsys, base + ["--input", rgb, "--mask", mask], "3 channel", "rgb.png")
    error_line(capsys, base + ["--input", big, "--mask", mask], "9x9", "big.png")
    error_line(capsys, base + ["--input", str(folder), "--mask", grey], "grey value 128")
    error_line(capsys, base + ["--input", str(folder), "--mask", png(tmp_path / "all.png", np.full((8, 8), 255))], "all known")
    error_line(capsys, base + ["--input", str(folder), "--mask", png(tmp_path / "none.png", np.zeros((8, 8)))], "all unknown")
    error_line(capsys, base + ["--input", str(folder), "--mask", big], "9x9")
    error_line(capsys, base + ["--input", str(folder)], "--mask is needed")
    error_line(capsys, base + ["--input", str(tmp_path / "nope")], "does not exist")
    error_line(capsys, base + ["--input", str(folder), "--method", "sdedit", "--strength", "1.5"], "--strength", "1.5")
