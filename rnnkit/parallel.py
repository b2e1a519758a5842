"""How many threads rnnkit's matrix products use: one small policy, with an override.

All of rnnkit's parallelism is the BLAS library's (the compiled time loop calls NumPy's BLAS for its
per-step product).  A recurrent network makes many *small* products — one per time step, ``(G*H,
H) @ (H, B)`` — and a BLAS thread pool synchronises its threads on every one of them.  On an idle
machine two threads make such a product faster; on a busy one (another process on the other
core) each product waits for a thread that is not running, and training can slow down several
times over.

The policy (:func:`default_threads`): use every core that is idle when the call is made, judged
by the one-minute load average, and never more than ``RNNKIT_NUM_THREADS`` (an environment
variable) or the cores this process may run on.  ``rnnkit train --threads N`` and
:func:`set_num_threads` / :func:`threads` override it.  ``benchmarks/bench_threads.py`` measures
the choices on an idle machine and beside a CPU hog.
"""

from __future__ import annotations

import contextlib
import os
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
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):  # pragma: no cover - no load average on this OS
        busy = 0.0
    n = max(1, min(cores, int(cores - busy + 0.5)))
    cap = os.environ.get("RNNKIT_NUM_THREADS", "").strip()
    if cap.isdigit() and int(cap) > 0:
        n = min(n, int(cap))
    return n


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
