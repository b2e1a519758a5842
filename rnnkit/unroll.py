"""The one backpropagation-through-time loop, shared by every cell, layer and direction.

Everything here is feature-major and single-direction: a sequence is ``(F, T, B)``, one step's
state is ``(H, B)``.  Bidirectional and stacked layers are compositions of these two functions
(:mod:`rnnkit.layers.recurrent`).

Where the time goes, and why the loop looks the way it does:

* The input projection ``W_ih x + b`` is hoisted out of the per-step work: one matrix product
  per chunk of steps (about 512 columns); the weight gradients are one matrix product each
  after the loop.  Only ``W_hh h_prev`` (inside the
  cell step) and ``W_hhᵀ da`` (inside its backward) must stay in the loop.
* Every per-step operand is a preallocated view, written with ``out=``: the loop allocates
  nothing.  The step caches are ``(T, rows, B)`` so each step's block is contiguous.
* Variable lengths use the packed-sequence trick: the batch is sorted by length (longest first),
  so at step ``t`` the sequences still running are the first ``batch_sizes[t]`` columns and the
  step simply works on that prefix.  Finished sequences keep their last state; their outputs stay
  zero; no masks are multiplied in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from rnnkit._types import Array, IntArray
from rnnkit.cells import CellSpec

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
    states: tuple[Array, ...]    # h: (H, T+1, B), slot 0 the initial state; c: (T+1, H, B)
    steps: tuple[Array, ...]     # the cell's cache fields, each (T, rows*H, B)
    batch_sizes: IntArray | None  # (T,) sequences still running at each step; None: all of them


def batch_sizes_from_lengths(lengths: IntArray, T: int) -> IntArray:
    """``batch_sizes[t]`` = number of sequences longer than ``t`` (lengths sorted descending)."""
    return (lengths[None, :] > np.arange(T)[:, None]).sum(axis=1)


def _step_views(
    cell: CellSpec,
    hs: Array,
    others: Sequence[Array],
    steps: Sequence[Array],
    t: int,
    slots: tuple[int, int, int],
    n: int,
) -> tuple[tuple[Array, ...], tuple[Array, ...], tuple[Array, ...]]:
    """Step ``t``'s views on its first ``n`` columns: ``(prev states, new states, cell cache)``.

    ``h`` lives at ``hs[:, t]`` / ``hs[:, t+1]``; the other states and the cache fields at the slots
    ``(prev, new, cache)`` (``t, t+1, t`` with a full cache, rolling slots without one).
    """
    s_prev, s_new, c_t = slots
    prev = (hs[:, t, :n], *[store[s_prev, :, :n] for store in others])
    new = (hs[:, t + 1, :n], *[store[s_new, :, :n] for store in others])
    return prev, new, cell.cache_type(*[field[c_t, :, :n] for field in steps])


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
        x: ``(I, T, B)`` input sequence.
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

    # The input side of the gates, W_ih x + b_x, for a chunk of steps at a time: one GEMM of
    # about _CHUNK_COLUMNS columns is as fast per column as one over all T*B, and its output,
    # reused chunk after chunk, stays in cache instead of being a fresh (G*H, T*B) array.
    chunk = max(1, min(T, _CHUNK_COLUMNS // B))
    xp_buf = np.empty((GH, chunk * B), dtype)
    xp = xp_buf.reshape(GH, chunk, B)
    b_x = np.repeat(b_x[:, None], chunk * B, axis=1)  # a full block: adding it is 2x faster than a column

    # Storage.  h doubles as the layer's output, so it is laid out (H, T+1, B): the next layer's
    # input projection is then one GEMM on it, without a transpose.  Without a cache the other
    # states only need two slots (previous and new) and the step cache one.
    slots = T + 1 if keep_cache else 2
    hs = np.zeros((H, T + 1, B), dtype)
    hs[:, 0] = state0[0]
    others = [np.empty((slots, H, B), dtype) for _ in state0[1:]]
    for store, s0 in zip(others, state0[1:], strict=True):
        store[0] = s0
    steps = tuple(np.empty((T if keep_cache else 1, rows * H, B), dtype) for rows in cell.cache_rows)
    scratch = np.empty((cell.scratch_rows * H, B), dtype)
    final = [np.array(s, dtype=dtype, copy=True) for s in state0]

    active = [B] * T if batch_sizes is None else [int(n) for n in batch_sizes]  # running columns per step
    active.append(0)  # after the last step every sequence has ended
    for t in range(T):
        if t % chunk == 0:
            k = min(chunk, T - t)
            np.matmul(weights.w_ih, x[:, t : t + k].reshape(I, k * B), out=xp_buf[:, : k * B])
            xp_buf += b_x
        n = active[t]
        s_prev, s_new, c_t = (t, t + 1, t) if keep_cache else (t % 2, 1 - t % 2, 0)
        prev, new, cache_t = _step_views(cell, hs, others, steps, t, (s_prev, s_new, c_t), n)
        cell.forward(xp[:, t % chunk, :n], prev, new, cache_t, weights.w_hh, b_in, scratch[:, :n])
        # Sequences whose last step this was (columns active[t+1]..n) hand over their final state.
        if active[t + 1] < n:
            for f, s in zip(final, new, strict=True):
                f[:, active[t + 1] : n] = s[:, active[t + 1] :]

    out = hs[:, 1:]
    cache = UnrollCache(x, (hs, *others), steps, batch_sizes) if keep_cache else None
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
    x, states, steps, batch_sizes = cache
    I, T, B = x.shape
    GH, H = weights.w_hh.shape
    dtype = weights.w_hh.dtype
    hs, others = states[0], states[1:]

    d_state = [
        np.zeros((H, B), dtype) if d_final is None or d is None else np.array(d, dtype=dtype, copy=True)
        for d in (d_final if d_final is not None else [None] * len(states))
    ]
    # The steps' gradients are formed in a contiguous (chunk, G*H, B) buffer and, a chunk at a time
    # while it is still in cache, copied into the (G*H, T, B) arrays that the weight-gradient GEMMs
    # read as (G*H, T*B) matrices: cheaper than a (T, G*H, B) array transposed after the loop.
    chunk = max(1, min(T, _CHUNK_COLUMNS // B))
    dA: Array = np.empty((GH, T, B), dtype)
    dAh: Array = np.empty((GH, T, B), dtype) if cell.separate_hidden_grad else dA
    d_xp = np.empty((chunk, GH, B), dtype)
    d_hp = np.empty((chunk, GH, B), dtype) if cell.separate_hidden_grad else d_xp
    scratch = np.empty((cell.scratch_rows * H, B), dtype)

    active = [B] * T if batch_sizes is None else [int(n) for n in batch_sizes]
    for t in reversed(range(T)):
        n = active[t]
        d_t = [d[:, :n] for d in d_state]
        if d_out is not None:
            np.add(d_t[0], d_out[:, t, :n], out=d_t[0])
        prev, new, cache_t = _step_views(cell, hs, others, steps, t, (t, t + 1, t), n)
        j = t % chunk
        cell.backward(tuple(d_t), prev, new, cache_t, weights.w_hh, d_xp[j, :, :n], d_hp[j, :, :n],
                      scratch[:, :n])
        if n < B:  # steps past a sequence's end contribute nothing to the weight gradients
            d_xp[j, :, n:] = 0.0
            d_hp[j, :, n:] = 0.0
        if j == 0:  # the chunk of steps t .. t+k-1 is complete
            k = min(chunk, T - t)
            np.copyto(dA[:, t : t + k], d_xp[:k].transpose(1, 0, 2))
            if dAh is not dA:
                np.copyto(dAh[:, t : t + k], d_hp[:k].transpose(1, 0, 2))

    # The sums over time of the per-step products, each as one GEMM over all T*B columns.
    dA = dA.reshape(GH, T * B)                      # views
    dAh = dAh.reshape(GH, T * B)
    h_prev = hs[:, :T].reshape(H, T * B)            # a view: the (T, B) block of each row is contiguous
    grads = Weights(
        w_ih=dA @ x.reshape(I, T * B).T,
        w_hh=dAh @ h_prev.T,
        b_ih=dA.sum(axis=1),
        b_hh=dAh.sum(axis=1),
    )
    dx = (weights.w_ih.T @ dA).reshape(I, T, B)
    return dx, tuple(d_state), grads
