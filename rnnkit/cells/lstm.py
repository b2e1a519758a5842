"""The LSTM cell: PyTorch's equations and gate order (i, f, g, o), feature-major, compiled.

One step, in the symbols of the code below (``ca`` holds the gate pre-activations, then the gates;
``j`` a hidden unit, ``b`` a sequence of the batch)::

    a = W_hh h_prev + xp + b_x           xp = W_ih x (hoisted out of the time loop),  b_x = b_ih + b_hh
    i = σ(a[j])      f = σ(a[H+j])       g = tanh(a[2H+j])        o = σ(a[3H+j])
    c = f ⊙ c_prev + i ⊙ g
    h = o ⊙ tanh(c)                      (cache: ca = [i; f; g; o], cb = tanh(c))

Backward, given dh = ∂L/∂h and dc = ∂L/∂c (both carried from the step after, dh already holding
this step's output gradient)::

    dc     += dh ⊙ o ⊙ (1 - tanh(c)²)
    da[j]    = dc ⊙ g ⊙ i(1-i)           da[H+j]  = dc ⊙ c_prev ⊙ f(1-f)
    da[2H+j] = dc ⊙ i ⊙ (1-g²)           da[3H+j] = dh ⊙ tanh(c) ⊙ o(1-o)        (d_xp = d_hp = da)
    dc_prev  = dc ⊙ f
    dh_prev  = W_hhᵀ da

With a projection (``proj_size`` P > 0, PyTorch's LSTM with ``weight_hr``) the state ``h`` is
``(P, n)``, ``W_hh`` is ``(4H, P)``, and the unprojected output ĥ is kept in the cache::

    ĥ = o ⊙ tanh(c)                      h = W_hr ĥ          (cache: cb = [tanh(c); ĥ])
    dĥ = W_hrᵀ dh                        (then as above with dĥ in place of dh; the loop keeps each
                                          step's dh to form dW_hr = Σ_t dh_t ĥ_tᵀ after the last step)

Forgetting either carried gradient (dh *or* dc) is the classic LSTM backprop bug; the gradient
checks in ``tests/`` catch it.  Each step is one matrix product and one pass over the ``(H, n)``
units that reads and writes every gate once.
"""

from __future__ import annotations

from typing import NamedTuple

import numba

from rnnkit._blas import gemm
from rnnkit._tiles import (
    MIN_COLUMNS,
    MR,
    FusedStep,
    fused_point,
    fused_step,
    pack_columns,
    pack_rows,
    packed_product,
    tile_width_of,
)
from rnnkit._types import Array
from rnnkit._vector import Lanes
from rnnkit.cells._spec import (
    KERNEL_OPTIONS,
    ONE,
    CellSpec,
    gates_product,
    gates_product_t,
    register,
    row,
    sigmoid_lanes,
    tanh_lanes,
)


class LSTMCache(NamedTuple):
    """What one LSTM step keeps for its backward pass."""

    gates: Array   # (4H, B): i, f, g, o after their nonlinearities
    tanh_c: Array  # (H, B)


def split_bias(b_ih: Array, b_hh: Array) -> tuple[Array, Array]:
    """Both biases add straight into the pre-activations."""
    return b_ih + b_hh, b_ih[:0]


def forward_equations(a: list[Lanes], b_x: list[Lanes], c_prev: list[Lanes]) -> tuple[tuple[Lanes, ...], ...]:
    """One step's equations, on the lanes of one tile (see the module docstring): ``a`` holds the
    four gates' ``W_hh h_prev + xp`` (the product's sums start from ``xp``), ``b_x`` their biases.
    Returns the cache's gates, then ``c``, ``tanh(c)`` and ``h`` (ĥ with a projection)."""
    i = sigmoid_lanes(a[0] + b_x[0])
    f = sigmoid_lanes(a[1] + b_x[1])
    g = tanh_lanes(a[2] + b_x[2])
    o = sigmoid_lanes(a[3] + b_x[3])
    c = f * c_prev[0] + i * g
    tanh_c = tanh_lanes(c)
    return (i, f, g, o), (c,), (tanh_c,), (o * tanh_c,)


_STEP = FusedStep("lstm", 4, "xp", (("b_x", 4), ("c_prev", 1)), (("ca", 4), ("c", 1), ("cb", 1), ("h", 1)),
                  forward_equations)
_tile = fused_step(_STEP)
_point = fused_point(_STEP)
_TILE_UNITS = _STEP.units
# step_pack's blocks follow the tiles of _tiles below only while a short last tile is a single unit.
assert _TILE_UNITS <= 2, "an LSTM tile holds at most 2 units (MR <= 8 rows)"


@numba.njit(**KERNEL_OPTIONS)
def step_forward(xp, b_x, b_in, w_hh, w_hr, p, h_prev, c_prev, h, c, ca, cb, u0, u1, w_pack):  # type: ignore[no-untyped-def]
    """One LSTM step for units ``u0 .. u1-1`` (see the module docstring); ``b_in`` is unused,
    ``w_hr`` empty without projection (with one, always all units).

    Each tile of ``_TILE_UNITS`` units (all four gates of each) by up to two vectors of columns
    makes its share of ``W_hh h_prev`` in registers and runs :func:`forward_equations` on it there:
    the pre-activations never go to memory.  With ``w_pack`` (:func:`step_pack`: ``[W_ih | W_hh]``
    for these units, ``I + P`` weights a row) the step comes with its input ``x`` ``(I, n)`` in
    place of ``xp``; the tiles read their weights from the pack, each tile's as one contiguous
    block, and their sums take in ``W_ih x`` first (for I <= 512 the same sums in the same order
    as :func:`rnnkit._tiles.tile_gemm`'s projection), then ``W_hh h_prev``.  Otherwise a batch
    too thin for tiles (under ``MIN_COLUMNS`` columns) takes BLAS's matrix-vector product into
    ``ca`` first, then the same equations unit by unit (:func:`rnnkit._tiles.fused_point`).
    """
    H, n = c.shape
    project = w_hr.shape[0] > 0
    out = cb[H:] if project else h                          # ĥ: the cache's second half, or h itself
    operands = (xp, b_x, c_prev, ca, c, cb, out)
    if w_pack.shape[0] > 0:                                 # packed with W_ih: xp is x itself, any n
        _tiles(n, u0, u1, H, w_pack, h_prev, operands, xp)
    elif n < MIN_COLUMNS:                                   # thin: BLAS's product, then unit by unit
        gates_product(w_hh, 4, H, u0, u1, h_prev, ca)       # a = W_hh h_prev
        for j in range(u0, u1):
            for col in range(n):
                _point(j, col, H, operands)
    else:
        _tiles(n, u0, u1, H, w_hh, h_prev, operands, None)
    if project:
        gemm(False, 1.0, w_hr, out, 0.0, h)                 # h = W_hr ĥ


@numba.njit(**KERNEL_OPTIONS)
def _tiles(n, u0, u1, H, w, h_prev, operands, x):  # type: ignore[no-untyped-def]
    """The step's tiles over units ``u0 .. u1-1`` and ``n`` columns (see :func:`step_forward`):
    ``w`` is ``W_hh`` with ``x`` None, or the pack of ``[W_ih | W_hh]`` with ``x`` the input."""
    K = h_prev.shape[0]
    width = tile_width_of(h_prev)
    j, i = u0, 0
    while j < u1:
        units = _TILE_UNITS
        while j + units > u1:
            units //= 2
        for c0 in range(0, n, 2 * width):
            cols = min(2 * width, n - c0)
            nvec = 2 if cols > width else 1
            nlast = cols - (nvec - 1) * width
            _tile(units, nvec, nlast < width, nlast, K, j, c0, H, w, i, h_prev, operands, x)
        j += units
        i += 1


def pack_shape(units: int, K: int) -> tuple[int, int, int]:
    """The shape of :func:`step_pack`'s output for ``units`` hidden units and ``K = I + P`` weights
    a row (the input's and ``h``'s)."""
    return (-(-units // _TILE_UNITS), K, 4 * _TILE_UNITS)


@numba.njit(**KERNEL_OPTIONS)
def step_pack(w_ih, w_hh, u0, u1, out):  # type: ignore[no-untyped-def]
    """``out`` (:func:`pack_shape`) = the rows of ``[W_ih | W_hh]`` for units ``u0 .. u1-1``, tile
    by tile in the order :func:`step_forward` reads them (see :func:`rnnkit._tiles.pack_rows`)."""
    H, I = w_hh.shape[0] // 4, w_ih.shape[1]
    pack_rows(w_ih, 4, H, _TILE_UNITS, u0, u1, out[:, :I])
    pack_rows(w_hh, 4, H, _TILE_UNITS, u0, u1, out[:, I:])


def pack_t_shape(units: int, P: int, I: int) -> tuple[int, int, int]:
    """The shape of :func:`step_pack_t`'s output for ``units`` hidden units, ``h`` of size ``P`` and
    inputs of size ``I``."""
    return (-(-P // MR) + -(-I // MR), 4 * units, MR)


@numba.njit(**KERNEL_OPTIONS)
def step_pack_t(w_ih, w_hh, u0, u1, out):  # type: ignore[no-untyped-def]
    """``out`` (:func:`pack_t_shape`) = ``[W_hh | W_ih]ᵀ`` over the gate rows of units ``u0 .. u1-1``,
    in blocks of rows as :func:`rnnkit._tiles.packed_product` reads them: first ``W_hhᵀ``'s (for
    ``dh_prev``), then ``W_ihᵀ``'s (for ``dx``)."""
    H = w_hh.shape[0] // 4
    nb = -(-w_hh.shape[1] // MR)
    pack_columns(w_hh, 4, H, u0, u1, out[:nb])
    pack_columns(w_ih, 4, H, u0, u1, out[nb:])


@numba.njit(**KERNEL_OPTIONS)
def step_backward(dh, dc, h_prev, c_prev, h, ca, cb, w_hh_t, w_hr, p, d_xp, d_hp, dp, u0, u1, dh_prev,  # type: ignore[no-untyped-def]
    w_pack_t, dx):
    """Backward of one LSTM step for units ``u0 .. u1-1``: ``dc`` becomes the gradient for ``c_prev``,
    ``dh_prev`` receives these units' share of the gradient for ``h_prev``.  With ``w_pack_t``
    (:func:`step_pack_t`) ``dx`` ``(I, n)`` receives their share of the input's gradient ``W_ihᵀ da``
    too, in the same kind of product (else ``dx`` is untouched and ``w_hh_t`` is read instead)."""
    H, n = dc.shape
    d_out = dh
    if w_hr.shape[0] > 0:  # dĥ = W_hrᵀ dh, written where d_o goes (each entry is read before d_o overwrites it)
        d_out = d_xp[3 * H :]
        gemm(True, 1.0, w_hr, dh, 0.0, d_out)
    for j in range(u0, u1):                                 # the gradients of the gates' outputs
        i, f, g, o = row(ca, j), row(ca, H + j), row(ca, 2 * H + j), row(ca, 3 * H + j)
        d_i, d_f, d_g, d_o = row(d_xp, j), row(d_xp, H + j), row(d_xp, 2 * H + j), row(d_xp, 3 * H + j)
        dh_j, dc_j, c_prev_j, tanh_c_j = row(d_out, j), row(dc, j), row(c_prev, j), row(cb, j)
        for b in range(n):
            tanh_c = tanh_c_j[b]
            dc_ = dc_j[b] + dh_j[b] * o[b] * (ONE - tanh_c * tanh_c)
            d_i[b] = dc_ * g[b]
            d_f[b] = dc_ * c_prev_j[b]
            d_g[b] = dc_ * i[b]
            d_o[b] = dh_j[b] * tanh_c
            dc_j[b] = dc_ * f[b]                                # dc_prev = dc ⊙ f
    for gate in range(4):                                   # through the nonlinearities: σ' = y(1-y), tanh' = 1-y²
        for r in range(gate * H + u0, gate * H + u1):
            d, y = row(d_xp, r), row(ca, r)
            if gate == 2:
                for b in range(n):
                    d[b] *= ONE - y[b] * y[b]
            else:
                for b in range(n):
                    d[b] *= y[b] * (ONE - y[b])
    if w_pack_t.shape[0] > 0:                               # [dh_prev; dx] = [W_hh | W_ih]ᵀ da
        nb = -(-dh_prev.shape[0] // MR)
        packed_product(w_pack_t[:nb], d_xp, u0, u1 - u0, 4, H, dh_prev)
        packed_product(w_pack_t[nb:], d_xp, u0, u1 - u0, 4, H, dx)
    else:
        gates_product_t(w_hh_t, 4, H, u0, u1, d_xp, 0.0, dh_prev)    # dh_prev = W_hhᵀ da


KIND = register(2, step_forward, step_backward, step_pack, step_pack_t)

LSTM_CELL = CellSpec(
    name="lstm",
    kind=KIND,
    num_gates=4,
    state_names=("h", "c"),
    cache_type=LSTMCache,
    cache_rows=(4, 1),
    separate_hidden_grad=False,
    split_bias=split_bias,
    options={},
    pack_shape=pack_shape,
    pack_t_shape=pack_t_shape,
)
