"""``benchmarks/_harness.py``'s bookkeeping, with scripted probes (no timing is asserted).

The harness keeps a pair of blocks only when both probes around it (sgemm, 32 MB copy) are within
``BURST`` times the quietest of theirs in the run, judged when the case ends: pairs taken in a slow phase before the
quietest probe are discarded too, and a case with too few quiet pairs is refused (``Busy``).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "_harness.py"


def _harness_module() -> Any:
    spec = importlib.util.spec_from_file_location("rnnkit_bench_harness", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _scripted(module: Any, monkeypatch: pytest.MonkeyPatch, probes: list[float],
              copies: list[float] | None = None) -> None:
    """The sgemm probe reads ``probes`` in turn, the copy probe ``copies`` (else always 3000 us)."""
    values: Iterator[float] = iter(probes)
    copy_values: Iterator[float] = iter(copies if copies is not None else [3000.0] * 1000)
    monkeypatch.setattr(module, "probe_us", lambda repeats=21: next(values))
    monkeypatch.setattr(module, "copy_probe_us", lambda repeats=3: next(copy_values))


def test_a_slow_phase_before_the_quiet_one_is_discarded(monkeypatch: pytest.MonkeyPatch) -> None:
    h = _harness_module()
    # construction: five probes in a slow phase (60 us); then pairs: (before, after) probes
    slow, quiet = 60.0, 34.0
    _scripted(h, monkeypatch, [slow] * 5 + [slow, slow] * 3 + [quiet, quiet] * 5 + [quiet] * 10)
    calls = {"ours": 0, "peer": 0}

    def ours() -> None:
        calls["ours"] += 1

    def peer() -> None:
        calls["peer"] += 1

    harness = h.Harness(pairs=5, calls=1, min_pairs=5, max_tries=30)
    assert harness.quiet == slow
    pair = harness.compare(ours, peer)
    assert harness.quiet == quiet                   # the quietest probe seen became the reference
    assert (pair.kept, pair.discarded) == (5, 3)     # the three slow pairs, judged against it
    assert calls == {"ours": 2 * 8, "peer": 2 * 8}   # eight pairs: an untimed and a timed call each


def test_too_few_quiet_pairs_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    h = _harness_module()
    # quiet at construction, then every pair in a burst
    _scripted(h, monkeypatch, [34.0] * 5 + [60.0, 60.0] * 30)
    harness = h.Harness(pairs=5, calls=1, min_pairs=5, max_tries=30)
    with pytest.raises(h.Busy, match="only 0 quiet pairs of 30"):
        harness.compare(lambda: None, lambda: None)
    assert harness.discarded == 30


def test_time_keeps_only_quiet_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    h = _harness_module()
    _scripted(h, monkeypatch, [34.0] * 5 + [34.0, 34.0, 34.0, 80.0] + [34.0, 34.0] * 5)
    calls = []
    harness = h.Harness(pairs=5, calls=1, min_pairs=5, max_tries=30)
    harness.time(lambda: calls.append(1))
    assert len(calls) == 2 * 6                      # the second block's probe read a burst: one more block


def test_a_pair_with_slow_memory_is_discarded(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sgemm probe stays quiet while the neighbours' memory traffic slows the 32 MB copy: those
    pairs are discarded too."""
    h = _harness_module()
    # construction: 5 sgemm probes, then 3 copy probes; then (before, after) of both per pair
    copies = [3000.0] * 3 + [6000.0, 6000.0] * 2 + [3000.0, 3000.0] * 5
    _scripted(h, monkeypatch, [34.0] * 5 + [34.0, 34.0] * 7, copies)
    harness = h.Harness(pairs=5, calls=1, min_pairs=5, max_tries=30)
    pair = harness.compare(lambda: None, lambda: None)
    assert (pair.kept, pair.discarded) == (5, 2)
