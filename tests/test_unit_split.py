"""The time loop split over threads by ranges of hidden units (rnnkit.unroll.plan_parts, RNNKIT_SPLIT_UNITS).

Each thread computes its units' rows of every gate and meets the others at a barrier after every
step; backward, each adds up the threads' shares of ``dh_{t-1}`` for its units.  The result must be
the same as one thread's: checked for every cell, stacked and bidirectional, with variable lengths,
recurrent dropout and zoneout, in float64 (to rounding) and float32, and by float64 gradient checks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from test_batch_groups import _run

import rnnkit
from rnnkit._blas import can_split_threads
from rnnkit.cells import GRU_CELL, LNLSTM_CELL, LSTM_CELL, RNN_TANH_CELL
from rnnkit.unroll import plan_parts

KINDS = {"rnn": rnnkit.RNN, "lstm": rnnkit.LSTM, "gru": rnnkit.GRU}
B, T, I, H = 5, 6, 4, 13


@pytest.fixture(autouse=True)
def small_splits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Split even these small layers (the defaults keep small steps on one thread)."""
    monkeypatch.setattr(rnnkit.unroll, "SPLIT_UNITS", True)
    monkeypatch.setattr(rnnkit.unroll, "_MIN_SPLIT_FLOPS", 0)
    monkeypatch.setattr(rnnkit.unroll, "_MIN_PART_UNITS", 2)
    if not can_split_threads():
        pytest.skip("this BLAS cannot run single-threaded per thread")


def test_plans() -> None:
    with rnnkit.threads(3):
        assert plan_parts(LSTM_CELL, H, B, None) == [(0, B, 0, 4), (0, B, 4, 8), (0, B, 8, 13)]
        assert plan_parts(RNN_TANH_CELL, 32, 7, None) == [(0, 7, 0, 8), (0, 7, 8, 24), (0, 7, 24, 32)]
        assert len(plan_parts(GRU_CELL, H, B, None)) == 3
        # coupled units: one part (or groups of the batch, off by default)
        assert plan_parts(LNLSTM_CELL, H, B, None) == [(0, B, 0, H)]
        assert plan_parts(LSTM_CELL, H, B, None, projected=True) == [(0, B, 0, H)]
    with rnnkit.threads(1):
        assert plan_parts(LSTM_CELL, H, B, None) == [(0, B, 0, H)]


def test_the_defaults_keep_small_steps_on_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()
    with rnnkit.threads(2):
        assert plan_parts(LSTM_CELL, 13, 5, None) == [(0, 5, 0, 13)]
        if can_split_threads():
            assert plan_parts(LSTM_CELL, 256, 32, None) == [(0, 32, 0, 128), (0, 32, 128, 256)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind,options", [
    ("rnn", {}), ("rnn", {"nonlinearity": "relu"}), ("lstm", {}), ("gru", {}),
    ("lstm", {"num_layers": 2, "bidirectional": True}),
    ("gru", {"num_layers": 2, "bidirectional": True, "dropout": 0.3}),
    ("lstm", {"recurrent_dropout": 0.3, "zoneout": 0.2}),
    ("gru", {"zoneout": 0.3}),
    ("rnn", {"recurrent_dropout": 0.3}),
])
@pytest.mark.parametrize("variable", [False, True])
def test_three_unit_ranges_equal_one(kind: str, options: dict[str, Any], dtype: Any, variable: bool) -> None:
    layer = KINDS[kind](I, H, dtype=dtype, seed=3, **options)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(B, T, I)).astype(dtype)
    lengths = rng.integers(1, T + 1, size=B) if variable else None
    D = 2 if options.get("bidirectional") else 1
    L = options.get("num_layers", 1)
    h0 = rng.normal(size=(L * D, B, H)).astype(dtype)
    state = (h0, rng.normal(size=(L * D, B, H)).astype(dtype)) if kind == "lstm" else h0
    d_out = rng.normal(size=(B, T, D * H)).astype(dtype)
    if lengths is not None:
        d_out[np.arange(T)[None, :] >= lengths[:, None]] = 0
    one = _run(layer, x, state, lengths, 1, 11, d_out)
    three = _run(layer, x, state, lengths, 3, 11, d_out)
    tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == np.float64 else {"rtol": 2e-5, "atol": 2e-6}
    np.testing.assert_allclose(three[0], one[0], **tol)
    finals = (three[1], one[1]) if kind == "lstm" else ((three[1],), (one[1],))
    for a, b in zip(*finals, strict=True):
        np.testing.assert_allclose(a, b, **tol)
    assert three[2].keys() == one[2].keys()
    for name in one[2]:
        np.testing.assert_allclose(three[2][name], one[2][name], err_msg=name, **tol)
    np.testing.assert_allclose(three[3], one[3], **tol)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_gradients_of_a_split_layer_match_central_differences(kind: str) -> None:
    layer = KINDS[kind](I, H, dtype=np.float64, seed=7)
    rng = np.random.default_rng(8)
    x = rng.normal(size=(2, 4, I))
    w = rng.normal(size=(2, 4, H))

    def loss() -> float:
        out, _, _ = layer.forward(x)
        return float((out * w).sum())

    with rnnkit.threads(2):
        assert len(plan_parts(layer.cell, H, 2, None)) == 2
        _, _, cache = layer.forward(x)
        _, _, grads = layer.backward(w, None, cache)
        for name, param in layer.params.items():
            flat = param.reshape(-1)
            for i in rng.choice(flat.size, size=min(6, flat.size), replace=False):
                saved = flat[i]
                flat[i] = saved + 1e-6
                up = loss()
                flat[i] = saved - 1e-6
                down = loss()
                flat[i] = saved
                numeric = (up - down) / 2e-6
                assert abs(grads[name].reshape(-1)[i] - numeric) <= 1e-7 * max(1.0, abs(numeric)), (name, i)
