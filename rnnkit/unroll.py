"""The one backpropagation-through-time loop, shared by every cell, layer and direction.

Everything here is feature-major and single-direction: a sequence is ``(F, T, B)``, one step's
state is ``(H, B)``.  Bidirectional and stacked layers are compositions of these two functions
(:mod:`rnnkit.layers.recurrent`).  The loops can also take the layer's batch-first ``(B, T, F)``
ends themselves (``x_order``, ``out_dest``, ``d_order``): they then gather a step's inputs (or
output gradients) and scatter its states a step at a time, in cache, by register-tile transposes,
instead of a separate memory-bound copy of the whole sequence before or after the loop.

Where the time goes, and why the loop looks the way it does:

* The whole time loop is compiled (numba): the loop below is written once and compiled once per
  cell kind, each step one call of the cell's kernel (:mod:`rnnkit.cells`), which does the
  step's one matrix product (the register-tile kernel of :mod:`rnnkit._tiles`) and all its gate
  arithmetic.  Nothing returns to Python and nothing is allocated per step.
* The input projection ``W_ih x`` is hoisted out of the per-step work: one matrix product per
  chunk of steps (about 128 columns, so its output is still in cache when the steps read it);
  the weight gradients are one matrix product each after the loop.  Only ``W_hh h_prev`` (inside
  the cell step) and ``W_hhᵀ da`` (inside its backward) stay in the loop.
* The step caches are ``(T, rows, B)`` so each step's block is contiguous; the gradients of the
  pre-activations are copied into the ``(G*H, T, B)`` arrays that the weight-gradient products read.
  Blocks the per-step product reads (``h_{t-1}``, the chunk's inputs, a step's ``da``) get rows of
  their own first: read in place their rows lie ``T*B`` apart, often a power of two bytes, and
  evict each other from the cache.
* Threads (:func:`plan_parts`): by default the loop splits a layer's hidden units over rnnkit's
  threads, each computing its units' rows of every gate, meeting the others at a barrier after
  every step (:mod:`rnnkit._sync`); backward, each adds up the threads' shares of ``dh_{t-1}`` for
  its units.  Layers whose units are coupled within a step (a projection, a layer norm) stay whole;
  they can split the *batch* instead (:func:`batch_groups`, ``RNNKIT_SPLIT_BATCH=1``), each thread
  running the whole loop over its own columns with no synchronisation at all.
* Variable lengths use the packed-sequence trick: the batch is sorted by length (longest first),
  so at step ``t`` the sequences still running are the first ``batch_sizes[t]`` columns and the
  step simply works on that prefix.  Finished sequences keep their last state; their outputs stay
  zero; no masks are multiplied in.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import numba
import numpy as np

from rnnkit._blas import blas_threads, can_split_threads, gemm, matmul, run_in_threads
from rnnkit._finite import all_finite, count_non_finite
from rnnkit._fpu import flush_subnormals, restore_subnormals
from rnnkit._sync import barrier, new_counter
from rnnkit._tiles import (
    MIN_COLUMNS,
    store_fence,
    stream_vector,
    tile_gemm,
    tile_width_of,
    transpose_tile,
    transpose_tile_streaming,
)
from rnnkit._types import Array, IntArray
from rnnkit.cells import CellSpec, step_backward, step_forward, step_pack, step_pack_t
from rnnkit.cells._spec import KERNEL_OPTIONS, empty_state, empty_vector, row

_CHUNK_COLUMNS = 256
"""Columns (steps x batch) of one input-projection GEMM in the forward loop (256 against 128:
the same forward, training steps 0-2% faster, LSTM and GRU at B = 32 and 128)."""

_MIN_PACK_STEPS = 32
"""Steps from which the forward loop packs ``[W_ih | W_hh]`` for the cell.  The copy (each thread
its own units, measured 235 µs for ``W_hh`` alone at H = 512) takes about as long as one step's
products, and each step then runs some 4-10% faster: it repays itself in about ten steps, and 32
leaves a margin.  With the pack each step also makes its own input projection, in the same
registers as ``W_hh h_prev``: the chunked projection, its ``(G*H, ·)`` buffer written and read
back, never runs (measured, LSTM forward with 2 threads: B = 128, T = 50, 256/256 27.3 -> 26.3 ms;
64/512 29.1 -> 27.7; the other shapes unchanged).  With threads the separate projection is the tile
kernel's, whose sums run in the same order: the same bits either way (for I <= 512;
tests/test_loop_layouts.py); with one thread, OpenBLAS's, to rounding."""


class Weights(NamedTuple):
    """One direction of one layer, in PyTorch's layouts."""

    w_ih: Array  # (G*H, I)
    w_hh: Array  # (G*H, H)
    b_ih: Array  # (G*H,)
    b_hh: Array  # (G*H,)
    w_hr: Array | None = None  # (P, H) the LSTM's output projection (proj_size P); then w_hh is (G*H, P)
    p: Array | None = None     # the cell's extra parameters, packed 1-D in its own order (layer-norm gains ...)


class StepMasks(NamedTuple):
    """The masks that act inside the time loop (None: that regularizer is off).

    ``recurrent``: Keras's ``recurrent_dropout``, the ``(H, B)`` inverted-dropout mask (entries 0 or
    ``1/(1-p)``) multiplying the ``h_{t-1}`` fed to ``W_hh``, one per sequence, the same at every step.
    ``zone_h`` / ``zone_c``: zoneout (Krueger et al. 2016), ``(T, H, B)`` (a mask per step) or
    ``(1, H, B)`` (one for every step): ``h_t = m ⊙ h_{t-1} + (1 - m) ⊙ h̃_t`` with ``h̃_t`` the
    cell's new state, the same for ``c`` with ``zone_c``.  Training masks hold 0 or 1 (1: the unit
    keeps its previous value); inference passes ``(1, H, B)`` filled with ``p``, the expectation.
    """

    recurrent: Array | None = None
    zone_h: Array | None = None
    zone_c: Array | None = None


class UnrollCache(NamedTuple):
    """Everything :func:`unroll_backward` needs from :func:`unroll_forward`."""

    x: Array                     # (I, T, B) the input sequence
    states: tuple[Array, ...]    # h: (H, T+1, B) (P with a projection), slot 0 the initial state; c: (T+1, H, B)
    steps: tuple[Array, Array]   # the cell's cache fields ca, cb, each (T, rows, B) (CellSpec.cache_sizes; cb
                                 # has H more rows with a projection: the unprojected output)
    batch_sizes: IntArray | None  # (T,) sequences still running at each step; None: all of them
    masks: StepMasks | None = None  # the in-loop masks of the pass (None: none)
    h_cell: Array | None = None     # zoneout: (T, H, B) the cell's own new h̃ at every step


def _mask_arrays(masks: StepMasks | None, dtype: np.dtype[Any]) -> tuple[Array, Array, Array]:
    """The masks as the compiled loops take them: C-contiguous, the loop's dtype, empty when off."""
    empty2, empty3 = empty_state(dtype), _EMPTY3[np.dtype(dtype)]
    if masks is None:
        return empty2, empty3, empty3

    def prepared(a: Array | None, empty: Array) -> Array:
        return empty if a is None else np.ascontiguousarray(a, dtype=dtype)

    return prepared(masks.recurrent, empty2), prepared(masks.zone_h, empty3), prepared(masks.zone_c, empty3)


def batch_sizes_from_lengths(lengths: IntArray, T: int) -> IntArray:
    """``batch_sizes[t]`` = number of sequences longer than ``t`` (lengths sorted descending)."""
    return (lengths[None, :] > np.arange(T)[:, None]).sum(axis=1)


def _active(batch_sizes: IntArray | None, T: int, B: int) -> IntArray:
    """Running columns per step, with a final 0 (after the last step every sequence has ended)."""
    active = np.zeros(T + 1, np.int64)
    active[:T] = B if batch_sizes is None else batch_sizes
    return active


_CACHE_LINE = 64


def _aligned(shape: tuple[int, ...], dtype: Any, zero: bool = False) -> Array:
    """A new C-contiguous array whose first element starts a cache line.

    With rows of a multiple of 64 bytes (B = 32 in float32, say) every row then starts a cache line,
    and the batch groups (cut at multiples of 64 bytes, see :func:`batch_groups`) never write into
    the same cache line from two threads -- which would bounce it between the cores at every step.
    """
    dtype = np.dtype(dtype)
    size = math.prod(shape)  # (np.prod costs microseconds: this runs several times per forward pass)
    raw = np.zeros(size * dtype.itemsize + _CACHE_LINE, np.uint8) if zero else \
        np.empty(size * dtype.itemsize + _CACHE_LINE, np.uint8)
    start = -raw.__array_interface__["data"][0] % _CACHE_LINE
    return raw[start : start + size * dtype.itemsize].view(dtype).reshape(shape)


def _padded_rows(shape: tuple[int, ...], dtype: Any) -> Array:
    """A new array of ``shape`` whose rows (last axis) lie a cache line further apart than their length.

    A step reads one short block from every row of such an array; with rows a power of two bytes
    long (T*B float32 columns often are) those blocks would all fall into the same few cache sets
    and evict each other.  One spare cache line per row staggers them.
    """
    dtype = np.dtype(dtype)
    pad = _CACHE_LINE // dtype.itemsize
    return _aligned((*shape[:-1], shape[-1] + pad), dtype)[..., : shape[-1]]


_MIN_GROUP_COLUMNS = 8
"""The fewest columns a thread's group of the batch gets: narrower per-step products waste the core."""

_ALIGN_COLUMNS = _CACHE_LINE // 4
"""Group cuts fall on multiples of this many columns where they can (a cache line of float32)."""

SPLIT_BATCH: bool = os.environ.get("RNNKIT_SPLIT_BATCH", "").strip() == "1"
"""Whether the time loop splits the batch over threads where it does not split the units (off
unless ``RNNKIT_SPLIT_BATCH=1``; :func:`plan_parts` prefers the units).

Groups of the batch need no synchronisation at all, but each thread's product is then a thinner
one: on the 2-vCPU Intel Xeon of benchmarks/README.md a 16-column product took 60-65% of the time of
a 32-column one (the tile kernel is load-bound with one vector of columns), so halving the batch
saved less than halving the units, and measured slower for the LSTM at B=32 (forward 9.8 against
7.5 ms, H=128).  It is kept, tested, for the layers that cannot split their units and for machines
where a per-step barrier costs more."""


def batch_groups(B: int, batch_sizes: IntArray | None) -> list[tuple[int, int]]:
    """How the time loop splits the batch over threads: one ``(start, stop)`` column range per thread.

    One group (no split) unless :data:`SPLIT_BATCH` is on.  The sequences of a batch never interact,
    so each thread can run the whole loop over its own columns with a single-threaded BLAS and no
    synchronisation per step.  As many groups as NumPy's BLAS has threads (:mod:`rnnkit.parallel`
    sets that), each at least ``_MIN_GROUP_COLUMNS`` wide; with variable lengths the split balances
    the steps to run.
    """
    k = min(blas_threads(), B // _MIN_GROUP_COLUMNS)
    if not SPLIT_BATCH or k <= 1 or not can_split_threads():
        return [(0, B)]
    steps = np.full(B, 1.0) if batch_sizes is None else \
        (np.asarray(batch_sizes)[:, None] > np.arange(B)[None, :]).sum(axis=0).astype(float)
    share = np.cumsum(steps) / max(float(steps.sum()), 1.0)
    cuts = [0]
    for g in range(1, k):
        cut = int(np.searchsorted(share, g / k)) + 1
        # A cut at a multiple of 16 columns (64 bytes of float32) keeps each thread's writes in its
        # own cache lines (the arrays are cache-line aligned); taken when it leaves both sides wide enough.
        rounded = _ALIGN_COLUMNS * round(cut / _ALIGN_COLUMNS)
        if cuts[-1] + _MIN_GROUP_COLUMNS <= rounded <= B - (k - g) * _MIN_GROUP_COLUMNS:
            cut = rounded
        cuts.append(min(max(cut, cuts[-1] + 1), B - (k - g)))
    cuts.append(B)
    return list(itertools.pairwise(cuts))


SPLIT_UNITS: bool = os.environ.get("RNNKIT_SPLIT_UNITS", "1").strip() != "0"
"""Whether the time loop splits a layer's hidden units over threads (on unless ``RNNKIT_SPLIT_UNITS=0``).

Each thread computes its share of the units -- their rows of every gate's matrix product (a
``(G*H/k, H) @ (H, B)`` product with the register-tile kernel) and their gate arithmetic -- and the
threads meet at a spinning barrier after every step (:mod:`rnnkit._sync`), since the next step needs
every unit's state.  Each thread reads only its own rows of ``W_hh``, which then stay in that core's
cache.  See :func:`plan_parts` for when it applies."""

_MIN_SPLIT_FLOPS = 1 << 20
"""A step's recurrent product must be at least this many flops for a split over units (else the
barrier and the start of the threads cost more than the second core saves)."""

_MIN_PART_UNITS = 16
"""The fewest hidden units a thread's part of a split gets."""


def plan_parts(cell: CellSpec, H: int, B: int, batch_sizes: IntArray | None,
               projected: bool = False) -> list[tuple[int, int, int, int]]:
    """How the time loop's work is split over threads: one ``(g0, g1, u0, u1)`` per thread, the
    columns ``g0 .. g1-1`` of the batch and the hidden units ``u0 .. u1-1`` it computes.

    With NumPy's BLAS allowed k >= 2 threads (:mod:`rnnkit.parallel` sets that), the units are
    split k ways (:data:`SPLIT_UNITS`) when the cell allows it (not with a projection or a layer
    norm, which couple the units within a step), every part gets at least ``_MIN_PART_UNITS``
    units and a step is large enough (``_MIN_SPLIT_FLOPS``); cuts fall on multiples of 8 units (the
    tile kernel's rows) where they can.  Otherwise the batch groups of :func:`batch_groups` (one
    group unless :data:`SPLIT_BATCH`), each with every unit.
    """
    k = min(blas_threads(), H // _MIN_PART_UNITS)
    flops = 2 * cell.num_gates * H * H * B
    if SPLIT_UNITS and k > 1 and cell.splits_units and not projected and flops >= _MIN_SPLIT_FLOPS \
            and can_split_threads():
        cuts = [0]
        for i in range(1, k):
            cut = round(H * i / k)
            rounded = 8 * round(cut / 8)
            cuts.append(rounded if cuts[-1] + _MIN_PART_UNITS <= rounded <= H - (k - i) * _MIN_PART_UNITS else cut)
        cuts.append(H)
        return [(0, B, u0, u1) for u0, u1 in itertools.pairwise(cuts)]
    return [(g0, g1, 0, H) for g0, g1 in batch_groups(B, batch_sizes)]


def _run_parts(loop: Any, args: tuple[Any, ...], parts: list[tuple[int, int, int, int]]) -> None:
    """``loop(*args, sync, parties, part, g0, g1, u0, u1)`` for every part: the first in this thread,
    the others in the pool, with a single-threaded BLAS meanwhile (each thread makes its own products)."""
    splits_units = len(parts) > 1 and parts[0][3] - parts[0][2] < parts[-1][3]
    parties = len(parts) if splits_units else 1
    sync = new_counter()
    run_in_threads([functools.partial(loop, *args, sync, parties, i, *part) for i, part in enumerate(parts)])


_EMPTY3: dict[np.dtype[Any], Array] = {
    np.dtype(np.float32): np.empty((0, 0, 0), np.float32),
    np.dtype(np.float64): np.empty((0, 0, 0)),
}
"""Shared empty 3-D arrays: the zoneout arguments of the compiled loops when zoneout is off."""
_NO_ORDER = np.empty(0, np.int64)
"""The ``x_order`` / ``out_dest`` of the loops when the input / output is feature-major."""
_EMPTY4: dict[np.dtype[Any], Array] = {
    np.dtype(np.float32): np.empty((0, 0, 0, 0), np.float32),
    np.dtype(np.float64): np.empty((0, 0, 0, 0)),
}


@numba.njit(**KERNEL_OPTIONS)
def _masked(src, mask, out):  # type: ignore[no-untyped-def]
    """``out = src ⊙ mask`` over ``out``'s columns."""
    F, n = out.shape
    for f in range(F):
        s, m, o = row(src, f), row(mask, f), row(out, f)
        for b in range(n):
            o[b] = s[b] * m[b]


@numba.njit(**KERNEL_OPTIONS)
def _copy(src, out):  # type: ignore[no-untyped-def]
    """``out = src`` over ``out``'s columns."""
    F, n = out.shape
    for f in range(F):
        s, o = row(src, f), row(out, f)
        for b in range(n):
            o[b] = s[b]


@numba.njit(fastmath={"reassoc"}, **KERNEL_OPTIONS)
def _row_sum(a):  # type: ignore[no-untyped-def]
    """The sum of a short row (a step's B columns) in any order: ``reassoc`` lets it vectorise."""
    total = a.dtype.type(0)
    for b in range(a.shape[0]):
        total += a[b]
    return total


@numba.njit(**KERNEL_OPTIONS)
def _copy_and_sum(src, out, sums):  # type: ignore[no-untyped-def]
    """``out = src`` over ``out``'s columns, and each row's sum added to ``sums`` (float64, one per
    row): a step's gate gradients stored, and added to the bias gradient's running sums while they
    are in cache.

    When every row of ``out`` is whole vectors starting a vector, the stores stream (the whole
    ``(G*H, T*B)`` gradient is written once and read back only by the weight gradients' products
    after the loop: plain stores would first read each line from memory, and evict the loop's
    weights and states for it) and are fenced before returning (measured in one process: LSTM
    32x100 256/256 on two threads, a training step 45.7 -> 43.6 ms, medians)."""
    F, n = out.shape
    W = tile_width_of(out)
    so = out.strides[0] // out.itemsize
    streaming = n % W == 0 and so % W == 0 and out.ctypes.data % (W * out.itemsize) == 0
    for f in range(F):
        s, o = row(src, f), row(out, f)
        if streaming:
            for b in range(0, n, W):
                stream_vector(s, b, o, b)
        else:
            for b in range(n):
                o[b] = s[b]
        sums[f] += _row_sum(s[:n])
    if streaming:
        store_fence()


@numba.njit(**KERNEL_OPTIONS)
def _zone(prev, mask, new):  # type: ignore[no-untyped-def]
    """Zoneout: ``new = m ⊙ prev + (1 - m) ⊙ new``, in place."""
    F, n = new.shape
    for f in range(F):
        p, m, v = row(prev, f), row(mask, f), row(new, f)
        for b in range(n):
            v[b] += m[b] * (p[b] - v[b])


@numba.njit(**KERNEL_OPTIONS)
def _zone_backward(d, mask, direct):  # type: ignore[no-untyped-def]
    """Zoneout's backward: ``direct = m ⊙ d`` (to the previous state), ``d = (1 - m) ⊙ d`` (to the cell's)."""
    F, n = d.shape
    for f in range(F):
        g, m, k = row(d, f), row(mask, f), row(direct, f)
        for b in range(n):
            k[b] = m[b] * g[b]
            g[b] -= k[b]


@numba.njit(**KERNEL_OPTIONS)
def _add(d, direct):  # type: ignore[no-untyped-def]
    """``d += direct`` over ``d``'s columns."""
    F, n = d.shape
    for f in range(F):
        g, k = row(d, f), row(direct, f)
        for b in range(n):
            g[b] += k[b]


@numba.njit(**KERNEL_OPTIONS)
def _group_count(active, t, g0, g1):  # type: ignore[no-untyped-def]
    """How many of the columns ``g0 .. g1-1`` are still running at step ``t`` (a prefix of them)."""
    return min(max(active[t] - g0, 0), g1 - g0)


@numba.njit(**KERNEL_OPTIONS)
def _gather_columns(a, order, t, g0, n, f0, f1, out, col0, src_rows, dst_rows):  # type: ignore[no-untyped-def]
    """``out[f, col0 + k] = a[order[g0 + k], t, f]`` for ``k < n`` and ``f`` in ``f0 .. f1-1``: one
    step's columns of a batch-first ``(B, T, F)`` array, transposed into rows of a feature-major
    block (``out`` ``(F, ·)``, rows contiguous).  Whole ``W x W`` tiles go through registers (see
    :func:`_transpose_bt_to_ft`); ``src_rows`` / ``dst_rows`` are ``W`` int64 of scratch."""
    W = src_rows.shape[0]
    sa0, sa1 = a.strides[0] // a.itemsize, a.strides[1] // a.itemsize
    so0 = out.strides[0] // out.itemsize
    n_tiled, f_tiled = n - n % W, f1 - (f1 - f0) % W
    for k0 in range(0, n_tiled, W):
        for g in range(f0, f_tiled, W):
            for r in range(W):
                src_rows[r] = order[g0 + k0 + r] * sa0 + t * sa1 + g
                dst_rows[r] = (g + r) * so0 + col0 + k0
            transpose_tile(a, src_rows, out, dst_rows)
    for f in range(f0, f1):
        dst = out[f]
        for k in range(n_tiled if f < f_tiled else 0, n):
            dst[col0 + k] = a[order[g0 + k], t, f]


@numba.njit(**KERNEL_OPTIONS)
def _count_non_finite_rows(block):  # type: ignore[no-untyped-def]
    """NaN and ±inf entries of a 2-D block whose rows are contiguous."""
    count = 0
    for f in range(block.shape[0]):
        count += count_non_finite(row(block, f))
    return count


@numba.njit(**KERNEL_OPTIONS)
def _scatter_columns(src, f0, f1, dest, lo, t, out, src_rows, dst_rows):  # type: ignore[no-untyped-def]
    """``out[dest[lo + k], t, f] = src[f, k]`` for rows ``f0 .. f1-1`` of the feature-major block
    ``src`` (``(F, n)``, rows contiguous): one step's states, transposed into a batch-first
    ``(B, T, F)`` output (rows contiguous), by ``W x W`` register tiles as :func:`_gather_columns`.

    When every tile row lands on whole vectors, the tiles are stored with streaming stores: each
    step writes one short row segment into each of ``n`` rows of the output far apart, and plain
    stores would first read every line they fill from memory, evicting the loop's weights and
    states from the core's cache for them (measured: LSTM 256/256, B = 128, T = 50, a forward
    pass 26.7 -> 26.0 ms, with a matrix product reading the output afterwards no slower)."""
    n = src.shape[1]
    W = src_rows.shape[0]
    ss0 = src.strides[0] // src.itemsize
    sd0, sd1 = out.strides[0] // out.itemsize, out.strides[1] // out.itemsize
    n_tiled, f_tiled = n - n % W, f1 - (f1 - f0) % W
    streaming = out.ctypes.data % (W * out.itemsize) == 0 and sd0 % W == 0 and sd1 % W == 0 and f0 % W == 0
    for k0 in range(0, n_tiled, W):
        for g in range(f0, f_tiled, W):
            for r in range(W):
                src_rows[r] = (g + r) * ss0 + k0
                dst_rows[r] = dest[lo + k0 + r] * sd0 + t * sd1 + g
            if streaming:
                transpose_tile_streaming(src, src_rows, out, dst_rows)
            else:
                transpose_tile(src, src_rows, out, dst_rows)
    if streaming:
        store_fence()
    for k in range(n):
        dst, column = out[dest[lo + k], t], src[:, k]
        for f in range(f_tiled if k < n_tiled else f0, f1):
            dst[f] = column[f]


@numba.njit(**KERNEL_OPTIONS)
def _project(w_ih, G, H, u0, u1, x_chunk, out, threaded):  # type: ignore[no-untyped-def]
    """``out = W_ih x_chunk`` for the gate rows of units ``u0 .. u1-1``, one product per gate block.

    With several threads at once it is the register-tile kernel, never NumPy's BLAS: a BLAS thread
    pool that another thread is also calling, or that spins waiting for work, stalls them all.
    """
    if u0 == 0 and u1 == H:
        if threaded:
            tile_gemm(False, 1.0, w_ih, x_chunk, 0.0, out)
        else:
            gemm(False, 1.0, w_ih, x_chunk, 0.0, out)
    else:
        for g in range(G):
            tile_gemm(False, 1.0, w_ih[g * H + u0 : g * H + u1], x_chunk, 0.0, out[g * H + u0 : g * H + u1])


@numba.njit(**KERNEL_OPTIONS)
def _forward_loop(kind, G, H, w_ih, w_hh, w_packs, w_hr, p, b_x, b_in, x2, x_bt, x_order, nonfinite, hs2, out_bt,
                  out_dest, cs, ca, cb, xp_bufs, xg_bufs, hm_bufs, group_starts, active, final_h, final_c, keep_cache,
                  rd, zh, zc, h_cell, sync, parties, part, g0, g1, u0, u1):  # type: ignore[no-untyped-def]
    """The time loop.  ``x2`` is the ``(I, T*B)`` input, ``hs2`` the ``(P, (T+1)*B)`` states (slot 0
    the initial one), ``cs`` the second state's slots, ``ca`` / ``cb`` the cache slots.

    One call runs one *part* of the work: the running columns among ``g0 .. g1-1`` (a group of the
    batch) and the hidden units ``u0 .. u1-1``.  Parts that split the batch never interact, so
    several threads can run theirs at once with no synchronisation; parts that split the units
    (``parties`` > 1 of them, all with the whole batch) need every unit's ``h_{t-1}``, so they meet
    at a :func:`rnnkit._sync.barrier` on ``sync`` after every step.  ``part`` numbers this call's
    own buffers: ``hm_bufs[part]`` (``(P, B)``), the copy of ``h_{t-1}`` the cell reads (its rows lie
    B apart rather than ``(T+1)*B``, which the step's matrix product reads far faster), multiplied by
    the recurrent-dropout mask ``rd`` on the way when there is one.
    ``W_ih x`` is made here, a chunk of steps at a time, one matrix product per chunk, into the
    group's ``xp_bufs[g]`` (``(G*H, chunk*(g1-g0))``, ``g`` the group's place in ``group_starts``):
    it is then still in cache when the steps read it (parts of one group write their own gate rows
    of it).  The product reads the chunk's inputs from ``xg_bufs[part]`` (``(I, chunk*(g1-g0))``: its
    width sets the chunk), where the loop gathers the group's columns first.
    With zoneout (``zh``) the cell writes ``h̃`` into ``h_cell``'s slot and the step's state is
    mixed from it (and ``c`` in place).
    The layout copies around the loop can be left to it: with a non-empty ``x_bt`` (``(B, T, I)``,
    batch-first) the chunk's inputs are gathered from it, column ``b`` from row ``x_order[b]``, and
    ``x2`` (when not empty: a cache is kept) receives them, and ``nonfinite[part]`` (when not empty)
    counts the NaN and ±inf among them (parts splitting the units each do both for their own share
    of the input's rows); with a non-empty ``out_bt``
    (``(B, T, P)``) each step's states are also written there, column ``b`` to row ``out_dest[b]``,
    and without a cache ``hs2`` holds only two rolling slots.
    ``w_packs[part]`` (when not empty) receives the cell's packed ``[W_ih | W_hh]`` for this part's
    units first (:func:`rnnkit.cells.step_pack`), which every step then reads, taking in its input
    itself (``xp_bufs`` then unused)."""
    B = final_h.shape[1]
    T = active.shape[0] - 1
    h0, h1 = (u0, u1) if parties > 1 else (0, hs2.shape[0])  # this part's rows of h (P of them with a projection)
    width = g1 - g0
    group = np.searchsorted(group_starts, g0)
    xp_buf, xg_buf, h_in_buf = xp_bufs[group], xg_bufs[part], hm_bufs[part]
    chunk = xg_buf.shape[1] // width
    threaded = parties > 1 or width < B
    zoning = zh.shape[0] > 0
    gather, scatter = x_bt.shape[0] > 0, out_bt.shape[0] > 0
    rolling = hs2.shape[1] < (T + 1) * B          # two slots of h: the output goes to out_bt
    W = tile_width_of(hs2)
    src_rows, dst_rows = np.empty(W, np.int64), np.empty(W, np.int64)
    I = xg_buf.shape[0]
    f0, f1 = (I * part // parties, I * (part + 1) // parties) if parties > 1 else (0, I)  # this part's rows of x
    w_pack = w_packs[part]
    if w_pack.shape[0] > 0:
        step_pack(kind, w_ih, w_hh, u0, u1, w_pack)
    in_step = w_pack.shape[0] > 0                 # the pack holds W_ih too: the step makes W_ih x itself
    fpu = flush_subnormals()  # vanishing gradients and saturated gates pass through subnormals: see rnnkit._fpu
    for t in range(T):
        j = t % chunk
        if j == 0:  # W_ih x for this part's columns and gate rows of the next chunk of steps
            k = min(chunk, T - t)
            # The chunk's inputs are gathered into a block of their own first: the rows of x2 lie
            # T*B apart (often a power of two bytes), so read in place they would evict each other.
            x_chunk = xg_buf[:, : k * width]
            for s in range(k):
                if gather:
                    _gather_columns(x_bt, x_order, t + s, g0, width, 0, x_bt.shape[2], x_chunk, s * width, src_rows,
                                    dst_rows)
                    # Parts splitting the units each gather all of it; each keeps the cache's copy
                    # of, and counts, its own share of the rows.
                    gathered = x_chunk[f0:f1, s * width : (s + 1) * width]
                    if x2.shape[0] > 0:
                        _copy(gathered, x2[f0:f1, (t + s) * B + g0 : (t + s) * B + g1])
                    if nonfinite.shape[0] > 0:
                        nonfinite[part] += _count_non_finite_rows(gathered)
                else:
                    _copy(x2[:, (t + s) * B + g0 : (t + s) * B + g1], x_chunk[:, s * width : (s + 1) * width])
            if not in_step:
                _project(w_ih, G, H, u0, u1, x_chunk, xp_buf[:, : k * width], threaded)
        n = _group_count(active, t, g0, g1)
        if n == 0:  # every sequence of the group has ended (lengths are sorted: none restarts)
            break
        lo, hi = g0, g0 + n
        if keep_cache:
            s_prev, s_new, c_t = t, t + 1, t
        else:  # two rolling slots for c, one for the step cache
            s_prev, s_new, c_t = t % 2, 1 - t % 2, 0
        h_slot, new_slot = (t % 2, 1 - t % 2) if rolling else (t, t + 1)
        h_prev = hs2[:, h_slot * B + lo : h_slot * B + hi]
        h_new = hs2[:, new_slot * B + lo : new_slot * B + hi]
        h_in = h_in_buf[:, lo:hi]
        if rd.shape[0] > 0:  # recurrent dropout: the cell reads m ⊙ h_{t-1}
            _masked(h_prev, rd[:, lo:hi], h_in)
        else:  # even two rolling slots (rows 2*B apart) are read slower in place than from a copy
            _copy(h_prev, h_in)
        h_out = h_cell[c_t, :, lo:hi] if zoning else h_new
        xp = xg_buf[:, j * width : j * width + n] if in_step else xp_buf[:, j * width : j * width + n]
        step_forward(kind, xp, b_x, b_in, w_hh, w_hr, p, h_in,
                     cs[s_prev, :, lo:hi], h_out, cs[s_new, :, lo:hi], ca[c_t, :, lo:hi], cb[c_t, :, lo:hi], u0, u1,
                     w_pack)
        if zoning:
            z = t if zh.shape[0] > 1 else 0
            _copy(h_out[h0:h1], h_new[h0:h1])
            _zone(h_prev[h0:h1], zh[z, h0:h1, lo:hi], h_new[h0:h1])
            if zc.shape[0] > 0:
                _zone(cs[s_prev, u0:u1, lo:hi], zc[z, u0:u1, lo:hi], cs[s_new, u0:u1, lo:hi])
        if scatter:
            _scatter_columns(h_new, h0, h1, out_dest, lo, t, out_bt, src_rows, dst_rows)
        m = g0 + _group_count(active, t + 1, g0, g1)
        if m < hi:  # sequences m..hi-1 ended with this step: hand over their final states
            final_h[h0:h1, m:hi] = hs2[h0:h1, new_slot * B + m : new_slot * B + hi]
            if final_c.shape[0] > 0:
                final_c[u0:u1, m:hi] = cs[s_new, u0:u1, m:hi]
        if parties > 1:  # the next step reads every unit's new state
            barrier(sync, parties, t + 1)
    restore_subnormals(fpu)


@numba.njit(**KERNEL_OPTIONS)
def _tile_cut(n, i, k, W):  # type: ignore[no-untyped-def]
    """The ``i``-th of ``k + 1`` cuts of ``range(n)`` into ``k`` near-equal shares, on multiples of ``W``
    where that leaves no share empty (the streaming stores of :func:`_scatter_columns` need them)."""
    cut = n * i // k
    rounded = W * ((cut + W // 2) // W)
    return rounded if 0 < i < k and n >= W * k and 0 < rounded < n else cut


@numba.njit(**KERNEL_OPTIONS)
def _backward_loop(kind, G, H, w_ih, w_hh, w_hh_t, w_packs_t, w_hr, p, hs2, cs, ca, cb, d_out2, d_out_bt, d_order,
                   d_bufs, nonfinite, dh, dc, dA2, dAh2, dH2, dx2, dx_bt, dx_dest, dx_bufs, dps, dbs, da_buf, dah_buf,
                   partials, group_starts, active, rd, zh, zc, h_cell, direct_h, direct_c, sync, parties, part, g0,
                   g1, u0, u1):  # type: ignore[no-untyped-def]
    """BPTT for one part (see :func:`_forward_loop`): ``dh`` (``dc``) carry the state gradients from
    the last step to the first; each step's pre-activation gradients go into columns ``t*B ..`` of
    ``dA2`` / ``dAh2`` (zero past a sequence's end).  The cell writes them first into the ``(G*H, B)``
    blocks ``da_buf`` / ``dah_buf`` (the same array when ``dA2`` is ``dAh2``), which its matrix
    product then reads, and the loop copies them on (rows ``T*B`` apart: see :func:`_forward_loop`).
    With a projection each step's full ``dh`` is kept in ``dH2`` (``(P, T*B)``, else empty) for ``dW_hr``.
    Each step adds its gradient of the cell's extra parameters ``p`` into this part's own row of
    ``dps``, and the sums of its gate gradients into ``dbs[part]`` (``(1 or 2, G*H)``, float64: the
    running sums over time and batch of ``dA2``, and of ``dAh2`` when it differs, that is, the bias
    gradients): parts run at once, so they never share one.
    Parts that split the units each get their units' share of ``dh_{t-1}`` from the cell, in their
    ``partials[part, t % 2]``; after the step's barrier each part adds up every part's share for its
    own units (two slots, so that a part never overwrites a share another is still reading).
    The masks as in :func:`_forward_loop`; ``direct_h`` / ``direct_c`` hold zoneout's direct path.
    The output gradient is ``d_out2`` (``(P, T*B)``), or when that is empty and ``d_out_bt`` is not,
    the batch-first ``(B, T, P)`` ``d_out_bt`` (column ``b`` in row ``d_order[b]``), gathered a step at a
    time through this part's block ``d_bufs[part]`` (``(P, B)``), and ``nonfinite[part]`` (when not
    empty) counting the NaN and ±inf among its entries.
    ``w_packs_t[part]`` (when not empty) receives the cell's packed ``[W_hh | W_ih]ᵀ`` for this part's
    units first (:func:`rnnkit.cells.step_pack_t`): every step then also makes the input's gradient
    ``W_ihᵀ da``, into ``dx2`` (``(I, T*B)``) or, when that is empty, batch-first into ``dx_bt``
    (``(B, T, I)``, column ``b`` to row ``dx_dest[b]``), neither of them written past a sequence's end.
    Parts that split the units each make their share of it in ``dx_bufs[part, t % 2]`` (``(I, B)``) and
    add up every part's share of their own rows of it after the barrier, as for ``dh_{t-1}``; a
    single part writes ``dx2`` directly, or ``dx_bt`` through ``dx_bufs[part, 0]``."""
    B = dh.shape[1]
    T = active.shape[0] - 1
    h0, h1 = (u0, u1) if parties > 1 else (0, dh.shape[0])  # this part's rows of h (P of them with a projection)
    zoning = zh.shape[0] > 0
    separate = dAh2.ctypes.data != dA2.ctypes.data
    dp = dps[part]
    W = tile_width_of(dh)
    src_rows, dst_rows = np.empty(W, np.int64), np.empty(W, np.int64)
    w_pack_t = w_packs_t[part]
    in_step = w_pack_t.shape[0] > 0               # the steps make dx too
    if in_step:
        step_pack_t(kind, w_ih, w_hh, u0, u1, w_pack_t)
    to_bt = dx_bt.shape[0] > 0
    I = dx_bufs.shape[2]
    i0, i1 = (_tile_cut(I, part, parties, W), _tile_cut(I, part + 1, parties, W)) if parties > 1 else (0, I)
    fpu = flush_subnormals()
    for t in range(T - 1, -1, -1):
        n = _group_count(active, t, g0, g1)
        lo, hi, end = g0, g0 + n, g1
        if n < g1 - g0:  # steps past a sequence's end contribute nothing to the weight gradients
            for g in range(G):
                dA2[g * H + u0 : g * H + u1, t * B + hi : t * B + end] = 0
                dAh2[g * H + u0 : g * H + u1, t * B + hi : t * B + end] = 0
            if dH2.shape[0] > 0:
                dH2[:, t * B + hi : t * B + end] = 0
        if n == 0:
            if parties > 1:
                barrier(sync, parties, T - t)
            continue
        if d_out2.shape[0] > 0:
            # (through _add: numba compiles a slice expression such as ``a[...] += b[...]`` on these
            # strided blocks to an element-by-element loop, 40 µs a step at H=256)
            _add(dh[h0:h1, lo:hi], d_out2[h0:h1, t * B + lo : t * B + hi])
        elif d_out_bt.shape[0] > 0:
            block = d_bufs[part]
            _gather_columns(d_out_bt, d_order, t, lo, n, h0, h1, block, 0, src_rows, dst_rows)
            if nonfinite.shape[0] > 0:
                nonfinite[part] += _count_non_finite_rows(block[h0:h1, :n])
            _add(dh[h0:h1, lo:hi], block[h0:h1, :n])
        h_out = hs2[:, (t + 1) * B + lo : (t + 1) * B + hi]
        if zoning:  # split dh (dc) into the cell's share and the direct path to h_{t-1} (c_{t-1})
            z = t if zh.shape[0] > 1 else 0
            _zone_backward(dh[h0:h1, lo:hi], zh[z, h0:h1, lo:hi], direct_h[h0:h1, lo:hi])
            if zc.shape[0] > 0:
                _zone_backward(dc[u0:u1, lo:hi], zc[z, u0:u1, lo:hi], direct_c[u0:u1, lo:hi])
            h_out = h_cell[t, :, lo:hi]
        if dH2.shape[0] > 0:
            _copy(dh[:, lo:hi], dH2[:, t * B + lo : t * B + hi])
        dh_prev = partials[part, t % 2, :, lo:hi] if parties > 1 else dh[:, lo:hi]
        if in_step and parties == 1 and not to_bt:
            dx = dx2[:, t * B + lo : t * B + hi]
        else:  # (an empty block when the steps make no dx)
            dx = dx_bufs[part, t % 2, :, lo:hi]
        step_backward(kind, dh[:, lo:hi], dc[:, lo:hi], hs2[:, t * B + lo : t * B + hi], cs[t, :, lo:hi],
                      h_out, ca[t, :, lo:hi], cb[t, :, lo:hi], w_hh_t, w_hr, p, da_buf[:, lo:hi], dah_buf[:, lo:hi], dp,
                      u0, u1, dh_prev, w_pack_t, dx)
        for g in range(G):
            r0, r1 = g * H + u0, g * H + u1
            _copy_and_sum(da_buf[r0:r1, lo:hi], dA2[r0:r1, t * B + lo : t * B + hi], dbs[part, 0, r0:r1])
            if separate:
                _copy_and_sum(dah_buf[r0:r1, lo:hi], dAh2[r0:r1, t * B + lo : t * B + hi], dbs[part, 1, r0:r1])
        if parties > 1:  # every part's share of dh_{t-1} is written: add them up for this part's units
            barrier(sync, parties, T - t)
            own = dh[u0:u1, lo:hi]
            _copy(partials[0, t % 2, u0:u1, lo:hi], own)
            for other in range(1, parties):
                _add(own, partials[other, t % 2, u0:u1, lo:hi])
            if in_step:  # and this part's rows of dx (summed in part 0's block: the parts' rows never overlap)
                dx = dx_bufs[0, t % 2, :, lo:hi]
                for other in range(1, parties):
                    _add(dx[i0:i1], dx_bufs[other, t % 2, i0:i1, lo:hi])
                if not to_bt:
                    _copy(dx[i0:i1], dx2[i0:i1, t * B + lo : t * B + hi])
        if in_step and to_bt:
            _scatter_columns(dx, i0, i1, dx_dest, lo, t, dx_bt, src_rows, dst_rows)
        if rd.shape[0] > 0:  # the cell saw m ⊙ h_{t-1} (only through W_hh: RNN and LSTM)
            _masked(dh[h0:h1, lo:hi], rd[h0:h1, lo:hi], dh[h0:h1, lo:hi])
        if zoning:
            _add(dh[h0:h1, lo:hi], direct_h[h0:h1, lo:hi])
            if zc.shape[0] > 0:
                _add(dc[u0:u1, lo:hi], direct_c[u0:u1, lo:hi])
    restore_subnormals(fpu)


# Both transposing copies go time step by time step: a step's (B, F) block is read and written
# while it is in cache, by the loops' own per-step gather and scatter (whole W x W tiles through
# registers, rnnkit._tiles.transpose_tile; the ragged edges element by element).  Each call does
# the steps t0 .. t1-1, so threads can share the copy.
@numba.njit(**KERNEL_OPTIONS)
def _transpose_bt_to_ft(a, order, out, t0, t1):  # type: ignore[no-untyped-def]
    """``out[:, t, b] = a[order[b], t]`` for the steps ``t0 .. t1-1``."""
    B, F = a.shape[0], a.shape[2]
    W = tile_width_of(a)
    src_rows, dst_rows = np.empty(W, np.int64), np.empty(W, np.int64)
    for t in range(t0, t1):
        _gather_columns(a, order, t, 0, B, 0, F, out[:, t, :], 0, src_rows, dst_rows)


@numba.njit(**KERNEL_OPTIONS)
def _transpose_ft_to_bt(a, dest, out, t0, t1):  # type: ignore[no-untyped-def]
    """``out[dest[c], t] = a[:, t, c]`` for the steps ``t0 .. t1-1``."""
    F = a.shape[0]
    W = tile_width_of(a)
    src_rows, dst_rows = np.empty(W, np.int64), np.empty(W, np.int64)
    for t in range(t0, t1):
        _scatter_columns(a[:, t, :], 0, F, dest, 0, t, out, src_rows, dst_rows)


def _in_threads(copy: Any, a: Array, order: IntArray, out: Array, T: int) -> None:
    """``copy(a, order, out, t0, t1)`` over all T steps, the steps shared by rnnkit's threads when
    the copy is large enough to be worth handing out."""
    k = min(blas_threads() if can_split_threads() else 1, T)
    if k <= 1 or a.size < _MIN_SPLIT_COPY:
        copy(a, order, out, 0, T)
        return
    cuts = [T * i // k for i in range(k + 1)]
    run_in_threads([functools.partial(copy, a, order, out, t0, t1) for t0, t1 in itertools.pairwise(cuts)])


_MIN_SPLIT_COPY = 1 << 17
"""Elements below which a layout copy stays on one thread."""


def to_feature_major(a: Array, order: IntArray | None = None) -> Array:
    """``(B, T, F)`` -> a new C-contiguous ``(F, T, B)``, row ``b`` taken from ``a[order[b]]`` if given.

    One compiled pass (NumPy's 3-D transposing copy is several times slower); any byte order in,
    native out.
    """
    a = _three_d(a)
    B = a.shape[0]
    source = _permutation(order, B)
    a = a.astype(a.dtype.newbyteorder("="), copy=False)
    if a.shape[2] > 1 and a.strides[2] != a.itemsize:  # the tiles read rows of contiguous elements
        a = np.ascontiguousarray(a)
    out = np.empty((a.shape[2], a.shape[1], B), a.dtype)
    _in_threads(_transpose_bt_to_ft, a, source, out, a.shape[1])
    return out


def _three_d(a: Array) -> Array:
    """``a`` as a 3-D float32 or float64 array, or a ValueError naming what it is instead."""
    a = np.asarray(a)
    if a.ndim != 3 or a.dtype.kind != "f" or a.dtype.itemsize not in (4, 8):
        raise ValueError(f"expected a 3-D float32 or float64 array, got shape {a.shape} and dtype {a.dtype}")
    return a


def _permutation(order: IntArray | None, B: int) -> IntArray:
    """``order`` as int64, checked to be a permutation of ``range(B)`` (the copies index with it
    unchecked); ``range(B)`` itself when None."""
    if order is None:
        return np.arange(B, dtype=np.int64)
    o = np.asarray(order)
    if o.shape != (B,):
        raise ValueError(f"order must be a permutation of 0..{B - 1}, shape ({B},); got shape {o.shape}")
    if o.dtype.kind not in "iu" or not np.array_equal(np.sort(o), np.arange(B)):
        raise ValueError(f"order must be a permutation of 0..{B - 1}: integers, each once; got {o.tolist()}")
    return o.astype(np.int64)


def to_batch_first(a: Array, order: IntArray | None = None) -> Array:
    """``(F, T, B)`` -> a new C-contiguous ``(B, T, F)``, row ``b`` taken from column ``order[b]`` if given.

    Always a copy: the result never shares memory with ``a`` (which may be part of a cache).
    """
    a = _three_d(a)
    B = a.shape[2]
    source = _permutation(order, B)
    a = a.astype(a.dtype.newbyteorder("="), copy=False)
    if B > 1 and a.strides[2] != a.itemsize:  # the tiles read rows of contiguous elements
        a = np.ascontiguousarray(a)
    out = np.empty((B, a.shape[1], a.shape[0]), a.dtype)
    # The tiles read whole columns of a, so each column is sent to its row: the inverse permutation.
    dest = np.argsort(source).astype(np.int64)
    _in_threads(_transpose_ft_to_bt, a, dest, out, a.shape[1])
    return out


def _non_finite(name: str | None) -> ValueError:
    return ValueError(f"{name} contains NaN or infinite values")


def _count_in_loop(name: str | None, a: Array | None, loop_reads_all: bool) -> bool:
    """Where ``a`` is checked for NaN and ±inf (``name``: the argument it is refused as; None: no
    check): True when the loop is to count them, because it reads every entry of ``a`` anyway;
    otherwise ``a`` is scanned here, first, and refused at once."""
    if name is None or a is None:
        return False
    if loop_reads_all:
        return True
    if not all_finite(a):
        raise _non_finite(name)
    return False


def unroll_forward(
    cell: CellSpec,
    weights: Weights,
    x: Array,
    state0: Sequence[Array],
    batch_sizes: IntArray | None = None,
    keep_cache: bool = True,
    masks: StepMasks | None = None,
    x_order: IntArray | None = None,
    out_dest: IntArray | None = None,
    check_finite: str | None = None,
) -> tuple[Array, tuple[Array, ...], UnrollCache | None]:
    """Run ``cell`` over ``x`` from ``state0``.

    Args:
        x: ``(I, T, B)`` input sequence, C-contiguous; batch-first ``(B, T, I)`` when ``x_order``
            is given.
        state0: one ``(H, B)`` array per state of the cell (``h``, and ``c`` for the LSTM).
        batch_sizes: ``(T,)`` non-increasing active-column counts (lengths sorted descending),
            or None when every sequence runs all ``T`` steps.
        keep_cache: False for inference: no per-step caches are stored, and ``None`` is returned
            in their place.
        masks: recurrent dropout and zoneout inside the loop (:class:`StepMasks`; None: neither).
            The recurrent-dropout mask is for the cells whose ``h_{t-1}`` enters only through
            ``W_hh`` (RNN, LSTM); :mod:`rnnkit.layers.recurrent` refuses it for the GRU.
        x_order: ``x`` is batch-first and column ``b`` of the sequence is ``x[x_order[b]]``
            (``(B,)`` int64, a permutation).  The loop gathers each chunk's inputs straight from it:
            no separate layout copy of all of ``x`` (with a cache the loop writes the cache's
            feature-major copy on the way).
        out_dest: ``out`` is returned batch-first, ``(B, T, P)`` with column ``b`` in row
            ``out_dest[b]``, written by the loop step by step (no layout copy after it).
        check_finite: refuse an ``x`` holding NaN or ±inf with ``ValueError("<check_finite> contains
            NaN or infinite values")`` (None: ``x`` is known to be finite).  With ``x_order`` and
            every sequence running all ``T`` steps the loop counts them as it gathers ``x``, so the
            check costs no pass of its own over memory; otherwise ``x`` is scanned first.

    Returns:
        ``(out, final, cache)``: ``out`` ``(H, T, B)`` (``(P, T, B)`` with a projection) the hidden
        state at every step (zero past a sequence's end), ``final`` one ``(H, B)`` array per state
        (each sequence's state after its last step), and the cache for :func:`unroll_backward`.
    """
    dtype = weights.w_hh.dtype
    gathered = x_order is not None
    counted = _count_in_loop(check_finite, x, gathered and batch_sizes is None)
    if gathered:
        B, T, I = x.shape
        x_bt, x_order = np.ascontiguousarray(x), np.ascontiguousarray(x_order, dtype=np.int64)
        # With a cache the loop also leaves the feature-major x (for the weight gradients) behind:
        # zero where it stops before T (with variable lengths it never gathers the steps after a
        # group's longest sequence, and dW_ih's product multiplies them by zero: stale NaN there
        # would make NaN).
        x_ft = _aligned((I, T, B), dtype, zero=batch_sizes is not None) if keep_cache else None
    else:
        I, T, B = x.shape
        x_bt, x_order, x_ft = _EMPTY3[np.dtype(dtype)], _NO_ORDER, np.ascontiguousarray(x)
    x2 = empty_state(dtype) if x_ft is None else x_ft.reshape(I, T * B)
    GH, P = weights.w_hh.shape
    H = GH // cell.num_gates                # the cell's size; P, the size of h, differs with a projection
    w_hr = empty_state(dtype) if weights.w_hr is None else weights.w_hr
    p = empty_vector(dtype) if weights.p is None else weights.p
    b_x, b_in = cell.split_bias(weights.b_ih, weights.b_hh)

    # The input side of the gates for a chunk of steps at a time (inside the loop, per group of the
    # batch): one GEMM of about _CHUNK_COLUMNS columns is as fast per column as one over all T*B,
    # and its output, reused chunk after chunk, stays in cache instead of being a fresh (G*H, T*B)
    # array that every step would read a line from per row.  A cell that packs its weights gets its
    # [W_ih | W_hh] packed, one copy per part, made by the part itself (in its core's cache): for
    # enough steps to repay the copy, and a batch wide enough for the tiles that read it.  Its steps
    # then make the input side themselves, and the loop only gathers each step's inputs (a step at
    # a time: measured as fast as 2-8 steps at a time, and the smaller block stays nearer the core).
    parts = plan_parts(cell, H, B, batch_sizes, projected=weights.w_hr is not None)
    groups = sorted({(g0, g1) for g0, g1, _, _ in parts})
    width = max(g1 - g0 for g0, g1 in groups)
    in_step = cell.pack_shape is not None and T >= _MIN_PACK_STEPS and width >= MIN_COLUMNS
    chunk = 1 if in_step else max(1, min(T, _CHUNK_COLUMNS // width))
    # Packed steps never read xp_bufs: one column then, not zero (a zero-width block counts as
    # contiguous, a second array type, which compiled the whole loop a second time).
    xp_bufs = _padded_rows((len(groups), GH, 1 if in_step else chunk * width), dtype)
    xg_bufs = _aligned((len(parts), I, chunk * width), dtype)
    group_starts = np.array([g0 for g0, _ in groups], np.int64)

    # h doubles as the layer's output, so it is laid out (H, T+1, B): the next layer's input
    # projection is then one GEMM on it, without a transpose.  Without a cache the other state
    # only needs two slots (previous and new) and the step cache one.
    # Zeroed only with variable lengths: the states past a sequence's end are never written, and
    # stay zero (in the output, and in the h_{t-1} that dW_hh's product multiplies by zero).
    slots = T + 1 if keep_cache else 2
    ragged = batch_sizes is not None
    if out_dest is None:
        hs = _aligned((P, T + 1, B), dtype, zero=ragged)
        out_bt, out_dest = _EMPTY3[np.dtype(dtype)], _NO_ORDER
    else:  # the output goes batch-first straight from the loop: without a cache two slots of h suffice
        hs = _aligned((P, T + 1, B), dtype, zero=ragged) if keep_cache else _aligned((P, 2, B), dtype)
        out_bt = _aligned((B, T, P), dtype, zero=ragged)
        out_dest = np.ascontiguousarray(out_dest, dtype=np.int64)
    hs[:, 0] = state0[0]
    cs = _aligned((slots, H, B), dtype) if len(state0) > 1 else np.empty((slots, 0, 0), dtype)
    if len(state0) > 1:
        cs[0] = state0[1]
    rows_a, rows_b = cell.cache_sizes(H)
    ca = _aligned((T if keep_cache else 1, rows_a, B), dtype)
    if weights.w_hr is None:
        cb = _aligned((T if keep_cache else 1, rows_b, B), dtype)
    else:  # the unprojected outputs too, zero past a sequence's end (dW_hr's product reads every column)
        cb = _aligned((T if keep_cache else 1, rows_b + H, B), dtype, zero=ragged)
    final = [_aligned(np.shape(s), dtype) for s in state0]
    for kept, s in zip(final, state0, strict=True):
        kept[...] = s
    final_c = final[1] if len(final) > 1 else empty_state(dtype)
    rd, zh, zc = _mask_arrays(masks, dtype)
    hm_bufs = _aligned((len(parts), P, B), dtype)
    h_cell = _aligned((T if keep_cache else 1, P, B), dtype, zero=True) if zh.shape[0] > 0 else _EMPTY3[np.dtype(dtype)]

    if in_step:
        assert cell.pack_shape is not None
        w_packs = _aligned((len(parts), *cell.pack_shape(max(u1 - u0 for _, _, u0, u1 in parts), I + P)), dtype)
    else:
        w_packs = np.empty((len(parts), 0, 0, 0), dtype)
    nonfinite = np.zeros(len(parts) if counted else 0, np.int64)
    _run_parts(_forward_loop, (cell.kind, cell.num_gates, H, weights.w_ih, weights.w_hh, w_packs, w_hr, p, b_x, b_in,
                               x2, x_bt, x_order, nonfinite, hs.reshape(P, -1), out_bt, out_dest, cs, ca, cb,
                               xp_bufs, xg_bufs, hm_bufs, group_starts, _active(batch_sizes, T, B), final[0], final_c,
                               keep_cache, rd, zh, zc, h_cell), parts)
    if nonfinite.any():
        raise _non_finite(check_finite)

    out = hs[:, 1:] if out_bt.shape[0] == 0 else out_bt
    states = (hs, cs) if len(state0) > 1 else (hs,)
    cache = None
    if keep_cache:
        assert x_ft is not None  # (made whenever a cache is kept)
        cache = UnrollCache(x_ft, states, (ca, cb), batch_sizes, masks, h_cell if zh.shape[0] > 0 else None)
    return out, tuple(final), cache


def unroll_backward(
    cell: CellSpec,
    weights: Weights,
    cache: UnrollCache,
    d_out: Array | None,
    d_final: Sequence[Array | None] | None = None,
    d_order: IntArray | None = None,
    check_finite: str | None = None,
    dx_dest: IntArray | None = None,
) -> tuple[Array, tuple[Array, ...], Weights]:
    """Backpropagation through time for :func:`unroll_forward`.

    Args:
        d_out: ``(H, T, B)`` gradient of the loss with respect to ``out`` (None: zero); batch-first
            ``(B, T, H)`` when ``d_order`` is given, column ``b`` being ``d_out[d_order[b]]``
            (the loop gathers it a step at a time: no layout copy of all of it).
        check_finite: refuse a ``d_out`` holding NaN or ±inf, as :func:`unroll_forward` does ``x``
            (counted by the loop as it gathers ``d_out`` when it reads all of it).
        d_final: gradients with respect to ``final`` (None, or None entries: zero).
        dx_dest: ``dx`` is returned batch-first, ``(B, T, I)`` with column ``b`` in row
            ``dx_dest[b]`` (``(B,)`` int64, a permutation; written by the loop step by step when the
            cell's steps make ``dx``: no layout copy after it).

    Returns:
        ``(dx, d_state0, grads)``: ``dx`` ``(I, T, B)`` (``(B, T, I)`` with ``dx_dest``; a new
        array), one ``(H, B)`` gradient per initial state, and the weight gradients in a
        :class:`Weights` (same layouts as ``weights``).
    """
    x, states, (ca, cb), batch_sizes, masks, h_cell = cache
    I, T, B = x.shape
    GH, P = weights.w_hh.shape
    H = GH // cell.num_gates
    dtype = weights.w_hh.dtype
    w_hr = empty_state(dtype) if weights.w_hr is None else weights.w_hr
    p = empty_vector(dtype) if weights.p is None else weights.p
    hs = states[0]
    cs = states[1] if len(states) > 1 else np.empty((1, 0, 0), dtype)

    d_state = [_aligned((size, B), dtype, zero=True) for size in (P, H)[: len(states)]]
    for carried, d in zip(d_state, d_final if d_final is not None else [None] * len(states), strict=False):
        if d is not None:
            carried[...] = d
    dA = _aligned((GH, T, B), dtype)
    dAh = _aligned((GH, T, B), dtype) if cell.separate_hidden_grad else dA
    counted = _count_in_loop(check_finite, d_out, d_order is not None and batch_sizes is None)
    d_out2, d_out_bt, d_columns = empty_state(dtype), _EMPTY3[np.dtype(dtype)], _NO_ORDER
    if d_out is not None and d_order is None:
        d_out2 = np.ascontiguousarray(d_out, dtype=dtype).reshape(P, T * B)
    elif d_out is not None:
        d_out_bt, d_columns = np.ascontiguousarray(d_out, dtype=dtype), np.ascontiguousarray(d_order, dtype=np.int64)
    dc = d_state[1] if len(d_state) > 1 else empty_state(dtype)
    dH = empty_state(dtype) if weights.w_hr is None else _aligned((P, T * B), dtype)
    rd, zh, zc = _mask_arrays(masks, dtype)
    direct_h = _aligned((P, B), dtype) if zh.shape[0] > 0 else empty_state(dtype)
    direct_c = _aligned((H, B), dtype) if zc.shape[0] > 0 else empty_state(dtype)

    da_buf = _aligned((GH, B), dtype)
    dah_buf = _aligned((GH, B), dtype) if cell.separate_hidden_grad else da_buf
    # The gradient of the cell's extra parameters: one accumulator per part (the parts run in
    # threads at once), each step adding its share; their sum is the gradient.
    parts = plan_parts(cell, H, B, batch_sizes, projected=weights.w_hr is not None)
    dps = np.zeros((len(parts), p.shape[0]), dtype)
    # The bias gradients, summed over time inside the loop while each step's gate gradients are in
    # cache (a sum over dA afterwards reads all of it from memory again: 1.2 ms of a 52 ms LSTM
    # 256 training step), in float64 so that the order of the sum costs no precision.
    dbs = np.zeros((len(parts), 2 if cell.separate_hidden_grad else 1, GH))
    group_starts = np.array(sorted({g0 for g0, _, _, _ in parts}), np.int64)
    partials = _aligned((len(parts), 2, P, B), dtype) if len(parts) > 1 else _EMPTY4[np.dtype(dtype)]
    d_bufs = _aligned((len(parts), P, B), dtype) if d_out_bt.shape[0] > 0 else _EMPTY3[np.dtype(dtype)]
    nonfinite = np.zeros(len(parts) if counted else 0, np.int64)
    # The cells' per-step product W_hhᵀ da reads W_hhᵀ itself, made once here (see gates_product_t),
    # its rows staggered over the cache sets (a row of G*H float32 is often a power of two bytes).
    # A cell that packs its weights for the backward gets its [W_hh | W_ih]ᵀ packed, one copy per
    # part, made by the part itself (as the forward's pack, and under the same conditions): its
    # steps then make the input's gradient W_ihᵀ da in the same product as dh_{t-1}'s, from the
    # gate gradients while they are in cache, instead of one matrix product over all of dA after
    # the loop, and write it straight into its final layout (measured in one process, two threads,
    # medians of a training step: LSTM 32x100 256/256 44.7 -> 43.3 ms, 64/512 97.9 -> 94.5 ms).
    width = max(g1 - g0 for g0, g1, _, _ in parts)
    in_step = cell.pack_t_shape is not None and T >= _MIN_PACK_STEPS and width >= MIN_COLUMNS
    ragged = batch_sizes is not None
    dx_ft = dx_bt = None
    if in_step:
        assert cell.pack_t_shape is not None
        w_packs_t = _aligned((len(parts), *cell.pack_t_shape(max(u1 - u0 for _, _, u0, u1 in parts), P, I)), dtype)
        dx_bufs = _aligned((len(parts), 2, I, B), dtype)
        if dx_dest is None:  # (zero past a sequence's end: the loop writes only the running columns)
            dx_ft = _aligned((I, T, B), dtype, zero=ragged)
        else:
            dx_bt = _aligned((B, T, I), dtype, zero=ragged)
    else:
        w_packs_t = np.empty((len(parts), 0, 0, 0), dtype)
        dx_bufs = np.empty((len(parts), 2, 0, 0), dtype)
    dx2 = empty_state(dtype) if dx_ft is None else dx_ft.reshape(I, T * B)
    dx_columns = _NO_ORDER if dx_dest is None else np.ascontiguousarray(dx_dest, dtype=np.int64)
    w_hh_t = _padded_rows((P, GH), dtype)
    _transpose_bt_to_ft(weights.w_hh[:, None, :], np.arange(GH), w_hh_t[:, None, :], 0, 1)
    _run_parts(_backward_loop, (cell.kind, cell.num_gates, H, weights.w_ih, weights.w_hh, w_hh_t, w_packs_t, w_hr, p,
                                hs.reshape(P, (T + 1) * B), cs, ca, cb, d_out2, d_out_bt, d_columns, d_bufs, nonfinite,
                                d_state[0], dc, dA.reshape(GH, T * B), dAh.reshape(GH, T * B), dH, dx2,
                                _EMPTY3[np.dtype(dtype)] if dx_bt is None else dx_bt, dx_columns, dx_bufs, dps, dbs,
                                da_buf, dah_buf, partials, group_starts, _active(batch_sizes, T, B), rd, zh, zc,
                                _EMPTY3[np.dtype(dtype)] if h_cell is None else h_cell, direct_h, direct_c), parts)
    if nonfinite.any():
        raise _non_finite(check_finite)

    # The sums over time of the per-step products, each as one GEMM over all T*B columns.
    dA2 = dA.reshape(GH, T * B)                     # views
    dAh2 = dAh.reshape(GH, T * B)
    h_prev = hs[:, :T].reshape(P, T * B)            # a view: the (T, B) block of each row is contiguous
    if rd.shape[0] > 0:                             # W_hh saw m ⊙ h_{t-1}
        h_prev = (hs[:, :T] * rd[:, None, :]).reshape(P, T * B)
    d_w_hr = None
    if weights.w_hr is not None:                    # dW_hr = Σ_t dh_t ĥ_tᵀ, ĥ the cache's second half
        d_w_hr = matmul(dH, np.ascontiguousarray(cb[:, H:].transpose(1, 0, 2)).reshape(H, T * B).T)
    bias_sums = dbs.sum(axis=0)                   # (1 or 2, GH): over the parts
    b_ih = bias_sums[0].astype(dtype)
    grads = Weights(
        w_ih=matmul(dA2, x.reshape(I, T * B).T),
        w_hh=matmul(dAh2, h_prev.T),
        b_ih=b_ih,
        b_hh=bias_sums[-1].astype(dtype),         # the same sums when the two gradients coincide
        w_hr=d_w_hr,
        p=None if weights.p is None else dps.sum(axis=0),
    )
    if dx_bt is not None:
        dx = dx_bt
    elif dx_ft is not None:
        dx = dx_ft
    else:
        dx = matmul(weights.w_ih.T, dA2).reshape(I, T, B)
        if dx_dest is not None:
            dx = to_batch_first(dx, np.argsort(dx_columns))
    return dx, tuple(d_state), grads
