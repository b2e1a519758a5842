"""The BLAS thread policy and its overrides (rnnkit.parallel)."""

from __future__ import annotations

import numpy as np
import pytest

import rnnkit
from rnnkit import parallel


def test_set_and_restore_threads() -> None:
    before = rnnkit.get_num_threads()
    with rnnkit.threads(1) as n:
        assert n == 1
        assert rnnkit.get_num_threads() == 1
    assert rnnkit.get_num_threads() == before


def test_set_num_threads_returns_what_it_set() -> None:
    before = rnnkit.get_num_threads()
    try:
        assert rnnkit.set_num_threads(1) == 1
        assert rnnkit.get_num_threads() == 1
    finally:
        rnnkit.set_num_threads(before)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2", None])
def test_bad_thread_counts_are_refused(bad: object) -> None:
    if bad is None:  # None means "the policy", which is allowed
        with rnnkit.threads(None) as n:
            assert 1 <= n <= parallel.available_cores()
        return
    with pytest.raises(ValueError, match="number of threads must be a positive integer"):
        rnnkit.set_num_threads(bad)  # type: ignore[arg-type]


def test_policy_leaves_busy_cores_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel, "available_cores", lambda: 4)
    monkeypatch.setattr(parallel, "_busy_cores", lambda: 1)
    assert parallel.default_threads() == 3
    monkeypatch.setattr(parallel, "_busy_cores", lambda: 9)
    assert parallel.default_threads() == 1  # never below one
    monkeypatch.setattr(parallel, "_busy_cores", lambda: 0)
    assert parallel.default_threads() == 4
    monkeypatch.setenv("RNNKIT_NUM_THREADS", "2")
    assert parallel.default_threads() == 2  # the environment caps it
    monkeypatch.setenv("RNNKIT_NUM_THREADS", "zero")
    assert parallel.default_threads() == 4  # a malformed cap is ignored


def test_results_do_not_depend_on_threads() -> None:
    layer = rnnkit.LSTM(8, 16, dtype=np.float64, seed=0)
    x = np.random.default_rng(0).standard_normal((5, 7, 8))
    with rnnkit.threads(1):
        one = layer.forward(x)[0]
    with rnnkit.threads(2):
        two = layer.forward(x)[0]
    np.testing.assert_allclose(one, two, rtol=1e-12, atol=1e-12)
