"""Matrix products callable from compiled (numba) code: the BLAS that NumPy itself uses.

The time loop runs in compiled code and still needs one matrix product per step (``W_hh h``
forward, ``W_hhᵀ da`` backward).  numba's own ``np.dot`` needs SciPy; rnnkit instead calls the
``cblas_?gemm`` of the BLAS library NumPy is linked against (found with ``threadpoolctl``, the
library made for inspecting BLAS pools), so the per-step product is exactly NumPy's product, with
NumPy's thread pool, and no dependency is added.

The compiled code calls two fixed symbols, ``rnnkit_cblas_sgemm`` / ``rnnkit_cblas_dgemm``, which
this module binds when it is imported: to NumPy's BLAS when it exports the 64-bit-integer CBLAS
interface (every NumPy 2 wheel: ``scipy_cblas_sgemm64_``), otherwise to a compiled loop with the
same C signature (correct, but far slower).  Because the symbols are fixed, numba's on-disk cache
stays valid whichever library is found.

:func:`gemm` is the one entry point: ``C = alpha * op(A) @ B + beta * C`` on 2-D views whose last
axis is contiguous (rows may be strided: a step's slice of a ``(F, T, B)`` sequence is such a view).
"""

from __future__ import annotations

import ctypes
import hashlib
import itertools
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import llvmlite.binding as llvm
import numba
import numpy as np
from numba import types
from numba.extending import intrinsic, overload

from rnnkit import _memory  # noqa: F401  (loading it keeps freed memory for reuse: see its docstring)
from rnnkit._tiles import MAX_COLUMNS, MIN_COLUMNS, tile_gemm

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112


def _drop_stale_kernel_cache() -> None:
    """Delete numba's cached machine code for rnnkit when any kernel source has changed.

    numba checks a cached function against its *own* file only, but the compiled time loop
    (unroll.py) inlines the cell kernels (cells/*.py), which inline the gate functions (written in
    _vector.py's language), the tiles and :func:`gemm` (this file): after an edit or an upgrade of
    one of those, the cache could hand back the old code.  So every cached kernel is keyed on a hash
    of all of them together.
    """
    package = Path(__file__).resolve().parent
    sources = sorted([package / "_blas.py", package / "_finite.py", package / "_fpu.py", package / "_sync.py",
                      package / "_tiles.py", package / "_vector.py", package / "unroll.py",
                      *(package / "cells").glob("*.py")])
    try:
        digest = hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in sources)).hexdigest()
        stamp = package / "__pycache__" / "rnnkit-kernels.sha256"
        if stamp.is_file() and stamp.read_text() == digest:
            return
        for folder in {p.parent / "__pycache__" for p in sources}:
            for cached in [*folder.glob("*.nbi"), *folder.glob("*.nbc")]:
                cached.unlink(missing_ok=True)
        stamp.parent.mkdir(exist_ok=True)
        stamp.write_text(digest)
    except OSError:  # a read-only installation: numba then keeps its cache elsewhere, or none
        pass


_drop_stale_kernel_cache()


def _numpy_blas_libraries() -> Iterator[tuple[dict[str, Any], Any]]:
    """``(threadpoolctl's info, the loaded library)`` for each BLAS library NumPy's process holds."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return
    for info in threadpool_info():
        if info.get("user_api") != "blas":
            continue
        try:
            yield info, ctypes.CDLL(info["filepath"])
        except OSError:
            continue


def _blas_functions() -> tuple[int, int, str] | None:
    """Addresses of ``cblas_sgemm`` / ``cblas_dgemm`` (64-bit ints) in NumPy's BLAS, and its path."""
    for info, lib in _numpy_blas_libraries():
        for prefix, suffix in (("scipy_", "64_"), ("", "64_")):
            try:
                s = getattr(lib, f"{prefix}cblas_sgemm{suffix}")
                d = getattr(lib, f"{prefix}cblas_dgemm{suffix}")
            except AttributeError:
                continue
            as_int = ctypes.c_void_p
            return ctypes.cast(s, as_int).value or 0, ctypes.cast(d, as_int).value or 0, info["filepath"]
    return None


def _fallback(dtype: Any) -> Any:
    """A compiled loop with the CBLAS signature (row-major, B never transposed), for a BLAS without it."""
    scalar = types.float32 if dtype == np.float32 else types.float64
    sig = types.void(types.int32, types.int32, types.int32, types.int64, types.int64, types.int64, scalar,
                     types.CPointer(scalar), types.int64, types.CPointer(scalar), types.int64, scalar,
                     types.CPointer(scalar), types.int64)

    @numba.cfunc(sig, cache=True)
    def gemm_loop(order, ta, tb, M, N, K, alpha, a, lda, b, ldb, beta, c, ldc):  # type: ignore[no-untyped-def]
        A = numba.carray(a, (M if ta == _NO_TRANS else K, lda))
        Bm = numba.carray(b, (K, ldb))
        C = numba.carray(c, (M, ldc))
        for i in range(M):
            for j in range(N):
                C[i, j] = C[i, j] * beta if beta != 0 else 0.0
            for k in range(K):
                w = alpha * (A[i, k] if ta == _NO_TRANS else A[k, i])
                for j in range(N):
                    C[i, j] += w * Bm[k, j]

    return gemm_loop


def _bind() -> str:
    found = _blas_functions()
    if found is not None and found[0] and found[1]:
        llvm.add_symbol("rnnkit_cblas_sgemm", found[0])
        llvm.add_symbol("rnnkit_cblas_dgemm", found[1])
        return found[2]
    for name, dtype in (("rnnkit_cblas_sgemm", np.float32), ("rnnkit_cblas_dgemm", np.float64)):
        llvm.add_symbol(name, _fallback(dtype).address)
    return ""


BLAS_LIBRARY: str = _bind()
"""Path of the BLAS library the compiled time loop calls ("" when it runs its own slower loop)."""


def _numpy_blas_controls() -> tuple[Any, Any]:
    """OpenBLAS's ``get_num_threads`` and ``set_num_threads`` in NumPy's BLAS (None where absent)."""
    for info, lib in _numpy_blas_libraries():
        if info.get("internal_api") != "openblas":
            continue
        for prefix, suffix in (("scipy_", "64_"), ("", "64_"), ("", "")):
            if hasattr(lib, f"{prefix}openblas_get_num_threads{suffix}"):
                get = getattr(lib, f"{prefix}openblas_get_num_threads{suffix}")
                set_ = getattr(lib, f"{prefix}openblas_set_num_threads{suffix}")
                get.restype, get.argtypes = ctypes.c_int, []
                set_.restype, set_.argtypes = None, [ctypes.c_int]
                return get, set_
        return None, None
    return None, None


_GET_THREADS, _SET_THREADS = _numpy_blas_controls()
_THREADS_LOCK = threading.Lock()


def blas_threads() -> int:
    """NumPy's BLAS thread count now (what ``rnnkit.threads`` / threadpoolctl set); 1 when unknown.

    A C call, cheap enough for every forward pass (``threadpool_info`` is not).
    """
    if _GET_THREADS is None:
        return 1
    return max(1, int(_GET_THREADS()))


def can_split_threads() -> bool:
    """Whether rnnkit can make NumPy's BLAS single-threaded for a while (see :func:`single_threaded_blas`)."""
    return _SET_THREADS is not None


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """NumPy's BLAS on one thread (process-wide) for the duration, then back to its previous count.

    rnnkit's own threads (:func:`run_in_threads`) each make their own BLAS calls; a multi-threaded
    OpenBLAS would wake its thread pool, whose idle threads then spin for a while and take cores from
    rnnkit's.  (OpenBLAS's per-thread ``openblas_set_num_threads_local`` acts only in its OpenMP
    builds, not in the pthreads build NumPy ships.)  Lowering the count keeps OpenBLAS's threads
    parked, so setting it back costs nothing.
    """
    if _SET_THREADS is None or _GET_THREADS is None:
        yield
        return
    with _THREADS_LOCK:
        previous = int(_GET_THREADS())
        _SET_THREADS(1)
        try:
            yield
        finally:
            _SET_THREADS(previous)


_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0
_CORES = os.cpu_count() or 2
_POOL_LOCK = threading.Lock()


def worker_pool(workers: int = 1) -> ThreadPoolExecutor:
    """rnnkit's worker threads: at least ``workers`` of them, and one fewer than the cores (the
    calling thread takes a share too).

    Idle workers sleep on a queue; they never spin, so they cost nothing between calls.  Tasks that
    wait for each other (the time loop's parts meet at a barrier every step) need a worker each at
    once, hence the minimum: the pool is replaced by a larger one when a call needs more.
    """
    global _POOL, _POOL_SIZE
    with _POOL_LOCK:
        size = max(workers, _CORES - 1, 1)
        if _POOL is None or _POOL_SIZE < size:
            if _POOL is not None:
                _POOL.shutdown(wait=False)
            _POOL, _POOL_SIZE = ThreadPoolExecutor(max_workers=size, thread_name_prefix="rnnkit"), size
        return _POOL


def run_in_threads(tasks: list[Callable[[], Any]]) -> None:
    """Run every task at once, the first in this thread and the others in :func:`worker_pool`, with
    NumPy's BLAS single-threaded meanwhile (each task makes its own products); return when all are done."""
    with single_threaded_blas():
        futures = [worker_pool(len(tasks) - 1).submit(task) for task in tasks[1:]] if len(tasks) > 1 else []
        try:
            tasks[0]()
        finally:
            for future in futures:
                future.result()


_OPENBLAS_ONE_THREAD = 1 << 18
"""Multiply-adds (M*N*K) below which OpenBLAS never uses its threads (its GEMM threshold), so
:func:`matmul` calls it directly."""

_MIN_SPLIT_PRODUCT = 1 << 22
"""Flops below which :func:`matmul` makes one call (handing work to a thread costs some 20-50 µs)."""


def matmul(a: Any, b: Any) -> Any:
    """``a @ b`` for 2-D float arrays, the work shared by rnnkit's threads (NumPy's BLAS thread count).

    The result's rows (or its columns, when it has fewer rows than columns) are cut into one block
    per thread, and each thread makes its block with one *single-threaded* BLAS call.  Why not let
    the BLAS use its own threads: after a multi-threaded call OpenBLAS's idle threads keep spinning
    for a while, taking a core from the time loop's threads that run next (measured: the loop split
    over two threads ran 2-3 times slower right after one such call).  Every product rnnkit makes
    outside the compiled loop goes through here, so OpenBLAS's own threads never wake.
    """
    M, K = a.shape
    N = b.shape[1]
    if M * N * K < _OPENBLAS_ONE_THREAD:  # OpenBLAS runs these on the calling thread anyway
        return np.matmul(a, b)
    out = np.empty((M, N), np.result_type(a, b))
    k = blas_threads() if can_split_threads() else 1
    if k <= 1 or 2 * M * N * K < _MIN_SPLIT_PRODUCT or max(M, N) < 2 * k:
        with single_threaded_blas():
            np.matmul(a, b, out=out)
        return out
    by_rows = M >= N
    size = M if by_rows else N
    cuts = [size * i // k for i in range(k + 1)]

    def block(lo: int, hi: int) -> Callable[[], Any]:
        if by_rows:
            return lambda: np.matmul(a[lo:hi], b, out=out[lo:hi])
        return lambda: np.matmul(a, b[:, lo:hi], out=out[:, lo:hi])

    run_in_threads([block(lo, hi) for lo, hi in itertools.pairwise(cuts)])
    return out


def _external(name: str, scalar: Any) -> Any:
    i32, i64, vp = types.int32, types.int64, types.voidptr
    return types.ExternalFunction(name, types.void(i32, i32, i32, i64, i64, i64, scalar, vp, i64, vp, i64,
                                                   scalar, vp, i64))


_sgemm = _external("rnnkit_cblas_sgemm", types.float32)
_dgemm = _external("rnnkit_cblas_dgemm", types.float64)


@intrinsic
def _data(typingctx: Any, arr: Any) -> Any:
    """The address of ``arr``'s first element, as a ``void*`` (for the C call)."""
    sig = types.voidptr(arr)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        ary = context.make_array(arr)(context, builder, args[0])
        return builder.bitcast(ary.data, context.get_value_type(types.voidptr))

    return sig, codegen


def gemm(trans_a: bool, alpha: float, A: Any, Bm: Any, beta: float, C: Any) -> None:
    """``C = alpha * op(A) @ Bm + beta * C`` with ``op(A) = A.T`` when ``trans_a`` (compiled code only).

    ``A`` is ``(M, K)`` (``(K, M)`` when transposed), ``Bm`` ``(K, N)``, ``C`` ``(M, N)``; all of one
    float dtype, each with a contiguous last axis.  ``beta = 0`` ignores C's old contents (NaN included).
    """
    raise NotImplementedError("rnnkit._blas.gemm is called from compiled code only")


@overload(gemm, jit_options={"cache": True})
def _gemm_impl(trans_a, alpha, A, Bm, beta, C):  # type: ignore[no-untyped-def]  # (numba compares signatures)
    if A.dtype == types.float32:
        call, scalar = _sgemm, np.float32
    elif A.dtype == types.float64:
        call, scalar = _dgemm, np.float64
    else:  # pragma: no cover - the layers refuse other dtypes first
        raise TypeError(f"gemm supports float32 and float64, not {A.dtype}")

    def impl(trans_a, alpha, A, Bm, beta, C):  # type: ignore[no-untyped-def]
        size = A.itemsize
        M, N = C.shape
        K = Bm.shape[0]
        if M == 0 or N == 0:
            return
        if MIN_COLUMNS <= N <= MAX_COLUMNS:  # a thin product: the per-step one (see rnnkit._tiles)
            tile_gemm(trans_a, scalar(alpha), A, Bm, scalar(beta), C)
            return
        call(_ROW_MAJOR, _TRANS if trans_a else _NO_TRANS, _NO_TRANS, M, N, K, scalar(alpha), _data(A),
             max(A.strides[0] // size, A.shape[1]), _data(Bm), max(Bm.strides[0] // size, N), scalar(beta),
             _data(C), max(C.strides[0] // size, N))

    return impl
