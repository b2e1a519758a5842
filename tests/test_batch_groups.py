"""The time loop split over threads by groups of the batch (rnnkit.unroll.batch_groups, RNNKIT_SPLIT_BATCH=1).

Sequences never interact, so running the loop on column groups in parallel threads must give the
same outputs, final states and gradients as one thread over the whole batch: checked here for every
cell, stacked and bidirectional, with variable lengths, recurrent dropout, zoneout and a projection.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import rnnkit
from rnnkit.unroll import batch_groups

KINDS = {"rnn": rnnkit.RNN, "lstm": rnnkit.LSTM, "gru": rnnkit.GRU}


@pytest.fixture(autouse=True)
def split_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The split is off by default (rnnkit.unroll.SPLIT_BATCH, see its docstring): on for these tests."""
    monkeypatch.setattr(rnnkit.unroll, "SPLIT_BATCH", True)


def test_the_split_is_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rnnkit.unroll, "SPLIT_BATCH", False)
    with rnnkit.threads(2):
        assert batch_groups(64, None) == [(0, 64)]
B, T, I, H = 27, 7, 5, 6


def _split_available() -> bool:
    from rnnkit._blas import can_split_threads

    return can_split_threads()


def test_groups_cover_the_batch_evenly() -> None:
    with rnnkit.threads(2):
        assert batch_groups(32, None) == [(0, 16), (16, 32)] or not _split_available()
        assert batch_groups(15, None) == [(0, 15)]          # two groups would be narrower than 8 columns
    with rnnkit.threads(1):
        assert batch_groups(64, None) == [(0, 64)]


def test_groups_balance_the_steps_of_variable_lengths() -> None:
    if not _split_available():
        pytest.skip("this BLAS cannot run single-threaded per thread")
    # Lengths sorted longest first: 8 sequences of 40 steps, 24 of 10 -> 320 + 240 = 560 steps; the
    # first group takes 7 long ones (280 steps), the second the eighth and the 24 short ones (280).
    batch_sizes = np.array([32] * 10 + [8] * 30)
    with rnnkit.threads(2):
        groups = batch_groups(32, batch_sizes)
    assert groups == [(0, 7), (7, 32)]
    steps = (batch_sizes[:, None] > np.arange(32)[None, :]).sum(axis=0)
    assert steps[:7].sum() == steps[7:].sum() == 280


def _run(layer: Any, x: np.ndarray, state: Any, lengths: np.ndarray | None, threads: int, seed: int,
         d_out: np.ndarray) -> tuple[np.ndarray, Any, dict[str, np.ndarray], np.ndarray]:
    with rnnkit.threads(threads):
        out, final, cache = layer.forward(x, state, lengths, training=True, rng=np.random.default_rng(seed))
        dx, _, grads = layer.backward(d_out, None, cache)
    return out, final, grads, dx


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind,options", [
    ("rnn", {}), ("lstm", {}), ("gru", {}),
    ("lstm", {"num_layers": 2, "bidirectional": True}),
    ("gru", {"num_layers": 2, "bidirectional": True, "dropout": 0.3}),
    ("lstm", {"recurrent_dropout": 0.3, "zoneout": 0.2}),
    ("rnn", {"recurrent_dropout": 0.3}),
    ("lstm", {"proj_size": 4}),
])
@pytest.mark.parametrize("variable", [False, True])
def test_three_groups_equal_one(kind: str, options: dict[str, Any], dtype: Any, variable: bool) -> None:
    if not _split_available():
        pytest.skip("this BLAS cannot run single-threaded per thread")
    layer = KINDS[kind](I, H, dtype=dtype, seed=3, **options)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(B, T, I)).astype(dtype)
    lengths = rng.integers(1, T + 1, size=B) if variable else None
    D = 2 if options.get("bidirectional") else 1
    L = options.get("num_layers", 1)
    size = options.get("proj_size") or H
    h0 = rng.normal(size=(L * D, B, size)).astype(dtype)
    state = (h0, rng.normal(size=(L * D, B, H)).astype(dtype)) if kind == "lstm" else h0
    d_out = rng.normal(size=(B, T, D * size)).astype(dtype)
    if lengths is not None:
        d_out[np.arange(T)[None, :] >= lengths[:, None]] = 0
    with rnnkit.threads(3):
        assert len(batch_groups(B, None)) == 3     # the split is really exercised (9 columns each)
    one = _run(layer, x, state, lengths, 1, 11, d_out)
    three = _run(layer, x, state, lengths, 3, 11, d_out)
    tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == np.float64 else {"rtol": 2e-5, "atol": 2e-6}
    np.testing.assert_allclose(three[0], one[0], **tol)
    for a, b in zip(np.atleast_1d(three[1]) if kind != "lstm" else three[1],
                    np.atleast_1d(one[1]) if kind != "lstm" else one[1], strict=True):
        np.testing.assert_allclose(a, b, **tol)
    assert three[2].keys() == one[2].keys()
    for name in one[2]:
        np.testing.assert_allclose(three[2][name], one[2][name], err_msg=name, **tol)
    np.testing.assert_allclose(three[3], one[3], **tol)
