"""LastStep and MeanPool: hand-derived values, gradient checks with lengths, and Sequential passing lengths on."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnkit import LSTM, SGD, LastStep, Linear, MeanPool, Sequential, gradcheck, mse, softmax_cross_entropy
from rnnkit.tbptt import tbptt_step


def test_last_step_picks_the_last_valid_step_and_routes_the_gradient_back() -> None:
    x = np.arange(24.0).reshape(2, 4, 3)
    out, cache = LastStep().forward(x, lengths=np.array([2, 4]))
    np.testing.assert_array_equal(out, [x[0, 1], x[1, 3]])
    dx, grads = LastStep().backward(np.array([[1.0, 2, 3], [4, 5, 6]]), cache)
    expected = np.zeros_like(x)
    expected[0, 1] = [1, 2, 3]
    expected[1, 3] = [4, 5, 6]
    np.testing.assert_array_equal(dx, expected)
    assert grads == {}
    # Without lengths every sequence ends at T.
    np.testing.assert_array_equal(LastStep().forward(x)[0], x[:, -1])


def test_mean_pool_averages_valid_steps_only() -> None:
    x = np.arange(24.0).reshape(2, 4, 3)
    x[0, 2:] = 1e6  # padding: never read
    out, cache = MeanPool().forward(x, lengths=np.array([2, 4]))
    np.testing.assert_allclose(out, [x[0, :2].mean(axis=0), x[1].mean(axis=0)])
    dx, _ = MeanPool().backward(np.ones((2, 3)), cache)
    np.testing.assert_allclose(dx[0], [[0.5] * 3, [0.5] * 3, [0] * 3, [0] * 3])
    np.testing.assert_allclose(dx[1], np.full((4, 3), 0.25))


@pytest.mark.parametrize("bidirectional", [False, True])
def test_last_step_equals_the_final_hidden_state(bidirectional: bool) -> None:
    rng = np.random.default_rng(0)
    lstm = LSTM(3, 4, bidirectional=bidirectional, dtype=np.float64, seed=0)
    x = rng.standard_normal((5, 7, 3))
    lengths = np.array([7, 1, 4, 2, 6])
    out, (h_n, _), _ = lstm.forward(x, lengths=lengths)
    last, _ = LastStep(bidirectional=bidirectional).forward(out, lengths)
    expected = np.concatenate([h_n[0], h_n[1]], axis=1) if bidirectional else h_n[0]
    np.testing.assert_allclose(last, expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize("head", [LastStep(), LastStep(bidirectional=True), MeanPool()], ids=repr)
def test_heads_gradcheck_inside_a_model_with_lengths(head: LastStep | MeanPool) -> None:
    rng = np.random.default_rng(1)
    bi = isinstance(head, LastStep) and head.bidirectional
    model = Sequential([
        ("rnn", LSTM(3, 4, bidirectional=bi, dtype=np.float64, seed=2)),
        ("pool", head),
        ("head", Linear(8 if bi else 4, 3, dtype=np.float64, seed=3)),
    ])
    x = rng.standard_normal((4, 6, 3))
    lengths = np.array([6, 2, 1, 5])
    targets = np.array([0, 2, 1, 2])
    state = (rng.uniform(-0.5, 0.5, (2 if bi else 1, 4, 4)), rng.uniform(-0.5, 0.5, (2 if bi else 1, 4, 4)))

    def loss() -> float:
        return softmax_cross_entropy(model.forward(x, {"rnn": state}, lengths)[0], targets)[0]

    out, _, cache = model.forward(x, {"rnn": state}, lengths)
    _, d_out = softmax_cross_entropy(out, targets)
    dx, _, grads = model.backward(d_out, None, cache)
    report = gradcheck(loss, {**model.params, "x": x}, {**grads, "x": dx})
    assert report.max_error < 1e-6, report
    # Padding gets no gradient: nothing after a sequence's end was read.
    assert not dx[1, 2:].any() and not dx[2, 1:].any()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 9), min_size=1, max_size=6), st.integers(1, 4), st.integers(0, 2**31 - 1))
def test_heads_equal_a_plain_loop_for_any_lengths(lengths: list[int], F: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    lens = np.array(lengths)
    x = rng.standard_normal((len(lengths), int(lens.max()) + rng.integers(0, 3), 2 * F))
    d_out = rng.standard_normal((len(lengths), 2 * F))
    last, last_cache = LastStep().forward(x, lens)
    bi, bi_cache = LastStep(bidirectional=True).forward(x, lens)
    mean, mean_cache = MeanPool().forward(x, lens)
    d_last, d_bi, d_mean = (np.zeros_like(x) for _ in range(3))
    for b, n in enumerate(lengths):
        np.testing.assert_array_equal(last[b], x[b, n - 1])
        np.testing.assert_array_equal(bi[b], np.concatenate([x[b, n - 1, :F], x[b, 0, F:]]))
        np.testing.assert_allclose(mean[b], x[b, :n].mean(axis=0), rtol=1e-12, atol=1e-14)
        d_last[b, n - 1] = d_out[b]
        d_bi[b, n - 1, :F] += d_out[b, :F]
        d_bi[b, 0, F:] += d_out[b, F:]
        d_mean[b, :n] = d_out[b] / n
    np.testing.assert_array_equal(LastStep().backward(d_out, last_cache)[0], d_last)
    np.testing.assert_array_equal(LastStep(bidirectional=True).backward(d_out, bi_cache)[0], d_bi)
    np.testing.assert_allclose(MeanPool().backward(d_out, mean_cache)[0], d_mean, rtol=1e-14)


def test_heads_refuse_bad_input() -> None:
    x = np.zeros((2, 3, 4))
    with pytest.raises(ValueError, match=r"lengths must lie in 1\.\.3"):
        LastStep().forward(x, lengths=np.array([0, 3]))
    with pytest.raises(ValueError, match="lengths must be an integer array of shape"):
        MeanPool().forward(x, lengths=np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"x must be a floating-point array \(B, T, F\)"):
        MeanPool().forward(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="even number of features"):
        LastStep(bidirectional=True).forward(np.zeros((2, 3, 5)))
    _, cache = LastStep().forward(x)
    with pytest.raises(ValueError, match=r"d_out must be a float64 array of shape \(2, 4\)"):
        LastStep().backward(np.zeros((2, 5)), cache)
    with pytest.raises(ValueError, match="cache must be the cache returned by MeanPool.forward"):
        MeanPool().backward(np.zeros((2, 4)), cache)  # type: ignore[arg-type]


def test_sequential_passes_lengths_to_heads() -> None:
    model = Sequential([("rnn", LSTM(2, 3, dtype=np.float64, seed=0)), ("pool", MeanPool())])
    assert model.length_aware == ("pool",)
    x = np.random.default_rng(0).standard_normal((2, 5, 2))
    lengths = np.array([5, 2])
    pooled, _, _ = model.forward(x, lengths=lengths)
    out, _, _ = model["rnn"].forward(x, lengths=lengths)
    np.testing.assert_allclose(pooled[1], out[1, :2].mean(axis=0))


class _Recorder:
    def __init__(self) -> None:
        self.grads: dict[str, np.ndarray] = {}

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        self.grads = {k: v.copy() for k, v in grads.items()}


def test_tbptt_step_with_lengths_masks_the_loss_and_gradchecks() -> None:
    rng = np.random.default_rng(2)
    model = Sequential([("rnn", LSTM(2, 3, dtype=np.float64, seed=0)), ("head", Linear(3, 2, dtype=np.float64))])
    x = rng.standard_normal((3, 4, 2))
    y = rng.standard_normal((3, 4, 2))
    y[0, 2:] = 1e3  # targets on padding would dominate the loss if they counted
    lengths = np.array([2, 4, 3])
    mask = np.arange(4) < lengths[:, None]
    recorder = _Recorder()
    step = tbptt_step(model, mse, recorder, x, y, lengths=lengths)  # type: ignore[arg-type]

    def loss() -> float:
        return mse(model.forward(x, lengths=lengths)[0], y, mask)[0]

    assert step.loss == pytest.approx(loss(), rel=1e-14)
    assert step.loss < 10
    report = gradcheck(loss, model.params, recorder.grads)
    assert report.max_error < 1e-6, report
    # An explicit mask overrides the one from lengths.
    only_first = np.zeros((3, 4), bool)
    only_first[:, 0] = True
    step = tbptt_step(model, mse, SGD(lr=0.0), x, y, lengths=lengths, mask=only_first)
    assert step.loss == pytest.approx(mse(model.forward(x, lengths=lengths)[0], y, only_first)[0], rel=1e-14)
