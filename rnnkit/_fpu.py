"""Subnormal floats flushed to zero inside the compiled time loops (x86-64 only).

A gradient that vanishes through a long sequence -- the very thing the long-lag tasks show --
passes through the subnormal range (below 1.2e-38 in float32) on its way to zero, and every
arithmetic instruction that meets a subnormal takes a microcode assist of about a hundred cycles.
On the adding problem (T = 100) that made the LSTM's backward pass a fifth slower.  The loops
therefore set the SSE control register's flush-to-zero and denormals-are-zero bits while they run
and restore the caller's value when they end, as oneDNN's kernels do: a value that small only ever
changes a result by less than float32's smallest normal number.

Elsewhere (other architectures) the two functions do nothing.
"""

from __future__ import annotations

import platform
from typing import Any

import numba
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_X86 = platform.machine().lower() in {"x86_64", "amd64"}
_FTZ_DAZ = 0x8040
"""MXCSR bits 15 (flush to zero) and 6 (denormals are zero)."""


def _mxcsr_call(builder: Any, name: str, pointer: Any) -> None:
    fnty = ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer()])
    fn = cgutils.get_or_insert_function(builder.module, fnty, name)
    builder.call(fn, [builder.bitcast(pointer, ir.IntType(8).as_pointer())])


@intrinsic
def _read_mxcsr(typingctx: Any) -> Any:
    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        slot = cgutils.alloca_once_value(builder, ir.Constant(ir.IntType(32), 0))
        if _X86:
            _mxcsr_call(builder, "llvm.x86.sse.stmxcsr", slot)
        return builder.load(slot)

    return types.uint32(), codegen


@intrinsic
def _write_mxcsr(typingctx: Any, value: Any) -> Any:
    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        if _X86:
            _mxcsr_call(builder, "llvm.x86.sse.ldmxcsr", cgutils.alloca_once_value(builder, args[0]))
        return context.get_dummy_value()

    return types.void(types.uint32), codegen


@numba.njit(cache=True, nogil=True)
def flush_subnormals() -> Any:
    """Turn flush-to-zero and denormals-are-zero on for this thread; returns the previous setting."""
    previous = _read_mxcsr()
    _write_mxcsr(previous | numba.uint32(_FTZ_DAZ))
    return previous


@numba.njit(cache=True, nogil=True)
def restore_subnormals(previous: Any) -> None:
    """Put back the setting :func:`flush_subnormals` returned."""
    _write_mxcsr(previous)
