"""physgen.cli.flags: the bounded argparse types accept exactly their range (each limit defined
once in physgen.config) and the process flag group hands typed values to the library."""
import argparse
import math

import pytest
from hypothesis import given, settings, strategies as st

from physgen.cli import flags
from physgen.cli.main import main
from physgen.config import MAX_BATCH, MAX_STEPS, ExtraDims


@settings(max_examples=60, deadline=None)
@given(n=st.integers(min_value=-10, max_value=2 * MAX_STEPS))
def test_steps_accepts_exactly_its_range(n):
    if 1 <= n <= MAX_STEPS:
        assert flags.STEPS(str(n)) == n
    else:
        with pytest.raises(argparse.ArgumentTypeError, match=str(n)):
            flags.STEPS(str(n))


@pytest.mark.parametrize("command", [["toy"], ["nll"], ["sample", "--ckpt", "no-such-run"], ["compare-solvers"]])
@pytest.mark.parametrize("bad", ["0", "-2", "2.5", "ten", str(MAX_STEPS + 1)])
def test_a_bad_step_count_is_one_line_and_exit_2_on_every_sampling_command(command, bad, capsys):
    """The --steps type (config.parse_steps, the one check) refuses before anything runs: one
    line naming --steps and the value, exit status 2, no traceback."""
    code = main([*command, "--steps", bad])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--steps" in err[-1] and bad in err[-1] and not any("Traceback" in line for line in err)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(min_value=1, max_value=MAX_BATCH))
def test_batch_reads_integral_floats_as_ints(n):
    value = flags.BATCH(f"{float(n):e}") if n < 10 ** 6 else flags.BATCH(str(n))
    assert value == n and isinstance(value, int)


@pytest.mark.parametrize("text, D", [("4", 4), ("1e3", 1000), ("inf", math.inf)])
def test_D_is_typed_once_and_reaches_process_options(text, D):
    parser = argparse.ArgumentParser()
    flags.add_process_arguments(parser)
    options = flags.process_options(parser.parse_args(["--D", text]))
    assert isinstance(options["D"], ExtraDims) and options["D"] == D and type(options["D"].number) is type(D)


@pytest.mark.parametrize("bad", ["0", "-1", "2.5", "nan", "four"])
def test_bad_D_is_one_line_naming_the_value(bad):
    with pytest.raises(argparse.ArgumentTypeError) as err:
        flags.D(bad)
    assert bad in str(err.value) and "\n" not in str(err.value)
