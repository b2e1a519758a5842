"""A fair timing harness for a shared, noisy machine: rnnkit and its peer timed in one process.

* Each measurement is a *pair of blocks*, one per library, in alternating order; each block is
  ``calls`` timed calls right after one untimed call of the same library, so its thread pools and
  caches are warm whichever library ran before.
* Before and after every pair two quiet-machine probes are timed: a fixed small sgemm (one thread,
  in a core's cache) and a 32 MB copy (the memory side).  A pair either of whose probes read more
  than ``BURST`` times its quiet reading was taken during a contention burst: it is discarded and
  retried (at most ``max_tries`` pairs in all).  With fewer than ``min_pairs``
  kept, the harness refuses to report the case (:class:`Busy`).
* The quiet reading is the quietest sgemm probe so far in the run (for the copy, whose quiet
  readings spread more, the tenth percentile of its readings), not the readings at its start: a run that
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

QUIET_PERCENTILE = 10
"""The percentile of a probe's readings in the run taken as its quiet reading."""

BURST = 1.5
"""A probe slower than this many times its quiet reading marks a contention burst (measured on the
shared 2-vCPU Xeon: while torch's 256/256 forward ran at its quiet speed the sgemm probe read up to
1.5x its quietest and the copy 1.2x its tenth percentile; a tighter threshold refused every pair of
whole runs)."""


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


_COPY_SRC = np.ones(8 << 20, np.float32)   # 32 MB: past every core's own caches
_COPY_DST = np.empty_like(_COPY_SRC)


def copy_probe_us(repeats: int = 3) -> float:
    """Median time of copying a fixed 32 MB array, in microseconds: the memory side of the machine.

    On a shared machine the neighbours' memory traffic slows the layers (whose caches and weights
    stream through memory) without slowing the small sgemm of :func:`probe_us`, which stays in a
    core's cache: measured on the 2-vCPU Xeon, torch's 256/256 LSTM forward tracked this copy's time
    (correlation 0.8) better than the sgemm's (0.65)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(_COPY_DST, _COPY_SRC)
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
        self._readings = [probe_us() for _ in range(5)]
        self._copy_readings = [copy_probe_us() for _ in range(3)]
        self.discarded = 0

    def _block(self, fn: Callable[[], object]) -> float:
        fn()  # untimed: warm this library's pools and caches
        t0 = time.perf_counter()
        for _ in range(self.calls):
            fn()
        return (time.perf_counter() - t0) / self.calls

    @property
    def quiet(self) -> float:
        """The sgemm probe's quiet reading: its quietest in the run so far (its quiet readings
        spread little)."""
        return min(self._readings)

    @property
    def quiet_copy(self) -> float:
        """The copy probe's quiet reading: the tenth percentile of its readings in the run so far
        (its quiet readings spread more: the minimum would be one lucky reading)."""
        return float(np.percentile(self._copy_readings, QUIET_PERCENTILE))

    def _probe(self) -> tuple[float, float]:
        """Both probes (sgemm, copy), each reading also kept for the quiet references."""
        us, copy = probe_us(9), copy_probe_us()
        self._readings.append(us)
        self._copy_readings.append(copy)
        return us, copy

    def _quiet(self, probed: list[tuple[tuple[float, float], ...]]) -> list[bool]:
        """Which measurements (each with its probes' readings) were taken on a quiet machine, judged
        by the quiet references now: every reading within ``BURST`` times its reference."""
        return [all(us <= BURST * self.quiet and copy <= BURST * self.quiet_copy for us, copy in p) for p in probed]

    def compare(self, ours: Callable[[], object], peer: Callable[[], object]) -> Pair:
        """Interleaved blocks of ``ours`` and ``peer``; medians over the quiet pairs."""
        taken: list[tuple[float, float, tuple[tuple[float, float], tuple[float, float]]]] = []
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
            raise Busy(f"only {len(kept)} quiet pairs of {len(taken)} (probes over {BURST} x quiet)")
        return Pair(statistics.median(a for a, _ in kept), statistics.median(b for _, b in kept), len(kept),
                    discarded)

    def time(self, fn: Callable[[], object]) -> float:
        """Median seconds per call of ``fn`` alone (blocks after an untimed call), quiet blocks only."""
        taken: list[tuple[float, tuple[tuple[float, float], tuple[float, float]]]] = []
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
    return (f"quiet-machine probe at end: {probe_us():.1f} us (quiet reference {harness.quiet:.1f} us; "
            f"32 MB copy {copy_probe_us():.0f} us, quiet {harness.quiet_copy:.0f} us); "
            f"{harness.discarded} contended pairs discarded")
