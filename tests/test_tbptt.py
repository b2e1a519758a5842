"""Truncated BPTT: the stream layout, state carrying, and gradients cut at the chunk boundary.

The gradient of a chunk is checked against central differences of that chunk's loss as a function
of the parameters *with the incoming state held constant* — the definition of truncated BPTT —
and shown to differ from the full BPTT gradient, so the cut is real.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from rnnkit.clip import clip_grad_norm, grad_norm
from rnnkit.gradcheck import gradcheck
from rnnkit.layers.embedding import Embedding
from rnnkit.layers.linear import Linear
from rnnkit.layers.recurrent import LSTM
from rnnkit.layers.sequential import Sequential
from rnnkit.losses import softmax_cross_entropy
from rnnkit.optim import SGD
from rnnkit.tbptt import stream_batches, tbptt_step

V, E, H = 5, 3, 4
B, T = 2, 3


def _model() -> Sequential:
    return Sequential([("embed", Embedding(V, E, dtype=np.float64, seed=0)),
                       ("rnn", LSTM(E, H, dtype=np.float64, seed=1)),
                       ("head", Linear(H, V, dtype=np.float64, seed=2))])


class _Recorder:
    """An optimizer that records the gradients it is given and leaves the parameters unchanged."""

    def __init__(self) -> None:
        self.grads: list[dict[str, np.ndarray]] = []

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        assert params.keys() == grads.keys()
        self.grads.append({k: v.copy() for k, v in grads.items()})


def test_stream_batches_layout() -> None:
    tokens = np.arange(27)  # 26 (input, next token) pairs -> 2 rows of 13 -> chunks of 5, 5, 3
    chunks = list(stream_batches(tokens, batch_size=2, seq_len=5))
    assert [x.shape for x, _ in chunks] == [(2, 5), (2, 5), (2, 3)]
    x = np.concatenate([c[0] for c in chunks], axis=1)
    y = np.concatenate([c[1] for c in chunks], axis=1)
    np.testing.assert_array_equal(x, [np.arange(13), np.arange(13, 26)])  # contiguous rows
    np.testing.assert_array_equal(y, x + 1)                                # next-token targets
    assert len(list(stream_batches(tokens, 2, 5, drop_last=True))) == 2


def test_stream_batches_with_targets_and_features() -> None:
    features = np.arange(20.0).reshape(10, 2)
    targets = np.arange(10) * 10
    (x0, y0), (x1, y1) = stream_batches(features, batch_size=2, seq_len=3, targets=targets)
    assert x0.shape == (2, 3, 2) and x1.shape == (2, 2, 2)
    np.testing.assert_array_equal(x0[1, 0], features[5])
    np.testing.assert_array_equal(np.concatenate([y0, y1], axis=1), targets.reshape(2, 5))


def test_stream_batches_errors() -> None:
    with pytest.raises(ValueError, match="fewer than batch_size = 8"):
        list(stream_batches(np.arange(5), batch_size=8, seq_len=2))
    with pytest.raises(ValueError, match="seq_len must be a positive integer"):
        list(stream_batches(np.arange(50), batch_size=2, seq_len=0))
    with pytest.raises(ValueError, match=r"targets must be an array with one entry per token \(50\)"):
        list(stream_batches(np.arange(50), batch_size=2, seq_len=4, targets=np.arange(49)))


def _run_stream(optimizer: Any, clip: float | None = None) -> tuple[list[np.ndarray], Any, list[Any], Any]:
    """TBPTT over a random stream; returns the chunk outputs, final state, steps and the chunks."""
    model = _model()
    tokens = np.random.default_rng(0).integers(0, V, B * 3 * T + 1)
    outs = []

    def loss_fn(out: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        outs.append(out.copy())
        return softmax_cross_entropy(out, y)

    chunks = list(stream_batches(tokens, batch_size=B, seq_len=T))
    state, steps = None, []
    for x, y in chunks:
        step = tbptt_step(model, loss_fn, optimizer, x, y, state, clip=clip)
        state = step.state
        steps.append(step)
    return outs, state, steps, (model, chunks)


def test_carried_state_equals_one_long_forward() -> None:
    outs, state, steps, (model, chunks) = _run_stream(_Recorder())
    x_all = np.concatenate([x for x, _ in chunks], axis=1)
    y_all = np.concatenate([y for _, y in chunks], axis=1)
    whole, whole_state, _ = model.forward(x_all, keep_cache=False)
    np.testing.assert_allclose(np.concatenate(outs, axis=1), whole, rtol=1e-12, atol=1e-14)
    for a, b in zip(state["rnn"], whole_state["rnn"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    # The reported losses are the chunks' losses before the (here absent) update.
    for k, step in enumerate(steps):
        expected, _ = softmax_cross_entropy(whole[:, k * T : (k + 1) * T], y_all[:, k * T : (k + 1) * T])
        assert step.loss == pytest.approx(expected, rel=1e-12)


def test_chunk_gradient_treats_incoming_state_as_constant() -> None:
    recorder = _Recorder()
    _, _, _, (model, chunks) = _run_stream(recorder)
    k = 2  # the third chunk: its incoming state depends on the parameters through two earlier chunks
    x_prev = np.concatenate([x for x, _ in chunks[:k]], axis=1)
    _, carried, _ = model.forward(x_prev, keep_cache=False)   # computed once: a constant below
    x, y = chunks[k]

    def truncated_loss() -> float:
        return softmax_cross_entropy(model.forward(x, state=carried, keep_cache=False)[0], y)[0]

    report = gradcheck(truncated_loss, model.params, recorder.grads[k], max_entries=15)
    assert report.max_error < 1e-7, report

    # Full BPTT of the same loss (the incoming state recomputed from the parameters) differs.
    x_upto = np.concatenate([x_prev, x], axis=1)
    out, _, cache = model.forward(x_upto)
    _, d_out = softmax_cross_entropy(out[:, -T:], y)
    d_full = np.zeros_like(out)
    d_full[:, -T:] = d_out
    _, _, full = model.backward(d_full, None, cache)
    assert full.keys() == recorder.grads[k].keys()
    assert np.abs(full["rnn.weight_hh_l0"] - recorder.grads[k]["rnn.weight_hh_l0"]).max() > 1e-4
    # ... while the output layer, which sees no earlier step, gets the same gradient either way.
    np.testing.assert_allclose(full["head.weight"], recorder.grads[k]["head.weight"], rtol=1e-10, atol=1e-14)


def test_clipping_and_reported_norm() -> None:
    # The recorders leave the parameters alone, so both runs see the same gradients before clipping.
    reference, clipped = _Recorder(), _Recorder()
    _, _, free_steps, _ = _run_stream(reference)
    _, _, clipped_steps, _ = _run_stream(clipped, clip=0.05)
    for free, step, ref, got in zip(free_steps, clipped_steps, reference.grads, clipped.grads, strict=True):
        assert step.grad_norm == pytest.approx(grad_norm(ref), rel=1e-12)  # the norm before clipping
        assert free.grad_norm == pytest.approx(step.grad_norm, rel=1e-12)
        assert step.grad_norm > 0.05
        assert grad_norm(got) == pytest.approx(0.05, rel=1e-4)
        expected = {name: g.copy() for name, g in ref.items()}
        clip_grad_norm(expected, 0.05)
        for name in ref:
            np.testing.assert_allclose(got[name], expected[name], rtol=1e-12, atol=1e-15)


def test_step_updates_the_model_with_the_optimizer() -> None:
    model = _model()
    x, y = next(stream_batches(np.random.default_rng(1).integers(0, V, 40), batch_size=B, seq_len=T))
    before = model.state_dict()
    out, _, cache = model.forward(x)
    _, d_out = softmax_cross_entropy(out, y)
    _, _, grads = model.backward(d_out, None, cache)
    step = tbptt_step(model, softmax_cross_entropy, SGD(lr=0.5), x, y)
    for name, value in model.params.items():
        np.testing.assert_allclose(value, before[name] - 0.5 * grads[name], rtol=1e-12, atol=1e-15)
    assert step.state.keys() == {"rnn"} and step.state["rnn"][0].shape == (1, B, H)
