"""The time loops do the layout copies themselves (``x_order`` / ``out_dest`` / ``d_order`` of
rnnkit.unroll).

Through one direction, the forward loop gathers the first layer's inputs straight from the
batch-first ``x`` (keeping the cache's feature-major copy on the way), writes the last layer's
states batch-first, and the backward loop gathers the top layer's ``d_out`` from its batch-first
form.  The results must be those of separate layout copies around the loops: checked bit for bit at
the unroll level (forward, cache and backward), at the layer level (inference against the cached
path), for every cell, stacked, with projection, zoneout, variable lengths and both ways of
splitting the loop over threads, and against PyTorch.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch
from conftest import build_torch_twin, run_torch

import rnnkit
from rnnkit.cells import GRU_CELL, LSTM_CELL, RNN_TANH_CELL
from rnnkit.unroll import (
    StepMasks,
    Weights,
    batch_sizes_from_lengths,
    to_batch_first,
    to_feature_major,
    unroll_backward,
    unroll_forward,
)

KINDS = {"rnn": rnnkit.RNN, "lstm": rnnkit.LSTM, "gru": rnnkit.GRU}


def _both(layer: Any, x: np.ndarray, lengths: np.ndarray | None, state: Any = None) -> tuple[Any, Any]:
    trained = layer.forward(x, state, lengths, keep_cache=True)[:2]
    inferred = layer.forward(x, state, lengths, keep_cache=False)[:2]
    return trained, inferred


def _assert_close(a: Any, b: Any, tol: float) -> None:
    out_a, state_a = a
    out_b, state_b = b
    assert out_b.shape == out_a.shape
    np.testing.assert_allclose(out_a, out_b, rtol=tol, atol=tol)
    for s, t in zip(state_a if isinstance(state_a, tuple) else (state_a,),
                    state_b if isinstance(state_b, tuple) else (state_b,), strict=True):
        np.testing.assert_allclose(s, t, rtol=tol, atol=tol)


def _assert_same(a: Any, b: Any) -> None:
    out_a, state_a = a
    out_b, state_b = b
    assert out_b.flags.c_contiguous and out_b.shape == out_a.shape
    np.testing.assert_array_equal(out_a, out_b)
    for s, t in zip(state_a if isinstance(state_a, tuple) else (state_a,),
                    state_b if isinstance(state_b, tuple) else (state_b,), strict=True):
        np.testing.assert_array_equal(s, t)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind,options", [
    ("rnn", {}), ("lstm", {}), ("gru", {}), ("lstm", {"num_layers": 3}), ("gru", {"num_layers": 2}),
    ("lstm", {"proj_size": 3}), ("lstm", {"zoneout": 0.3}), ("rnn", {"nonlinearity": "relu", "num_layers": 2}),
])
@pytest.mark.parametrize("B,T,I,H", [(1, 1, 3, 4), (5, 7, 21, 16), (37, 4, 16, 40), (32, 3, 35, 17)])
@pytest.mark.parametrize("variable", [False, True])
def test_inference_equals_the_training_path(kind: str, options: dict[str, Any], dtype: Any, B: int, T: int,
                                            I: int, H: int, variable: bool) -> None:
    layer = KINDS[kind](I, H, dtype=dtype, seed=2, **options)
    rng = np.random.default_rng(B * T + I)
    for value in layer.params.values():
        value[...] = rng.uniform(-0.6, 0.6, value.shape)
    x = rng.standard_normal((B, T, I)).astype(dtype)
    lengths = rng.integers(1, T + 1, size=B) if variable else None
    _assert_same(*_both(layer, x, lengths))


@pytest.mark.parametrize("split", ["units", "batch"])
@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_threaded_inference_equals_the_training_path(monkeypatch: pytest.MonkeyPatch, split: str, kind: str) -> None:
    monkeypatch.setattr(rnnkit.unroll, "_MIN_SPLIT_FLOPS", 0)
    monkeypatch.setattr(rnnkit.unroll, "_MIN_PART_UNITS", 2)
    monkeypatch.setattr(rnnkit.unroll, "SPLIT_UNITS", split == "units")
    monkeypatch.setattr(rnnkit.unroll, "SPLIT_BATCH", split == "batch")
    layer = KINDS[kind](19, 24, num_layers=2, seed=4)
    rng = np.random.default_rng(9)
    x = rng.standard_normal((45, 6, 19)).astype(np.float32)
    with rnnkit.threads(2):
        for lengths in (None, rng.integers(1, 7, size=45)):
            _assert_same(*_both(layer, x, lengths))


def test_inference_equals_torch_with_lengths_and_a_state() -> None:
    B, T, I, H = 6, 9, 20, 18
    layer = rnnkit.LSTM(I, H, num_layers=2, dtype=np.float64, seed=0)
    peer = torch.nn.LSTM(I, H, num_layers=2, batch_first=True, dtype=torch.float64)
    rng = np.random.default_rng(1)
    with torch.no_grad():
        for name, value in layer.params.items():
            value[...] = rng.uniform(-0.5, 0.5, value.shape)
            getattr(peer, name).copy_(torch.from_numpy(value))
    x = rng.standard_normal((B, T, I))
    h0, c0 = rng.standard_normal((2, B, H)), rng.standard_normal((2, B, H))
    lengths = np.array([9, 3, 9, 1, 5, 8])
    out, (h, c), _ = layer.forward(x, (h0, c0), lengths, keep_cache=False)
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.from_numpy(x), torch.from_numpy(lengths),
                                                     batch_first=True, enforce_sorted=False)
    with torch.no_grad():
        ref, (ref_h, ref_c) = peer(packed, (torch.from_numpy(h0), torch.from_numpy(c0)))
    ref_out, _ = torch.nn.utils.rnn.pad_packed_sequence(ref, batch_first=True, total_length=T)
    np.testing.assert_allclose(out, ref_out.numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(h, ref_h.numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(c, ref_c.numpy(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("split", ["none", "units", "batch"])
@pytest.mark.parametrize("cell", [RNN_TANH_CELL, LSTM_CELL, GRU_CELL], ids=lambda c: c.name)
@pytest.mark.parametrize("variable", [False, True])
@pytest.mark.parametrize("zoneout", [False, True])
def test_unroll_with_batch_first_ends_equals_the_copies(monkeypatch: pytest.MonkeyPatch, split: str, cell: Any,
                                                        variable: bool, zoneout: bool) -> None:
    if split != "none":
        monkeypatch.setattr(rnnkit.unroll, "_MIN_SPLIT_FLOPS", 0)
        monkeypatch.setattr(rnnkit.unroll, "_MIN_PART_UNITS", 2)
        monkeypatch.setattr(rnnkit.unroll, "SPLIT_UNITS", split == "units")
        monkeypatch.setattr(rnnkit.unroll, "SPLIT_BATCH", split == "batch")
    B, T, I, H, G = 35, 5, 18, 20, cell.num_gates
    rng = np.random.default_rng(7)
    w = Weights(*(rng.uniform(-0.5, 0.5, shape) for shape in ((G * H, I), (G * H, H), (G * H,), (G * H,))))
    x = rng.standard_normal((B, T, I))
    d_out = rng.standard_normal((B, T, H))
    lengths = rng.integers(1, T + 1, size=B) if variable else np.full(B, T)
    order = np.argsort(-lengths, kind="stable")
    batch_sizes = batch_sizes_from_lengths(lengths[order], T) if variable else None
    state0 = tuple(rng.standard_normal((H, B)) for _ in cell.state_names)
    masks = None
    if zoneout:
        masks = StepMasks(zone_h=(rng.random((T, H, B)) < 0.3).astype(float),
                          zone_c=(rng.random((T, H, B)) < 0.3).astype(float) if G == 4 else None)
    with rnnkit.threads(2):
        out_a, final_a, cache_a = unroll_forward(cell, w, to_feature_major(x, order), state0, batch_sizes, True, masks)
        out_b, final_b, cache_b = unroll_forward(cell, w, x, state0, batch_sizes, True, masks, x_order=order,
                                                 out_dest=order)
        np.testing.assert_array_equal(to_batch_first(out_a, np.argsort(order)), out_b)
        for a, b in zip(final_a, final_b, strict=True):
            np.testing.assert_array_equal(a, b)
        assert cache_a is not None and cache_b is not None
        np.testing.assert_array_equal(cache_a.x, cache_b.x)
        grads_a = unroll_backward(cell, w, cache_a, to_feature_major(d_out, order))
        grads_b = unroll_backward(cell, w, cache_b, d_out, d_order=order)
    dx_a, d0_a, g_a = grads_a
    dx_b, d0_b, g_b = grads_b
    np.testing.assert_array_equal(dx_a, dx_b)
    for a, b in zip(d0_a, d0_b, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(g_a, g_b, strict=True):
        if a is not None:
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("split", ["none", "units", "batch"])
@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_the_loops_refuse_what_they_gather(monkeypatch: pytest.MonkeyPatch, split: str, kind: str,
                                           value: float) -> None:
    """x and d_out are scanned for NaN and ±inf by the loops as they gather them: every position,
    with the loop whole or split either way, and with variable lengths (scanned first)."""
    if split != "none":
        monkeypatch.setattr(rnnkit.unroll, "_MIN_SPLIT_FLOPS", 0)
        monkeypatch.setattr(rnnkit.unroll, "_MIN_PART_UNITS", 2)
        monkeypatch.setattr(rnnkit.unroll, "SPLIT_UNITS", split == "units")
        monkeypatch.setattr(rnnkit.unroll, "SPLIT_BATCH", split == "batch")
    B, T, I, H = 37, 6, 19, 24
    layer = KINDS[kind](I, H, num_layers=2, seed=1)
    rng = np.random.default_rng(3)
    clean = rng.standard_normal((B, T, I)).astype(np.float32)
    with rnnkit.threads(2):
        for where in [(0, 0, 0), (B - 1, T - 1, I - 1), (17, 3, 16), (31, 5, 2)]:
            for lengths in (None, np.full(B, T)):
                x = clean.copy()
                x[where] = value
                for keep_cache in (True, False):
                    with pytest.raises(ValueError, match="^x contains NaN or infinite values$"):
                        layer.forward(x, lengths=lengths, keep_cache=keep_cache)
                out, _, cache = layer.forward(clean, lengths=lengths)
                d_out = np.ones_like(out)
                d_out[where[0], where[1], where[2] % H] = value
                with pytest.raises(ValueError, match="^d_out contains NaN or infinite values$"):
                    layer.backward(d_out, None, cache)


def test_a_refused_input_draws_nothing_from_the_generator() -> None:
    layer = rnnkit.LSTM(5, 8, num_layers=2, dropout=0.3, weight_drop=0.2, seed=0)
    x = np.zeros((3, 4, 5), np.float32)
    x[2, 3, 4] = np.nan
    rng = np.random.default_rng(11)
    before = rng.bit_generator.state
    with pytest.raises(ValueError, match="x contains NaN"):
        layer.forward(x, training=True, rng=rng)
    assert rng.bit_generator.state == before


@pytest.mark.parametrize("order", [5, [0, 1], [0, 0, 1], [0, 1, 3], [[0, 1, 2]], [0.0, 1.0, 2.0]])
def test_layout_copies_refuse_an_order_that_is_not_a_permutation(order: Any) -> None:
    a = np.zeros((3, 2, 4), np.float32)
    with pytest.raises(ValueError, match="permutation of 0..2"):
        to_feature_major(a, order)
    with pytest.raises(ValueError, match="permutation of 0..2"):
        to_batch_first(np.zeros((4, 2, 3), np.float32), order)


def test_layout_copies_take_any_byte_order() -> None:
    a = np.arange(24, dtype=">f4").reshape(2, 3, 4)
    np.testing.assert_array_equal(to_feature_major(a), a.transpose(2, 1, 0))
    np.testing.assert_array_equal(to_batch_first(a), a.transpose(2, 1, 0))


@pytest.mark.parametrize("a", [np.zeros((3, 4), np.float32), np.zeros((2, 3, 4), np.int64), np.zeros((1, 1, 1, 1))])
def test_layout_copies_refuse_other_arrays(a: np.ndarray) -> None:
    with pytest.raises(ValueError, match="3-D float32 or float64"):
        to_feature_major(a)
    with pytest.raises(ValueError, match="3-D float32 or float64"):
        to_batch_first(a)


@pytest.mark.parametrize("split", ["none", "units", "batch"])
@pytest.mark.parametrize("variable", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("proj_size", [0, 5])
def test_packed_weights_give_the_same_bits(monkeypatch: pytest.MonkeyPatch, split: str, variable: bool,
                                           dtype: Any, proj_size: int) -> None:
    """From T = _MIN_PACK_STEPS steps the LSTM's loop packs [W_ih | W_hh] per thread and each step
    makes its input projection too: the same bits as the tile kernel's projection made apart and
    W_hh read in place (the same products in the same order, with two threads), to rounding where
    the loop without the pack sums in another order (OpenBLAS's projection with one thread; the
    thin steps of variable lengths), and torch's in float64."""
    monkeypatch.setattr(rnnkit.unroll, "_MIN_SPLIT_FLOPS", 0)
    monkeypatch.setattr(rnnkit.unroll, "_MIN_PART_UNITS", 2)
    monkeypatch.setattr(rnnkit.unroll, "SPLIT_UNITS", split == "units")
    monkeypatch.setattr(rnnkit.unroll, "SPLIT_BATCH", split == "batch")
    B, T, I, H = 19, rnnkit.unroll._MIN_PACK_STEPS + 3, 7, 13
    layer = rnnkit.LSTM(I, H, proj_size=proj_size, dtype=dtype, seed=3)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((B, T, I)).astype(dtype)
    lengths = rng.integers(1, T + 1, size=B) if variable else None
    packs = []
    pack_shape = LSTM_CELL.pack_shape
    assert pack_shape is not None

    def counted(units: int, K: int) -> tuple[int, int, int]:
        packs.append((units, K))
        return pack_shape(units, K)

    monkeypatch.setattr(layer, "cell", dataclasses.replace(LSTM_CELL, pack_shape=counted))
    with rnnkit.threads(1 if split == "none" else 2):
        packed = [layer.forward(x, None, lengths, keep_cache=keep)[:2] for keep in (True, False)]
        assert len(packs) == 2          # both passes packed (else this test compares plain with plain)
        assert all(K == I + (proj_size or H) for _, K in packs)
        monkeypatch.setattr(rnnkit.unroll, "_MIN_PACK_STEPS", 10**9)
        plain = [layer.forward(x, None, lengths, keep_cache=keep)[:2] for keep in (True, False)]
    assert len(packs) == 2
    for a, b in zip(packed, plain, strict=True):
        # Other orders of the same sums: OpenBLAS's projection apart (one thread), or BLAS's
        # product on the steps whose running columns are too few for the tiles (variable lengths).
        if split == "none" or variable:
            _assert_close(a, b, 1e-12 if dtype == np.float64 else 2e-6)
        else:
            _assert_same(a, b)
    if dtype == np.float64 and not variable:
        peer = torch.nn.LSTM(I, H, proj_size=proj_size, batch_first=True, dtype=torch.float64)
        with torch.no_grad():
            for name, value in layer.params.items():
                getattr(peer, name).copy_(torch.from_numpy(value))
            ref, _ = peer(torch.from_numpy(x))
        np.testing.assert_allclose(packed[0][0], ref.numpy(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("aligned", [True, False])
def test_batch_first_output_streamed_or_not(dtype: Any, aligned: bool) -> None:
    """The loop writes a step's states into the batch-first output with streaming stores when the
    output starts a cache line and every tile row falls on whole vectors (here: 48 features, rows
    16..47), with plain stores otherwise (the output one element off): either way every entry of
    the step and rows asked for, in its permuted row, and nothing else."""
    from rnnkit._tiles import VECTOR_BYTES
    from rnnkit.unroll import _aligned, _scatter_columns

    B, T, F, t, f0 = 37, 3, 48, 1, 16
    rng = np.random.default_rng(3)
    src = rng.standard_normal((F, B)).astype(dtype)
    dest = rng.permutation(B).astype(np.int64)
    raw = _aligned((B * T * F + 1,), dtype)
    raw[...] = 7.0
    out = (raw[:-1] if aligned else raw[1:]).reshape(B, T, F)
    W = VECTOR_BYTES // np.dtype(dtype).itemsize
    _scatter_columns(src, f0, F, dest, 0, t, out, np.empty(W, np.int64), np.empty(W, np.int64))
    want = np.full((B, T, F), 7.0, dtype)
    want[dest, t, f0:] = src[f0:].T
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("split", ["none", "units", "batch"])
@pytest.mark.parametrize("variable", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1, 0), (2, 1, 0), (1, 2, 0), (1, 1, 5)], ids=["one", "stacked", "bidi", "proj"])
def test_packed_backward_gives_the_gradients_of_the_plain_one(monkeypatch: pytest.MonkeyPatch, split: str,
                                                             variable: bool, dtype: Any,
                                                             shape: tuple[int, int, int]) -> None:
    """From T = _MIN_PACK_STEPS steps the LSTM's backward packs [W_hh | W_ih]ᵀ per thread, and each
    step makes its share of dx = W_ihᵀ da in the same product as dh_{t-1}'s: written batch-first by
    the bottom layer's loop (through one direction), feature-major for the layer below or the other
    direction, zero past each sequence's end.  Against the backward that reads W_hhᵀ and makes dx
    after the loop (other orders of the same sums: to rounding), and against torch in float64."""
    monkeypatch.setattr(rnnkit.unroll, "_MIN_SPLIT_FLOPS", 0)
    monkeypatch.setattr(rnnkit.unroll, "_MIN_PART_UNITS", 2)
    monkeypatch.setattr(rnnkit.unroll, "SPLIT_UNITS", split == "units")
    monkeypatch.setattr(rnnkit.unroll, "SPLIT_BATCH", split == "batch")
    layers, directions, proj_size = shape
    B, T, I, H = 19, rnnkit.unroll._MIN_PACK_STEPS + 3, 37, 13   # I: 2 whole vectors and a rest, either dtype
    layer = rnnkit.LSTM(I, H, num_layers=layers, bidirectional=directions == 2, proj_size=proj_size, dtype=dtype,
                        seed=3)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((B, T, I)).astype(dtype)
    d_out = rng.standard_normal((B, T, directions * (proj_size or H))).astype(dtype)
    state = rng.standard_normal((layers * directions, B, proj_size or H)).astype(dtype), \
        rng.standard_normal((layers * directions, B, H)).astype(dtype)
    d_final = rng.standard_normal(state[0].shape).astype(dtype), rng.standard_normal(state[1].shape).astype(dtype)
    lengths = rng.integers(1, T + 1, size=B) if variable else None
    packs = []
    pack_t_shape = LSTM_CELL.pack_t_shape
    assert pack_t_shape is not None

    def counted(units: int, P: int, I_: int) -> tuple[int, int, int]:
        packs.append((units, P, I_))
        return pack_t_shape(units, P, I_)

    with rnnkit.threads(1 if split == "none" else 2):
        monkeypatch.setattr(layer, "cell", dataclasses.replace(LSTM_CELL, pack_t_shape=counted))
        _, _, cache = layer.forward(x, state, lengths)
        packed = layer.backward(d_out, d_final, cache)
        assert len(packs) == layers * directions     # every unit's backward packed
        monkeypatch.setattr(layer, "cell", dataclasses.replace(LSTM_CELL, pack_t_shape=None))
        _, _, cache = layer.forward(x, state, lengths)
        plain = layer.backward(d_out, d_final, cache)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    dx, d_state, grads = packed
    assert dx.flags.c_contiguous and dx.shape == (B, T, I)
    np.testing.assert_allclose(dx, plain[0], rtol=tol, atol=tol)
    if lengths is not None:                      # nothing past a sequence's end
        assert not dx[np.arange(T)[None, :] >= lengths[:, None]].any()
    for s, t in zip(d_state, plain[1], strict=True):
        np.testing.assert_allclose(s, t, rtol=tol, atol=tol)
    for name, g in grads.items():
        np.testing.assert_allclose(g, plain[2][name], rtol=tol, atol=tol * max(1.0, float(np.abs(g).max())))
    if dtype == np.float64:
        _, _, t_dx, t_d_state, t_grads = run_torch(build_torch_twin(layer), x, state, lengths, d_out, d_final)
        np.testing.assert_allclose(dx, t_dx, rtol=0, atol=1e-12)
        for s, t in zip(d_state, t_d_state, strict=True):
            np.testing.assert_allclose(s, t, rtol=0, atol=1e-12)
        for name, g in t_grads.items():
            np.testing.assert_allclose(grads[name], g, rtol=0, atol=1e-10)


@pytest.mark.parametrize("split", ["none", "units", "batch"])
@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("T", [5, rnnkit.unroll._MIN_PACK_STEPS + 1])
def test_no_stale_memory_reaches_a_result(monkeypatch: pytest.MonkeyPatch, split: str, kind: str, T: int) -> None:
    """Every buffer the loops allocate without zeroing is written before it is read: with each such
    allocation filled with NaN first, a training step (variable lengths, the longest shorter than T,
    so that the loops stop early; two layers, every layout copy left to the loops) gives the same
    finite results as with fresh memory.  (dW_ih once read the cache's copy of x past the longest
    sequence, where the loop had never written: stale NaN there made NaN gradients.)"""
    if split != "none":
        monkeypatch.setattr(rnnkit.unroll, "_MIN_SPLIT_FLOPS", 0)
        monkeypatch.setattr(rnnkit.unroll, "_MIN_PART_UNITS", 2)
        monkeypatch.setattr(rnnkit.unroll, "SPLIT_UNITS", split == "units")
        monkeypatch.setattr(rnnkit.unroll, "SPLIT_BATCH", split == "batch")
    B, I, H = 37, 11, 20
    layer = KINDS[kind](I, H, num_layers=2, seed=2)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    lengths = rng.integers(1, T, size=B)                  # every sequence ends before T
    d_out = rng.standard_normal((B, T, H)).astype(np.float32)

    def step() -> list[np.ndarray]:
        with rnnkit.threads(1 if split == "none" else 2):
            out, state, cache = layer.forward(x, None, lengths)
            dx, d_state, grads = layer.backward(d_out, None, cache)
        states = list(state) if isinstance(state, tuple) else [state]
        d_states = list(d_state) if isinstance(d_state, tuple) else [d_state]
        return [out, *states, dx, *d_states, *grads.values()]

    fresh = step()
    aligned = rnnkit.unroll._aligned

    def poisoned(shape: tuple[int, ...], dtype: Any, zero: bool = False) -> np.ndarray:
        a = aligned(shape, dtype, zero)
        if not zero and np.dtype(dtype).kind == "f":
            a[...] = np.nan
        return a

    monkeypatch.setattr(rnnkit.unroll, "_aligned", poisoned)
    for a, b in zip(fresh, step(), strict=True):
        assert np.isfinite(b).all()
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("n", [32, 35])
def test_gate_gradients_stored_streamed_or_not(dtype: Any, aligned: bool, n: int) -> None:
    """The backward loop stores each step's gate gradients into dA with streaming stores when every
    row of the block is whole vectors starting a vector (aligned, n = 32), with plain stores
    otherwise: either way exactly the block's entries, and each row's sum added to the bias sums."""
    from rnnkit.unroll import _aligned, _copy_and_sum

    F, cols, c0 = 24, 3 * 64, 64
    rng = np.random.default_rng(8)
    src = rng.standard_normal((F, n)).astype(dtype)
    raw = _aligned((F * cols + 1,), dtype)
    raw[...] = 7.0
    out = (raw[:-1] if aligned else raw[1:]).reshape(F, cols)
    sums = np.arange(F, dtype=np.float64)
    _copy_and_sum(src, out[:, c0 : c0 + n], sums)
    want = np.full((F, cols), 7.0, dtype)
    want[:, c0 : c0 + n] = src
    np.testing.assert_array_equal(out, want)
    # (each row summed in the block's dtype first: float32's rounding of a sum of 32 or 35 terms)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(sums, np.arange(F) + src.astype(np.float64).sum(axis=1), rtol=tol, atol=tol)
