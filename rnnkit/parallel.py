"""How many threads rnnkit uses: one small policy, with an override.

One number sets all of rnnkit's parallelism: NumPy's BLAS thread count, which rnnkit reads and then
uses *itself*.  The compiled time loop splits a layer's hidden units over that many threads (they
meet at a barrier after every step, see :func:`rnnkit.unroll.plan_parts`), and rnnkit's bulk matrix
products are cut into one block per thread, each a single-threaded BLAS call
(:func:`rnnkit._blas.matmul`), so OpenBLAS's own thread pool is never woken by rnnkit (its idle
threads spin for a while after every multi-threaded call, taking a core from the loop's threads).

Threads that meet at every step of a recurrence are fast on an idle machine and slow on a busy one:
with another process on the other core, each step waits for a thread that is not running, and
training can slow down several times over.  The policy (:func:`default_threads`): use every core
that other processes leave idle when the call is made (judged by the number of runnable tasks the
kernel reports, sampled a few times), and never more than ``RNNKIT_NUM_THREADS`` (an environment
variable) or the cores this process may run on.  The library leaves NumPy's BLAS threads as they are
until :func:`set_num_threads` is called; the ``rnnkit`` command applies the policy at start
(``--threads N`` overrides it).  ``benchmarks/bench_threads.py`` measures the choices on an idle
machine and beside a CPU hog.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

from threadpoolctl import threadpool_info, threadpool_limits

__all__ = ["available_cores", "default_threads", "get_num_threads", "set_num_threads", "threads"]


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS reports it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """The policy's thread count now: the cores not busy with other work, at least 1.

    ``RNNKIT_NUM_THREADS``, when set to a positive integer, caps it.
    """
    cores = available_cores()
    n = max(1, min(cores, cores - _busy_cores()))
    cap = os.environ.get("RNNKIT_NUM_THREADS", "").strip()
    if cap.isdigit() and int(cap) > 0:
        n = min(n, int(cap))
    return n


def _busy_cores() -> int:
    """Cores kept busy by other tasks now: the median over a few samples of the runnable tasks
    (field 4 of /proc/loadavg, which counts this thread too), else the one-minute load average."""
    samples = []
    for _ in range(5):
        try:
            with open("/proc/loadavg", encoding="ascii") as f:
                running = int(f.read().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            break
        samples.append(running - 1)
        time.sleep(0.002)
    if samples:
        return max(0, sorted(samples)[len(samples) // 2])
    try:
        return max(0, round(os.getloadavg()[0]))
    except (AttributeError, OSError):  # pragma: no cover - no load average on this OS
        return 0


def get_num_threads() -> int:
    """The number of threads NumPy's BLAS uses now."""
    counts = [info["num_threads"] for info in threadpool_info() if info.get("user_api") == "blas"]
    return max(counts, default=1)


def _check(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"the number of threads must be a positive integer, got {n!r}")
    return n


def set_num_threads(n: int | None = None) -> int:
    """Set the BLAS threads for the rest of the process; ``None`` applies :func:`default_threads`.

    Returns the number set.
    """
    n = default_threads() if n is None else _check(n)
    threadpool_limits(n, user_api="blas")
    return n


@contextlib.contextmanager
def threads(n: int | None = None) -> Iterator[int]:
    """``with rnnkit.threads(1): ...`` runs the block with ``n`` BLAS threads (``None``: the policy's)."""
    n = default_threads() if n is None else _check(n)
    with threadpool_limits(n, user_api="blas"):
        yield n
