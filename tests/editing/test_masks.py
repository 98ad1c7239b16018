"""Bad input to the editing methods: one UserError line naming the value (issue 23)."""
import math

import pytest
import torch
from hypothesis import given, strategies as st

from physgen.editing import check_mask, check_strength, inpaint, sdedit, smc_condition
from physgen.editing.masks import check_known
from physgen.errors import UserError

from editing_cases import MASK, MIXTURE, observed, toy_process


@pytest.fixture(scope="module")
def edm():
    process = toy_process("edm")
    return process, process.analytic_field(MIXTURE)


def one_line(exc) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize("shape", [(3,), (2, 1), (1, 2, 1), ()])
def test_mask_of_the_wrong_shape_is_refused_naming_it(shape):
    with pytest.raises(UserError) as exc:
        check_mask(torch.ones(shape), (2,))
    assert str(tuple(shape)) in one_line(exc)


def test_mask_broadcasts_over_channels_only_where_they_are_one():
    mask = torch.zeros(1, 4, 4)
    mask[0, :2] = 1
    assert check_mask(mask, (3, 4, 4)).shape == (3, 4, 4)
    with pytest.raises(UserError):
        check_mask(torch.ones(2, 4, 4), (3, 4, 4))


@given(st.floats(allow_nan=False, allow_infinity=True).filter(lambda v: v not in (0.0, 1.0)))
def test_a_mask_that_is_not_binary_names_the_value(value):
    mask = torch.tensor([1.0, value], dtype=torch.float64)
    with pytest.raises(UserError) as exc:
        check_mask(mask, (2,))
    assert "binary" in one_line(exc) and f"{value:g}" in str(exc.value)


def test_a_nan_mask_is_refused():
    with pytest.raises(UserError, match="binary"):
        check_mask(torch.tensor([1.0, math.nan]), (2,))


@pytest.mark.parametrize("mask, word", [([1.0, 1.0], "all known"), ([0.0, 0.0], "all unknown")])
def test_a_mask_with_nothing_to_do_is_refused(mask, word):
    with pytest.raises(UserError) as exc:
        check_mask(torch.tensor(mask), (2,))
    assert word in one_line(exc)


@pytest.mark.parametrize("shape", [(4, 3), (4, 2, 1), (4, 1)])
def test_an_input_of_the_wrong_size_or_channels_names_both_shapes(shape):
    with pytest.raises(UserError) as exc:
        check_known(torch.zeros(shape), (2,))
    text = one_line(exc)
    assert str(tuple(shape[1:])) in text and "(2,)" in text


@pytest.mark.parametrize("bad", [torch.zeros(0, 2), torch.zeros(2), torch.zeros(3, 2, dtype=torch.long), [[0.0, 0.0]],
                                 torch.tensor([[0.0, math.inf]])])
def test_inputs_that_are_not_a_finite_batch_are_refused(bad):
    with pytest.raises(UserError):
        check_known(bad)


@given(st.one_of(st.floats(allow_nan=True).filter(lambda v: not 0 <= v <= 1), st.booleans(), st.text(max_size=3), st.none()))
def test_a_strength_outside_0_1_names_the_value(value):
    with pytest.raises(UserError) as exc:
        check_strength(value)
    assert repr(value) in one_line(exc)


def test_every_method_refuses_a_bad_mask_and_sdedit_a_bad_strength(edm):
    process, field = edm
    for call in (lambda: inpaint(process, field, observed(4), torch.tensor([1.0, 0.5])),
                 lambda: smc_condition(process, field, observed(4), torch.tensor([1.0, 1.0])),
                 lambda: sdedit(process, field, observed(4), strength=1.5),
                 lambda: sdedit(process, field, observed(4), strength=-0.1),
                 lambda: sdedit(process, field, observed(4), s_start=1e9),
                 lambda: sdedit(process, field, observed(4)),
                 lambda: inpaint(process, field, observed(4), MASK, jump_length=0),
                 lambda: smc_condition(process, field, observed(4), MASK, noise_std=0.0),
                 lambda: smc_condition(process, field, observed(4), MASK, ess_threshold=2.0)):
        with pytest.raises(UserError) as exc:
            call()
        one_line(exc)


def test_what_a_kernel_cannot_do_is_refused_with_the_reason():
    process = toy_process("pfgmpp", D=4)
    field = process.exact_field(MIXTURE.sample(256, generator=torch.Generator().manual_seed(0)))
    with pytest.raises(UserError, match="no Gaussian transition|has none"):
        smc_condition(process, field, observed(8), MASK)
    with pytest.raises(UserError, match="forward transition"):
        inpaint(process, field, observed(8), MASK, jump_length=2, jump_n_sample=2)
