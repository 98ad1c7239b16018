"""``physgen experiment editing --parts digits`` (issue 23): the digits inpainting figure with a
model trained offline in the out dir (reused, continued), and its bad values."""
import io
import json

import pytest

from physgen.cli.main import main
from physgen.experiments.editing_digits import METHODS, MODEL_DIR, digits_model

from cli_errors import error_line


@pytest.mark.slow
def test_the_figure_comes_from_a_model_trained_reused_and_continued_in_the_out_dir(tmp_path, capsys):
    out = tmp_path / "e"
    assert main(["experiment", "editing", "--parts", "digits", "--digits-images", "1", "--digits-steps", "2", "--out", str(out)]) == 0
    assert "training 2 steps" in capsys.readouterr().err
    record = json.loads((out / "digits_inpainting.json").read_text())
    assert (out / "digits_inpainting.png").stat().st_size > 0 and record["step"] == 2 and len(record["images"]) == 1
    # the default options of each method: RePaint 3/3 jumps and blend on Heun's 18 steps, sdedit half of them, SMC's chain
    assert {m: record["methods"][m]["nfe"] for m in METHODS} == {"repaint": 95, "blend": 35, "sdedit": 17, "smc": 200}
    assert all(0 <= record["methods"][m]["bottom_half_mse"] < 4 for m in METHODS)  # pixels in [-1, 1]: at most 4
    log = io.StringIO()
    assert digits_model(out, None, 2, log).step == 2 and log.getvalue() == ""  # the cached model, no training
    assert digits_model(out, None, 3, log).step == 3 and "resuming" in log.getvalue()  # more steps: continued from its checkpoint
    assert digits_model(tmp_path / "elsewhere", out / MODEL_DIR, 99).step == 3  # --digits-ckpt: loaded as it is
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize("flags,needles", [
    (["--parts", "table,nope"], ("--parts", "nope")),
    (["--parts", ""], ("--parts",)),
    (["--parts", "table", "--digits-ckpt", "x"], ("--digits-ckpt", "--parts")),
    (["--parts", "table", "--digits-steps", "5"], ("--digits-steps", "--parts")),
    (["--parts", "digits", "--digits-ckpt", "{tmp}/missing"], ("missing",)),
    (["--digits-steps", "0"], ("--digits-steps", "0")),
    (["--digits-images", "11"], ("--digits-images", "11")),
])
def test_bad_digits_values_are_one_line(tmp_path, capsys, flags, needles):
    flags = [f.replace("{tmp}", str(tmp_path)) for f in flags]
    error_line(capsys, ["experiment", "editing", "--out", str(tmp_path / "o"), *flags], *needles)
    assert not (tmp_path / "o" / "editing.csv").exists()
