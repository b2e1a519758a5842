"""A fair timing harness for a shared, noisy machine: rnnkit and its peer timed in one process.

* Each measurement is a *pair of blocks*, one per library, in alternating order; each block is
  ``calls`` timed calls right after one untimed call of the same library, so its thread pools and
  caches are warm whichever library ran before.
* Before and after every pair a quiet-machine probe (a fixed small sgemm, one thread) is timed.  A
  pair whose probe is more than ``BURST`` times the quiet probe was taken during a contention burst:
  it is discarded and retried (at most ``max_tries`` pairs in all).  With fewer than ``min_pairs``
  kept, the harness refuses to report the case (:class:`Busy`).
* The quiet probe is the quietest probe seen so far in the run, not only at its start: a run that
  starts in a slow phase of a shared machine (its neighbours busy for minutes, every probe 1.5x the
  quiet one, the layers 1.5-1.7x slower) would otherwise take that phase for quiet.  A case's pairs
  are judged when the case ends, against the reference then, so a slow stretch before a quieter one
  is discarded too.
* It reports medians of the per-call times of the kept pairs.
* :func:`header` names the CPU, the libraries and the thread settings, and prints the probe; call
  :func:`footer` at the end to print it again, so a reader can see the machine stayed quiet.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

BURST = 1.25
"""A probe slower than this many times the quiet probe marks a contention burst (a quiet machine's
probes spread over about 1.1x; its slow phases read 1.4-1.6x)."""


def cpu_name() -> str:
    """The CPU model, from /proc/cpuinfo where there is one."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


_PROBE_A = np.random.default_rng(0).standard_normal((128, 128), dtype=np.float32)
_PROBE_OUT = np.empty((128, 128), np.float32)


def probe_us(repeats: int = 21) -> float:
    """Median time of a fixed 128x128x128 sgemm on one thread, in microseconds."""
    times = []
    with threadpool_limits(1, user_api="blas"):
        for _ in range(repeats):
            t0 = time.perf_counter()
            np.matmul(_PROBE_A, _PROBE_A, out=_PROBE_OUT)
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


class Busy(RuntimeError):
    """Too few quiet measurements: the machine was busy; the case is not reported."""


@dataclass
class Pair:
    """Medians (seconds per call) of rnnkit and its peer, and how many pairs were kept / discarded."""

    ours: float
    peer: float
    kept: int
    discarded: int

    @property
    def ratio(self) -> float:
        """peer_time / our_time: above 1, rnnkit is faster."""
        return self.peer / self.ours


class Harness:
    """Times pairs of callables against a quiet-machine probe taken at construction."""

    def __init__(self, pairs: int = 7, calls: int = 3, min_pairs: int = 5, max_tries: int = 30) -> None:
        self.pairs, self.calls, self.min_pairs, self.max_tries = pairs, calls, min_pairs, max_tries
        self.quiet = min(probe_us() for _ in range(5))
        self.discarded = 0

    def _block(self, fn: Callable[[], object]) -> float:
        fn()  # untimed: warm this library's pools and caches
        t0 = time.perf_counter()
        for _ in range(self.calls):
            fn()
        return (time.perf_counter() - t0) / self.calls

    def _probe(self) -> float:
        """One probe, which also lowers the quiet reference when it is the quietest yet."""
        us = probe_us(9)
        self.quiet = min(self.quiet, us)
        return us

    def _quiet(self, probed: list[tuple[float, ...]]) -> list[bool]:
        """Which measurements (each with its probes) were taken on a quiet machine, by the reference now."""
        return [max(p) <= BURST * self.quiet for p in probed]

    def compare(self, ours: Callable[[], object], peer: Callable[[], object]) -> Pair:
        """Interleaved blocks of ``ours`` and ``peer``; medians over the quiet pairs."""
        taken: list[tuple[float, float, tuple[float, float]]] = []
        for attempt in range(self.max_tries):
            if sum(self._quiet([p for _, _, p in taken])) == self.pairs:
                break
            before = self._probe()
            if attempt % 2 == 0:
                a, b = self._block(ours), self._block(peer)
            else:
                b, a = self._block(peer), self._block(ours)
            taken.append((a, b, (before, self._probe())))
        quiet = self._quiet([p for _, _, p in taken])
        kept = [(a, b) for (a, b, _), q in zip(taken, quiet, strict=True) if q][: self.pairs]
        discarded = len(taken) - sum(quiet)
        self.discarded += discarded
        if len(kept) < self.min_pairs:
            raise Busy(f"only {len(kept)} quiet pairs of {len(taken)} (probe over {BURST} x {self.quiet:.0f} us)")
        return Pair(statistics.median(a for a, _ in kept), statistics.median(b for _, b in kept), len(kept),
                    discarded)

    def time(self, fn: Callable[[], object]) -> float:
        """Median seconds per call of ``fn`` alone (blocks after an untimed call), quiet blocks only."""
        taken: list[tuple[float, tuple[float, float]]] = []
        for _ in range(self.max_tries):
            if sum(self._quiet([p for _, p in taken])) == self.pairs:
                break
            before = self._probe()
            t = self._block(fn)
            taken.append((t, (before, self._probe())))
        kept = [t for (t, _), q in zip(taken, self._quiet([p for _, p in taken]), strict=True) if q][: self.pairs]
        if len(kept) < self.min_pairs:
            raise Busy(f"only {len(kept)} quiet blocks")
        return statistics.median(kept)


def header(title: str, extra: str = "") -> str:
    """The lines every table starts with: what ran where."""
    import rnnkit
    from rnnkit import parallel as threads

    lines = [
        f"# {title}",
        f"CPU: {cpu_name()} ({threads.available_cores()} cores available); {platform.system()} "
        f"{platform.machine()}; python {platform.python_version()}, numpy {np.__version__}, "
        f"rnnkit {rnnkit.__version__}, BLAS threads {threads.get_num_threads()}",
        f"quiet-machine probe (128^3 sgemm, 1 thread, median): {probe_us():.1f} us at start",
    ]
    if extra:
        lines.append(extra)
    return "\n".join(lines)


def footer(harness: Harness) -> str:
    """The closing line: the probe again and how many measurements were discarded as contended."""
    return (f"quiet-machine probe at end: {probe_us():.1f} us (quiet reference {harness.quiet:.1f} us); "
            f"{harness.discarded} contended pairs discarded")
