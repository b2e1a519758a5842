"""A spinning barrier for compiled code: the threads of one time loop meet once per step.

When a layer's hidden units are split over threads (:mod:`rnnkit.unroll`), every step needs every
unit's previous state, so the threads must all finish step ``t`` before any starts ``t + 1``: one
barrier per step, a few microseconds of work apart.  An operating-system wait (a futex, Python's
``threading.Barrier``) costs tens of microseconds to wake a thread; a spin on a shared counter costs
well under one while both threads are running.  The thread policy (:mod:`rnnkit.parallel`) keeps a
split to the cores that other processes leave idle, and a waiter that spins for long yields its core.

The counter only grows: party ``k`` of ``P`` arriving at its ``g``-th barrier adds one and waits
until the counter reaches ``P * g``; nothing is reset, so there is no reuse race.
"""

from __future__ import annotations

import sys
from typing import Any

import llvmlite.binding as llvm
import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_X86 = llvm.get_process_triple().startswith(("x86_64", "i386", "i686"))
_HAS_SCHED_YIELD = sys.platform != "win32"

SPINS_BEFORE_YIELD = 1 << 14
"""Spins (each a ``pause``, some tens of nanoseconds) before a waiter gives its core away once."""


@intrinsic
def _fetch_add(typingctx: Any, counter: Any, value: Any) -> Any:
    """Atomically add ``value`` to ``counter[0]`` (sequentially consistent: a release of every write before)."""
    sig = types.int64(counter, types.int64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        data = context.make_array(counter)(context, builder, args[0]).data
        return builder.atomic_rmw("add", data, args[1], "seq_cst")

    return sig, codegen


@intrinsic
def _load_acquire(typingctx: Any, counter: Any) -> Any:
    """``counter[0]``, read with acquire order (every write released before it is visible after)."""
    sig = types.int64(counter)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        data = context.make_array(counter)(context, builder, args[0]).data
        return builder.load_atomic(data, "acquire", 8)

    return sig, codegen


@intrinsic
def _relax(typingctx: Any, spins: Any) -> Any:
    """One spin of a wait: the CPU's ``pause`` hint; every ``SPINS_BEFORE_YIELD`` spins, ``sched_yield()``."""
    sig = types.void(types.int64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        module = builder.module
        if _X86:
            pause = cgutils.get_or_insert_function(module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause")
            builder.call(pause, [])
        if _HAS_SCHED_YIELD:
            due = builder.icmp_signed("==", builder.and_(args[0], ir.Constant(ir.IntType(64), SPINS_BEFORE_YIELD - 1)),
                                      ir.Constant(ir.IntType(64), SPINS_BEFORE_YIELD - 1))
            with builder.if_then(due, likely=False):
                sched_yield = cgutils.get_or_insert_function(module, ir.FunctionType(ir.IntType(32), []), "sched_yield")
                builder.call(sched_yield, [])
        return context.get_dummy_value()

    return sig, codegen


@numba.njit(cache=True, nogil=True)
def barrier(counter, parties, generation):
    """Wait until all ``parties`` threads have arrived at their ``generation``-th barrier (1, 2, ...).

    ``counter`` is a 1-D int64 array, zero before the first barrier, shared by the parties.
    """
    _fetch_add(counter, 1)
    target = parties * generation
    spins = 0
    while _load_acquire(counter) < target:
        _relax(spins)
        spins += 1


def new_counter() -> Any:
    """A zeroed counter for :func:`barrier`, alone in its cache line (other data never shares it)."""
    raw = np.zeros(24, np.int64)
    start = (-raw.ctypes.data % 64) // 8
    return raw[start : start + 8]
