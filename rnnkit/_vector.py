"""A small vector language for writing a cell's elementwise equations once, as compiled code.

The cells' gate equations run in two settings:

* inside numba loops, one element at a time (the compiler then vectorises the loop), and
* inside the register-tile kernel's epilogue (:func:`rnnkit._tiles.fused_step`), on the vectors of
  sums that the per-step matrix product has just left in registers.

Both are LLVM IR.  A :class:`Lanes` value wraps one IR value -- a float, or a vector of ``width``
floats -- and has the arithmetic operators, so an equation written in plain Python syntax over
``Lanes`` (``f * c_prev + i * g``) emits the same instructions in either setting.  Functions written
this way (``tanh``, ``sigmoid`` in :mod:`rnnkit.cells._spec`, a cell's step equations in its own
module) are therefore the one copy of each equation.

Nothing here runs at run time: these objects exist while numba compiles a kernel.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import llvmlite.binding as llvm
from llvmlite import ir
from numba.core import cgutils, config

_I32 = ir.IntType(32)


def host_feature(name: str) -> bool:
    """Whether numba compiles for this very CPU and it has LLVM feature ``name`` (``"avx512f"``,
    ``"avx2"``, ...); False in a portable build (``NUMBA_CPU_NAME=generic``), which may not use it."""
    return config.CPU_NAME in (None, "host") and bool(llvm.get_host_cpu_features().get(name, False))


_AVX512 = host_feature("avx512f")


class Emitter:
    """Where :class:`Lanes` arithmetic is emitted: an IR builder, the float type, the lane count.

    ``width == 1`` emits scalar instructions (for numba's loops, which its loop vectoriser widens);
    ``width > 1`` emits ``<width x float>`` instructions.  ``double`` selects float64 lanes.
    """

    def __init__(self, builder: ir.IRBuilder, double: bool, width: int) -> None:
        self.builder = builder
        self.double = double
        self.width = width
        self.scalar = ir.DoubleType() if double else ir.FloatType()
        self.type: ir.Type = self.scalar if width == 1 else ir.VectorType(self.scalar, width)

    # -- values
    def constant(self, x: float) -> Lanes:
        """``x`` in every lane."""
        if self.width == 1:
            return Lanes(self, ir.Constant(self.scalar, x))
        return Lanes(self, ir.Constant(self.type, [ir.Constant(self.scalar, x)] * self.width))

    def splat(self, x: Any) -> Lanes:
        """The IR scalar ``x`` in every lane."""
        if self.width == 1:
            return Lanes(self, x)
        b = self.builder
        v = b.insert_element(ir.Constant(self.type, None), x, ir.Constant(_I32, 0))
        return Lanes(self, b.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, self.width), None)))

    def lift(self, x: Lanes | float) -> Lanes:
        return x if isinstance(x, Lanes) else self.constant(float(x))

    # -- instructions
    def _intrinsic(self, name: str, n: int) -> Any:
        element = "f64" if self.double else "f32"
        suffix = element if self.width == 1 else f"v{self.width}{element}"
        fn_type = ir.FunctionType(self.type, [self.type] * n)
        return cgutils.get_or_insert_function(self.builder.module, fn_type, f"llvm.{name}.{suffix}")

    def fma(self, a: Lanes | float, b: Lanes | float, c: Lanes | float) -> Lanes:
        """``a * b + c`` with one rounding."""
        args = [self.lift(v).value for v in (a, b, c)]
        return Lanes(self, self.builder.call(self._intrinsic("fma", 3), args))

    def abs(self, a: Lanes) -> Lanes:
        return Lanes(self, self.builder.call(self._intrinsic("fabs", 1), [a.value]))

    def where(self, condition: Any, a: Lanes | float, b: Lanes | float) -> Lanes:
        """``a`` in the lanes where ``condition`` (an IR ``i1`` or vector of them) holds, else ``b``."""
        return Lanes(self, self.builder.select(condition, self.lift(a).value, self.lift(b).value))

    def less(self, a: Lanes | float, b: Lanes | float) -> Any:
        """``a < b`` per lane (false where either is NaN)."""
        return self.builder.fcmp_ordered("<", self.lift(a).value, self.lift(b).value)

    def clamp(self, x: Lanes, lo: float, hi: float) -> Lanes:
        """``x`` limited to ``[lo, hi]``; NaN stays NaN (a min/max instruction would drop it)."""
        x = self.where(self.less(x, lo), lo, x)
        return self.where(self.less(hi, x), hi, x)

    def divide(self, a: Lanes, b: Lanes) -> Lanes:
        """``a / b``.  16 float32 lanes on AVX-512: ``a`` times the reciprocal estimate of ``b``
        refined by one Newton step (within 2 ulp; a division instruction has a throughput of one
        per 10 cycles there, the estimate one per 2), else the division instruction.  The estimate
        needs ``b`` finite, normal and nonzero (``b = 0`` or ``±inf`` give NaN there): every divisor
        in rnnkit's equations is at least 4.9e-3."""
        if self.double or self.width != 16 or not _AVX512:
            return Lanes(self, self.builder.fdiv(a.value, b.value))
        fn = cgutils.get_or_insert_function(
            self.builder.module, ir.FunctionType(self.type, [self.type, self.type, ir.IntType(16)]),
            "llvm.x86.avx512.rcp14.ps.512")
        r = Lanes(self, self.builder.call(fn, [b.value, self.constant(0.0).value, ir.Constant(ir.IntType(16), -1)]))
        e = self.fma(-b, r, 1.0)          # e = 1 - b r, the estimate's relative error (below 2^-14)
        y = a * r
        return self.fma(y, e, y)          # a r (1 + e) = (a / b)(1 - e²)

    def pow2_from_rounding(self, t: Lanes, magic: float) -> Lanes:
        """``2**n`` where ``t = magic + n`` exactly (``magic`` = 1.5·2^23 in float32, 1.5·2^52 in
        float64, so that ``n`` sits in ``t``'s low mantissa bits), for ``n`` within the normal
        exponents: built from the bits, with no float-to-integer conversion (which is undefined for
        NaN; here a NaN ``t`` gives some power of two, and the caller's NaN survives its product)."""
        b = self.builder
        int_type = ir.IntType(64 if self.double else 32)
        vec_int = int_type if self.width == 1 else ir.VectorType(int_type, self.width)
        mantissa, bias = (52, 1023) if self.double else (23, 127)

        def splat_int(v: int) -> Any:
            return ir.Constant(vec_int, v if self.width == 1 else [ir.Constant(int_type, v)] * self.width)

        magic_bits = int.from_bytes(_float_bytes(magic, self.double), "little")
        n_biased = b.sub(b.bitcast(t.value, vec_int), splat_int(magic_bits - bias))      # n + bias
        return Lanes(self, b.bitcast(b.shl(n_biased, splat_int(mantissa)), self.type))

    def libm(self, name: str, x: Lanes) -> Lanes:
        """The C library's ``name`` (``tanh``, ``exp``; its float version ``name + "f"`` for float32
        lanes), lane by lane: the exact path, for float64."""
        b = self.builder
        fn = cgutils.get_or_insert_function(b.module, ir.FunctionType(self.scalar, [self.scalar]),
                                            name if self.double else name + "f")
        if self.width == 1:
            return Lanes(self, b.call(fn, [x.value]))
        out = ir.Constant(self.type, None)
        for lane in range(self.width):
            index = ir.Constant(_I32, lane)
            out = b.insert_element(out, b.call(fn, [b.extract_element(x.value, index)]), index)
        return Lanes(self, out)


def _float_bytes(x: float, double: bool) -> bytes:
    return struct.pack("<d" if double else "<f", x)


def _binary(op: str, swap: bool = False) -> Callable[[Lanes, Lanes | float], Lanes]:
    def method(self: Lanes, other: Lanes | float) -> Lanes:
        a, b = self, self.emit.lift(other)
        if swap:
            a, b = b, a
        return Lanes(self.emit, getattr(self.emit.builder, op)(a.value, b.value))

    return method


class Lanes:
    """One IR float value (a scalar or a vector), with ``+ - * /`` and unary ``-``.

    Each operator is one IEEE instruction, rounded on its own (no contraction into fused
    multiply-adds unless :meth:`Emitter.fma` is asked for), so an equation computes what it says;
    the one exception is ``/`` on 16 float32 lanes with AVX-512, within 2 ulp for a finite, normal,
    nonzero divisor (:meth:`Emitter.divide`).
    """

    __slots__ = ("emit", "value")

    def __init__(self, emit: Emitter, value: Any) -> None:
        self.emit = emit
        self.value = value

    __add__ = _binary("fadd")
    __radd__ = _binary("fadd", swap=True)
    __sub__ = _binary("fsub")
    __rsub__ = _binary("fsub", swap=True)
    __mul__ = _binary("fmul")
    __rmul__ = _binary("fmul", swap=True)

    def __truediv__(self, other: Lanes | float) -> Lanes:
        return self.emit.divide(self, self.emit.lift(other))

    def __rtruediv__(self, other: Lanes | float) -> Lanes:
        return self.emit.divide(self.emit.lift(other), self)

    def __neg__(self) -> Lanes:
        return Lanes(self.emit, self.emit.builder.fneg(self.value))


def polynomial(x: Lanes, coefficients: tuple[float, ...]) -> Lanes:
    """``c[0] x^(n-1) + ... + c[n-1]`` by Horner's rule, one fused multiply-add a term."""
    emit = x.emit
    p = emit.constant(coefficients[0])
    for c in coefficients[1:]:
        p = emit.fma(p, x, c)
    return p
