"""Class labels (physgen/fields/labels.py): every accepted spelling maps to the one ``long [B]`` form with
the null label at K, every other value is one UserError naming it, and label dropout nulls exactly the
entries its uniform draws pick."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from physgen.errors import UserError
from physgen.fields.labels import check_label, drop_labels, null_mask


@given(k=st.integers(1, 12), data=st.data())
def test_every_spelling_of_a_batch_of_labels_checks_to_one_form(k, data):
    values = data.draw(st.lists(st.integers(-1, k), min_size=1, max_size=16))
    batch = len(values)
    want = torch.tensor([k if v == -1 else v for v in values])  # -1 is the U-Net's alias of the null row K
    for spelling in (torch.tensor(values), np.array(values), torch.tensor(values, dtype=torch.int32)):
        got = check_label(spelling, k, batch)
        if bool((want == k).all()):
            assert got is None  # null for every sample: the unconditional field
        else:
            assert got.dtype == torch.long and torch.equal(got, want)
            assert torch.equal(null_mask(got, k), want == k)


@given(k=st.integers(1, 12), batch=st.integers(1, 9), data=st.data())
def test_one_label_is_the_same_class_for_the_whole_batch(k, batch, data):
    v = data.draw(st.integers(0, k - 1))
    for spelling in (v, np.int64(v), torch.tensor(v)):
        assert torch.equal(check_label(spelling, k, batch), torch.full((batch,), v))
    for null in ("null", " NULL ", -1, k, torch.tensor(-1)):
        assert check_label(null, k, batch) is None
    assert check_label(None, k, batch) is None


@pytest.mark.parametrize("label,fragment", [
    (0.5, "0.5 (float)"), (True, "True (bool)"), ("three", "'three'"), (torch.tensor([1.0, 2.0]), "torch.float32 tensor"),
    (torch.tensor([True, False]), "torch.bool tensor"), (torch.tensor([0, 1, 2]), "shaped [2], got shape [3]"),
    (torch.tensor([4, 0]), "label 4 out of range: this field has 3 classes"), (-2, "label -2 out of range"),
])
def test_a_bad_label_is_one_error_naming_it(label, fragment):
    with pytest.raises(UserError) as e:
        check_label(label, 3, 2)
    assert fragment in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("classes", [None, 0])
def test_an_unconditional_field_takes_only_the_null_label(classes):
    assert check_label("null", classes, 4) is None and check_label(-1, classes, 4) is None
    with pytest.raises(UserError, match=r"the exact field is unconditional \(no classes\), but label \[0, 2\] was given"):
        check_label(torch.tensor([0, -1, 2, 2]), classes, 4, what="the exact field")


@given(p=st.floats(0.0, 1.0), seed=st.integers(0, 2**16))
def test_label_dropout_nulls_exactly_the_draws_below_p(p, seed):
    g = torch.Generator().manual_seed(seed)
    labels, uniform = torch.randint(0, 5, (64,), generator=g), torch.rand(64, generator=g)
    dropped = drop_labels(labels, p, 5, uniform)
    picked = uniform < p
    assert torch.equal(dropped[picked], torch.full((int(picked.sum()),), 5)) and torch.equal(dropped[~picked], labels[~picked])
