"""Inference skips the layout copies (rnnkit.unroll_forward's ``x_order`` / ``out_dest``).

With ``keep_cache=False`` and one direction, the time loop gathers the first layer's inputs straight
from the batch-first ``x`` and writes the last layer's states batch-first.  Those outputs must be the
ones the training path gives (which copies ``x`` to the feature-major layout first and the states
back after): checked bit for bit for every cell, stacked, with projection, zoneout, variable
lengths and both ways of splitting the loop over threads, and against PyTorch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import rnnkit
from rnnkit.cells import LSTM_CELL
from rnnkit.unroll import Weights, unroll_forward

KINDS = {"rnn": rnnkit.RNN, "lstm": rnnkit.LSTM, "gru": rnnkit.GRU}


def _both(layer: Any, x: np.ndarray, lengths: np.ndarray | None, state: Any = None) -> tuple[Any, Any]:
    trained = layer.forward(x, state, lengths, keep_cache=True)[:2]
    inferred = layer.forward(x, state, lengths, keep_cache=False)[:2]
    return trained, inferred


def _assert_same(a: Any, b: Any) -> None:
    out_a, state_a = a
    out_b, state_b = b
    assert out_b.flags.c_contiguous and out_b.shape == out_a.shape
    np.testing.assert_array_equal(out_a, out_b)
    for s, t in zip(state_a if isinstance(state_a, tuple) else (state_a,),
                    state_b if isinstance(state_b, tuple) else (state_b,), strict=True):
        np.testing.assert_array_equal(s, t)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind,options", [
    ("rnn", {}), ("lstm", {}), ("gru", {}), ("lstm", {"num_layers": 3}), ("gru", {"num_layers": 2}),
    ("lstm", {"proj_size": 3}), ("lstm", {"zoneout": 0.3}), ("rnn", {"nonlinearity": "relu", "num_layers": 2}),
])
@pytest.mark.parametrize("B,T,I,H", [(1, 1, 3, 4), (5, 7, 21, 16), (37, 4, 16, 40), (32, 3, 35, 17)])
@pytest.mark.parametrize("variable", [False, True])
def test_inference_equals_the_training_path(kind: str, options: dict[str, Any], dtype: Any, B: int, T: int,
                                            I: int, H: int, variable: bool) -> None:
    layer = KINDS[kind](I, H, dtype=dtype, seed=2, **options)
    rng = np.random.default_rng(B * T + I)
    for value in layer.params.values():
        value[...] = rng.uniform(-0.6, 0.6, value.shape)
    x = rng.standard_normal((B, T, I)).astype(dtype)
    lengths = rng.integers(1, T + 1, size=B) if variable else None
    _assert_same(*_both(layer, x, lengths))


@pytest.mark.parametrize("split", ["units", "batch"])
@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_threaded_inference_equals_the_training_path(monkeypatch: pytest.MonkeyPatch, split: str, kind: str) -> None:
    monkeypatch.setattr(rnnkit.unroll, "_MIN_SPLIT_FLOPS", 0)
    monkeypatch.setattr(rnnkit.unroll, "_MIN_PART_UNITS", 2)
    monkeypatch.setattr(rnnkit.unroll, "SPLIT_UNITS", split == "units")
    monkeypatch.setattr(rnnkit.unroll, "SPLIT_BATCH", split == "batch")
    layer = KINDS[kind](19, 24, num_layers=2, seed=4)
    rng = np.random.default_rng(9)
    x = rng.standard_normal((45, 6, 19)).astype(np.float32)
    with rnnkit.threads(2):
        for lengths in (None, rng.integers(1, 7, size=45)):
            _assert_same(*_both(layer, x, lengths))


def test_inference_equals_torch_with_lengths_and_a_state() -> None:
    B, T, I, H = 6, 9, 20, 18
    layer = rnnkit.LSTM(I, H, num_layers=2, dtype=np.float64, seed=0)
    peer = torch.nn.LSTM(I, H, num_layers=2, batch_first=True, dtype=torch.float64)
    rng = np.random.default_rng(1)
    with torch.no_grad():
        for name, value in layer.params.items():
            value[...] = rng.uniform(-0.5, 0.5, value.shape)
            getattr(peer, name).copy_(torch.from_numpy(value))
    x = rng.standard_normal((B, T, I))
    h0, c0 = rng.standard_normal((2, B, H)), rng.standard_normal((2, B, H))
    lengths = np.array([9, 3, 9, 1, 5, 8])
    out, (h, c), _ = layer.forward(x, (h0, c0), lengths, keep_cache=False)
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.from_numpy(x), torch.from_numpy(lengths),
                                                     batch_first=True, enforce_sorted=False)
    with torch.no_grad():
        ref, (ref_h, ref_c) = peer(packed, (torch.from_numpy(h0), torch.from_numpy(c0)))
    ref_out, _ = torch.nn.utils.rnn.pad_packed_sequence(ref, batch_first=True, total_length=T)
    np.testing.assert_allclose(out, ref_out.numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(h, ref_h.numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(c, ref_c.numpy(), rtol=0, atol=1e-12)


def test_the_batch_first_forms_are_for_inference_only() -> None:
    w = Weights(np.zeros((8, 3)), np.zeros((8, 2)), np.zeros(8), np.zeros(8))
    with pytest.raises(ValueError, match="keep_cache=False"):
        unroll_forward(LSTM_CELL, w, np.zeros((1, 1, 3)), (np.zeros((2, 1)), np.zeros((2, 1))),
                       x_order=np.zeros(1, np.int64))
