"""RecurrentLayer.step: one inference step equals forward over one step, and generation uses it.

The step runs the same compiled cell kernels as the time loop without the loop's per-call work;
checked against :meth:`forward` step by step (float64 to 1e-12, float32 to float32 precision) for
every cell kind, stacked, with a projection, zoneout (its inference expectation), biases off, and
against the char-LM's generation through the whole network.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import rnnkit
from rnnkit.charlm.model import CharLM, ModelConfig, sample_from_logits

CASES = [
    ("RNN", {}), ("RNN", {"nonlinearity": "relu"}), ("LSTM", {}), ("GRU", {}),
    ("LSTM", {"num_layers": 2, "proj_size": 3}), ("GRU", {"num_layers": 3, "zoneout": 0.3}),
    ("LSTM", {"zoneout": 0.2, "recurrent_dropout": 0.3, "dropout": 0.2, "weight_drop": 0.4, "num_layers": 2}),
    ("LayerNormLSTM", {"num_layers": 2}), ("LSTM", {"bias": False}),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind,options", CASES)
def test_steps_equal_forward(kind: str, options: dict[str, Any], dtype: Any) -> None:
    layer = getattr(rnnkit, kind)(5, 7, dtype=dtype, seed=1, **options)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 5)).astype(dtype)
    size = options.get("proj_size") or 7
    L = options.get("num_layers", 1)
    h0 = rng.standard_normal((L, 4, size)).astype(dtype)
    state0 = (h0, rng.standard_normal((L, 4, 7)).astype(dtype)) if "LSTM" in kind else h0
    out, final, _ = layer.forward(x, state0, keep_cache=False)
    state, outs = state0, []
    for t in range(3):
        o, state = layer.step(x[:, t], state)
        outs.append(o)
    tol = 1e-12 if dtype == np.float64 else 2e-6
    np.testing.assert_allclose(np.stack(outs, axis=1), out, rtol=tol, atol=tol)
    pairs = zip(state, final, strict=True) if "LSTM" in kind else [(state, final)]
    for got, want in pairs:
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


def test_step_refuses_what_it_cannot_do() -> None:
    with pytest.raises(ValueError, match="unidirectional"):
        rnnkit.GRU(3, 4, bidirectional=True).step(np.zeros((2, 3), np.float32))
    layer = rnnkit.LSTM(3, 4)
    with pytest.raises(ValueError, match=r"\(B, I\)"):
        layer.step(np.zeros((2, 1, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        layer.step(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="pair"):
        layer.step(np.zeros((2, 3), np.float32), np.zeros((1, 2, 4), np.float32))
    with pytest.raises(ValueError, match="NaN|finite"):
        layer.step(np.full((2, 3), np.nan, np.float32))


@pytest.mark.parametrize("temperature", [0.0, 0.8])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_generation_equals_feeding_the_whole_network(cell: str, temperature: float) -> None:
    """CharLM.generate steps the layers one character at a time; feeding the Sequential one
    character at a time through forward gives the same characters."""
    model = CharLM(ModelConfig(vocab_size=11, embed_dim=6, hidden=9, cell=cell, layers=2, dropout=0.2), seed=3)
    prime = np.array([1, 4, 2])
    got = list(model.generate(prime, 25, rng=np.random.default_rng(7), temperature=temperature))
    rng = np.random.default_rng(7)
    logits, state, _ = model.net.forward(prime[None], keep_cache=False)
    last, want = logits[0, -1], []
    for _ in range(25):
        token = sample_from_logits(last, temperature, None, rng)
        want.append(token)
        logits, state, _ = model.net.forward(np.array([[token]]), state=state, keep_cache=False)
        last = logits[0, 0]
    assert got == want
