"""Recurrent dropout and zoneout: the regularizers that act inside the time loop.

* Against a step-by-step reference built from the layer's own one-step passes (the cell is the
  cell without either regularizer; the reference mixes / masks the states by hand with the very
  masks the layer draws from the same generator state), in training and in inference.
* float64 central differences with fixed masks (the generator reseeded for every evaluation),
  stacked, bidirectional, with lengths and with an LSTM projection.
* Reproducibility from the generator, and the refusals.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rnnkit
from rnnkit.gradcheck import gradcheck

B, T, I, H = 3, 5, 4, 6
LENGTHS = np.array([5, 2, 4])
KINDS = {"rnn": rnnkit.RNN, "lstm": rnnkit.LSTM, "gru": rnnkit.GRU}


def _layer(kind: str, **options: Any) -> Any:
    return KINDS[kind](I, H, dtype=np.float64, seed=1, **options)


def _reference(layer: Any, x: np.ndarray, rd: np.ndarray | None, zh: np.ndarray | None,
               zc: np.ndarray | None) -> tuple[np.ndarray, Any]:
    """One layer, one direction, full lengths: the sequence one step at a time, from the same weights
    without the in-loop regularizers.  ``rd`` ``(B, H)``; ``zh`` / ``zc`` ``(T, B, H)`` (0/1 or p)."""
    plain = type(layer)(I, H, dtype=np.float64, bias=layer.bias)
    plain.load_state_dict(layer.state_dict())
    lstm = isinstance(layer, rnnkit.LSTM)
    h = np.zeros((1, x.shape[0], H))
    c = np.zeros_like(h)
    outs = []
    for t in range(x.shape[1]):
        h_in = h if rd is None else h * rd[None]
        _, new, _ = plain.forward(x[:, t : t + 1], (h_in, c) if lstm else h_in, keep_cache=False)
        h_new, c_new = new if lstm else (new, None)
        if zh is not None:
            h_new = zh[t][None] * h + (1 - zh[t][None]) * h_new
            if lstm:
                c_new = zc[t][None] * c + (1 - zc[t][None]) * c_new
        h, c = h_new, c_new
        outs.append(h[0])
    return np.stack(outs, axis=1), ((h, c) if lstm else h)


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_recurrent_dropout_masks_the_h_fed_to_w_hh(kind: str) -> None:
    layer = _layer(kind, recurrent_dropout=0.4)
    x = np.random.default_rng(2).normal(size=(B, T, I))
    out, state, _ = layer.forward(x, training=True, rng=np.random.default_rng(7))
    # The layer's draw: (H, B), per sequence, each entry 16 bits of the generator's raw output.
    words = np.random.default_rng(7).bit_generator.random_raw((H * B + 3) // 4)
    lanes = (words[:, None] >> (np.uint64(16) * np.arange(4, dtype=np.uint64))) & np.uint64(0xFFFF)
    keep = lanes.reshape(-1)[: H * B].reshape(H, B) >= round(0.4 * 65536)
    rd = (keep / 0.6).T
    ref_out, ref_state = _reference(layer, x, rd, None, None)
    np.testing.assert_allclose(out, ref_out, rtol=1e-12, atol=1e-13)
    for a, e in zip(state if kind == "lstm" else (state,), ref_state if kind == "lstm" else (ref_state,),
                    strict=True):
        np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-13)
    assert np.abs(out - layer.forward(x)[0]).max() > 1e-3  # the mask did something


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_zoneout_training_mixes_previous_and_new_states(kind: str) -> None:
    layer = _layer(kind, zoneout=0.3)
    x = np.random.default_rng(3).normal(size=(B, T, I))
    out, state, _ = layer.forward(x, training=True, rng=np.random.default_rng(8))
    draws = np.random.default_rng(8)
    zh = (draws.random((T, H, B)) < 0.3).astype(float).transpose(0, 2, 1)
    zc = (draws.random((T, H, B)) < 0.3).astype(float).transpose(0, 2, 1) if kind == "lstm" else None
    ref_out, ref_state = _reference(layer, x, None, zh, zc)
    np.testing.assert_allclose(out, ref_out, rtol=1e-12, atol=1e-13)
    assert 0 < zh.mean() < 1


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_zoneout_inference_is_the_expectation(kind: str) -> None:
    layer = _layer(kind, zoneout=0.25)
    x = np.random.default_rng(4).normal(size=(B, T, I))
    out, state, _ = layer.forward(x)
    out2, _, cache = layer.forward(x, keep_cache=False)
    p = np.full((T, B, H), 0.25)
    ref_out, ref_state = _reference(layer, x, None, p, p if kind == "lstm" else None)
    np.testing.assert_allclose(out, ref_out, rtol=1e-12, atol=1e-13)
    np.testing.assert_array_equal(out, out2)
    assert cache is None


def test_recurrent_dropout_inference_equals_no_dropout() -> None:
    layer = _layer("lstm", recurrent_dropout=0.5)
    plain = _layer("lstm")
    x = np.random.default_rng(5).normal(size=(B, T, I))
    np.testing.assert_array_equal(layer.forward(x, lengths=LENGTHS)[0], plain.forward(x, lengths=LENGTHS)[0])


CASES = [
    ("rnn", dict(recurrent_dropout=0.3), 1, False),
    ("lstm", dict(recurrent_dropout=0.3), 2, True),
    ("rnn", dict(zoneout=0.3), 2, True),
    ("gru", dict(zoneout=0.3), 2, True),
    ("lstm", dict(zoneout=0.3), 2, True),
    ("lstm", dict(zoneout=0.3, recurrent_dropout=0.3, proj_size=4), 2, True),
    ("lstm", dict(zoneout=0.2, recurrent_dropout=0.2, dropout=0.2, weight_drop=0.2), 2, False),
]


@pytest.mark.parametrize("kind,options,layers,bidirectional", CASES,
                         ids=[f"{k}-{'-'.join(o)}-L{n}{'-bi' if b else ''}" for k, o, n, b in CASES])
@pytest.mark.parametrize("training", [True, False], ids=["train", "infer"])
def test_gradcheck_with_fixed_masks(kind: str, options: dict[str, Any], layers: int, bidirectional: bool,
                                    training: bool) -> None:
    layer = KINDS[kind](I, H, layers, bidirectional=bidirectional, dtype=np.float64, seed=2, **options)
    rng = np.random.default_rng(9)
    x = rng.normal(size=(B, T, I))
    state = tuple(rng.uniform(-0.5, 0.5, s.shape) for s in _states(layer.forward(x)[1]))
    w_out = rng.normal(size=layer.forward(x)[0].shape)
    w_state = tuple(rng.normal(size=s.shape) for s in state)
    as_state = (lambda s: s) if kind == "lstm" else (lambda s: s[0])

    def run(keep_cache: bool) -> tuple[Any, ...]:  # the same masks every time: the generator reseeded
        return layer.forward(x, as_state(state), LENGTHS, keep_cache=keep_cache, training=training,
                             rng=np.random.default_rng(10))

    def loss() -> float:
        out, final, _ = run(False)
        return float((out * w_out).sum() + sum((f * w).sum() for f, w in zip(_states(final), w_state, strict=True)))

    _, _, cache = run(True)
    dx, d_state0, grads = layer.backward(w_out, as_state(w_state), cache)
    arrays = {**layer.params, "x": x, **{f"state{k}": s for k, s in enumerate(state)}}
    analytic = {**grads, "x": dx, **{f"state{k}": d for k, d in enumerate(_states(d_state0))}}
    report = gradcheck(loss, arrays, analytic, max_entries=10)
    assert report.max_error < 1e-7, str(report)


def _states(state: Any) -> tuple[np.ndarray, ...]:
    return state if isinstance(state, tuple) else (state,)


@settings(max_examples=15, deadline=None)
@given(p=st.floats(0.0, 0.95), seed=st.integers(0, 2**32 - 1), kind=st.sampled_from(["rnn", "lstm", "gru"]))
def test_zoneout_output_is_reproducible_and_finite(p: float, seed: int, kind: str) -> None:
    """Any rate: the same generator state gives the same pass; float32 stays finite."""
    rd = {} if kind == "gru" else {"recurrent_dropout": p}
    layer = KINDS[kind](I, H, 2, bidirectional=True, seed=3, zoneout=p, **rd)
    x = np.random.default_rng(seed).normal(size=(B, T, I)).astype(np.float32)
    a = layer.forward(x, lengths=LENGTHS, training=True, rng=np.random.default_rng(seed))[0]
    b = layer.forward(x, lengths=LENGTHS, training=True, rng=np.random.default_rng(seed))[0]
    np.testing.assert_array_equal(a, b)
    assert np.isfinite(a).all()


def test_training_needs_a_generator() -> None:
    with pytest.raises(ValueError, match="needs rng"):
        _layer("lstm", zoneout=0.1).forward(np.zeros((B, T, I)), training=True)


@pytest.mark.parametrize("options,message", [
    (dict(zoneout=1.0), "zoneout"),
    (dict(zoneout=-0.1), "zoneout"),
    (dict(recurrent_dropout=1.0), "recurrent_dropout"),
    (dict(recurrent_dropout="0.1"), "recurrent_dropout"),
])
def test_bad_rates_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _layer("lstm", **options)


def test_recurrent_dropout_is_refused_for_the_gru() -> None:
    from rnnkit.cells import GRU_CELL
    from rnnkit.layers.recurrent import Recurrent
    with pytest.raises(ValueError, match="not available for the GRU"):
        Recurrent(GRU_CELL, I, H, recurrent_dropout=0.2)
