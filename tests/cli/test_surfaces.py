"""Bad input through the surfaces issue 19 audited, at the command line: one line naming the
value (exit status 2) before any work, through every command that takes it."""
from __future__ import annotations

import inspect

import pytest
from hypothesis import given, settings, strategies as st

from physgen.cli.main import main
from physgen.config import FLOAT32_TINY
from physgen.sampling import COMMAND_ARGUMENTS, SAMPLER_FLAGS, sample

TOY = ["toy", "--dataset", "8gaussians", "--n-data", "40", "--n-samples", "8", "--steps", "2", "--device", "cpu"]
CMP = ["compare-solvers", "--n-data", "40", "--n-samples", "8", "--solvers", "euler", "--steps", "2", "--no-ref-check", "--device", "cpu"]
NLL = ["nll", "--dataset", "8gaussians", "--n", "8", "--n-data", "40", "--device", "cpu"]
CLF = ["train-classifier", "--n-data", "40", "--steps", "1", "--batch", "8", "--hidden", "8", "--depth", "1", "--device", "cpu"]
SAMPLE = ["sample", "--ckpt", "never-read.pt", "--n", "2", "--steps", "2", "--device", "cpu"]  # refused before the checkpoint is read
TRAIN = ["train", "--steps", "1", "--arch", "tiny", "--resolution", "8", "--device", "cpu"]


def _refused(capsys, argv, *needles) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, (n, err)
    return err


def test_every_argument_the_dispatcher_takes_itself_is_a_command_argument():
    """A --sampler-opt named like a parameter of physgen.sampling.sample would collide with it."""
    own = [p for p in inspect.signature(sample).parameters if p != "options"]
    assert set(own) <= set(COMMAND_ARGUMENTS), set(own) - set(COMMAND_ARGUMENTS)
    assert {"generator", "return_trajectory", "x", "target"} <= set(COMMAND_ARGUMENTS)


@pytest.mark.parametrize("command", [TOY, CMP, SAMPLE], ids=["toy", "compare-solvers", "sample"])
@pytest.mark.parametrize("key", sorted(COMMAND_ARGUMENTS))
def test_a_sampler_option_named_like_a_command_argument_is_refused(command, key, capsys, tmp_path):
    _refused(capsys, [*command, "--sampler-opt", f"{key}=1", "--out", str(tmp_path / "o")], f"--sampler-opt {key}=", "set by")


@pytest.mark.parametrize("key,flag", sorted(SAMPLER_FLAGS.items()))
def test_a_sampler_option_given_by_its_flag_and_by_sampler_opt_is_refused(key, flag, capsys, tmp_path):
    value = "smc" if key == "birth_death" else "3" if key == "steps_per_level" else "0.01"
    for command in (TOY, SAMPLE) + ((CMP,) if key == "birth_death" else ()):  # compare-solvers' one sampler flag
        _refused(capsys, [*command, flag, value, "--sampler-opt", f"{key}={value}", "--out", str(tmp_path / "o")], flag, f"--sampler-opt {key}")


@pytest.mark.parametrize("key,flag", [("sigma_min", "--sigma-min"), ("sigma_max", "--sigma-max"), ("a", "--a"), ("c", "--c"),
                                      ("m", "--m"), ("D", "--D")])
def test_a_process_option_given_by_its_flag_and_by_process_opt_is_refused(key, flag, capsys, tmp_path):
    for command in (TOY, CMP, NLL, TRAIN):
        _refused(capsys, [*command, flag, "2", "--process-opt", f"{key}=3", "--out", str(tmp_path / "o")], flag, f"--process-opt {key}")


@pytest.mark.parametrize("command", [TOY, CMP, NLL, CLF, TRAIN, SAMPLE, ["demo", "--train-steps", "1"], ["experiment", "langevin-mixture"]],
                         ids=["toy", "compare-solvers", "nll", "train-classifier", "train", "sample", "demo", "experiment"])
@pytest.mark.parametrize("out", ["", " ", "\t"])
def test_an_empty_out_is_refused_by_every_command(command, out, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where an empty --out would have written
    argv = [*command, "--out", out]
    if command is SAMPLE:
        argv[2] = str(tmp_path / "missing.pt")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--out" in err and ("is empty" in err or "missing.pt" in err), err
    assert not [p for p in tmp_path.iterdir() if p.name != "missing.pt"]


@pytest.mark.parametrize("flag,value", [("--classifier-ckpt", "c.pt"), ("--w", "3"), ("--guidance-interval", "0.1,1")])
def test_guidance_flags_without_guidance_are_refused(flag, value, capsys, tmp_path):
    for command in ([*TOY, "--label", "0"], SAMPLE):
        _refused(capsys, [*command, flag, value, "--out", str(tmp_path / "o")], flag, "--guidance")


def test_resume_with_overwrite_is_refused(capsys, tmp_path):
    (tmp_path / "run").mkdir()
    _refused(capsys, [*CLF, "--resume", "--overwrite", "--out", str(tmp_path / "run")], "--resume and --overwrite")


@settings(max_examples=60, deadline=None)
@given(value=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(["1e24", "1e-300", "abc", "0"])))
def test_every_lr_flag_takes_only_a_rate_in_0_1(value):
    """--lr of toy, compare-solvers, nll, train-classifier and train: accepted iff 0 < lr <= 1."""
    from physgen.cli.main import build_parser
    from physgen.cli.main import UsageError

    text = value if isinstance(value, str) else repr(value)
    try:
        ok = FLOAT32_TINY <= float(text) <= 1  # > 0, and no float32 underflow (the flags' rule)
    except ValueError:
        ok = False
    for command in (TOY, CMP, NLL, CLF, TRAIN):
        try:
            args = build_parser().parse_args([*command, "--lr", text])
        except UsageError as exc:
            assert not ok and "--lr" in str(exc), (text, exc)
            continue
        assert ok, text
        assert 0 < (args.lr if command is not TRAIN else args.lr) <= 1


@settings(max_examples=60, deadline=None)
@given(value=st.one_of(st.floats(1e-40, 1e40), st.sampled_from(["1e38", "10", "1e-30", "1e-20", "2e-15", "1"])))
def test_every_tolerance_flag_is_in_its_range(value):
    """--rtol/--atol (toy, nll, sample) and --ref-rtol/--ref-atol (compare-solvers): [2.2e-15, 1]."""
    from physgen.cli.main import UsageError, build_parser

    text = value if isinstance(value, str) else repr(value)
    ok = 10 * 2.0**-52 <= float(text) <= 1
    for command, flags in ((TOY, ("--rtol", "--atol")), (NLL, ("--rtol", "--atol")), (SAMPLE, ("--rtol", "--atol")),
                           (CMP, ("--ref-rtol", "--ref-atol"))):
        for flag in flags:
            try:
                build_parser().parse_args([*command, flag, text])
            except UsageError as exc:
                assert not ok and flag in str(exc), (text, exc)
                continue
            assert ok, (flag, text)


def test_nll_refuses_a_process_without_prior_density_before_any_field(capsys, tmp_path, monkeypatch):
    import physgen.toy

    def no_field(*a, **k):
        raise AssertionError("a field was built")

    monkeypatch.setattr(physgen.toy, "build_field", no_field)
    for field in ("exact", "analytic", "mlp"):
        _refused(capsys, [*NLL, "--process", "telegrapher", "--field", field, "--out", str(tmp_path / field)], "telegrapher", "prior density")


@pytest.mark.parametrize("experiment", ["d-sweep", "guidance", "langevin-mixture", "telegrapher", "yukawa", "flows", "editing"])
@pytest.mark.parametrize("seed", ["-1", "2.5", "1e30", "x"])
def test_every_experiment_refuses_a_bad_seed_before_it_starts(experiment, seed, capsys, tmp_path):
    """One seed flag type for every experiment: the refusal comes from argparse, before any plan line or output."""
    assert main(["experiment", experiment, "--seed", seed, "--out", str(tmp_path / "o")]) == 2
    captured = capsys.readouterr()
    assert not captured.out and len(captured.err.strip().splitlines()) == 1 and "--seed" in captured.err
    assert not (tmp_path / "o").exists()
