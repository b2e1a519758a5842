"""rnnkit._tiles: the register-tile product and the register transposes against NumPy.

The tile kernel serves every per-step product of the time loop, so every tile shape is exercised:
full and partial row blocks (8, 4, 2, 1 rows), one or two vectors of columns, a last vector masked
to any width, a transposed left operand, beta = 0 (old contents ignored, NaN included) and not,
strided rows, and the columns beside the result left untouched.  float64 to 1e-13, float32 to 1e-5
of the product's scale (a different summation order than NumPy's BLAS).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnkit._tiles import MAX_COLUMNS, MIN_COLUMNS, tile_gemm
from rnnkit.unroll import to_batch_first, to_feature_major

TOL = {np.float64: 1e-13, np.float32: 1e-5}


def _check(dtype: Any, trans: bool, M: int, K: int, N: int, beta: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((K, M) if trans else (M, K)).astype(dtype)
    wide_b = rng.standard_normal((K, N + 3)).astype(dtype)
    wide_c = rng.standard_normal((M, N + 5)).astype(dtype)
    Bm, C = wide_b[:, 2 : 2 + N], wide_c[:, 1 : 1 + N]   # rows strided, as the loop's blocks are
    if beta == 0:
        C[...] = np.nan                                     # beta = 0 must ignore C's old contents
    before = wide_c.copy()
    expected = 0.7 * ((A.T if trans else A).astype(np.float64) @ Bm) + (beta * C if beta else 0)
    tile_gemm(trans, 0.7, A, Bm, beta, C)
    scale = max(float(np.abs(expected).max()), 1.0) if expected.size else 1.0
    if expected.size:
        assert np.abs(C - expected).max() <= TOL[dtype] * scale
    np.testing.assert_array_equal(wide_c[:, :1], before[:, :1])          # nothing written beside C
    np.testing.assert_array_equal(wide_c[:, 1 + N :], before[:, 1 + N :])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("trans", [False, True])
@pytest.mark.parametrize("M", [1, 3, 7, 8, 13, 64, 200])
@pytest.mark.parametrize("N", [1, 8, 15, 16, 17, 31, 32, 33, 100, 128])
def test_tile_gemm_equals_numpy(dtype: Any, trans: bool, M: int, N: int) -> None:
    for K, beta in ((0, 0.3), (1, 0.0), (50, 0.3), (513, 0.0), (1100, 0.3)):
        _check(dtype, trans, M, K, N, beta, seed=M * 1000 + N + K)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 70), st.integers(0, 600), st.integers(MIN_COLUMNS, MAX_COLUMNS), st.booleans(),
       st.sampled_from([0.0, 1.0, -0.5]), st.sampled_from([np.float32, np.float64]))
def test_tile_gemm_any_shape(M: int, K: int, N: int, trans: bool, beta: float, dtype: Any) -> None:
    _check(dtype, trans, M, K, N, beta, seed=M + K + N)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(32, 100, 128), (27, 5, 19), (16, 3, 16), (1, 4, 33), (40, 7, 40)])
def test_register_transposes_equal_numpy(dtype: Any, shape: tuple[int, int, int]) -> None:
    """The layout copies transpose W x W tiles in registers, the edges element by element."""
    rng = np.random.default_rng(2)
    a = rng.standard_normal(shape).astype(dtype)
    order = rng.permutation(shape[0])
    np.testing.assert_array_equal(to_feature_major(a), a.transpose(2, 1, 0))
    np.testing.assert_array_equal(to_feature_major(a, order), a[order].transpose(2, 1, 0))
    f = np.ascontiguousarray(a.transpose(2, 1, 0))
    np.testing.assert_array_equal(to_batch_first(f), a)
    np.testing.assert_array_equal(to_batch_first(f, order), a[order])
    padded = np.zeros((shape[2], shape[1] + 1, shape[0]), dtype)   # a view with strided rows (the layer's output)
    padded[:, 1:] = f
    np.testing.assert_array_equal(to_batch_first(padded[:, 1:]), a)
    np.testing.assert_array_equal(to_feature_major(a.astype(a.dtype.newbyteorder(">"))), a.transpose(2, 1, 0))
