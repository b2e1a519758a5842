"""Gradient-flow diagnostics: ||dL/dh_t|| against hand-derived products and finite differences.

``h_t`` is the state step ``t`` starts from (``h_0`` the initial state).  For a 1-unit tanh RNN
with ``L = v h_T`` (|v| = 1) the chain rule gives ``dL/dh_t = v prod_{k=t}^{T-1} w_hh (1 - h_{k+1}^2)``;
for a relu RNN kept in its linear region (all pre-activations positive) ``dL/dh_t = (W_hh^T)^{T-t} u``.
For LSTM, GRU and a full model the gradient is checked by central differences of the loss of a run
restarted at step ``t`` from the perturbed state.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from rnnkit.diagnostics import gradient_flow_curves, gradient_norms_over_time, plot_gradient_flow
from rnnkit.layers.embedding import Embedding
from rnnkit.layers.linear import Linear
from rnnkit.layers.recurrent import GRU, LSTM, RNN
from rnnkit.layers.sequential import Sequential
from rnnkit.losses import softmax_cross_entropy


def test_one_unit_tanh_rnn_is_a_product_of_known_factors() -> None:
    rng = np.random.default_rng(0)
    layer = RNN(1, 1, dtype=np.float64, seed=0)
    layer.params["weight_hh_l0"][:] = 1.7  # large enough that the factors are not all tiny
    x = rng.standard_normal((3, 12, 1))
    norms = gradient_norms_over_time(layer, x)  # default loss: v . h_T with |v| = 1, so |v| = 1 here

    out, _, _ = layer.forward(x, keep_cache=False)  # out[:, k] = h_{k+1}
    factors = 1.7 * (1 - out[:, :, 0] ** 2)          # (B, T): dh_{k+1}/dh_k
    T = x.shape[1]
    expected = [np.abs(np.prod(factors[:, t:], axis=1)).mean() for t in range(T)]
    np.testing.assert_allclose(norms, expected, rtol=1e-12)


def test_relu_rnn_in_its_linear_region_is_a_matrix_power() -> None:
    rng = np.random.default_rng(1)
    B, T, I, H = 4, 15, 3, 5
    layer = RNN(I, H, nonlinearity="relu", dtype=np.float64, seed=1)
    layer.params["weight_hh_l0"][:] = np.abs(layer.params["weight_hh_l0"])
    layer.params["bias_ih_l0"][:] = 10.0  # every pre-activation positive: relu is the identity
    x = rng.uniform(0, 0.1, (B, T, I))
    out, _, _ = layer.forward(x, keep_cache=False)
    assert (out > 0).all()
    u = rng.standard_normal(H)

    norms = gradient_norms_over_time(layer, x, loss_fn=lambda z: (float((z @ u).sum()), np.tile(u, (len(z), 1))))
    w_hh_t = layer.params["weight_hh_l0"].T
    expected = [np.linalg.norm(np.linalg.matrix_power(w_hh_t, T - t) @ u) for t in range(T)]
    np.testing.assert_allclose(norms, expected, rtol=1e-12)


def _numeric_norms(model: Sequential, x: np.ndarray, loss: Any, steps: list[int], eps: float = 1e-6) -> list[float]:
    """Mean per-sequence ||dL/dh_t|| by central differences on the h part of the state at step t >= 1."""
    result = []
    for t in steps:
        state = model.forward(x[:, :t], keep_cache=False)[1]
        squares = 0.0
        for layer_state in state.values():
            h = layer_state[0] if isinstance(layer_state, tuple) else layer_state  # c (LSTM) held fixed
            grad = np.empty_like(h)
            for idx in np.ndindex(h.shape):
                saved = h[idx]
                values = []
                for delta in (eps, -eps):
                    h[idx] = saved + delta
                    values.append(loss(model.forward(x[:, t:], state=state, keep_cache=False)[0][:, -1]))
                h[idx] = saved
                grad[idx] = (values[0] - values[1]) / (2 * eps)
            squares = squares + (grad**2).sum(axis=(0, 2))
        result.append(float(np.sqrt(squares).mean()))
    return result


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_layer_matches_finite_differences(kind: str) -> None:
    rng = np.random.default_rng(2)
    B, T, I, H = 2, 8, 3, 4
    layer = {"lstm": LSTM, "gru": GRU}[kind](I, H, num_layers=2, dtype=np.float64, seed=3)
    x = rng.standard_normal((B, T, I))
    u = rng.standard_normal(H)
    norms = gradient_norms_over_time(layer, x, loss_fn=lambda z: (float((z @ u).sum()), np.tile(u, (B, 1))))
    steps = [1, 4, T - 1]
    numeric = _numeric_norms(Sequential([("rnn", layer)]), x, lambda z: float((z @ u).sum()), steps)
    np.testing.assert_allclose(norms[steps], numeric, rtol=1e-6)
    # t = 0 is the initial state: one ordinary full-length backward gives the same gradient.
    out, _, cache = layer.forward(x)
    d_out = np.zeros_like(out)
    d_out[:, -1] = u
    d_state0 = layer.backward(d_out, None, cache)[1]
    h0_grad = d_state0[0] if kind == "lstm" else d_state0
    np.testing.assert_allclose(norms[0], np.linalg.norm(h0_grad.transpose(1, 0, 2).reshape(B, -1), axis=1).mean(),
                               rtol=1e-12)


def test_model_with_cross_entropy_matches_finite_differences() -> None:
    rng = np.random.default_rng(4)
    B, T, V = 3, 7, 5
    model = Sequential([("embed", Embedding(V, 4, dtype=np.float64, seed=0)),
                        ("rnn", LSTM(4, 3, dtype=np.float64, seed=1)),
                        ("head", Linear(3, V, dtype=np.float64, seed=2))])
    ids = rng.integers(0, V, (B, T))
    targets = rng.integers(0, V, B)

    def loss_fn(z: np.ndarray) -> tuple[float, np.ndarray]:
        return softmax_cross_entropy(z, targets, reduction="sum")

    norms = gradient_norms_over_time(model, ids, loss_fn=loss_fn)
    steps = [1, 3, T - 1]
    numeric = _numeric_norms(model, ids, lambda z: loss_fn(z)[0], steps)
    np.testing.assert_allclose(norms[steps], numeric, rtol=1e-6)


def test_curves_tell_the_vanishing_and_exploding_story() -> None:
    curves = gradient_flow_curves(seq_len=60, batch_size=4)  # H = 64 as in docs/gradient_flow.png
    assert set(curves) == {"RNN (tanh)", "LSTM", "GRU", "LSTM, forget-gate bias +1", "RNN (tanh), W_hh ×4"}
    for name, norms in curves.items():
        assert norms.shape == (60,) and np.isfinite(norms).all() and (norms > 0).all(), name
    for name in ("RNN (tanh)", "LSTM", "GRU"):
        assert curves[name][0] < 1e-10 * curves[name][-1], name  # vanished over 60 steps
    assert curves["RNN (tanh), W_hh ×4"][0] > 1e3 * curves["RNN (tanh), W_hh ×4"][-1]  # exploded
    decay = {name: curves[name][0] / curves[name][-1] for name in ("LSTM", "LSTM, forget-gate bias +1")}
    assert decay["LSTM, forget-gate bias +1"] > 1e3 * decay["LSTM"]
    assert gradient_flow_curves(seq_len=5, batch_size=2, input_size=3, hidden_size=4, variants=False).keys() == {
        "RNN (tanh)", "LSTM", "GRU"}


def test_plot_gradient_flow_writes_a_png(tmp_path: Any) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "flow.png"
    curves = plot_gradient_flow(path, seq_len=10, batch_size=2, input_size=3, hidden_size=4)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(curves) == 5


def test_errors() -> None:
    x = np.zeros((2, 3, 4))
    with pytest.raises(TypeError, match="must be a Sequential or a recurrent layer"):
        gradient_norms_over_time(Linear(4, 4, dtype=np.float64), x)
    with pytest.raises(ValueError, match="no recurrent layer"):
        gradient_norms_over_time(Sequential([("head", Linear(4, 4, dtype=np.float64))]), x)
    layer = RNN(4, 5, dtype=np.float64)
    with pytest.raises(ValueError, match=r"x must be a batch of sequences \(B, T, \.\.\.\) with T >= 1"):
        gradient_norms_over_time(layer, np.zeros((2, 0, 4)))
    with pytest.raises(ValueError, match=r"d_out_last of shape \(2, 5\)"):
        gradient_norms_over_time(layer, x, loss_fn=lambda z: (0.0, np.zeros(5)))
