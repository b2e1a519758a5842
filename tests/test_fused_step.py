"""The LSTM's forward step as register tiles (rnnkit._tiles.fused_step) against the NumPy oracle.

The step kernel makes ``W_hh h_prev`` tile by tile and runs the cell's equations on the sums in
registers, so every tile shape must be right: two units or one (an odd share of the units), one or
two vectors of columns, the last masked to any width, the thin-batch path (BLAS's product first,
then the equations unit by unit as scalars), a projection, rows that are strided blocks of larger
arrays, and nothing written outside the units and columns asked for; and the same bits from a pack
of [W_ih | W_hh] (step_pack) with the input x (the step making its own input projection) as from
W_hh itself after the tile kernel's projection W_ih x made first.  float64 to rounding; float32
within the float32 tanh's precision.  A second test runs the gates through the vector tanh and σ
(with AVX-512 their division is a refined reciprocal estimate) on a dense grid of pre-activations.
"""

from __future__ import annotations

import numpy as np
import numpy_cells as oracle
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rnnkit
from rnnkit._tiles import MIN_COLUMNS, tile_gemm
from rnnkit.cells import LSTM_CELL, step_forward, step_pack
from rnnkit.cells._spec import empty_pack, empty_state, empty_vector

TOL = {np.float64: 1e-12, np.float32: 2e-6}


def _wide(rng: np.random.Generator, rows: int, cols: int, dtype: type, scale: float = 1.0) -> np.ndarray:
    """A ``(rows, cols)`` block whose rows are strided (inside a wider array), filled with noise."""
    return (rng.standard_normal((rows, cols + 5)) * scale).astype(dtype)[:, 2 : 2 + cols]


def _run(dtype: type, H: int, n: int, u0: int, u1: int, proj: int, seed: int) -> None:
    for packing in ("none", "w_ih"):
        _check(dtype, H, n, u0, u1, proj, seed, packing)


def _check(dtype: type, H: int, n: int, u0: int, u1: int, proj: int, seed: int, packing: str) -> None:
    """One step; ``packing``: "none" (W_hh itself) or "w_ih" ([W_ih | W_hh] packed, the step given
    x and making W_ih x itself)."""
    rng = np.random.default_rng(seed)
    P = proj or H
    xp, h_prev, c_prev = _wide(rng, 4 * H, n, dtype), _wide(rng, P, n, dtype, 0.5), _wide(rng, H, n, dtype)
    I = 1 + seed % 13
    x = _wide(rng, I, n, dtype)
    w_ih = (rng.standard_normal((4 * H, I)) / np.sqrt(I)).astype(dtype)
    if packing == "w_ih":  # the projection as the loop would make it apart: the tile kernel's
        xp = np.empty((4 * H, n), dtype)
        tile_gemm(False, 1.0, w_ih, x, 0.0, xp)
    b_x = (rng.standard_normal(4 * H) * 0.5).astype(dtype)
    w_hh = (rng.standard_normal((4 * H, P)) / np.sqrt(P)).astype(dtype)
    w_hr = (rng.standard_normal((P, H)) / np.sqrt(H)).astype(dtype) if proj else empty_state(np.dtype(dtype))
    # Outputs pre-filled with a marker, to see that nothing outside units u0..u1-1 is written.
    h, c, ca = (np.full(s, 7.0, dtype) for s in ((P, n), (H, n), (4 * H, n)))
    cb = np.full((2 * H if proj else H, n), 7.0, dtype)
    w_pack = empty_pack(np.dtype(dtype))
    if packing != "none":
        assert LSTM_CELL.pack_shape is not None
        w_pack = np.full(LSTM_CELL.pack_shape(u1 - u0, I + P), np.nan, dtype)
        step_pack(LSTM_CELL.kind, w_ih, w_hh, u0, u1, w_pack)
    step_forward(LSTM_CELL.kind, x if packing == "w_ih" else xp, b_x, b_x[:0], w_hh, w_hr,
                 empty_vector(np.dtype(dtype)), h_prev, c_prev, h, c, ca, cb, u0, u1, w_pack)
    # The same products in the same order: the same bits as from W_hh itself (except the thin
    # path's product, BLAS's, in another order than the tiles a pack always takes).
    if packing != "none":
        again = [np.full_like(a, 7.0) for a in (h, c, ca, cb)]
        step_forward(LSTM_CELL.kind, xp, b_x, b_x[:0], w_hh, w_hr, empty_vector(np.dtype(dtype)), h_prev, c_prev,
                     *again, u0, u1)
        for got, want in zip((h, c, ca, cb), again, strict=True):
            if n < MIN_COLUMNS:
                np.testing.assert_allclose(got, want, rtol=TOL[dtype], atol=TOL[dtype])
            else:
                np.testing.assert_array_equal(got, want)
    h_ref, c_ref, gates_ref, tanh_c_ref = oracle.lstm_forward(xp + b_x[:, None], h_prev, c_prev, w_hh)
    units = np.arange(u0, u1)
    rows = np.concatenate([g * H + units for g in range(4)])
    tol = TOL[dtype]
    np.testing.assert_allclose(c[units], c_ref[units], rtol=tol, atol=tol)
    np.testing.assert_allclose(ca[rows], gates_ref[rows], rtol=tol, atol=tol)
    np.testing.assert_allclose(cb[units], tanh_c_ref[units], rtol=tol, atol=tol)
    if proj:   # h = W_hr ĥ, ĥ kept in the cache's second half (always all units)
        np.testing.assert_allclose(cb[H:], h_ref, rtol=tol, atol=tol)
        np.testing.assert_allclose(h, w_hr.astype(np.float64) @ h_ref, rtol=10 * tol, atol=10 * tol)
    else:
        np.testing.assert_allclose(h[units], h_ref[units], rtol=tol, atol=tol)
    others = np.setdiff1d(np.arange(H), units)
    assert (c[others] == 7).all() and (cb[others] == 7).all()
    assert (ca[np.setdiff1d(np.arange(4 * H), rows)] == 7).all()
    if not proj:
        assert (h[others] == 7).all()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n", [1, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 48, 64, 100, 130])
def test_fused_step_every_column_count(dtype: type, n: int) -> None:
    # H = 11: two-unit tiles then a one-unit tile; u0 = 3 (odd start) in the second call.
    _run(dtype, 11, n, 0, 11, 0, seed=n)
    _run(dtype, 11, n, 3, 10, 0, seed=n + 1)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n", [2, 16, 40])
def test_fused_step_with_projection(dtype: type, n: int) -> None:
    _run(dtype, 9, n, 0, 9, 5, seed=n)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.integers(1, 140), st.data(), st.sampled_from([np.float32, np.float64]))
def test_fused_step_any_shape(H: int, n: int, data: st.DataObject, dtype: type) -> None:
    u0 = data.draw(st.integers(0, H - 1))
    u1 = data.draw(st.integers(u0 + 1, H))
    _run(dtype, H, n, u0, u1, 0, seed=H * 1000 + n)


@pytest.mark.parametrize("n", [5, 32, 37])
def test_fused_gates_on_a_dense_grid(n: int) -> None:
    """With W_hh = 0 and c_prev = 0 the cache's gates are σ and tanh of the pre-activations
    themselves: every float32 gate within 5e-7 relative of the exact one, σ included where it is
    tiny (a saturated gate: a σ made as ½·tanh(½x) + ½ had only absolute precision there)."""
    grid = np.concatenate([np.linspace(-87, 87, 40_001), np.geomspace(1e-8, 87, 4_001),
                           -np.geomspace(1e-8, 87, 4_001), [0.0, -0.0, 1e-38]]).astype(np.float32)
    H = 4
    cols = -(-grid.size // (4 * H))
    pre = np.resize(grid, 4 * H * cols).reshape(4 * H, cols)[:, :cols]
    for c0 in range(0, cols, n):
        xp = np.ascontiguousarray(pre[:, c0 : c0 + n])
        m = xp.shape[1]
        zeros = np.zeros((H, m), np.float32)
        h, c, ca, cb = (np.empty(s, np.float32) for s in ((H, m), (H, m), (4 * H, m), (H, m)))
        step_forward(LSTM_CELL.kind, xp, np.zeros(4 * H, np.float32), np.empty(0, np.float32),
                     np.zeros((4 * H, H), np.float32), empty_state(np.dtype(np.float32)),
                     empty_vector(np.dtype(np.float32)), zeros, zeros, h, c, ca, cb, 0, H)
        x = xp.astype(np.float64)
        exact = 1 / (1 + np.exp(-x))
        exact[2 * H : 3 * H] = np.tanh(x[2 * H : 3 * H])
        assert (np.abs(ca - exact) <= 5e-7 * np.abs(exact) + 1e-37).all()
        gates = ca.astype(np.float64)                               # c = i ⊙ g (c_prev = 0), one rounding
        np.testing.assert_allclose(c, gates[:H] * gates[2 * H : 3 * H], rtol=1.2e-7, atol=1e-30)
        np.testing.assert_allclose(cb, np.tanh(c.astype(np.float64)), rtol=5e-7, atol=1e-30)


@pytest.mark.parametrize("n", [16, 37])
def test_fused_gates_far_out_and_not_finite(n: int) -> None:
    """Beyond the grid: σ of -87 and below is tiny (at most 1.6e-38) but not negative, of +inf 1;
    tanh of ±inf is ±1; NaN stays NaN in every gate (the tiles' bit-built powers of two and their
    reciprocal estimate must not turn it into a number)."""
    H = 4
    xs = np.array([-87.0, -88.0, -100.0, -1e30, -np.inf, np.inf, 1e30, np.nan], np.float32)
    xp = np.resize(xs, (4 * H, n)).astype(np.float32)
    zeros = np.zeros((H, n), np.float32)
    h, c, ca, cb = (np.empty(s, np.float32) for s in ((H, n), (H, n), (4 * H, n), (H, n)))
    step_forward(LSTM_CELL.kind, xp, np.zeros(4 * H, np.float32), np.empty(0, np.float32),
                 np.zeros((4 * H, H), np.float32), empty_state(np.dtype(np.float32)),
                 empty_vector(np.dtype(np.float32)), zeros, zeros, h, c, ca, cb, 0, H)
    sig = np.concatenate([ca[: 2 * H], ca[3 * H :]])
    x_sig = np.concatenate([xp[: 2 * H], xp[3 * H :]])
    tanh_g, x_g = ca[2 * H : 3 * H], xp[2 * H : 3 * H]
    assert np.isnan(sig[np.isnan(x_sig)]).all() and np.isnan(tanh_g[np.isnan(x_g)]).all()
    far_left = x_sig <= -87
    assert ((sig[far_left] >= 0) & (sig[far_left] <= 1.7e-38)).all()
    assert (sig[x_sig >= 1e30] == 1).all()
    assert (tanh_g[x_g == np.inf] == 1).all() and (tanh_g[x_g == -np.inf] == -1).all()


def test_saturated_output_gates_match_torch_relatively() -> None:
    """Gates pushed far into saturation (σ near 1e-6) keep their relative precision: one LSTM step
    from a zero state, h = o ⊙ tanh(i ⊙ g) with every gate's bias -12, in float32 against torch in
    float64.  (With σ = ½·tanh(½x) + ½ the output was percents off here.)"""
    import torch

    B, I, H = 37, 6, 10
    layer = rnnkit.LSTM(I, H, seed=0)
    layer.params["bias_ih_l0"][...] = -12.0
    x = np.random.default_rng(0).standard_normal((B, 1, I)).astype(np.float32)
    out = layer.forward(x, keep_cache=False)[0].astype(np.float64)
    peer = torch.nn.LSTM(I, H, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        for name, value in layer.params.items():
            getattr(peer, name).copy_(torch.from_numpy(value.astype(np.float64)))
        ref = peer(torch.from_numpy(x.astype(np.float64)))[0].numpy()
    assert 0 < np.abs(ref).max() < 1e-9
    np.testing.assert_allclose(out, ref, rtol=3e-6, atol=0)
