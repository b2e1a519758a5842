"""The compiled step kernels equal the NumPy oracle (tests/numpy_cells.py), in float64 and float32.

float64 must agree to rounding (1e-12); float32 within float32 precision (the kernels' float32 tanh
is a rational approximation within 3.5e-7 relative of the exact one, its σ within 2.5e-7).
"""

from __future__ import annotations

import numpy as np
import numpy_cells as oracle
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnkit.cells import GRU_CELL, LSTM_CELL, RNN_RELU_CELL, RNN_TANH_CELL, step_backward, step_forward
from rnnkit.cells._spec import _sigmoid_of, _tanh_float32, empty_state, empty_vector

TOL = {np.float64: 1e-12, np.float32: 2e-6}


def _case(rng: np.random.Generator, G: int, H: int, B: int, dtype: type) -> dict[str, np.ndarray]:
    def r(*shape: int, scale: float = 1.0) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(dtype)

    return {"xp": r(G * H, B), "b_x": r(G * H, scale=0.5), "h_prev": r(H, B, scale=0.5), "c_prev": r(H, B),
            "w_hh": r(G * H, H, scale=1 / np.sqrt(H)), "b_hn": r(H, scale=0.5), "dh": r(H, B), "dc": r(H, B)}


def _close(a: np.ndarray, b: np.ndarray, dtype: type) -> None:
    np.testing.assert_allclose(a, b, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("relu", [False, True])
def test_rnn_kernel_equals_numpy(dtype: type, relu: bool) -> None:
    c = _case(np.random.default_rng(0), 1, 7, 5, dtype)
    cell = RNN_RELU_CELL if relu else RNN_TANH_CELL
    e, v = empty_state(np.dtype(dtype)), empty_vector(np.dtype(dtype))
    h = np.empty((7, 5), dtype)
    step_forward(cell.kind, c["xp"], c["b_x"], c["b_x"][:0], c["w_hh"], e, v, c["h_prev"], e, h, e, e, e, 0, 7)
    h_ref = oracle.rnn_forward(c["xp"] + c["b_x"][:, None], c["h_prev"], c["w_hh"], relu)
    _close(h, h_ref, dtype)
    dh, d_xp = c["dh"].copy(), np.empty((7, 5), dtype)
    step_backward(cell.kind, dh, e, c["h_prev"], e, h, e, e, c["w_hh"].T.copy(), e, v, d_xp, d_xp, v, 0, 7, dh)
    dh_ref, da_ref = oracle.rnn_backward(c["dh"], h_ref, c["w_hh"], relu)
    _close(d_xp, da_ref, dtype)
    _close(dh, dh_ref, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_lstm_kernel_equals_numpy(dtype: type) -> None:
    c = _case(np.random.default_rng(1), 4, 6, 3, dtype)
    e, v = empty_state(np.dtype(dtype)), empty_vector(np.dtype(dtype))
    h, cc, gates, tanh_c = (np.empty(s, dtype) for s in ((6, 3), (6, 3), (24, 3), (6, 3)))
    step_forward(LSTM_CELL.kind, c["xp"], c["b_x"], c["b_x"][:0], c["w_hh"], e, v, c["h_prev"], c["c_prev"], h,
                 cc, gates, tanh_c, 0, 6)
    ref = oracle.lstm_forward(c["xp"] + c["b_x"][:, None], c["h_prev"], c["c_prev"], c["w_hh"])
    for got, want in zip((h, cc, gates, tanh_c), ref, strict=True):
        _close(got, want, dtype)
    dh, dc, d_xp = c["dh"].copy(), c["dc"].copy(), np.empty((24, 3), dtype)
    step_backward(LSTM_CELL.kind, dh, dc, c["h_prev"], c["c_prev"], h, gates, tanh_c, c["w_hh"].T.copy(), e, v, d_xp,
                  d_xp, v, 0, 6, dh)
    dh_ref, dc_ref, da_ref = oracle.lstm_backward(c["dh"], c["dc"], c["c_prev"], ref[2], ref[3], c["w_hh"])
    _close(d_xp, da_ref, dtype)
    _close(dh, dh_ref, dtype)
    _close(dc, dc_ref, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gru_kernel_equals_numpy(dtype: type) -> None:
    c = _case(np.random.default_rng(2), 3, 5, 4, dtype)
    e, v = empty_state(np.dtype(dtype)), empty_vector(np.dtype(dtype))
    h, gates, hn = (np.empty(s, dtype) for s in ((5, 4), (15, 4), (5, 4)))
    step_forward(GRU_CELL.kind, c["xp"], c["b_x"], c["b_hn"], c["w_hh"], e, v, c["h_prev"], e, h, e, gates, hn, 0, 5)
    ref = oracle.gru_forward(c["xp"] + c["b_x"][:, None], c["h_prev"], c["w_hh"], c["b_hn"])
    for got, want in zip((h, gates, hn), ref, strict=True):
        _close(got, want, dtype)
    dh, d_xp, d_hp = c["dh"].copy(), np.empty((15, 4), dtype), np.empty((15, 4), dtype)
    step_backward(GRU_CELL.kind, dh, e, c["h_prev"], e, h, gates, hn, c["w_hh"].T.copy(), e, v, d_xp, d_hp, v, 0, 5, dh)
    dh_ref, d_xp_ref, d_hp_ref = oracle.gru_backward(c["dh"], c["h_prev"], ref[1], ref[2], c["w_hh"])
    _close(d_xp, d_xp_ref, dtype)
    _close(d_hp, d_hp_ref, dtype)
    _close(dh, dh_ref, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_lstm_kernel_with_projection_equals_numpy(dtype: type) -> None:
    """proj_size: h = W_hr (o ⊙ tanh c), W_hh (4H, P); backward through dĥ = W_hrᵀ dh."""
    rng = np.random.default_rng(4)
    H, P, n = 6, 2, 3
    c = _case(rng, 4, H, n, dtype)
    v = empty_vector(np.dtype(dtype))
    w_hh, w_hr = rng.uniform(-0.5, 0.5, (4 * H, P)).astype(dtype), rng.uniform(-0.5, 0.5, (P, H)).astype(dtype)
    h_prev, dh_in = rng.uniform(-0.8, 0.8, (P, n)).astype(dtype), rng.normal(size=(P, n)).astype(dtype)
    h, cc, gates, cache_b = (np.empty(s, dtype) for s in ((P, n), (H, n), (4 * H, n), (2 * H, n)))
    step_forward(LSTM_CELL.kind, c["xp"], c["b_x"], c["b_x"][:0], w_hh, w_hr, v, h_prev, c["c_prev"], h, cc,
                 gates, cache_b, 0, H)
    ref = oracle.lstm_forward(c["xp"] + c["b_x"][:, None], h_prev, c["c_prev"], w_hh)  # (ĥ, c, gates, tanh c)
    _close(h, w_hr @ ref[0], dtype)
    _close(cache_b[H:], ref[0], dtype)
    _close(cc, ref[1], dtype)
    dh, dc, d_xp = dh_in.copy(), c["dc"].copy(), np.empty((4 * H, n), dtype)
    step_backward(LSTM_CELL.kind, dh, dc, h_prev, c["c_prev"], h, gates, cache_b, w_hh.T.copy(), w_hr, v, d_xp, d_xp, v,
                  0, H, dh)
    dh_ref, dc_ref, da_ref = oracle.lstm_backward(w_hr.T @ dh_in, c["dc"], c["c_prev"], ref[2], ref[3], w_hh)
    _close(d_xp, da_ref, dtype)
    _close(dh, dh_ref, dtype)
    _close(dc, dc_ref, dtype)


def test_kernels_work_on_a_prefix_of_columns() -> None:
    """The time loop hands a step the first n columns of wider arrays (strided rows): same result."""
    c = _case(np.random.default_rng(3), 4, 6, 8, np.float64)
    e, v = empty_state(np.dtype(np.float64)), empty_vector(np.dtype(np.float64))
    wide = [np.zeros(s) for s in ((6, 8), (6, 8), (24, 8), (6, 8))]
    n = 5
    step_forward(LSTM_CELL.kind, c["xp"][:, :n], c["b_x"], c["b_x"][:0], c["w_hh"], e, v, c["h_prev"][:, :n],
                 c["c_prev"][:, :n], *(a[:, :n] for a in wide), 0, 6)
    ref = oracle.lstm_forward(c["xp"][:, :n] + c["b_x"][:, None], c["h_prev"][:, :n], c["c_prev"][:, :n], c["w_hh"])
    for got, want in zip(wide, ref, strict=True):
        _close(got[:, :n], want, np.float64)
        assert not got[:, n:].any()  # nothing written past the active columns


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", ["rnn_tanh", "lstm", "gru"])
def test_kernels_by_ranges_of_units_equal_the_whole_step(name: str, dtype: type) -> None:
    """Threads that split the units each call the kernels on their range (rnnkit.unroll.plan_parts):
    the ranges together give the whole step, forward, and backward once their dh_prev shares are added."""
    cell = {"rnn_tanh": RNN_TANH_CELL, "lstm": LSTM_CELL, "gru": GRU_CELL}[name]
    G, H, n = cell.num_gates, 13, 4
    c = _case(np.random.default_rng(5), G, H, n, dtype)
    e, v = empty_state(np.dtype(dtype)), empty_vector(np.dtype(dtype))
    rows_a, rows_b = cell.cache_sizes(H)
    b_in = c["b_hn"] if name == "gru" else c["b_x"][:0]

    def states() -> list[np.ndarray]:  # h, c, ca, cb (the unused ones empty)
        return [np.zeros((H, n), dtype), np.zeros((H, n), dtype) if name == "lstm" else e,
                np.zeros((rows_a, n), dtype) if rows_a else e, np.zeros((rows_b, n), dtype) if rows_b else e]

    whole, split = states(), states()
    c_prev = c["c_prev"] if name == "lstm" else e
    step_forward(cell.kind, c["xp"], c["b_x"], b_in, c["w_hh"], e, v, c["h_prev"], c_prev, *whole, 0, H)
    ranges = [(0, 5), (5, 6), (6, H)]
    for u0, u1 in ranges:
        step_forward(cell.kind, c["xp"], c["b_x"], b_in, c["w_hh"], e, v, c["h_prev"], c_prev, *split, u0, u1)
    for got, want in zip(split, whole, strict=True):
        _close(got, want, dtype)

    h, _, ca, cb = whole
    d_xp, d_hp = np.zeros((G * H, n), dtype), np.zeros((G * H, n), dtype)
    dh, dc = c["dh"].copy(), c["dc"].copy() if name == "lstm" else e
    step_backward(cell.kind, dh, dc, c["h_prev"], c_prev, h, ca, cb, c["w_hh"].T.copy(), e, v, d_xp,
                  d_hp if name == "gru" else d_xp, v, 0, H, dh)
    s_xp, s_hp = np.zeros((G * H, n), dtype), np.zeros((G * H, n), dtype)
    s_dh, s_dc = c["dh"].copy(), c["dc"].copy() if name == "lstm" else e
    total = np.zeros((H, n), dtype)
    for u0, u1 in ranges:
        share = np.full((H, n), np.nan, dtype)  # every row is written
        step_backward(cell.kind, s_dh, s_dc, c["h_prev"], c_prev, h, ca, cb, c["w_hh"].T.copy(), e, v, s_xp,
                      s_hp if name == "gru" else s_xp, v, u0, u1, share)
        total += share
    _close(s_xp, d_xp, dtype)
    _close(total, dh, dtype)
    if name == "lstm":
        _close(s_dc, dc, dtype)
    if name == "gru":
        _close(s_hp, d_hp, dtype)


@settings(max_examples=60, deadline=None)
@given(st.floats(min_value=-30, max_value=30, allow_nan=False, width=32))
def test_float32_tanh_within_4e7_relative(x: float) -> None:
    exact = np.tanh(np.float64(np.float32(x)))
    got = float(_tanh_float32(np.float32(x)))
    assert abs(got - exact) <= 4e-7 * max(abs(exact), 1e-38) + 1e-45


def test_float32_tanh_on_a_dense_grid() -> None:
    xs = np.concatenate([np.linspace(-12, 12, 200_001), np.geomspace(1e-8, 12, 20_001)]).astype(np.float32)
    xs = np.concatenate([xs, -xs])
    got = np.array([_tanh_float32(v) for v in xs[::7]], np.float64)
    exact = np.tanh(xs[::7].astype(np.float64))
    assert (np.abs(got - exact) <= 4e-7 * np.abs(exact) + 1e-45).all()
    assert (np.sign(got) == np.sign(exact)).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_is_relatively_exact_on_both_sides(dtype: type) -> None:
    """σ within 2.5e-7 relative (float32; 1e-15 in float64) of the exact one from -87 to 87,
    however small: a saturated gate of 1e-30 is as exact as one of ½.  Far left it is tiny, not 0
    (at most 1.6e-38 in float32); NaN stays NaN."""
    xs = np.concatenate([np.linspace(-87, 87, 400_001), -np.geomspace(1e-30, 87, 20_001),
                         np.geomspace(1e-30, 87, 20_001), [0.0, -0.0]]).astype(dtype)
    got = _sigmoid_of(xs).astype(np.float64)
    exact = 1 / (1 + np.exp(-xs.astype(np.float64)))
    tol = 2.5e-7 if dtype == np.float32 else 1e-15
    assert (np.abs(got - exact) <= tol * exact).all()
    far = _sigmoid_of(np.array([-88.0, -200.0, -np.inf, np.inf, np.nan], dtype))
    assert (far[:3] >= 0).all() and (far[:3] <= 1.7e-38).all()
    assert far[3] == 1 and np.isnan(far[4])
