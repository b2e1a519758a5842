"""The per-step matrix product, as a register-tiled kernel that reads both operands where they lie.

Each step of the time loop multiplies a fixed weight matrix by a thin block of the batch:
``W_hh h_prev`` is ``(G*H, K) @ (K, n)`` with ``n`` the batch (or one thread's share of it), and
the backward's ``W_hhᵀ da`` the same shape transposed.  A general BLAS routine copies both operands
into its packed layouts on every call; for these thin products that copy costs as much as the
arithmetic (measured: OpenBLAS takes 150 µs for ``(1024, 256) @ (256, 32)`` on one core, this kernel
under 100 µs).  Here nothing is copied, because the feature-major layout already is the packed one:

* a row ``k`` of the right operand (``h_prev[k, :n]``) is contiguous: it loads as one or two vectors;
* an entry of the left operand (``W[m, k]``) is broadcast to every lane.

So one *tile* -- ``MR`` rows of ``C`` by ``NV`` vectors of columns -- keeps its ``MR x NV`` partial
sums in vector registers for the whole reduction over ``k``::

    for k in range(K):
        b[v]      = Bm[k, v*VW : (v+1)*VW]              NV vector loads
        acc[r][v] = fma(broadcast(A[m0 + r, k]), b[v], acc[r][v])     MR x NV fused multiply-adds
    C[m0 + r, v*VW : ...] = alpha * acc[r][v] + beta * C[...]

The tile is emitted as LLVM vector IR (``<VW x float>``, ``llvm.fma``, masked loads and stores for a
last partial vector), because a loop written in Python syntax leaves the choice of registers to the
compiler, which does not keep sixteen accumulators live across the reduction.  ``VW`` and ``MR``
follow the vector unit numba compiles for: 16 float32 lanes and 8 rows (16 of AVX-512's 32 vector
registers hold the sums) on AVX-512, 8 lanes and 4 rows on AVX2.

:func:`tile_gemm` sweeps the tiles over ``C``, in blocks of ``k`` that keep the right operand's rows in
the first-level cache.  It is exact in the sense of any GEMM: the same products, summed in a
different order than another library's (float32 results agree with NumPy's to a few ulps).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import llvmlite.binding as llvm
import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils, config
from numba.extending import intrinsic, overload

from rnnkit._vector import Emitter, Lanes, host_feature


def _vector_bytes() -> tuple[int, int]:
    """(bytes per vector register, number of vector registers) of the CPU numba compiles for."""
    if config.CPU_NAME not in (None, "host"):  # a portable build (NUMBA_CPU_NAME=generic): assume SSE2
        return 16, 16
    if host_feature("avx512f"):
        return 64, 32
    if host_feature("avx2") or host_feature("avx"):
        return 32, 16
    triple = llvm.get_process_triple()
    return 16, (32 if triple.startswith(("aarch64", "arm64")) else 16)


VECTOR_BYTES, _REGISTERS = _vector_bytes()
MR = 8 if _REGISTERS >= 32 else 4
"""Rows of a tile: MR x 2 vectors of sums, plus two loaded rows and a broadcast, fit the registers."""

KC = 256
"""Reduction steps per sweep over the tiles: 256 rows of a 32-column float32 operand are 32 KiB."""

MIN_COLUMNS, MAX_COLUMNS = 8, 128
"""The widths of product :func:`rnnkit._blas.gemm` hands to :func:`tile_gemm` (measured: below 8
columns BLAS's matrix-vector path is faster; beyond 128, BLAS's packed threaded kernel)."""


def _declare(module: ir.Module, name: str, ret: ir.Type, args: list[ir.Type]) -> Any:
    return cgutils.get_or_insert_function(module, ir.FunctionType(ret, args), name)


class _TileIR:
    """What every tile function emits: its vector type, masks, loads and stores (see :func:`_tile_function`)."""

    def __init__(self, builder: ir.IRBuilder, scalar: ir.Type, size: int, nlast: Any, masked: bool) -> None:
        self.builder, self.size = builder, size
        self.width = VECTOR_BYTES // size
        self.vec = ir.VectorType(scalar, self.width)
        self.vec_ptr = ir.PointerType(self.vec)
        self.zero = ir.Constant(self.vec, None)
        self.masked = masked
        module, i32 = builder.module, ir.IntType(32)
        vname = f"v{self.width}{'f32' if size == 4 else 'f64'}"
        mask_type = ir.VectorType(ir.IntType(1), self.width)
        self.fma = _declare(module, f"llvm.fma.{vname}", self.vec, [self.vec, self.vec, self.vec])
        self._masked_load = _declare(module, f"llvm.masked.load.{vname}.p0", self.vec,
                                     [self.vec_ptr, i32, mask_type, self.vec])
        self._masked_store = _declare(module, f"llvm.masked.store.{vname}.p0", ir.VoidType(),
                                      [self.vec, self.vec_ptr, i32, mask_type])
        self._align = ir.Constant(i32, size)
        self.mask = None
        if masked:  # lanes 0 .. nlast-1 of the last vector
            intp = ir.IntType(64)
            lanes = ir.Constant(ir.VectorType(intp, self.width), list(range(self.width)))
            self.mask = builder.icmp_signed("<", lanes, self.splat(nlast, ir.VectorType(intp, self.width)))

    def const(self, v: int) -> ir.Constant:
        return ir.Constant(ir.IntType(64), v)

    def splat(self, x: Any, typ: ir.VectorType | None = None) -> Any:
        typ = typ or self.vec
        i32 = ir.IntType(32)
        v = self.builder.insert_element(ir.Constant(typ, None), x, ir.Constant(i32, 0))
        return self.builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(i32, self.width), None))

    def load(self, at: Any, last: bool) -> Any:
        """The vector at ``at``, or its first ``nlast`` lanes (zeros beyond) when ``last`` of a masked tile."""
        at = self.builder.bitcast(at, self.vec_ptr)
        if last and self.masked:
            return self.builder.call(self._masked_load, [at, self._align, self.mask, self.zero])
        return self.builder.load(at, align=self.size)

    def store(self, value: Any, at: Any, last: bool) -> None:
        at = self.builder.bitcast(at, self.vec_ptr)
        if last and self.masked:
            self.builder.call(self._masked_store, [value, at, self._align, self.mask])
        else:
            self.builder.store(value, at, align=self.size)

    def _loop(self, count: Any, initial: list[list[Any]], body: Callable[[Any, list[list[Any]]], list[list[Any]]],
              name: str) -> list[list[Any]]:
        """A counted loop ``i = 0 .. count-1`` that carries the tile's sums as loop-carried SSA values
        (phi nodes), i.e. registers: ``body(i, sums)`` emits one iteration and returns the updated
        sums.  Returns the sums after the last iteration (``initial`` when ``count`` is 0)."""
        builder = self.builder
        entry = builder.block
        loop = builder.append_basic_block(name)
        done = builder.append_basic_block(f"{name}.done")
        builder.cbranch(builder.icmp_signed(">", count, self.const(0)), loop, done)
        builder.position_at_end(loop)
        i = builder.phi(ir.IntType(64))
        i.add_incoming(self.const(0), entry)
        carried = [[builder.phi(self.vec) for _ in row] for row in initial]
        for phis, values in zip(carried, initial, strict=True):
            for phi, value in zip(phis, values, strict=True):
                phi.add_incoming(value, entry)
        updated = body(i, carried)
        latch = builder.block                       # (the body may have added blocks: a nested loop)
        i_next = builder.add(i, self.const(1))
        i.add_incoming(i_next, latch)
        for phis, values in zip(carried, updated, strict=True):
            for phi, value in zip(phis, values, strict=True):
                phi.add_incoming(value, latch)
        builder.cbranch(builder.icmp_signed("<", i_next, count), loop, done)
        builder.position_at_end(done)
        final: list[list[Any]] = []
        for first, last in zip(initial, updated, strict=True):
            final.append([])
            for before, after in zip(first, last, strict=True):
                phi = builder.phi(self.vec)
                phi.add_incoming(before, entry)
                phi.add_incoming(after, latch)
                final[-1].append(phi)
        return final

    def reduce(self, a_rows: list[Any], sak: Any, b_ptr: Any, sbk: Any, K: Any, nvec: int,
               initial: list[list[Any]]) -> list[list[Any]]:
        """The tile's sums ``initial[r][v] + Σ_k A[r, k] * B[k, v-th vector]`` over ``k < K``.

        ``a_rows[r]`` points at row ``r``'s first element of the left operand (its ``k``-th element
        ``sak`` further on), ``b_ptr`` at row 0 of the right one (row ``k`` ``k*sbk`` further on).  The
        sums stay in registers for the whole reduction (:meth:`_loop`).
        """
        builder = self.builder

        def step(k: Any, sums: list[list[Any]]) -> list[list[Any]]:
            b_row = builder.gep(b_ptr, [builder.mul(k, sbk)])
            b = [self.load(builder.gep(b_row, [self.const(v * self.width)]), v == nvec - 1) for v in range(nvec)]
            a_at = builder.mul(k, sak)
            updated = []
            for r, a_row in enumerate(a_rows):
                a = self.splat(builder.load(builder.gep(a_row, [a_at])))
                updated.append([builder.call(self.fma, [a, b[v], sums[r][v]]) for v in range(nvec)])
            return updated

        return self._loop(K, initial, step, "loop")

    def reduce_segments(self, a_rows: list[Any], sak: Any, b_ptr: Any, sbk: Any, K: Any, nseg: Any, sseg: Any,
                        nvec: int, initial: list[list[Any]]) -> list[list[Any]]:
        """:meth:`reduce` over ``nseg`` segments of ``K`` steps each, the sums carried in registers from
        one segment to the next: segment ``s`` takes the left operand's steps ``s*K .. (s+1)*K - 1``
        and the right operand's ``K`` rows from ``b_ptr + s*sseg`` on (a product whose reduction runs
        over several blocks of rows far apart, such as one thread's units in each gate)."""
        builder = self.builder

        def segment(s: Any, sums: list[list[Any]]) -> list[list[Any]]:
            a_step = builder.mul(builder.mul(s, K), sak)
            b_seg = builder.gep(b_ptr, [builder.mul(s, sseg)])
            return self.reduce([builder.gep(a, [a_step]) for a in a_rows], sak, b_seg, sbk, K, nvec, sums)

        return self._loop(nseg, initial, segment, "segment")


def _new_function(module: ir.Module, name: str, args: list[ir.Type]) -> Any:
    """An internal, never-inlined ``void`` function: the register allocator then sees only the tile
    (inlined into a larger loop, the tile's sums were spilled to the stack)."""
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), args), name)
    fn.linkage = "internal"
    fn.attributes.add("noinline")
    fn.attributes.add("nounwind")
    return fn


def _tile_function(module: ir.Module, scalar: ir.Type, size: int, rows: int, nvec: int, masked: bool) -> Any:
    """The LLVM function of one tile shape, defined in ``module`` on first use.

    ``f(a, sam, sak, b, sbk, c, scm, K, nseg, sseg, nlast, alpha, beta)``: element ``(r, k)`` of the
    left operand is ``a[r*sam + k*sak]`` (a transposed operand is just other strides), row ``k`` of
    the right one starts at ``b[k*sbk]``, row ``r`` of the result at ``c[r*scm]``; ``C = alpha*A@B +
    beta*C`` over ``rows`` rows and ``nvec`` vectors of columns, the last one holding ``nlast`` lanes
    when ``masked``.  The reduction runs over ``nseg`` segments of ``K`` steps (one for a plain
    product): the right operand's rows of segment ``s`` start ``s*sseg`` further on, while the left
    operand's steps simply continue (see :meth:`_TileIR.reduce_segments`).
    ``beta == 0`` never reads C.
    """
    width = VECTOR_BYTES // size
    name = f"rnnkit_tile_{'f32' if size == 4 else 'f64'}_{rows}x{nvec}{'m' if masked else ''}_v{width}"
    if name in module.globals:
        return module.globals[name]
    ptr, intp = ir.PointerType(scalar), ir.IntType(64)
    fn = _new_function(module, name, [ptr, intp, intp, ptr, intp, ptr, intp, intp, intp, intp, intp, scalar, scalar])
    a_ptr, sam, sak, b_ptr, sbk, c_ptr, scm, K, nseg, sseg, nlast, alpha, beta = fn.args
    builder = ir.IRBuilder(fn.append_basic_block("entry"))
    t = _TileIR(builder, scalar, size, nlast, masked)
    a_rows = [builder.gep(a_ptr, [builder.mul(t.const(r), sam)]) for r in range(rows)]
    final = t.reduce_segments(a_rows, sak, b_ptr, sbk, K, nseg, sseg, nvec, [[t.zero] * nvec for _ in range(rows)])
    va, vb = t.splat(alpha), t.splat(beta)
    with builder.if_else(builder.fcmp_unordered("!=", beta, ir.Constant(scalar, 0.0))) as (scaled, plain):
        for keep_c in (True, False):
            with scaled if keep_c else plain:
                for r in range(rows):
                    c_row = builder.gep(c_ptr, [builder.mul(t.const(r), scm)])
                    for v in range(nvec):
                        at = builder.gep(c_row, [t.const(v * width)])
                        value = builder.fmul(va, final[r][v])
                        if keep_c:
                            value = builder.call(t.fma, [vb, t.load(at, v == nvec - 1), value])
                        t.store(value, at, v == nvec - 1)
    builder.ret_void()
    return fn


_ROWS = tuple(rows for rows in (8, 4, 2, 1) if rows <= MR)
"""The tiles' heights: MR for the bulk of C, then MR/2, ..., 1 cover any rest (MR is a power of two)."""


def _dispatch(builder: ir.IRBuilder, heights: Any, rows: Any, nvec: Any, masked: Any,
              call: Callable[[int, int, bool], None]) -> None:
    """Emit a switch on the run-time tile shape -- ``rows`` (one of ``heights``), ``nvec`` (1 or 2)
    vectors, the last ``masked`` or not -- with one case calling ``call(height, vectors, ragged)``
    for each shape.  Any other shape is a bug in the caller: it traps rather than skip the tile and
    leave its part of the result unwritten."""
    intp = ir.IntType(64)
    key = builder.add(builder.mul(rows, ir.Constant(intp, 4)),
                      builder.add(builder.mul(builder.sub(nvec, ir.Constant(intp, 1)), ir.Constant(intp, 2)),
                                  builder.zext(masked, intp)))
    done = builder.append_basic_block("tile.done")
    invalid = builder.append_basic_block("tile.invalid")
    switch = builder.switch(key, invalid)
    for height in heights:
        for vectors in (1, 2):
            for ragged in (False, True):
                case = builder.append_basic_block(f"tile.{height}x{vectors}{'m' if ragged else ''}")
                switch.add_case(ir.Constant(intp, 4 * height + 2 * (vectors - 1) + int(ragged)), case)
                with builder.goto_block(case):
                    call(height, vectors, ragged)
                    builder.branch(done)
    with builder.goto_block(invalid):
        builder.call(_declare(builder.module, "llvm.trap", ir.VoidType(), []), [])
        builder.unreachable()
    builder.position_at_end(done)


@intrinsic
def _tile(typingctx, rows, nvec, masked, A, a0, sam, sak, Bm, b0, sbk, C, c0, scm, K, nseg, sseg, nlast, alpha, beta):
    """One tile: ``rows`` (one of :data:`_ROWS`) x ``nvec`` (1 or 2) vectors of C, the last vector
    ``masked`` to ``nlast`` lanes, whose first elements are ``A.flat[a0]``, ``Bm.flat[b0]`` and
    ``C.flat[c0]`` (strides and segments as in :func:`_tile_function`).  The shape is chosen at run
    time by a switch over the tile functions, all defined in the calling module."""
    dtype = A.dtype
    sig = types.void(types.intp, types.intp, types.boolean, A, types.intp, types.intp, types.intp, Bm, types.intp,
                     types.intp, C, types.intp, types.intp, types.intp, types.intp, types.intp, types.intp, dtype,
                     dtype)

    def codegen(context, builder, signature, args):
        (rows_, nvec_, masked_, A_, a0, sam, sak, B_, b0, sbk, C_, c0, scm, K, nseg, sseg, nlast, alpha, beta) = args
        scalar = context.get_value_type(dtype)
        size = context.get_abi_sizeof(scalar)
        a_ptr = builder.gep(context.make_array(A)(context, builder, A_).data, [a0])
        b_ptr = builder.gep(context.make_array(Bm)(context, builder, B_).data, [b0])
        c_ptr = builder.gep(context.make_array(C)(context, builder, C_).data, [c0])
        def call(height: int, vectors: int, ragged: bool) -> None:
            fn = _tile_function(builder.module, scalar, size, height, vectors, ragged)
            builder.call(fn, [a_ptr, sam, sak, b_ptr, sbk, c_ptr, scm, K, nseg, sseg, nlast, alpha, beta])

        _dispatch(builder, _ROWS, rows_, nvec_, masked_, call)
        return context.get_dummy_value()

    return sig, codegen


_OPTIONS = {"cache": True, "nogil": True, "error_model": "numpy"}


def _scalar(C: Any, x: float) -> float:
    """``x`` in the dtype of array ``C`` (compiled code only)."""
    return x


@overload(_scalar, jit_options=_OPTIONS)
def _scalar_impl(C, x):
    if C.dtype == types.float32:
        return lambda C, x: np.float32(x)
    return lambda C, x: np.float64(x)


@numba.njit(**_OPTIONS)
def _tile_row_block(rows, A, a0, sam, sak, Bm, b0, sbk, C, c0, scm, K, nseg, sseg, N, alpha, beta, width):
    """``rows`` (one of :data:`_ROWS`) rows of C, all its N columns, in tiles of up to two vectors."""
    for j0 in range(0, N, 2 * width):
        w = min(2 * width, N - j0)
        nvec = 2 if w > width else 1
        nlast = w - (nvec - 1) * width
        _tile(rows, nvec, nlast < width, A, a0, sam, sak, Bm, b0 + j0, sbk, C, c0 + j0, scm, K, nseg, sseg, nlast,
              alpha, beta)


@numba.njit(**_OPTIONS)
def tile_gemm(trans_a, alpha, A, Bm, beta, C):
    """``C = alpha * op(A) @ Bm + beta * C`` (``op(A) = A.T`` when ``trans_a``), by register tiles.

    Shapes and strides as in :func:`rnnkit._blas.gemm`: 2-D, last axes contiguous, one float dtype.
    ``beta == 0`` ignores C's old contents.  Meant for thin products (8 to 128 columns).
    """
    M, N = C.shape
    K = Bm.shape[0]
    if M == 0 or N == 0:
        return
    alpha, beta = _scalar(C, alpha), _scalar(C, beta)
    size = A.itemsize
    width = VECTOR_BYTES // size
    sam, sak = (1, A.strides[0] // size) if trans_a else (A.strides[0] // size, 1)
    sbk, scm = Bm.strides[0] // size, C.strides[0] // size
    if K == 0:
        for m in range(M):
            for j in range(N):
                C[m, j] = C[m, j] * beta if beta != 0 else 0
        return
    # Blocks of KC steps of the reduction, so that the rows of Bm one sweep reads stay in the
    # first-level cache while every tile of C passes over them; the first block applies beta,
    # the later ones add into C.
    kc = K if K <= 2 * KC else KC
    for k0 in range(0, K, kc):
        steps = min(kc, K - k0)
        block_beta = beta if k0 == 0 else _scalar(C, 1.0)
        m0 = 0
        while m0 < M:
            rows = MR
            while m0 + rows > M:
                rows //= 2
            _tile_row_block(rows, A, m0 * sam + k0 * sak, sam, sak, Bm, k0 * sbk, sbk, C, m0 * scm, scm,
                            steps, 1, 0, N, alpha, block_beta, width)
            m0 += rows


# ----------------------------------------------------------------------------- a cell's step as a tile
class FusedStep:
    """A cell's forward step as the epilogue of its per-step product (see :func:`fused_step`).

    ``gates`` rows of ``W_hh`` belong to each hidden unit ``j``: rows ``g*H + j``, ``g < gates``.
    The sums start from the operand named ``start`` (``gates`` rows per unit: the input side of
    the pre-activations), so that they leave the reduction as ``W_hh h_prev + start`` at no extra
    cost.  ``inputs`` and ``outputs`` name the cell's other operands, each with its number of rows
    per unit (``gates``, or 1 for a state); ``equations(a, *inputs)`` computes the step on
    :class:`Lanes` (``a`` and each input a list with one value per row) and returns one tuple per
    output.
    """

    def __init__(self, name: str, gates: int, start: str, inputs: tuple[tuple[str, int], ...],
                 outputs: tuple[tuple[str, int], ...], equations: Callable[..., tuple[tuple[Lanes, ...], ...]]) -> None:
        self.name, self.gates, self.start, self.equations = name, gates, start, equations
        self.inputs, self.outputs = inputs, outputs
        self.units = max(1, MR // gates)
        """Units per tile: ``units * gates`` rows of sums, at most :data:`MR`."""


def _fused_function(module: ir.Module, scalar: ir.Type, size: int, cell: FusedStep, units: int, nvec: int,
                    masked: bool, kinds: str, from_input: bool) -> Any:
    """The LLVM function of one tile of ``cell``'s step: ``units`` hidden units, ``nvec`` vectors of columns.

    ``f(w, w_unit, w_gate, w_k, b, sbk, K, nlast, *operands)``: element ``k`` of the weights' row
    for unit ``u``, gate ``g`` is ``w[u*w_unit + g*w_gate + k*w_k]``; each operand (the start, the
    inputs, then the outputs) is three arguments: a pointer to its element for the tile's first unit
    and column, and the distances to the next unit's and the next gate's row.  ``kinds[i]`` is
    ``r`` for an operand of rows, ``b`` for one that holds one number per row (a bias, applied to
    every column).  The sums start at the start operand's rows.

    ``from_input``: the function takes three more arguments, ``x, sxk, Kx``; its sums start at
    zero and run first over the ``Kx`` rows of ``x`` (row ``k`` at ``x[k*sxk]``) with the weights
    ``k = 0 .. Kx-1``, then over ``b`` with the weights ``k = Kx ..``: the step's input projection
    made in the same registers (the start operand is not read).
    """
    width = VECTOR_BYTES // size
    name = (f"rnnkit_step_{cell.name}_{'f32' if size == 4 else 'f64'}_{units}x{nvec}{'m' if masked else ''}"
            f"_v{width}_{kinds}{'_x' if from_input else ''}")
    if name in module.globals:
        return module.globals[name]
    ptr, intp = ir.PointerType(scalar), ir.IntType(64)
    operands = [(cell.start, cell.gates), *cell.inputs, *cell.outputs]
    extra = [ptr, intp, intp] if from_input else []
    fn = _new_function(module, name, [ptr, intp, intp, intp, ptr, intp, intp, intp] + [ptr, intp, intp] * len(operands)
                       + extra)
    w_ptr, w_unit, w_gate, w_k, b_ptr, sbk, K, nlast = fn.args[:8]
    where = [fn.args[8 + 3 * i : 11 + 3 * i] for i in range(len(operands))]
    builder = ir.IRBuilder(fn.append_basic_block("entry"))
    t = _TileIR(builder, scalar, size, nlast, masked)
    G = cell.gates

    def at(i: int, u: int, g: int, v: int) -> Any:
        """Operand ``i``'s element for unit ``u``, gate ``g``, vector ``v`` of the tile."""
        base, s_unit, s_gate = where[i]
        offset = builder.add(builder.mul(t.const(u), s_unit), builder.mul(t.const(g), s_gate))
        return builder.gep(base, [builder.add(offset, t.const(v * width))])

    first_out = 1 + len(cell.inputs)
    a_rows = [builder.gep(w_ptr, [builder.add(builder.mul(t.const(u), w_unit), builder.mul(t.const(g), w_gate))])
              for u in range(units) for g in range(G)]
    if from_input:  # the sums start at zero and take in W_ih x first; W_hh's weights follow W_ih's
        x_ptr, sxk, Kx = fn.args[-3:]
        initial = t.reduce(a_rows, w_k, x_ptr, sxk, Kx, nvec, [[t.zero] * nvec for _ in a_rows])
        a_rows = [builder.gep(a, [builder.mul(Kx, w_k)]) for a in a_rows]
    else:  # the sums start from the start operand's rows
        initial = [[t.load(at(0, u, g, v), v == nvec - 1) for v in range(nvec)] for u in range(units) for g in range(G)]
    sums = t.reduce(a_rows, w_k, b_ptr, sbk, K, nvec, initial)

    emit = Emitter(builder, size == 8, width)
    for u in range(units):
        for v in range(nvec):
            last = v == nvec - 1
            args = []
            for i, (_, rows) in enumerate(cell.inputs, start=1):
                if kinds[i] == "r":
                    args.append([Lanes(emit, t.load(at(i, u, g, v), last)) for g in range(rows)])
                else:
                    args.append([emit.splat(builder.load(at(i, u, g, 0))) for g in range(rows)])
            a = [Lanes(emit, sums[u * G + g][v]) for g in range(G)]
            results = cell.equations(a, *args)
            for i, ((_, rows), values) in enumerate(zip(cell.outputs, results, strict=True)):
                for g in range(rows):
                    t.store(values[g].value, at(first_out + i, u, g, v), last)
    builder.ret_void()
    return fn


def fused_point(cell: FusedStep) -> Any:
    """The numba intrinsic running ``cell``'s step equations on one unit and one column, the product
    already made: ``point(j, col, H, operands)`` (operands as for :func:`fused_step`), where the sums
    are the first output's rows plus the start operand's.  For batches too thin for the tiles (one
    column of a 16-lane vector would waste 15): the same equations, emitted on scalars."""

    @intrinsic
    def point(typingctx, j, col, H, operands):
        arrays = list(operands.types)
        sig = types.void(types.intp, types.intp, types.intp, operands)

        def codegen(context, builder, signature, args):
            j_, col_, H_, ops_ = args
            intp = context.get_value_type(types.intp)
            G = cell.gates
            values = cgutils.unpack_tuple(builder, ops_, len(arrays))

            def element(i: int, g: int) -> Any:
                """Pointer to operand ``i``'s entry for unit ``j``, gate ``g``, column ``col``."""
                typ = arrays[i]
                ary = context.make_array(typ)(context, builder, values[i])
                row = builder.add(j_, builder.mul(ir.Constant(intp, g), H_))
                if typ.ndim == 1:
                    return builder.gep(ary.data, [row])
                size = ir.Constant(intp, context.get_abi_sizeof(context.get_value_type(typ.dtype)))
                stride = builder.sdiv(cgutils.unpack_tuple(builder, ary.strides, 2)[0], size)
                return builder.gep(ary.data, [builder.add(builder.mul(row, stride), col_)])

            emit = Emitter(builder, arrays[0].dtype == types.float64, 1)
            first_out = 1 + len(cell.inputs)
            a = [Lanes(emit, builder.fadd(builder.load(element(0, g)), builder.load(element(first_out, g))))
                 for g in range(G)]
            inputs = [[Lanes(emit, builder.load(element(i, g))) for g in range(rows)]
                      for i, (_, rows) in enumerate(cell.inputs, start=1)]
            results = cell.equations(a, *inputs)
            for i, ((_, rows), out) in enumerate(zip(cell.outputs, results, strict=True)):
                for g in range(rows):
                    builder.store(out[g].value, element(first_out + i, g))
            return context.get_dummy_value()

        return sig, codegen

    return point


@numba.njit(**_OPTIONS)
def pack_rows(w, G, H, U, u0, u1, out):
    """``W``'s rows for units ``u0 .. u1-1`` in the order :func:`fused_step`'s tiles read them.

    Tile ``i`` covers units ``u0 + U*i ..`` (``U`` a tile's units; the last tile may have fewer),
    and ``out[i]`` is ``(K, U*G)`` with ``out[i, k, u*G + g] = w[g*H + u0 + U*i + u, k]``: the tile's
    whole left operand is one contiguous block, read front to back, instead of ``U*G`` rows far
    apart.  The hardware prefetcher then streams it well ahead (measured: ``W_hh`` of an LSTM at
    H = 512, 2 MB a thread, which does not stay in a core's cache, 10% faster per step).
    """
    K = w.shape[1]
    for i in range((u1 - u0 + U - 1) // U):
        block = out[i]
        for u in range(min(U, u1 - u0 - U * i)):
            for g in range(G):
                src = w[g * H + u0 + U * i + u]
                for k in range(K):
                    block[k, u * G + g] = src[k]


@numba.njit(**_OPTIONS)
def pack_columns(w, G, H, u0, u1, out):
    """``W``'s columns as the left operand of :func:`packed_product`, over the rows of units
    ``u0 .. u1-1`` in every gate.

    ``out[i]`` is ``(G*U, MR)`` (``U = u1 - u0``) with ``out[i, g*U + u, r] = w[g*H + u0 + u, MR*i + r]``:
    block ``i`` holds ``MR`` rows of ``Wᵀ`` (columns of ``W``), each over these units' gate rows,
    gate after gate, one contiguous block that a tile reads front to back.  Rows of the last block
    beyond ``W``'s columns are zero.
    """
    U, C = u1 - u0, w.shape[1]
    rows = out.shape[2]
    for i in range(out.shape[0]):
        block = out[i]
        for g in range(G):
            for u in range(U):
                src = w[g * H + u0 + u]
                dst = block[g * U + u]
                for r in range(rows):
                    c = rows * i + r
                    dst[r] = src[c] if c < C else 0


@numba.njit(**_OPTIONS)
def packed_product(pack, d, k0, K, nseg, seg_rows, C):
    """``C = Σ_s Aᵀ_s d[k0 + s*seg_rows : k0 + s*seg_rows + K]`` over ``nseg`` segments, the left
    operand packed by :func:`pack_columns` (``pack[i]``: the ``MR`` rows of block ``i``, ``nseg*K``
    steps; ``C``'s ``M`` rows are the first ``M`` of the blocks).

    The whole reduction over every segment runs in one tile's registers (see
    :meth:`_TileIR.reduce_segments`): for the backward of a step whose thread holds hidden units
    ``u0 .. u1-1``, ``d`` is the ``(G*H, n)`` gate gradients, ``k0 = u0``, ``K = u1 - u0``, ``nseg = G``
    and ``seg_rows = H``, so one call makes that thread's share of ``Wᵀ d`` without gathering its
    rows of ``d`` first.  ``d`` and ``C`` have contiguous rows; ``C``'s old contents are ignored.
    """
    M, N = C.shape
    if M == 0 or N == 0:
        return
    size = C.itemsize
    width = VECTOR_BYTES // size
    sbk, scm = d.strides[0] // size, C.strides[0] // size
    sak = pack.strides[1] // size
    one, zero = _scalar(C, 1.0), _scalar(C, 0.0)
    mr = pack.shape[2]
    for i in range((M + mr - 1) // mr):
        left = min(mr, M - i * mr)
        r = 0
        while r < left:
            rows = MR
            while rows > left - r:
                rows //= 2
            _tile_row_block(rows, pack[i], r, 1, sak, d, k0 * sbk, sbk, C, (i * mr + r) * scm, scm, K, nseg,
                            seg_rows * sbk, N, one, zero, width)
            r += rows


def fused_step(cell: FusedStep) -> Any:
    """The numba intrinsic running one tile of ``cell``'s step (see :class:`FusedStep`).

    ``tile(units, nvec, masked, nlast, K, j0, c0, H, w, tile, h_prev, operands, x)``: for
    hidden units ``j0 .. j0+units-1`` (``units`` ``cell.units`` or a smaller power of two) and the
    columns ``c0 ..`` of ``nvec`` (1 or 2) vectors, the last ``masked`` to ``nlast`` lanes, the sums
    of ``w[g*H + j] @ h_prev[:K]`` for every gate ``g``, then ``cell.equations`` on them, written to
    the outputs.  ``w`` is ``W_hh`` itself (2-D), or packed (3-D, :func:`pack_rows`): then its
    ``tile``-th block holds these units' rows.  ``operands`` is a tuple of the arrays named by
    ``cell.start``, ``cell.inputs`` and ``cell.outputs``: 2-D arrays with a contiguous last axis, or
    a 1-D contiguous array of one number per row.  The sums start at the start operand's rows when
    ``x`` is None.  Otherwise ``x`` is the step's input ``(I, n)`` (a contiguous last axis), ``w``'s
    rows (or blocks) hold ``[W_ih | W_hh]`` (``I + K`` weights each), and the sums are
    ``w[g*H + j] @ [x; h_prev]``: the input projection made in the step's own registers (the start
    operand is then not read).
    """

    @intrinsic
    def tile(typingctx, units, nvec, masked, nlast, K, j0, c0, H, w, tile_, h_prev, operands, x):
        arrays = list(operands.types)
        kinds = "".join("r" if a.ndim == 2 else "b" for a in arrays)
        from_input = x != types.none
        sig = types.void(types.intp, types.intp, types.boolean, types.intp, types.intp, types.intp, types.intp,
                         types.intp, w, types.intp, h_prev, operands, x)

        def codegen(context, builder, signature, args):
            (units_, nvec_, masked_, nlast_, K_, j0_, c0_, H_, w_, tile_index, h_, ops_, x_) = args
            scalar = context.get_value_type(w.dtype)
            size = context.get_abi_sizeof(scalar)
            intp = context.get_value_type(types.intp)
            itemsize = ir.Constant(intp, size)

            def place(typ: Any, value: Any, row: Any, col: Any) -> tuple[Any, Any, Any]:
                """Pointer to element (row, col), and the unit and gate strides in elements."""
                ary = context.make_array(typ)(context, builder, value)
                if typ.ndim == 1:
                    return builder.gep(ary.data, [row]), ir.Constant(intp, 1), H_
                stride = builder.sdiv(cgutils.unpack_tuple(builder, ary.strides, 2)[0], itemsize)
                at = builder.add(builder.mul(row, stride), col)
                return builder.gep(ary.data, [at]), stride, builder.mul(H_, stride)

            zero, one = ir.Constant(intp, 0), ir.Constant(intp, 1)
            if w.ndim == 3:  # packed: block ``tile``, rows (u, g) at u*G + g, step k by the block's row stride
                packed = context.make_array(w)(context, builder, w_)
                strides = cgutils.unpack_tuple(builder, packed.strides, 3)
                w_ptr = builder.gep(packed.data, [builder.mul(tile_index, builder.sdiv(strides[0], itemsize))])
                w_unit, w_gate, w_k = ir.Constant(intp, cell.gates), one, builder.sdiv(strides[1], itemsize)
            else:
                w_ptr, w_unit, w_gate = place(w, w_, j0_, zero)
                w_k = one
            b_ptr, sbk, _ = place(h_prev, h_, zero, c0_)
            flat: list[Any] = []
            for typ, value in zip(arrays, cgutils.unpack_tuple(builder, ops_, len(arrays)), strict=True):
                flat.extend(place(typ, value, j0_, c0_))
            call_args = [w_ptr, w_unit, w_gate, w_k, b_ptr, sbk, K_, nlast_, *flat]
            if from_input:
                x_ptr, sxk, _ = place(x, x_, zero, c0_)
                rows_x = cgutils.unpack_tuple(builder, context.make_array(x)(context, builder, x_).shape, 2)[0]
                call_args += [x_ptr, sxk, rows_x]

            def call(n_units: int, vecs: int, ragged: bool) -> None:
                fn = _fused_function(builder.module, scalar, size, cell, n_units, vecs, ragged, kinds, from_input)
                builder.call(fn, call_args)

            heights = [cell.units >> i for i in range(cell.units.bit_length()) if cell.units >> i > 0]
            _dispatch(builder, heights, units_, nvec_, masked_, call)
            return context.get_dummy_value()

        return sig, codegen

    return tile


# ----------------------------------------------------------------------------- square transposes
def _transpose_function(module: ir.Module, scalar: ir.Type, size: int, streaming: bool = False) -> Any:
    """The LLVM function transposing one ``W x W`` tile (``W`` the vector width), defined on first use.

    ``f(src, src_rows, dst, dst_rows)``: row ``r`` of the tile starts at ``src[src_rows[r]]``; row
    ``c`` of the result at ``dst[dst_rows[c]]`` receives column ``c`` (``dst[dst_rows[c] + r] =
    src[src_rows[r] + c]``).  The rows are loaded as vectors and transposed in registers by
    ``log2(W)`` stages of two-input shuffles (stage ``j`` swaps bit ``j`` of the row index with bit
    ``j`` of the lane index), then stored as vectors: about one shuffle per element of a row, where
    an element-by-element copy costs a load and a store per element.  ``streaming``: the stores are
    non-temporal (every ``dst`` row must then start a whole vector).
    """
    width = VECTOR_BYTES // size
    name = f"rnnkit_transpose_{'f32' if size == 4 else 'f64'}_v{width}{'_nt' if streaming else ''}"
    if name in module.globals:
        return module.globals[name]
    vec = ir.VectorType(scalar, width)
    ptr, vec_ptr, i64 = ir.PointerType(scalar), ir.PointerType(vec), ir.IntType(64)
    i32 = ir.IntType(32)
    fn = _new_function(module, name, [ptr, ir.PointerType(i64), ptr, ir.PointerType(i64)])
    src, src_rows, dst, dst_rows = fn.args
    builder = ir.IRBuilder(fn.append_basic_block("entry"))
    rows = []
    for r in range(width):
        offset = builder.load(builder.gep(src_rows, [ir.Constant(i32, r)]))
        rows.append(builder.load(builder.bitcast(builder.gep(src, [offset]), vec_ptr), align=size))
    step = 1
    while step < width:
        low = [c if c & step == 0 else width + c - step for c in range(width)]
        high = [c + step if c & step == 0 else width + c for c in range(width)]
        swapped = list(rows)
        for i in range(width):
            if i & step == 0:
                a, b = rows[i], rows[i + step]
                swapped[i] = builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(i32, width), low))
                swapped[i + step] = builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(i32, width), high))
        rows = swapped
        step *= 2
    for c in range(width):
        offset = builder.load(builder.gep(dst_rows, [ir.Constant(i32, c)]))
        store = builder.store(rows[c], builder.bitcast(builder.gep(dst, [offset]), vec_ptr),
                              align=VECTOR_BYTES if streaming else size)
        if streaming:
            store.set_metadata("nontemporal", module.add_metadata([ir.Constant(i32, 1)]))
    builder.ret_void()
    return fn


def _transpose_intrinsic(streaming: bool) -> Any:
    @intrinsic
    def transpose(typingctx, src, src_rows, dst, dst_rows):
        sig = types.void(src, src_rows, dst, dst_rows)

        def codegen(context, builder, signature, args):
            scalar = context.get_value_type(src.dtype)
            fn = _transpose_function(builder.module, scalar, context.get_abi_sizeof(scalar), streaming)
            pointers = [context.make_array(t)(context, builder, v).data
                        for t, v in zip(signature.args, args, strict=True)]
            builder.call(fn, pointers)
            return context.get_dummy_value()

        return sig, codegen

    return transpose


transpose_tile = _transpose_intrinsic(False)
"""``transpose_tile(src, src_rows, dst, dst_rows)``: transpose one ``W x W`` tile (``W =
VECTOR_BYTES // itemsize``) from ``src`` to ``dst``.

``src_rows`` / ``dst_rows`` (int64, ``W`` entries) are the element offsets, from the first element
of each array (any shape and strides), of the tile's rows in ``src`` and of the result's rows in
``dst``, each row ``W`` contiguous elements (see :func:`_transpose_function`)."""

transpose_tile_streaming = _transpose_intrinsic(True)
""":data:`transpose_tile` with streaming (non-temporal) stores, which go to memory without first
reading the lines they fill into the cache (and evicting what the caller works on for them).
Every ``dst`` row must start a whole vector (``VECTOR_BYTES``-aligned); the stores are weakly
ordered until :func:`store_fence`."""


@intrinsic
def stream_vector(typingctx, src, s0, dst, d0):
    """``dst.flat[d0 : d0+W] = src.flat[s0 : s0+W]`` (``W = VECTOR_BYTES // itemsize``), the store
    streaming (non-temporal, as :data:`transpose_tile_streaming`'s): ``dst.flat[d0]`` must start a
    whole vector, and the store is weakly ordered until :func:`store_fence`."""
    sig = types.void(src, types.intp, dst, types.intp)

    def codegen(context, builder, signature, args):
        scalar = context.get_value_type(src.dtype)
        size = context.get_abi_sizeof(scalar)
        vec_ptr = ir.PointerType(ir.VectorType(scalar, VECTOR_BYTES // size))
        a, a0, b, b0 = args
        at = builder.gep(context.make_array(src)(context, builder, a).data, [a0])
        value = builder.load(builder.bitcast(at, vec_ptr), align=size)
        to = builder.gep(context.make_array(dst)(context, builder, b).data, [b0])
        store = builder.store(value, builder.bitcast(to, vec_ptr), align=VECTOR_BYTES)
        store.set_metadata("nontemporal", builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)]))
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def store_fence(typingctx):
    """A full memory fence: every streaming store before it is visible to other threads after it."""

    def codegen(context, builder, signature, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.void(), codegen


def tile_width_of(a: Any) -> int:
    """The side of :func:`transpose_tile`'s tiles for the dtype of array ``a`` (compiled code only)."""
    return VECTOR_BYTES // a.itemsize


@overload(tile_width_of, jit_options=_OPTIONS)
def _tile_width_of_impl(a):
    width = VECTOR_BYTES * 8 // a.dtype.bitwidth
    return lambda a: width
