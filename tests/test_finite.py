"""rnnkit._finite.all_finite: the one-pass finiteness test every layer's input check uses.

Checked against NumPy's ``np.isfinite(a).all()`` on arrays of every layout the layers accept.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnkit import LSTM
from rnnkit._finite import all_finite

SPECIALS = (np.nan, np.inf, -np.inf)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("special", SPECIALS)
@pytest.mark.parametrize("where", [0, 1, 16, 4095, -1])
def test_one_bad_entry_anywhere_is_found(dtype: type, special: float, where: int) -> None:
    a = np.random.default_rng(0).standard_normal((3, 37, 41)).astype(dtype)
    assert all_finite(a)
    a.flat[where] = special
    assert not all_finite(a)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_extremes_that_are_finite_pass(dtype: type) -> None:
    info = np.finfo(dtype)
    a = np.array([info.max, -info.max, info.tiny, info.smallest_subnormal, -0.0, 0.0], dtype)
    assert all_finite(a)
    assert all_finite(np.empty((0, 5), dtype))


@pytest.mark.parametrize("layout", ["strided", "transposed", "big-endian", "fortran"])
def test_other_layouts_agree_with_numpy(layout: str) -> None:
    base = np.random.default_rng(1).standard_normal((6, 8, 10)).astype(np.float32)
    for bad in (None, *SPECIALS):
        a = base.copy()
        if bad is not None:
            a[5, 7, 9] = bad
        view = {"strided": a[:, ::2], "transposed": a.transpose(2, 0, 1), "big-endian": a.astype(">f4"),
                "fortran": np.asfortranarray(a)}[layout]
        assert all_finite(view) == bool(np.isfinite(view).all())


@settings(max_examples=60, deadline=None)
@given(size=st.integers(1, 3000), positions=st.lists(st.integers(0, 2999), max_size=4),
       kinds=st.lists(st.sampled_from(SPECIALS), min_size=4, max_size=4), double=st.booleans())
def test_any_placement_agrees_with_numpy(size: int, positions: list[int], kinds: list[float], double: bool) -> None:
    a = np.random.default_rng(size).uniform(-1e30, 1e30, size).astype(np.float64 if double else np.float32)
    for position, kind in zip(positions, kinds, strict=False):
        a[position % size] = kind
    assert all_finite(a) == bool(np.isfinite(a).all())


def test_a_layer_names_the_bad_input() -> None:
    x = np.zeros((2, 3, 4), np.float32)
    x[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="x contains NaN or infinite values"):
        LSTM(4, 5).forward(x)
