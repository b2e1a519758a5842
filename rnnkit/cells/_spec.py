"""What the one BPTT loop (:mod:`rnnkit.unroll`) needs to know about a cell, and the gate functions.

A cell is a pair of compiled (numba) step kernels plus a few facts about its shapes.  Everything is
feature-major: one step's hidden state is ``(H, n)`` (``n`` the sequences still running), its gate
pre-activations ``(G*H, n)``.  Every cell's kernels take the same arguments, so one time loop
drives them all; a cell ignores the ones it has no use for (an RNN has no ``c``), which the loop
passes as empty arrays.

``step_forward(xp, b_x, b_in, w_hh, w_hr, p, h_prev, c_prev, h, c, ca, cb, u0, u1, w_pack) -> None``
    ``xp`` ``(G*H, n)`` is ``W_ih x`` for this step, computed for a chunk of steps by one matrix
    product outside the step; ``b_x`` ``(G*H,)`` the biases that add straight into the
    pre-activations, ``b_in`` the part that cannot (the GRU's ``b_hn``; empty otherwise).  The
    kernel computes ``W_hh h_prev`` itself (the product that cannot leave the time loop), writes the
    new states ``h`` (and ``c``) and the cache fields ``ca``, ``cb`` its backward needs.  ``w_hr``
    ``(P, H)`` is the LSTM's output projection (``proj_size`` P; then ``h`` is ``(P, n)`` and
    ``w_hh`` ``(G*H, P)``), an empty array for every cell without one.  ``p`` (1-D) holds the
    cell's own extra parameters, packed in the cell's order (the layer-normalised LSTM's gains,
    biases and shifts); empty for the cells without any.  The call computes hidden units
    ``u0 .. u1-1`` only (their rows of every gate, state and cache field; every array is passed
    whole): threads that split a layer's units each make one call per step, and ``(0, H)`` is the
    whole step.  Cells whose units are coupled within a step (a projection, a layer norm) are only
    ever called with ``(0, H)``.  ``w_pack`` (3-D) is either empty or ``[W_ih | W_hh]``'s rows for
    units ``u0 .. u1-1`` (``I + P`` weights a row) rearranged by the cell's
    ``step_pack(w_ih, w_hh, u0, u1, w_pack)`` in the order its product reads them (made once per
    pass, not per step): then ``xp`` is the step's input ``x`` itself, ``(I, n)``, and the kernel
    makes ``W_ih x`` in the same pass.  Only a cell whose ``pack_shape`` is set is handed one.
    From Python, ``w_pack`` may be left out (none).

``step_backward(dh, dc, h_prev, c_prev, h, ca, cb, w_hh_t, w_hr, p, d_xp, d_hp, dp, u0, u1, dh_prev, w_pack_t, dx)``
    ``dh`` (``dc``) hold ``∂L/∂h`` (``∂L/∂c``) of this step, ``dh`` already including this step's
    output gradient; the kernel overwrites ``dc`` *in place* with the gradient for ``c_prev`` and
    writes into ``dh_prev`` (``(P, n)``, every row) this call's share of the gradient for
    ``h_prev``: ``W_hhᵀ`` times its units' gate gradients, plus any direct path of its own units.
    ``dh_prev`` is ``dh`` itself when the call covers every unit ``(0, H)``; threads that split the
    units each write their own ``dh_prev`` and add the shares up after the step.  The kernel writes
    the gradient with respect to ``xp`` (the input part of the pre-activations) into ``d_xp`` and
    with respect to ``W_hh h_prev + b_hh`` into ``d_hp`` (the same array when the two coincide),
    for its units' rows, and *adds* this step's gradient of ``p`` into ``dp`` (same layout as ``p``;
    empty for the cells without extra parameters).  ``w_hh_t`` is ``W_hhᵀ``, ``(P, G*H)``
    C-contiguous, transposed once per backward pass by the caller (see :func:`gates_product_t`).
    Weight gradients are *not* formed per step: the loop forms them after the last step, one
    matrix product each.  ``w_pack_t`` (3-D) is either empty or, for a cell whose ``pack_t_shape``
    is set, ``[W_hh | W_ih]ᵀ`` over its units' gate rows, rearranged by the cell's
    ``step_pack_t(w_ih, w_hh, u0, u1, w_pack_t)`` (once per pass): then the kernel also writes into
    ``dx`` (``(I, n)``) its units' share of the gradient for the step's input, ``W_ihᵀ d_xp``, made
    in the same product as ``dh_prev``'s (the loop then skips the input gradient's matrix product
    after the last step).  Otherwise ``dx`` is untouched (and may be empty).

The kernels write only into the arrays they are given and keep nothing between calls: they are
pure step functions in every sense that matters, and the time loop allocates nothing.

Float32 gates use :func:`tanh_lanes`' rational approximation (within 3.5e-7 relative of the exact
tanh) and :func:`sigmoid_lanes`' ``1/(1+e^-x)`` with a polynomial ``exp`` (within 2.5e-7 relative
down to σ = 1.6e-38, at x = -87), both free of calls so that the loops over them vectorise; in the
LSTM's 16-lane tiles on AVX-512 their division adds up to 2 ulp (within 5e-7 relative, tested).
Float64 uses libm's ``tanh`` and ``exp`` (gradient checks and the 1e-10 PyTorch comparisons).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import llvmlite.binding as llvm
import numba
import numpy as np
from numba import types
from numba.core import cgutils
from numba.extending import NativeValue, intrinsic, models, overload, register_model, typeof_impl, unbox

from rnnkit._blas import gemm
from rnnkit._types import Array
from rnnkit._vector import Emitter, Lanes, polynomial

_EMPTY: dict[np.dtype[Any], Array] = {
    np.dtype(np.float32): np.empty((0, 0), np.float32),
    np.dtype(np.float64): np.empty((0, 0)),
}
_EMPTY_VECTOR: dict[np.dtype[Any], Array] = {
    np.dtype(np.float32): np.empty(0, np.float32),
    np.dtype(np.float64): np.empty(0),
}


def empty_state(dtype: np.dtype[Any]) -> Array:
    """A shared ``(0, 0)`` array, passed for the arguments a cell does not use (nothing can be written to it)."""
    return _EMPTY[np.dtype(dtype)]


def empty_vector(dtype: np.dtype[Any]) -> Array:
    """A shared ``(0,)`` array: the ``p`` and ``dp`` of a cell without extra parameters."""
    return _EMPTY_VECTOR[np.dtype(dtype)]


@dataclass(frozen=True)
class CellSpec:
    """The facts about one cell kind that the generic time loop uses."""

    name: str
    kind: CellKind
    """The cell's entry in :func:`step_forward`'s table (a compile-time constant in the loop)."""
    num_gates: int
    """G: rows of ``weight_ih`` / ``weight_hh`` are ``G*H`` (gates stacked in PyTorch's order)."""
    state_names: tuple[str, ...]
    """``("h",)`` or ``("h", "c")``; the first state is always the output ``h``."""
    cache_type: type[Any]
    """The cell's step-cache NamedTuple class (called with one array per used field)."""
    cache_rows: tuple[int, int]
    """Rows of the cache fields ``ca``, ``cb`` in units of H (0: the cell does not use it)."""
    separate_hidden_grad: bool
    """True when ``d(W_hh h + b_hh)`` differs from ``d(xp)`` (GRU: the reset gate sits between)."""
    split_bias: Callable[[Array, Array], tuple[Array, Array]]
    """``(b_ih, b_hh) -> (b_x, b_in)``: the biases added into the pre-activations and the part kept inside."""
    options: dict[str, Any]
    cache_extra_rows: tuple[int, int] = (0, 0)
    """Rows of ``ca``, ``cb`` beyond :attr:`cache_rows` (per-sequence statistics: not a multiple of H)."""
    splits_units: bool = True
    """Whether a step can be computed a range of hidden units at a time (False: the units are coupled
    within a step, as by a layer norm, so the kernels always get all of them)."""
    pack_shape: Callable[[int, int], tuple[int, int, int]] | None = None
    """``(units, K) -> shape`` of the cell's packed ``[W_ih | W_hh]`` (``w_pack``) for ``units``
    hidden units and ``K = I + P`` weights a row; None: the cell packs nothing."""
    pack_t_shape: Callable[[int, int, int], tuple[int, int, int]] | None = None
    """``(units, P, I) -> shape`` of the cell's packed ``[W_hh | W_ih]ᵀ`` (the backward's
    ``w_pack_t``) for ``units`` hidden units; None: the backward reads ``W_hhᵀ`` as it is."""

    def cache_sizes(self, H: int) -> tuple[int, int]:
        """Rows of the cache fields ``ca``, ``cb`` for hidden size H."""
        return (self.cache_rows[0] * H + self.cache_extra_rows[0], self.cache_rows[1] * H + self.cache_extra_rows[1])

    def forward(self, xp: Array, prev: tuple[Array, ...], new: tuple[Array, ...], cache: tuple[Array, ...],
                w_hh: Array, b_in: Array, p: Array | None = None) -> None:
        """One step from Python (the textbook API): ``xp`` ``(G*H, n)`` already holds ``W_ih x + b_x``.

        ``prev`` / ``new`` are tuples of ``(H, n)`` states, ``cache`` the cell's cache fields
        (:attr:`cache_type`), all written in place; ``p`` the cell's extra parameters (None: none).
        Arrays must have a contiguous last axis.
        """
        h_prev, c_prev = _pair(prev, xp.dtype)
        h, c = _pair(new, xp.dtype)
        ca, cb = _pair(cache, xp.dtype)
        b_x = _zeros(xp.shape[0], xp.dtype)
        units = xp.shape[0] // self.num_gates
        step_forward(self.kind, _unit(xp), b_x, _unit(b_in), _unit(w_hh), empty_state(xp.dtype),
                     empty_vector(xp.dtype) if p is None else p, _unit(h_prev), _unit(c_prev), h, c, ca, cb, 0, units,
                     empty_pack(xp.dtype))

    def forward_steps(self, xp: Array, h: Array, c: Array | None, ca: Array | None, cb: Array | None,
                      w_hh: Array, b_in: Array, p: Array | None = None) -> None:
        """The steps of a whole sequence from Python in one compiled call (the textbook API's
        ``*_forward``): step ``t`` is :meth:`forward` from ``h[t]`` (``c[t]``) with ``xp[t]``,
        into ``h[t+1]`` (``c[t+1]``) and the cache fields ``ca[t]``, ``cb[t]``.

        ``xp`` is ``(T, G*H, n)`` (``W_ih x + b_x`` of every step), ``h`` and ``c`` ``(T+1, H, n)``
        with the initial states in slot 0; ``c``, ``ca``, ``cb`` None where the cell has no such
        array.  Everything is written in place.
        """
        dtype = xp.dtype
        T = xp.shape[0]

        def block(a: Array | None, slots: int) -> Array:
            if a is None:
                return np.empty((slots, 0, 0), dtype)
            if a.shape[-1] > 1 and a.strides[-1] != a.itemsize:  # a copy would take the results away
                raise ValueError("forward_steps writes into its blocks: their last axis must be contiguous")
            return a

        _forward_steps(self.kind, _unit(xp), _zeros(xp.shape[1], dtype), _unit(b_in), _unit(w_hh),
                       empty_state(dtype), empty_vector(dtype) if p is None else p, block(h, T + 1),
                       block(c, T + 1), block(ca, T), block(cb, T), xp.shape[1] // self.num_gates, empty_pack(dtype))

    def backward(self, d_state: tuple[Array, ...], prev: tuple[Array, ...], new: tuple[Array, ...],
                 cache: tuple[Array, ...], w_hh_t: Array, d_xp: Array, d_hp: Array, p: Array | None = None,
                 dp: Array | None = None) -> None:
        """One step's backward from Python: ``d_state`` is overwritten with the gradients for ``prev``;
        this step's gradient of ``p`` is added into ``dp`` (both None for a cell without extra parameters).
        ``w_hh_t`` is ``W_hhᵀ`` (``(P, G*H)``): a caller running many steps transposes it once."""
        dtype = w_hh_t.dtype
        dh, dc = _pair(d_state, dtype)
        h_prev, c_prev = _pair(prev, dtype)
        h, _ = _pair(new, dtype)
        ca, cb = _pair(cache, dtype)
        if w_hh_t.shape[0] != dh.shape[0] or w_hh_t.shape[1] % self.num_gates:
            raise ValueError(f"w_hh_t must be W_hhᵀ, ({dh.shape[0]}, {self.num_gates}*H), got shape {w_hh_t.shape}")
        units = w_hh_t.shape[1] // self.num_gates
        step_backward(self.kind, dh, dc, _unit(h_prev), _unit(c_prev), _unit(h), _unit(ca), _unit(cb), _unit(w_hh_t),
                      empty_state(dtype), empty_vector(dtype) if p is None else p, d_xp, d_hp,
                      empty_vector(dtype) if dp is None else dp, 0, units, dh)


_ZEROS: dict[tuple[int, np.dtype[Any]], Array] = {}


def _zeros(n: int, dtype: np.dtype[Any]) -> Array:
    """A shared vector of ``n`` zeros (the kernels only read their bias vectors) for the steps run
    from Python, whose ``xp`` already holds the bias: one per size and dtype, not one per call."""
    key = (n, np.dtype(dtype))
    zeros = _ZEROS.get(key)
    if zeros is None:
        zeros = _ZEROS[key] = np.zeros(n, key[1])
    return zeros


def _unit(a: Array) -> Array:
    """``a`` itself when its last axis is contiguous (what the matrix product needs), else a copy."""
    return a if a.ndim == 0 or a.shape[-1] <= 1 or a.strides[-1] == a.itemsize else np.ascontiguousarray(a)


def _pair(arrays: tuple[Array, ...], dtype: np.dtype[Any]) -> tuple[Array, Array]:
    """The first two of ``arrays``, the missing ones as empty arrays (a cell's unused arguments)."""
    padded = (*arrays, empty_state(dtype), empty_state(dtype))
    return padded[0], padded[1]


# ----------------------------------------------------------------------------- the cell table
# The time loop calls step_forward(kind, ...) where ``kind`` is a CellKind: its numba type carries
# the cell's number, so the overloads below pick the cell's own kernel at compile time.  The one
# loop is compiled once per cell, with nothing dispatched at run time, and (since the type has a
# stable name) numba's on-disk cache keeps each compiled loop.  Cells register on import.
_FORWARD: dict[int, Any] = {}
_BACKWARD: dict[int, Any] = {}
_PACK: dict[int, Any] = {}
_PACK_T: dict[int, Any] = {}

_EMPTY_PACK: dict[np.dtype[Any], Array] = {
    np.dtype(np.float32): np.empty((0, 0, 0), np.float32),
    np.dtype(np.float64): np.empty((0, 0, 0)),
}


def empty_pack(dtype: np.dtype[Any]) -> Array:
    """A shared ``(0, 0, 0)`` array: the ``w_pack`` of a step that reads ``W_hh`` itself."""
    return _EMPTY_PACK[np.dtype(dtype)]


@numba.njit(cache=True, nogil=True)
def _no_pack(w_ih, w_hh, u0, u1, out):  # type: ignore[no-untyped-def]
    """The packing kernel of a cell that reads ``W_hh`` as it is: nothing to do."""


class CellKind:
    """A cell's number, passed to compiled code as a compile-time constant (see :class:`CellKindType`)."""

    def __init__(self, number: int) -> None:
        self.number = number

    def __repr__(self) -> str:
        return f"CellKind({self.number})"


class CellKindType(types.Type):
    """The numba type of a :class:`CellKind`: one type per cell, holding no run-time data."""

    def __init__(self, number: int) -> None:
        self.number = number
        super().__init__(name=f"rnnkit.CellKind({number})")


@typeof_impl.register(CellKind)
def _typeof_kind(value, context):  # type: ignore[no-untyped-def]
    return CellKindType(value.number)


register_model(CellKindType)(models.OpaqueModel)


@unbox(CellKindType)
def _unbox_kind(typ, obj, c):  # type: ignore[no-untyped-def]
    return NativeValue(c.context.get_dummy_value())


def register(number: int, forward: Any, backward: Any, pack: Any = None, pack_t: Any = None) -> CellKind:
    """Make ``forward`` / ``backward`` the kernels of cell ``number`` and ``pack`` / ``pack_t`` its
    weight-packing kernels for them (None: the step reads ``W_hh`` / ``W_hhᵀ`` as it is); returns
    its :class:`CellKind`."""
    _FORWARD[number], _BACKWARD[number] = forward, backward
    _PACK[number], _PACK_T[number] = pack or _no_pack, pack_t or _no_pack
    return CellKind(number)


_FORWARD_ARGS = 15
"""Arguments of a forward kernel (see the module docstring)."""


def step_forward(kind: CellKind, *args: Any) -> None:
    """Run cell ``kind``'s forward kernel (arguments as in the module docstring; ``w_pack`` may be
    left out)."""
    if len(args) == _FORWARD_ARGS - 1:
        args = (*args, empty_pack(args[0].dtype))
    _FORWARD[kind.number](*args)


def step_pack(kind: CellKind, w_ih: Array, w_hh: Array, u0: int, u1: int, out: Array) -> None:
    """Fill ``out`` with cell ``kind``'s packed ``[W_ih | W_hh]`` for units ``u0 .. u1-1`` (see
    :attr:`CellSpec.pack_shape`)."""
    _PACK[kind.number](w_ih, w_hh, u0, u1, out)


def step_pack_t(kind: CellKind, w_ih: Array, w_hh: Array, u0: int, u1: int, out: Array) -> None:
    """Fill ``out`` with cell ``kind``'s packed ``[W_hh | W_ih]ᵀ`` for units ``u0 .. u1-1`` (see
    :attr:`CellSpec.pack_t_shape`)."""
    _PACK_T[kind.number](w_ih, w_hh, u0, u1, out)


_BACKWARD_ARGS = 18
"""Arguments of a backward kernel (see the module docstring)."""


def step_backward(kind: CellKind, *args: Any) -> None:
    """Run cell ``kind``'s backward kernel (arguments as in the module docstring; ``w_pack_t`` and
    ``dx`` may be left out)."""
    if len(args) == _BACKWARD_ARGS - 2:
        args = (*args, empty_pack(args[0].dtype), empty_state(args[0].dtype))
    _BACKWARD[kind.number](*args)


def _table_overload(table: dict[int, Any]) -> Any:
    def typer(kind, *args):  # type: ignore[no-untyped-def]  # (numba compares signatures)
        if isinstance(kind, CellKindType):
            kernel = table[kind.number]

            def impl(kind, *args):  # type: ignore[no-untyped-def]
                kernel(*args)

            return impl
        return None

    return typer


overload(step_forward, jit_options={"cache": True})(_table_overload(_FORWARD))
overload(step_backward, jit_options={"cache": True})(_table_overload(_BACKWARD))
overload(step_pack, jit_options={"cache": True})(_table_overload(_PACK))
overload(step_pack_t, jit_options={"cache": True})(_table_overload(_PACK_T))


# ----------------------------------------------------------------------------- gate functions
KERNEL_OPTIONS: dict[str, Any] = {"cache": True, "nogil": True, "error_model": "numpy"}
"""numba options of every kernel.  ``error_model="numpy"``: IEEE division (no Python ZeroDivisionError
check), without which no loop that divides is vectorised."""

@numba.njit(**KERNEL_OPTIONS)
def _forward_steps(kind, xp, b_x, b_in, w_hh, w_hr, p, h, c, ca, cb, units, w_pack):  # type: ignore[no-untyped-def]
    """:meth:`CellSpec.forward_steps`: one step after the other, with nothing in between."""
    for t in range(xp.shape[0]):
        step_forward(kind, xp[t], b_x, b_in, w_hh, w_hr, p, h[t], c[t], h[t + 1], c[t + 1], ca[t], cb[t], 0, units,
                     w_pack)


# A step's inner loop reads and writes about a dozen rows that the compiler cannot prove distinct;
# LLVM vectorises such a loop behind a run-time overlap check, but by default gives up past 8
# pointer comparisons.  Raising the limit only lets more loops vectorise (numba's own included).
llvm.set_option("", "-runtime-memory-check-threshold=128")


@intrinsic
def row(typingctx, a, j):  # type: ignore[no-untyped-def]
    """Row ``j`` of a 2-D array whose last axis is contiguous, typed as a contiguous 1-D array.

    numba types a column slice (the first ``n`` columns of a step's block) as a general strided
    array, whose loops cannot be vectorised; the kernels' rows are contiguous, and this says so.
    """
    row_type = types.Array(a.dtype, 1, "C")

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        arr = context.make_array(a)(context, builder, args[0])
        shape = cgutils.unpack_tuple(builder, arr.shape, 2)
        strides = cgutils.unpack_tuple(builder, arr.strides, 2)
        offset = builder.mul(args[1], strides[0])
        data = builder.inttoptr(builder.add(builder.ptrtoint(arr.data, cgutils.intp_t), offset), arr.data.type)
        out = context.make_array(row_type)(context, builder)
        itemsize = context.get_constant(types.intp, context.get_abi_sizeof(context.get_data_type(a.dtype)))
        context.populate_array(out, data=data, shape=cgutils.pack_array(builder, [shape[1]]),
                               strides=cgutils.pack_array(builder, [itemsize]), itemsize=itemsize, meminfo=None)
        return out._getvalue()

    return row_type(a, types.intp), codegen
ONE = np.float32(1.0)
"""1 in kernels: a float32 constant keeps float32 arithmetic in float32 (a Python ``1`` would promote
it to float64) and is exact in float64 arithmetic."""
ZERO = np.float32(0.0)

_TANH_LIMIT = 7.99881172180175781
_TANH_P = (-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11, 5.12229709037114e-08,
           1.48572235717979e-05, 6.37261928875436e-04, 4.89352455891786e-03)
_TANH_Q = (1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03, 4.89352518554385e-03)


def tanh_lanes(x: Lanes) -> Lanes:
    """tanh, the one copy every compiled kernel uses: exact (libm) in float64; in float32 the [13/6]
    rational minimax approximation on [-7.9988, 7.9988] (beyond it tanh(x) rounds to ±1 within
    2.3e-7), max relative error 3.4e-7 over float32 (measured against float64 tanh on 2.4M points),
    free of calls, so that loops over it vectorise.  NaN stays NaN."""
    emit = x.emit
    if emit.double:
        return emit.libm("tanh", x)
    v = emit.clamp(x, -_TANH_LIMIT, _TANH_LIMIT)
    v2 = v * v
    # v times the ratio, not (v * P) / Q: near 0 the ratio is 1 to 1.3e-7, so tiny and subnormal x
    # come out as x itself rather than losing bits to an underflowing v * P.
    return v * (polynomial(v2, _TANH_P) / polynomial(v2, _TANH_Q))


# exp on [-87, 0] in float32: n = round(y / ln 2), r = y - n ln 2 (in two parts, so that n ln 2 is
# exact), e^r = 1 + r + r²·P(r) on |r| <= ln(2)/2 (Cephes' expf polynomial, within 1 ulp), times 2^n.
_LOG2E = 1.4426950408889634
_LN2_HI, _LN2_LO = 0.693359375, -2.12194440e-4
_EXP_P = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1)
_ROUNDING = 12582912.0   # 1.5·2^23: adding it rounds a float32 of magnitude < 2^22 to an integer
_EXP_FLOOR = -87.0       # e^-87 = 1.6e-38, the smallest power the bits can hold as a normal float


def _exp_nonpositive(y: Lanes) -> Lanes:
    """float32 e^y for y <= 0, within 2 ulp (below -87, e^-87: at most 1.6e-38 off)."""
    emit = y.emit
    y = emit.where(emit.less(y, _EXP_FLOOR), _EXP_FLOOR, y)
    t = emit.fma(y, _LOG2E, _ROUNDING)            # _ROUNDING + n, n = round(y log2 e)
    n = t - _ROUNDING
    r = emit.fma(n, -_LN2_HI, y)
    r = emit.fma(n, -_LN2_LO, r)
    e_r = emit.fma(polynomial(r, _EXP_P), r * r, r) + 1.0
    return e_r * emit.pow2_from_rounding(t, _ROUNDING)


def sigmoid_lanes(x: Lanes) -> Lanes:
    """σ(x) = 1 / (1 + e^-x), relatively exact on both sides: with z = e^-|x| (never overflows),
    σ = 1/(1+z) for x >= 0 and z/(1+z) for x < 0 (where ½·tanh(½x) + ½ would lose every digit of a
    small σ to cancellation: an output gate of 1e-4 then came out 2% off).  float32: within 2.5e-7
    relative down to x = -87; below, e^-87 = 1.6e-38 rather than smaller.  float64 takes libm's exp."""
    emit = x.emit
    y = -emit.abs(x)
    z = emit.libm("exp", y) if emit.double else _exp_nonpositive(y)
    q = 1.0 / (1.0 + z)
    return emit.where(emit.less(x, 0.0), z * q, q)


def _scalar_intrinsic(lanes_fn: Callable[[Lanes], Lanes]) -> Any:
    """A numba intrinsic applying ``lanes_fn`` to one float32 or float64 number, emitted inline (so
    that a loop over it vectorises)."""

    @intrinsic
    def scalar(typingctx, x):  # type: ignore[no-untyped-def]
        if x not in (types.float32, types.float64):
            return None

        def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
            return lanes_fn(Lanes(Emitter(builder, x == types.float64, 1), args[0])).value

        return x(x), codegen

    return scalar


_tanh = _scalar_intrinsic(tanh_lanes)
_sigmoid = _scalar_intrinsic(sigmoid_lanes)


def tanh(x: float) -> float:
    """tanh for compiled kernels (see :func:`tanh_lanes`)."""
    return math.tanh(x)


@overload(tanh, jit_options=KERNEL_OPTIONS)
def _tanh_impl(x):  # type: ignore[no-untyped-def]
    return lambda x: _tanh(x)


def sigmoid(x: float) -> float:
    """σ for compiled kernels (see :func:`sigmoid_lanes`)."""
    z = math.exp(-abs(x))
    return 1 / (1 + z) if x >= 0 else z / (1 + z)


@overload(sigmoid, jit_options=KERNEL_OPTIONS)
def _sigmoid_impl(x):  # type: ignore[no-untyped-def]
    return lambda x: _sigmoid(x)


@numba.njit(**KERNEL_OPTIONS)
def _tanh_float32(x):  # type: ignore[no-untyped-def]
    """:func:`tanh` callable from Python (for its tests)."""
    return _tanh(x)


@numba.njit(**KERNEL_OPTIONS)
def _sigmoid_of(xs):  # type: ignore[no-untyped-def]
    """:func:`sigmoid` of every entry of a 1-D array, from Python (for its tests)."""
    out = np.empty_like(xs)
    for i in range(xs.size):
        out[i] = _sigmoid(xs[i])
    return out


@numba.njit(**KERNEL_OPTIONS)
def gates_product(w, G, H, u0, u1, x, out):  # type: ignore[no-untyped-def]
    """``out[g*H + j] = (w @ x)[g*H + j]`` for every gate ``g`` and unit ``j`` in ``u0 .. u1-1``.

    One matrix product when the units are all of them, else one per gate (the rows of a gate's
    units are contiguous in PyTorch's gate-stacked layout).
    """
    if u0 == 0 and u1 == H:
        gemm(False, 1.0, w, x, 0.0, out)
    else:
        for g in range(G):
            gemm(False, 1.0, w[g * H + u0 : g * H + u1], x, 0.0, out[g * H + u0 : g * H + u1])


@numba.njit(**KERNEL_OPTIONS)
def gates_product_t(w_t, G, H, u0, u1, d, beta, out):  # type: ignore[no-untyped-def]
    """``out = beta * out + Σ_g w_t[:, cols] d[cols]``, the columns those of gate ``g`` for units
    ``u0 .. u1-1``: the share of ``W_hhᵀ d`` that comes from these units' gates (the whole of it for
    ``(0, H)``).  ``w_t`` is ``W_hhᵀ`` itself, ``(P, G*H)``, transposed once per backward pass:
    read as ``W_hh`` with a transposed access, the product's steps through the rows of ``W_hh``
    land in a few cache sets (rows 2 KB apart at H = 512) and ran 1.3× slower.
    """
    if u0 == 0 and u1 == H:
        gemm(False, 1.0, w_t, d, beta, out)
    else:
        for g in range(G):
            gemm(False, 1.0, w_t[:, g * H + u0 : g * H + u1], d[g * H + u0 : g * H + u1], beta if g == 0 else 1.0,
                 out)
