"""rnnkit._fpu: the compiled loops flush subnormals while they run and leave the caller's setting alone."""

from __future__ import annotations

import platform

import numba
import numpy as np
import pytest

import rnnkit
from rnnkit._fpu import _read_mxcsr, flush_subnormals, restore_subnormals

x86 = pytest.mark.skipif(platform.machine().lower() not in {"x86_64", "amd64"}, reason="MXCSR is x86's")


@numba.njit
def _mxcsr() -> int:
    return _read_mxcsr()


@numba.njit
def _halve_while_flushing(x: np.ndarray) -> np.ndarray:
    previous = flush_subnormals()
    out = x * np.float32(0.5)
    restore_subnormals(previous)
    return out


@x86
def test_subnormal_results_become_zero_only_inside() -> None:
    smallest_normal = np.finfo(np.float32).tiny                 # 1.18e-38
    x = np.array([smallest_normal, 1.0], np.float32)
    np.testing.assert_array_equal(_halve_while_flushing(x), [0.0, 0.5])   # would be 5.9e-39, a subnormal
    assert x[0] * np.float32(0.5) > 0                                       # NumPy, outside: subnormal kept


@x86
def test_the_layers_restore_the_callers_setting() -> None:
    before = _mxcsr() & 0x8040
    layer = rnnkit.LSTM(3, 4, seed=0)
    out, _, cache = layer.forward(np.ones((2, 5, 3), np.float32), training=True)
    layer.backward(np.ones_like(out), None, cache)
    assert _mxcsr() & 0x8040 == before == 0
