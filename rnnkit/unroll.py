"""The one backpropagation-through-time loop, shared by every cell, layer and direction.

Everything here is feature-major and single-direction: a sequence is ``(F, T, B)``, one step's
state is ``(H, B)``.  Bidirectional and stacked layers are compositions of these two functions
(:mod:`rnnkit.layers.recurrent`).

Where the time goes, and why the loop looks the way it does:

* The whole time loop is compiled (numba): the loop below is written once and compiled once per
  cell kind, each step one call of the cell's kernel (:mod:`rnnkit.cells`), which does the
  step's one matrix product and all its gate arithmetic in one pass.  Nothing returns to Python
  and nothing is allocated per step.
* The input projection ``W_ih x`` is hoisted out of the per-step work: one matrix product per
  chunk of steps (about 512 columns, so its output stays in cache); the weight gradients are one
  matrix product each after the loop.  Only ``W_hh h_prev`` (inside the cell step) and
  ``W_hhᵀ da`` (inside its backward) stay in the loop.
* The step caches are ``(T, rows, B)`` so each step's block is contiguous; the gradients of the
  pre-activations are written straight into the ``(G*H, T, B)`` arrays that the weight-gradient
  products read.
* Variable lengths use the packed-sequence trick: the batch is sorted by length (longest first),
  so at step ``t`` the sequences still running are the first ``batch_sizes[t]`` columns and the
  step simply works on that prefix.  Finished sequences keep their last state; their outputs stay
  zero; no masks are multiplied in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numba
import numpy as np

from rnnkit._blas import gemm
from rnnkit._types import Array, IntArray
from rnnkit.cells import CellSpec, step_backward, step_forward
from rnnkit.cells._spec import KERNEL_OPTIONS, empty_state

_CHUNK_COLUMNS = 512
"""Columns (steps x batch) of one input-projection GEMM in the forward loop."""


class Weights(NamedTuple):
    """One direction of one layer, in PyTorch's layouts."""

    w_ih: Array  # (G*H, I)
    w_hh: Array  # (G*H, H)
    b_ih: Array  # (G*H,)
    b_hh: Array  # (G*H,)


class UnrollCache(NamedTuple):
    """Everything :func:`unroll_backward` needs from :func:`unroll_forward`."""

    x: Array                     # (I, T, B) the input sequence
    states: tuple[Array, ...]    # h: (H, T+1, B), slot 0 the initial state; c (LSTM): (T+1, H, B)
    steps: tuple[Array, Array]   # the cell's cache fields ca, cb, each (T, rows*H, B) (rows may be 0)
    batch_sizes: IntArray | None  # (T,) sequences still running at each step; None: all of them


def batch_sizes_from_lengths(lengths: IntArray, T: int) -> IntArray:
    """``batch_sizes[t]`` = number of sequences longer than ``t`` (lengths sorted descending)."""
    return (lengths[None, :] > np.arange(T)[:, None]).sum(axis=1)


def _active(batch_sizes: IntArray | None, T: int, B: int) -> IntArray:
    """Running columns per step, with a final 0 (after the last step every sequence has ended)."""
    active = np.zeros(T + 1, np.int64)
    active[:T] = B if batch_sizes is None else batch_sizes
    return active


@numba.njit(**KERNEL_OPTIONS)
def _forward_loop(kind, w_ih, w_hh, b_x, b_in, x2, hs2, cs, ca, cb, xp_buf, active, final_h, final_c,
                  keep_cache):  # type: ignore[no-untyped-def]
    """The time loop.  ``x2`` is the ``(I, T*B)`` input, ``hs2`` the ``(H, (T+1)*B)`` states (slot 0
    the initial one), ``cs`` the second state's slots, ``ca`` / ``cb`` the cache slots; every step
    works on the first ``active[t]`` columns."""
    B = final_h.shape[1]
    T = active.shape[0] - 1
    chunk = xp_buf.shape[1] // B
    for t in range(T):
        j = t % chunk
        if j == 0:  # W_ih x for the next chunk of steps, one matrix product
            k = min(chunk, T - t)
            gemm(False, 1.0, w_ih, x2[:, t * B : (t + k) * B], 0.0, xp_buf[:, : k * B])
        n = active[t]
        if keep_cache:
            s_prev, s_new, c_t = t, t + 1, t
        else:  # two rolling slots for c, one for the step cache
            s_prev, s_new, c_t = t % 2, 1 - t % 2, 0
        h_new = hs2[:, (t + 1) * B : (t + 1) * B + n]
        step_forward(kind, xp_buf[:, j * B : j * B + n], b_x, b_in, w_hh, hs2[:, t * B : t * B + n],
                     cs[s_prev, :, :n], h_new, cs[s_new, :, :n], ca[c_t, :, :n], cb[c_t, :, :n])
        m = active[t + 1]
        if m < n:  # sequences m..n-1 ended with this step: hand over their final states
            final_h[:, m:n] = h_new[:, m:n]
            if final_c.shape[0] > 0:
                final_c[:, m:n] = cs[s_new, :, m:n]


@numba.njit(**KERNEL_OPTIONS)
def _backward_loop(kind, w_hh, hs2, cs, ca, cb, d_out2, dh, dc, dA2, dAh2, active):  # type: ignore[no-untyped-def]
    """BPTT: ``dh`` (``dc``) carry the state gradients from the last step to the first; each step's
    pre-activation gradients go into columns ``t*B ..`` of ``dA2`` / ``dAh2`` (zero past a sequence's end)."""
    B = dh.shape[1]
    T = active.shape[0] - 1
    for t in range(T - 1, -1, -1):
        n = active[t]
        if d_out2.shape[0] > 0:
            dh[:, :n] += d_out2[:, t * B : t * B + n]
        step_backward(kind, dh[:, :n], dc[:, :n], hs2[:, t * B : t * B + n], cs[t, :, :n],
                      hs2[:, (t + 1) * B : (t + 1) * B + n], ca[t, :, :n], cb[t, :, :n], w_hh,
                      dA2[:, t * B : t * B + n], dAh2[:, t * B : t * B + n])
        if n < B:  # steps past a sequence's end contribute nothing to the weight gradients
            dA2[:, t * B + n : (t + 1) * B] = 0
            dAh2[:, t * B + n : (t + 1) * B] = 0


# Both transposing copies go time step by time step, and within a step feature by feature: a step's
# (B, F) block is then read and written while it is in cache, and the writes touch B rows at a time
# (walking f in the inner loop instead would write across F rows T*B apart: a TLB miss per element).
@numba.njit(**KERNEL_OPTIONS)
def _transpose_bt_to_ft(a, order, out):  # type: ignore[no-untyped-def]
    B, T, F = a.shape
    for t in range(T):
        for f in range(F):
            dst = out[f, t]
            for b in range(B):
                dst[b] = a[order[b], t, f]


@numba.njit(**KERNEL_OPTIONS)
def _transpose_ft_to_bt(a, order, out):  # type: ignore[no-untyped-def]
    F, T, B = a.shape
    for t in range(T):
        for b in range(B):
            dst, src = out[b, t], order[b]
            for f in range(F):
                dst[f] = a[f, t, src]


def to_feature_major(a: Array, order: IntArray | None = None) -> Array:
    """``(B, T, F)`` -> a new C-contiguous ``(F, T, B)``, row ``b`` taken from ``a[order[b]]`` if given.

    One compiled pass (NumPy's 3-D transposing copy is several times slower); any byte order in,
    native out.
    """
    B = a.shape[0]
    a = a.astype(a.dtype.newbyteorder("="), copy=False)
    out = np.empty((a.shape[2], a.shape[1], B), a.dtype)
    _transpose_bt_to_ft(a, np.arange(B) if order is None else np.asarray(order, np.int64), out)
    return out


def to_batch_first(a: Array, order: IntArray | None = None) -> Array:
    """``(F, T, B)`` -> a new C-contiguous ``(B, T, F)``, row ``b`` taken from column ``order[b]`` if given.

    Always a copy: the result never shares memory with ``a`` (which may be part of a cache).
    """
    B = a.shape[2]
    out = np.empty((B, a.shape[1], a.shape[0]), a.dtype)
    _transpose_ft_to_bt(a, np.arange(B) if order is None else np.asarray(order, np.int64), out)
    return out


def unroll_forward(
    cell: CellSpec,
    weights: Weights,
    x: Array,
    state0: Sequence[Array],
    batch_sizes: IntArray | None = None,
    keep_cache: bool = True,
) -> tuple[Array, tuple[Array, ...], UnrollCache | None]:
    """Run ``cell`` over ``x`` from ``state0``.

    Args:
        x: ``(I, T, B)`` input sequence, C-contiguous.
        state0: one ``(H, B)`` array per state of the cell (``h``, and ``c`` for the LSTM).
        batch_sizes: ``(T,)`` non-increasing active-column counts (lengths sorted descending),
            or None when every sequence runs all ``T`` steps.
        keep_cache: False for inference: no per-step caches are stored, and ``None`` is returned
            in their place.

    Returns:
        ``(out, final, cache)``: ``out`` ``(H, T, B)`` the hidden state at every step (zero past a
        sequence's end), ``final`` one ``(H, B)`` array per state (each sequence's state after its
        last step), and the cache for :func:`unroll_backward`.
    """
    I, T, B = x.shape
    GH, H = weights.w_hh.shape
    dtype = weights.w_hh.dtype
    b_x, b_in = cell.split_bias(weights.b_ih, weights.b_hh)
    x = np.ascontiguousarray(x)

    # The input side of the gates for a chunk of steps at a time: one GEMM of about _CHUNK_COLUMNS
    # columns is as fast per column as one over all T*B, and its output, reused chunk after chunk,
    # stays in cache instead of being a fresh (G*H, T*B) array.
    chunk = max(1, min(T, _CHUNK_COLUMNS // B))
    xp_buf = np.empty((GH, chunk * B), dtype)

    # h doubles as the layer's output, so it is laid out (H, T+1, B): the next layer's input
    # projection is then one GEMM on it, without a transpose.  Without a cache the other state
    # only needs two slots (previous and new) and the step cache one.
    slots = T + 1 if keep_cache else 2
    hs = np.zeros((H, T + 1, B), dtype)
    hs[:, 0] = state0[0]
    cs = np.empty((slots, H, B), dtype) if len(state0) > 1 else np.empty((slots, 0, 0), dtype)
    if len(state0) > 1:
        cs[0] = state0[1]
    ca, cb = (np.empty((T if keep_cache else 1, rows * H, B), dtype) for rows in cell.cache_rows)
    final = [np.array(s, dtype=dtype, copy=True) for s in state0]
    final_c = final[1] if len(final) > 1 else empty_state(dtype)

    _forward_loop(cell.kind, weights.w_ih, weights.w_hh, b_x, b_in, x.reshape(I, T * B),
                  hs.reshape(H, (T + 1) * B), cs, ca, cb, xp_buf, _active(batch_sizes, T, B), final[0], final_c,
                  keep_cache)

    out = hs[:, 1:]
    states = (hs, cs) if len(state0) > 1 else (hs,)
    cache = UnrollCache(x, states, (ca, cb), batch_sizes) if keep_cache else None
    return out, tuple(final), cache


def unroll_backward(
    cell: CellSpec,
    weights: Weights,
    cache: UnrollCache,
    d_out: Array | None,
    d_final: Sequence[Array | None] | None = None,
) -> tuple[Array, tuple[Array, ...], Weights]:
    """Backpropagation through time for :func:`unroll_forward`.

    Args:
        d_out: ``(H, T, B)`` gradient of the loss with respect to ``out`` (None: zero).
        d_final: gradients with respect to ``final`` (None, or None entries: zero).

    Returns:
        ``(dx, d_state0, grads)``: ``dx`` ``(I, T, B)``, one ``(H, B)`` gradient per initial
        state, and the weight gradients in a :class:`Weights` (same layouts as ``weights``).
    """
    x, states, (ca, cb), batch_sizes = cache
    I, T, B = x.shape
    GH, H = weights.w_hh.shape
    dtype = weights.w_hh.dtype
    hs = states[0]
    cs = states[1] if len(states) > 1 else np.empty((1, 0, 0), dtype)

    d_state = [
        np.zeros((H, B), dtype) if d_final is None or d is None else np.array(d, dtype=dtype, copy=True)
        for d in (d_final if d_final is not None else [None] * len(states))
    ]
    dA = np.empty((GH, T, B), dtype)
    dAh = np.empty((GH, T, B), dtype) if cell.separate_hidden_grad else dA
    d_out2 = empty_state(dtype) if d_out is None else np.ascontiguousarray(d_out, dtype=dtype).reshape(H, T * B)
    dc = d_state[1] if len(d_state) > 1 else empty_state(dtype)

    _backward_loop(cell.kind, weights.w_hh, hs.reshape(H, (T + 1) * B), cs, ca, cb, d_out2, d_state[0], dc,
                   dA.reshape(GH, T * B), dAh.reshape(GH, T * B), _active(batch_sizes, T, B))

    # The sums over time of the per-step products, each as one GEMM over all T*B columns.
    dA2 = dA.reshape(GH, T * B)                     # views
    dAh2 = dAh.reshape(GH, T * B)
    h_prev = hs[:, :T].reshape(H, T * B)            # a view: the (T, B) block of each row is contiguous
    grads = Weights(
        w_ih=dA2 @ x.reshape(I, T * B).T,
        w_hh=dAh2 @ h_prev.T,
        b_ih=dA2.sum(axis=1),
        b_hh=dAh2.sum(axis=1),
    )
    dx = (weights.w_ih.T @ dA2).reshape(I, T, B)
    return dx, tuple(d_state), grads
