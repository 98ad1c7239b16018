"""physgen.cli.flags: the bounded argparse types accept exactly their range (each limit defined
once in physgen.config) and the process flag group hands typed values to the library."""
import argparse
import math

import pytest
from hypothesis import given, settings, strategies as st

from physgen.cli import flags
from physgen.config import MAX_BATCH, MAX_STEPS


@settings(max_examples=60, deadline=None)
@given(n=st.integers(min_value=-10, max_value=2 * MAX_STEPS))
def test_steps_accepts_exactly_its_range(n):
    if 1 <= n <= MAX_STEPS:
        assert flags.STEPS(str(n)) == n
    else:
        with pytest.raises(argparse.ArgumentTypeError, match=str(n)):
            flags.STEPS(str(n))


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
    assert options["D"] == D and type(options["D"]) is type(D)


@pytest.mark.parametrize("bad", ["0", "-1", "2.5", "nan", "four"])
def test_bad_D_is_one_line_naming_the_value(bad):
    with pytest.raises(argparse.ArgumentTypeError) as err:
        flags.D(bad)
    assert bad in str(err.value) and "\n" not in str(err.value)
