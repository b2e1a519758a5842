"""rnnkit.textbook: central differences, PyTorch with copied weights, hand loops and hand formulas.

Everything is float64 with non-zero random biases and initial states (zero biases hide bias bugs).
Sizes are all different so that a transposed or swapped dimension cannot pass unnoticed.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from rnnkit.gradcheck import gradcheck
from rnnkit.textbook import (
    SAMPLE_MAX_CHARS,
    clip,
    gru_backward,
    gru_cell_backward,
    gru_cell_forward,
    gru_forward,
    lstm_backward,
    lstm_cell_backward,
    lstm_cell_forward,
    lstm_forward,
    optimize,
    rnn_backward,
    rnn_cell_backward,
    rnn_cell_forward,
    rnn_forward,
    sample,
)

N_X, N_A, N_Y, M, T = 3, 4, 5, 2, 3
TOL = 1e-10  # agreement with PyTorch (float64)
GRADCHECK_TOL = 1e-7  # relative error of central differences

RNN_KEYS = ("Wax", "Waa", "ba")  # the output layer (Wya, by) is outside the backward functions
LSTM_KEYS = ("Wf", "bf", "Wi", "bi", "Wc", "bc", "Wo", "bo")
GRU_KEYS = ("Wr", "br", "Wz", "bz", "Wn_x", "bn_x", "Wn_a", "bn_a")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(2024)


def _normal(rng: np.random.Generator, *shape: int, scale: float = 0.5) -> np.ndarray:
    return rng.normal(scale=scale, size=shape)


def rnn_params(rng: np.random.Generator, n_x: int = N_X, n_y: int = N_Y, scale: float = 0.5) -> dict:
    return {
        "Wax": _normal(rng, N_A, n_x, scale=scale),
        "Waa": _normal(rng, N_A, N_A, scale=scale),
        "Wya": _normal(rng, n_y, N_A, scale=scale),
        "ba": _normal(rng, N_A, 1, scale=scale),
        "by": _normal(rng, n_y, 1, scale=scale),
    }


def lstm_params(rng: np.random.Generator) -> dict:
    p = {}
    for gate in "fico":
        p[f"W{gate}"] = _normal(rng, N_A, N_A + N_X)
        p[f"b{gate}"] = _normal(rng, N_A, 1)
    return {**p, "Wy": _normal(rng, N_Y, N_A), "by": _normal(rng, N_Y, 1)}


def gru_params(rng: np.random.Generator) -> dict:
    return {
        "Wr": _normal(rng, N_A, N_A + N_X), "br": _normal(rng, N_A, 1),
        "Wz": _normal(rng, N_A, N_A + N_X), "bz": _normal(rng, N_A, 1),
        "Wn_x": _normal(rng, N_A, N_X), "bn_x": _normal(rng, N_A, 1),
        "Wn_a": _normal(rng, N_A, N_A), "bn_a": _normal(rng, N_A, 1),
        "Wy": _normal(rng, N_Y, N_A), "by": _normal(rng, N_Y, 1),
    }


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _softmax0(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=0))
    return e / e.sum(axis=0)


def _assert_gradcheck(loss, arrays: dict, analytic: dict) -> None:
    report = gradcheck(loss, arrays, analytic)
    assert report.max_error < GRADCHECK_TOL, report


def _d(grads: dict, keys: tuple[str, ...]) -> dict:
    """``{key: grads["d" + key]}``: gradients under the keys of the arrays they belong to."""
    return {key: grads["d" + key] for key in keys}


# ================================================================================ (a) central differences
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_cell_backward_matches_finite_differences(rng, nonlinearity) -> None:
    p = rnn_params(rng)
    xt, a_prev, w = _normal(rng, N_X, M), _normal(rng, N_A, M), _normal(rng, N_A, M)

    def loss() -> float:
        return float((w * rnn_cell_forward(xt, a_prev, p, nonlinearity)[0]).sum())

    g = rnn_cell_backward(w, rnn_cell_forward(xt, a_prev, p, nonlinearity)[2])
    assert list(g) == ["dxt", "da_prev", "dWax", "dWaa", "dba"]
    arrays = {**{k: p[k] for k in RNN_KEYS}, "xt": xt, "a_prev": a_prev}
    _assert_gradcheck(loss, arrays, {**_d(g, RNN_KEYS), "xt": g["dxt"], "a_prev": g["da_prev"]})


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_backward_matches_finite_differences(rng, nonlinearity) -> None:
    p = rnn_params(rng)
    x, a0, w = _normal(rng, N_X, M, T), _normal(rng, N_A, M), _normal(rng, N_A, M, T)

    def loss() -> float:
        return float((w * rnn_forward(x, a0, p, nonlinearity)[0]).sum())

    g = rnn_backward(w, rnn_forward(x, a0, p, nonlinearity)[2])
    assert list(g) == ["dx", "da0", "dWax", "dWaa", "dba"]
    arrays = {**{k: p[k] for k in RNN_KEYS}, "x": x, "a0": a0}
    _assert_gradcheck(loss, arrays, {**_d(g, RNN_KEYS), "x": g["dx"], "a0": g["da0"]})


def test_lstm_cell_backward_matches_finite_differences(rng) -> None:
    p = lstm_params(rng)
    xt, a_prev, c_prev = _normal(rng, N_X, M), _normal(rng, N_A, M), _normal(rng, N_A, M)
    wa, wc = _normal(rng, N_A, M), _normal(rng, N_A, M)

    def loss() -> float:
        a_next, c_next, _, _ = lstm_cell_forward(xt, a_prev, c_prev, p)
        return float((wa * a_next).sum() + (wc * c_next).sum())

    g = lstm_cell_backward(wa, wc, lstm_cell_forward(xt, a_prev, c_prev, p)[3])
    assert list(g) == ["dxt", "da_prev", "dc_prev", *(f"d{k}" for k in LSTM_KEYS)]
    arrays = {**{k: p[k] for k in LSTM_KEYS}, "xt": xt, "a_prev": a_prev, "c_prev": c_prev}
    analytic = {**_d(g, LSTM_KEYS), "xt": g["dxt"], "a_prev": g["da_prev"], "c_prev": g["dc_prev"]}
    _assert_gradcheck(loss, arrays, analytic)


def test_lstm_backward_matches_finite_differences(rng) -> None:
    """Catches the classic bug of dropping the carried hidden *or* cell gradient."""
    p = lstm_params(rng)
    x, a0, w = _normal(rng, N_X, M, T), _normal(rng, N_A, M), _normal(rng, N_A, M, T)

    def loss() -> float:
        return float((w * lstm_forward(x, a0, p)[0]).sum())

    g = lstm_backward(w, lstm_forward(x, a0, p)[3])
    assert list(g) == ["dx", "da0", *(f"d{k}" for k in LSTM_KEYS)]
    arrays = {**{k: p[k] for k in LSTM_KEYS}, "x": x, "a0": a0}
    _assert_gradcheck(loss, arrays, {**_d(g, LSTM_KEYS), "x": g["dx"], "a0": g["da0"]})


def test_gru_cell_backward_matches_finite_differences(rng) -> None:
    p = gru_params(rng)
    xt, a_prev, w = _normal(rng, N_X, M), _normal(rng, N_A, M), _normal(rng, N_A, M)

    def loss() -> float:
        return float((w * gru_cell_forward(xt, a_prev, p)[0]).sum())

    g = gru_cell_backward(w, gru_cell_forward(xt, a_prev, p)[2])
    assert list(g) == ["dxt", "da_prev", *(f"d{k}" for k in GRU_KEYS)]
    arrays = {**{k: p[k] for k in GRU_KEYS}, "xt": xt, "a_prev": a_prev}
    _assert_gradcheck(loss, arrays, {**_d(g, GRU_KEYS), "xt": g["dxt"], "a_prev": g["da_prev"]})


def test_gru_backward_matches_finite_differences(rng) -> None:
    p = gru_params(rng)
    x, a0, w = _normal(rng, N_X, M, T), _normal(rng, N_A, M), _normal(rng, N_A, M, T)

    def loss() -> float:
        return float((w * gru_forward(x, a0, p)[0]).sum())

    g = gru_backward(w, gru_forward(x, a0, p)[2])
    assert list(g) == ["dx", "da0", *(f"d{k}" for k in GRU_KEYS)]
    arrays = {**{k: p[k] for k in GRU_KEYS}, "x": x, "a0": a0}
    _assert_gradcheck(loss, arrays, {**_d(g, GRU_KEYS), "x": g["dx"], "a0": g["da0"]})


def test_backward_takes_the_number_of_steps_from_da(rng) -> None:
    """A shorter ``da`` is the gradient of a loss on the first steps only: as if x were that short."""
    p = lstm_params(rng)
    x, a0, w = _normal(rng, N_X, M, T), _normal(rng, N_A, M), _normal(rng, N_A, M, T - 1)
    short = lstm_backward(w, lstm_forward(x, a0, p)[3])
    reference = lstm_backward(w, lstm_forward(x[:, :, : T - 1], a0, p)[3])
    assert short["dx"].shape == (N_X, M, T - 1)
    for key in reference:
        np.testing.assert_array_equal(short[key], reference[key])


# ================================================================================ (b) PyTorch
# Copying the weights across.  Textbook x is (n_x, m, T_x) and a state (n_a, m); torch (batch_first=
# False) wants x as (T_x, m, n_x) and a state as (1, m, n_a): both are transposes.  Torch has two
# biases that add where the textbook has one; the helpers split each textbook bias b into
# (b - s) + s with a random s, so that the test also sees both of torch's bias gradients.


def _x_to_torch(x: np.ndarray) -> torch.Tensor:
    return torch.tensor(x.transpose(2, 1, 0), requires_grad=True)  # (n_x, m, T) -> (T, m, n_x)


def _state_to_torch(a: np.ndarray) -> torch.Tensor:
    return torch.tensor(a.T[None].copy(), requires_grad=True)  # (n_a, m) -> (1, m, n_a)


def _copy_into(module: torch.nn.Module, w_ih, w_hh, b_ih, b_hh) -> torch.nn.Module:
    module = module.double()
    with torch.no_grad():
        for name, value in zip(("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"),
                               (w_ih, w_hh, b_ih, b_hh), strict=True):
            getattr(module, name).copy_(torch.from_numpy(np.ascontiguousarray(value)))
    return module


def torch_rnn(p: dict, nonlinearity: str, split: np.ndarray) -> torch.nn.RNN:
    """weight_ih_l0 = Wax, weight_hh_l0 = Waa, bias_ih_l0 + bias_hh_l0 = ba."""
    ba = p["ba"][:, 0]
    module = torch.nn.RNN(N_X, N_A, nonlinearity=nonlinearity)
    return _copy_into(module, p["Wax"], p["Waa"], ba - split, split)


def torch_lstm(p: dict, split: np.ndarray) -> torch.nn.LSTM:
    """Rows in torch's gate order i, f, g, o; columns of the textbook W split as [a_prev | xt]."""
    w = np.concatenate([p["Wi"], p["Wf"], p["Wc"], p["Wo"]])
    b = np.concatenate([p["bi"], p["bf"], p["bc"], p["bo"]])[:, 0]
    return _copy_into(torch.nn.LSTM(N_X, N_A), w[:, N_A:], w[:, :N_A], b - split, split)


def torch_gru(p: dict, split: np.ndarray) -> torch.nn.GRU:
    """Rows r, z, n; bn_x is the input-side and bn_a the hidden-side bias of n (split only r, z)."""
    w_ih = np.concatenate([p["Wr"][:, N_A:], p["Wz"][:, N_A:], p["Wn_x"]])
    w_hh = np.concatenate([p["Wr"][:, :N_A], p["Wz"][:, :N_A], p["Wn_a"]])
    s = np.concatenate([split[: 2 * N_A], np.zeros(N_A)])
    b_ih = np.concatenate([p["br"], p["bz"], p["bn_x"]])[:, 0] - s
    b_hh = np.concatenate([np.zeros(2 * N_A), p["bn_a"][:, 0]]) + s
    return _copy_into(torch.nn.GRU(N_X, N_A), w_ih, w_hh, b_ih, b_hh)


def _grad(module: torch.nn.Module, name: str) -> np.ndarray:
    return getattr(module, name).grad.numpy()


def _close(ours: np.ndarray, theirs: np.ndarray) -> None:
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=TOL)


def _check_output_layer(a: np.ndarray, y: np.ndarray, out: torch.Tensor, w_y: np.ndarray, b_y: np.ndarray):
    """``y = softmax(W_y a + b_y)`` per step and column, from torch's hidden states."""
    logits = out @ torch.from_numpy(w_y).T + torch.from_numpy(b_y[:, 0])
    _close(y, torch.softmax(logits, dim=-1).detach().numpy().transpose(2, 1, 0))
    _close(a, out.detach().numpy().transpose(2, 1, 0))


def _torch_backward(out: torch.Tensor, w: np.ndarray) -> None:
    (out * torch.from_numpy(w.transpose(2, 1, 0).copy())).sum().backward()


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_matches_torch(rng, nonlinearity) -> None:
    p = rnn_params(rng)
    x, a0, w = _normal(rng, N_X, M, T), _normal(rng, N_A, M), _normal(rng, N_A, M, T)
    module = torch_rnn(p, nonlinearity, split=_normal(rng, N_A))
    x_t, h0 = _x_to_torch(x), _state_to_torch(a0)
    out, _ = module(x_t, h0)
    _torch_backward(out, w)

    a, y, caches = rnn_forward(x, a0, p, nonlinearity)
    g = rnn_backward(w, caches)
    _check_output_layer(a, y, out, p["Wya"], p["by"])
    _close(g["dx"], x_t.grad.numpy().transpose(2, 1, 0))
    _close(g["da0"], h0.grad[0].numpy().T)
    _close(g["dWax"], _grad(module, "weight_ih_l0"))
    _close(g["dWaa"], _grad(module, "weight_hh_l0"))
    for bias in ("bias_ih_l0", "bias_hh_l0"):
        _close(g["dba"], _grad(module, bias)[:, None])


def test_lstm_matches_torch(rng) -> None:
    p = lstm_params(rng)
    x, a0, w = _normal(rng, N_X, M, T), _normal(rng, N_A, M), _normal(rng, N_A, M, T)
    module = torch_lstm(p, split=_normal(rng, 4 * N_A))
    x_t, h0 = _x_to_torch(x), _state_to_torch(a0)
    out, (_, c_n) = module(x_t, (h0, torch.zeros(1, M, N_A, dtype=torch.float64)))
    _torch_backward(out, w)

    a, y, c, caches = lstm_forward(x, a0, p)
    g = lstm_backward(w, caches)
    _check_output_layer(a, y, out, p["Wy"], p["by"])
    _close(c[:, :, -1], c_n[0].detach().numpy().T)
    _close(g["dx"], x_t.grad.numpy().transpose(2, 1, 0))
    _close(g["da0"], h0.grad[0].numpy().T)
    dW = np.concatenate([_grad(module, "weight_hh_l0"), _grad(module, "weight_ih_l0")], axis=1)
    for k, gate in enumerate("ifco"):  # torch's row blocks i, f, g, o
        rows = slice(k * N_A, (k + 1) * N_A)
        _close(g[f"dW{gate}"], dW[rows])
        for bias in ("bias_ih_l0", "bias_hh_l0"):
            _close(g[f"db{gate}"], _grad(module, bias)[rows, None])


def test_gru_matches_torch(rng) -> None:
    p = gru_params(rng)
    x, a0, w = _normal(rng, N_X, M, T), _normal(rng, N_A, M), _normal(rng, N_A, M, T)
    module = torch_gru(p, split=_normal(rng, 3 * N_A))
    x_t, h0 = _x_to_torch(x), _state_to_torch(a0)
    out, _ = module(x_t, h0)
    _torch_backward(out, w)

    a, y, caches = gru_forward(x, a0, p)
    g = gru_backward(w, caches)
    _check_output_layer(a, y, out, p["Wy"], p["by"])
    _close(g["dx"], x_t.grad.numpy().transpose(2, 1, 0))
    _close(g["da0"], h0.grad[0].numpy().T)
    w_ih, w_hh = _grad(module, "weight_ih_l0"), _grad(module, "weight_hh_l0")
    b_ih, b_hh = _grad(module, "bias_ih_l0")[:, None], _grad(module, "bias_hh_l0")[:, None]
    r, z, n = (slice(k * N_A, (k + 1) * N_A) for k in range(3))
    _close(g["dWr"], np.concatenate([w_hh[r], w_ih[r]], axis=1))
    _close(g["dWz"], np.concatenate([w_hh[z], w_ih[z]], axis=1))
    for gate, rows in (("r", r), ("z", z)):
        _close(g[f"db{gate}"], b_ih[rows])
        _close(g[f"db{gate}"], b_hh[rows])
    _close(g["dWn_x"], w_ih[n])
    _close(g["dbn_x"], b_ih[n])
    _close(g["dWn_a"], w_hh[n])
    _close(g["dbn_a"], b_hh[n])


# ================================================================================ hand formulas
def test_rnn_cell_forward_hand_formula(rng) -> None:
    p = rnn_params(rng)
    xt, a_prev = _normal(rng, N_X, M), _normal(rng, N_A, M)
    z = p["Waa"] @ a_prev + p["Wax"] @ xt + p["ba"]
    for nonlinearity, f in (("tanh", np.tanh), ("relu", lambda v: np.maximum(v, 0.0))):
        a_next, yt_pred, cache = rnn_cell_forward(xt, a_prev, p, nonlinearity)
        np.testing.assert_allclose(a_next, f(z), rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(yt_pred, _softmax0(p["Wya"] @ f(z) + p["by"]), rtol=1e-13)
        np.testing.assert_allclose(yt_pred.sum(axis=0), 1.0, rtol=1e-14)
        # The exercise's cache order comes first: (a_next, a_prev, xt, parameters).
        assert cache[0] is a_next and cache[1] is a_prev and cache[2] is xt and cache[3] is p


def test_lstm_cell_forward_hand_formula_and_cache_order(rng) -> None:
    p = lstm_params(rng)
    xt, a_prev, c_prev = _normal(rng, N_X, M), _normal(rng, N_A, M), _normal(rng, N_A, M)
    concat = np.concatenate([a_prev, xt])
    ft = _sigmoid(p["Wf"] @ concat + p["bf"])
    it = _sigmoid(p["Wi"] @ concat + p["bi"])
    cct = np.tanh(p["Wc"] @ concat + p["bc"])
    ot = _sigmoid(p["Wo"] @ concat + p["bo"])
    c_next = ft * c_prev + it * cct
    a_next = ot * np.tanh(c_next)
    expected = (a_next, c_next, a_prev, c_prev, ft, it, cct, ot, xt)

    a, c, yt, cache = lstm_cell_forward(xt, a_prev, c_prev, p)
    for ours, hand in zip((a, c), expected[:2], strict=True):
        np.testing.assert_allclose(ours, hand, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(yt, _softmax0(p["Wy"] @ a_next + p["by"]), rtol=1e-13)
    for field, hand in zip(cache[:9], expected, strict=True):
        np.testing.assert_allclose(field, hand, rtol=1e-13, atol=1e-15)
    assert cache[9] is p


def test_gru_cell_forward_hand_formula(rng) -> None:
    p = gru_params(rng)
    xt, a_prev = _normal(rng, N_X, M), _normal(rng, N_A, M)
    concat = np.concatenate([a_prev, xt])
    rt = _sigmoid(p["Wr"] @ concat + p["br"])
    zt = _sigmoid(p["Wz"] @ concat + p["bz"])
    nt = np.tanh(p["Wn_x"] @ xt + p["bn_x"] + rt * (p["Wn_a"] @ a_prev + p["bn_a"]))
    a_next = (1 - zt) * nt + zt * a_prev

    a, yt, cache = gru_cell_forward(xt, a_prev, p)
    np.testing.assert_allclose(a, a_next, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(yt, _softmax0(p["Wy"] @ a_next + p["by"]), rtol=1e-13)
    for field, hand in zip(cache[:6], (a_next, a_prev, rt, zt, nt, xt), strict=True):
        np.testing.assert_allclose(field, hand, rtol=1e-13, atol=1e-15)


# ================================================================================ (c) sequence == hand loop
def test_rnn_sequence_functions_equal_a_loop_over_the_cell(rng) -> None:
    p = rnn_params(rng)
    x, a0, da = _normal(rng, N_X, M, T), _normal(rng, N_A, M), _normal(rng, N_A, M, T)
    a, y_pred, caches = rnn_forward(x, a0, p, "relu")
    a_t, steps = a0, []
    for t in range(T):
        a_t, y_t, cache = rnn_cell_forward(x[:, :, t], a_t, p, "relu")
        np.testing.assert_array_equal(a[:, :, t], a_t)
        np.testing.assert_array_equal(y_pred[:, :, t], y_t)
        steps.append(cache)
    assert caches[1] is x and len(caches[0]) == T

    g = rnn_backward(da, caches)
    sums = {k: 0.0 for k in ("dWax", "dWaa", "dba")}
    carry = np.zeros((N_A, M))
    for t in reversed(range(T)):
        step = rnn_cell_backward(da[:, :, t] + carry, steps[t])
        np.testing.assert_array_equal(g["dx"][:, :, t], step["dxt"])
        carry = step["da_prev"]
        sums = {k: v + step[k] for k, v in sums.items()}
    np.testing.assert_array_equal(g["da0"], carry)
    for key, total in sums.items():  # one product over all steps: the per-step sum up to rounding
        np.testing.assert_allclose(g[key], total, rtol=1e-13, atol=1e-15)


def test_lstm_sequence_functions_equal_a_loop_over_the_cell(rng) -> None:
    p = lstm_params(rng)
    x, a0, da = _normal(rng, N_X, M, T), _normal(rng, N_A, M), _normal(rng, N_A, M, T)
    a, y, c, caches = lstm_forward(x, a0, p)
    a_t, c_t, steps = a0, np.zeros((N_A, M)), []
    for t in range(T):
        a_t, c_t, y_t, cache = lstm_cell_forward(x[:, :, t], a_t, c_t, p)
        for seq, step in ((a, a_t), (c, c_t), (y, y_t)):
            np.testing.assert_array_equal(seq[:, :, t], step)
        steps.append(cache)
    assert caches[1] is x and len(caches[0]) == T

    g = lstm_backward(da, caches)
    sums = {f"d{k}": 0.0 for k in LSTM_KEYS}
    carry_a, carry_c = np.zeros((N_A, M)), np.zeros((N_A, M))
    for t in reversed(range(T)):
        step = lstm_cell_backward(da[:, :, t] + carry_a, carry_c, steps[t])
        np.testing.assert_array_equal(g["dx"][:, :, t], step["dxt"])
        carry_a, carry_c = step["da_prev"], step["dc_prev"]
        sums = {k: v + step[k] for k, v in sums.items()}
    np.testing.assert_array_equal(g["da0"], carry_a)
    for key, total in sums.items():  # one product over all steps: the per-step sum up to rounding
        np.testing.assert_allclose(g[key], total, rtol=1e-13, atol=1e-15)


def test_gru_sequence_functions_equal_a_loop_over_the_cell(rng) -> None:
    p = gru_params(rng)
    x, a0, da = _normal(rng, N_X, M, T), _normal(rng, N_A, M), _normal(rng, N_A, M, T)
    a, y, caches = gru_forward(x, a0, p)
    a_t, steps = a0, []
    for t in range(T):
        a_t, y_t, cache = gru_cell_forward(x[:, :, t], a_t, p)
        np.testing.assert_array_equal(a[:, :, t], a_t)
        np.testing.assert_array_equal(y[:, :, t], y_t)
        steps.append(cache)

    g = gru_backward(da, caches)
    sums = {f"d{k}": 0.0 for k in GRU_KEYS}
    carry = np.zeros((N_A, M))
    for t in reversed(range(T)):
        step = gru_cell_backward(da[:, :, t] + carry, steps[t])
        np.testing.assert_array_equal(g["dx"][:, :, t], step["dxt"])
        carry = step["da_prev"]
        sums = {k: v + step[k] for k, v in sums.items()}
    np.testing.assert_array_equal(g["da0"], carry)
    for key, total in sums.items():  # one product over all steps: the per-step sum up to rounding
        np.testing.assert_allclose(g[key], total, rtol=1e-13, atol=1e-15)


# ================================================================================ (d) character model
VOCAB = 6  # n_x = n_y: one-hot characters; index 0 is the newline
NEWLINE = 0
X_EXAMPLE = [None, 3, 1, 4, 1, 5]
Y_EXAMPLE = X_EXAMPLE[1:] + [NEWLINE]


def _char_params(rng: np.random.Generator, scale: float) -> dict:
    return rnn_params(rng, n_x=VOCAB, n_y=VOCAB, scale=scale)


def _unclipped_char_gradients(p: dict, a_prev: np.ndarray) -> tuple[float, dict, np.ndarray]:
    """Loss and gradients of the character model by hand: y - onehot through the softmax layer."""
    x = np.zeros((VOCAB, 1, len(X_EXAMPLE)))
    for t, ix in enumerate(X_EXAMPLE):
        if ix is not None:
            x[ix, 0, t] = 1.0
    a, y_pred, caches = rnn_forward(x, a_prev, p)
    steps = np.arange(len(Y_EXAMPLE))
    loss = -np.log(y_pred[Y_EXAMPLE, 0, steps]).sum()
    dz = y_pred[:, 0, :].copy()
    dz[Y_EXAMPLE, steps] -= 1.0
    hidden = rnn_backward((p["Wya"].T @ dz)[:, None, :], caches)
    grads = {"dWax": hidden["dWax"], "dWaa": hidden["dWaa"], "dWya": dz @ a[:, 0, :].T,
             "dba": hidden["dba"], "dby": dz.sum(axis=1, keepdims=True)}
    return float(loss), grads, a[:, :, -1]


def test_optimize_gradients_match_finite_differences(rng) -> None:
    p, a_prev = _char_params(rng, scale=0.3), _normal(rng, N_A, 1)

    def loss() -> float:
        return optimize(X_EXAMPLE, Y_EXAMPLE, a_prev, copy.deepcopy(p))[0]

    _, gradients, _ = optimize(X_EXAMPLE, Y_EXAMPLE, a_prev, copy.deepcopy(p))
    assert list(gradients) == ["dWax", "dWaa", "dWya", "dba", "dby"]
    assert max(np.abs(g).max() for g in gradients.values()) < 5  # clipping is a no-op here
    _assert_gradcheck(loss, p, {k: gradients["d" + k] for k in p})


def test_optimize_loss_update_and_last_state(rng) -> None:
    p, a_prev = _char_params(rng, scale=0.3), _normal(rng, N_A, 1)
    before = copy.deepcopy(p)
    arrays = {k: v for k, v in p.items()}
    loss, gradients, a_last = optimize(X_EXAMPLE, Y_EXAMPLE, a_prev, p, learning_rate=0.05)

    hand_loss, _, hand_last = _unclipped_char_gradients(before, a_prev)
    assert loss == pytest.approx(hand_loss, rel=1e-13)
    np.testing.assert_array_equal(a_last, hand_last)
    assert a_last.shape == (N_A, 1)
    for key in p:  # one SGD step, in place (the same array objects)
        assert p[key] is arrays[key]
        np.testing.assert_allclose(p[key], before[key] - 0.05 * gradients["d" + key], rtol=1e-15)


def test_optimize_clips_the_gradients_at_5(rng) -> None:
    p, a_prev = _char_params(rng, scale=1.0), _normal(rng, N_A, 1)
    p["by"][2] = 20.0  # a confident wrong guess at all 6 steps (2 is never a target): dby[2] ≈ 6
    _, raw, _ = _unclipped_char_gradients(p, a_prev)
    assert max(np.abs(g).max() for g in raw.values()) > 5  # the example does need clipping
    _, gradients, _ = optimize(X_EXAMPLE, Y_EXAMPLE, a_prev, p)
    for key, g in raw.items():
        np.testing.assert_allclose(gradients[key], np.clip(g, -5, 5), rtol=1e-12, atol=1e-12)


def test_optimize_lowers_the_loss_on_a_fixed_example(rng) -> None:
    p, a_prev = _char_params(rng, scale=0.3), np.zeros((N_A, 1))
    losses = [optimize(X_EXAMPLE, Y_EXAMPLE, a_prev, p, learning_rate=0.1)[0] for _ in range(40)]
    assert all(later < earlier for earlier, later in zip(losses, losses[1:], strict=False))
    assert losses[-1] < 0.5 * losses[0]


def test_clip_bounds_every_entry_and_leaves_the_input_untouched() -> None:
    gradients = {"dWax": np.array([[-7.0, 0.5], [5.0, 12.0]]), "dby": np.array([[-5.5], [4.9]])}
    originals = copy.deepcopy(gradients)
    clipped = clip(gradients, 5)
    np.testing.assert_array_equal(clipped["dWax"], [[-5.0, 0.5], [5.0, 5.0]])
    np.testing.assert_array_equal(clipped["dby"], [[-5.0], [4.9]])
    for key in gradients:
        np.testing.assert_array_equal(gradients[key], originals[key])
        assert clipped[key] is not gradients[key]


def test_sample_is_reproducible_and_ends_with_the_newline(rng) -> None:
    p = _char_params(rng, scale=1.0)
    char_to_ix = {"\n": NEWLINE, **{c: i for i, c in enumerate("abcde", start=1)}}
    draws = [sample(p, char_to_ix, seed) for seed in range(8)]
    for seed, indices in enumerate(draws):
        assert indices == sample(p, char_to_ix, seed)
        assert indices[-1] == NEWLINE and NEWLINE not in indices[:-1]
        assert 1 <= len(indices) <= SAMPLE_MAX_CHARS + 1
        assert all(0 <= i < VOCAB for i in indices)
    assert len({tuple(d) for d in draws}) > 1  # the seed matters


def test_sample_follows_the_softmax_and_stops_after_50_characters(rng) -> None:
    p = _char_params(rng, scale=0.1)
    char_to_ix = {"\n": NEWLINE, "a": 1, "b": 2, "c": 3, "d": 4, "e": 5}
    p["by"][:] = -60.0
    p["by"][2] = 60.0  # "b" is (numerically) certain, the newline never drawn
    assert sample(p, char_to_ix, seed=0) == [2] * SAMPLE_MAX_CHARS + [NEWLINE]
    p["by"][NEWLINE] = 120.0  # now the newline is certain at once
    assert sample(p, char_to_ix, seed=0) == [NEWLINE]


# ================================================================================ validation
def _bad_calls(rng: np.random.Generator):
    p, lp, gp = rnn_params(rng), lstm_params(rng), gru_params(rng)
    xt, a_prev, x, a0 = _normal(rng, N_X, M), _normal(rng, N_A, M), _normal(rng, N_X, M, T), _normal(rng, N_A, M)
    without_waa = {k: v for k, v in p.items() if k != "Waa"}
    wrong_wax = {**p, "Wax": _normal(rng, N_A, N_X + 1)}
    lstm_wrong_wf = {**lp, "Wf": _normal(rng, N_A, N_X)}
    caches = rnn_forward(x, a0, p)[2]
    lstm_cache = lstm_cell_forward(xt, a_prev, a_prev, lp)[3]
    char = _char_params(rng, scale=0.3)
    return [
        (lambda: rnn_cell_forward(x, a_prev, p), ValueError, r"xt must be 2-D with shape \(n_x, m\)"),
        (lambda: rnn_cell_forward(xt, a_prev[:, :1], p), ValueError,
         r"a_prev has shape \(4, 1\), expected \(n_a, m\) = \(4, 2\)"),
        (lambda: rnn_cell_forward(xt, a_prev, without_waa), ValueError, r"missing 'Waa'.*Waa \(n_a, n_a\)"),
        (lambda: rnn_cell_forward(xt, a_prev, wrong_wax), ValueError,
         r"parameters\['Wax'\] has shape \(4, 4\), expected \(n_a, n_x\) = \(4, 3\)"),
        (lambda: rnn_cell_forward(xt.astype(np.float32), a_prev, p), ValueError, r"dtype float64"),
        (lambda: rnn_cell_forward(xt, np.full_like(a_prev, np.nan), p), ValueError, r"a_prev contains NaN"),
        (lambda: rnn_cell_forward(xt, a_prev, p, "sigmoid"), ValueError, r"nonlinearity"),
        (lambda: rnn_cell_forward(xt.tolist(), a_prev, p), TypeError, r"xt must be a NumPy array"),
        (lambda: rnn_forward(xt, a0, p), ValueError, r"x must be 3-D with shape \(n_x, m, T_x\)"),
        (lambda: rnn_backward(_normal(rng, N_A, M, T + 1), caches), ValueError, r"4 time steps.*only 3"),
        (lambda: rnn_backward(_normal(rng, N_A + 1, M, T), caches), ValueError,
         r"da has shape \(5, 2, 3\), expected \(n_a, m, T_x\)"),
        (lambda: rnn_backward(_normal(rng, N_A, M, T), caches[0]), TypeError, r"caches must be the pair"),
        (lambda: rnn_cell_backward(_normal(rng, N_A, M + 1), caches[0][0]), ValueError,
         r"da_next has shape \(4, 3\), expected \(n_a, m\) = \(4, 2\)"),
        (lambda: rnn_cell_backward(a_prev, lstm_cache), TypeError, r"RNNStepCache"),
        (lambda: lstm_cell_forward(xt, a_prev, a_prev[:-1], lp), ValueError, r"c_prev has shape \(3, 2\)"),
        (lambda: lstm_cell_forward(xt, a_prev, a_prev, lstm_wrong_wf), ValueError,
         r"parameters\['Wf'\] has shape \(4, 3\), expected \(n_a, n_a\+n_x\) = \(4, 7\)"),
        (lambda: lstm_cell_backward(a_prev, a_prev[:, :1], lstm_cache), ValueError, r"dc_next has shape"),
        (lambda: gru_cell_forward(xt, a_prev, lp), ValueError, r"missing 'Wr'.*Wn_x \(n_a, n_x\)"),
        (lambda: gru_forward(x, a0[:-1], gp), ValueError,
         r"parameters\['Wr'\] has shape \(4, 7\), expected \(n_a, n_a\+n_x\) = \(3, 6\) "
         r"\(n_a = 3 from a0, n_x = 3 from x\)"),
        (lambda: optimize([None, 1], [1], np.zeros((N_A, 1)), char), ValueError, r"same length"),
        (lambda: optimize([None, 9], [1, 2], np.zeros((N_A, 1)), char), ValueError,
         r"X\[1\] = 9 is out of range \[0, 6\)"),
        (lambda: optimize([None, 1], [1, 2], np.zeros((N_A, 2)), char), ValueError,
         r"a_prev has shape \(4, 2\), expected \(n_a, m\) = \(4, 1\)"),
        (lambda: optimize([None, 1], [1, 2], np.zeros((N_A, 1)), char, learning_rate=-1.0), ValueError,
         r"learning_rate"),
        (lambda: sample(char, {"a": 1}, 0), ValueError, r"'\\n'"),
        (lambda: sample(p, {"\n": 0}, 0), ValueError, r"n_x == n_y"),
    ]


BAD_CALLS = _bad_calls(np.random.default_rng(7))


@pytest.mark.parametrize(("call", "error", "message"), BAD_CALLS, ids=[m for _, _, m in BAD_CALLS])
def test_bad_inputs_raise_errors_that_name_the_argument(call, error, message) -> None:
    with pytest.raises(error, match=message):
        call()
