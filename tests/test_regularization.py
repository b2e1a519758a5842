"""Dropout of every kind rnnkit has, ``bias=False``, the initializers, and the training flag.

Checked, in float64:

* fixed-mask central-difference gradients (``rnnkit.gradcheck``) for dropout between stacked
  layers, weight drop on ``W_hh``, the :class:`Dropout` block (per element and variational) and
  embedding dropout: the loss re-runs the training forward pass from a generator reset to the same
  seed, so every evaluation draws the same masks;
* hand compositions: dropout between layers equals two one-layer layers with the cached mask
  applied by hand; weight drop equals the layer with ``W_hh ⊙ M`` loaded;
* PyTorch: ``bias=False`` layers equal ``torch.nn`` with ``bias=False`` (outputs, states, every
  gradient, 1e-10), and a layer with ``dropout`` at inference equals ``torch.nn`` in ``eval()``;
* the initializers' defining properties (orthogonal blocks, Glorot bound, forget-gate bias), and
  that the default draws are unchanged;
* the training flag: inference is deterministic and equals no dropout; masks are reproducible
  from the generator; hostile ``training`` / ``rng`` / ``p`` values get clear errors.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import rnnkit
from rnnkit import GRU, LSTM, RNN, Dropout, Embedding, Linear, Sequential, gradcheck
from rnnkit.layers import Recurrent
from rnnkit.layers.dropout import _expand_lanes, _expand_mask, dropout_mask

B, T, I, H = 3, 5, 4, 6
GRAD_TOL = 1e-6


def _layer(kind: str, **options: Any) -> Any:
    """A float64 layer of ``kind``; options go to the constructor."""
    if kind.startswith("rnn"):
        return RNN(I, H, options.pop("num_layers", 1), nonlinearity=kind[4:] or "tanh", dtype=np.float64, seed=0,
                   **options)
    return {"lstm": LSTM, "gru": GRU}[kind](I, H, options.pop("num_layers", 1), dtype=np.float64, seed=0, **options)


KINDS = ("rnn_tanh", "lstm", "gru")


def _random_state(layer: Any, rng: np.random.Generator) -> Any:
    shape = (layer.num_layers * layer.num_directions, B, H)
    arrays = tuple(rng.uniform(-0.5, 0.5, shape) for _ in layer.cell.state_names)
    return arrays if len(arrays) > 1 else arrays[0]


def _gradcheck_layer(layer: Any, x: np.ndarray, lengths: np.ndarray | None, seed: int) -> float:
    """Worst gradcheck error of a training pass whose masks come from ``default_rng(seed)`` each time."""
    w = np.random.default_rng(7).standard_normal((B, T, layer.num_directions * H))
    state = _random_state(layer, np.random.default_rng(8))

    def loss() -> float:
        out, _, _ = layer.forward(x, state, lengths, training=True, rng=np.random.default_rng(seed))
        return float((out * w).sum())

    _, _, cache = layer.forward(x, state, lengths, training=True, rng=np.random.default_rng(seed))
    dx, _, grads = layer.backward(w, None, cache)
    # 40 random entries per array: every mask and every parameter is still exercised, at a tenth of the time.
    report = gradcheck(loss, {**layer.params, "x": x}, {**grads, "x": dx}, max_entries=40)
    return report.max_error


# ---------------------------------------------------------------------- dropout between layers
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_dropout_between_layers_gradcheck(kind: str, bidirectional: bool) -> None:
    layer = _layer(kind, num_layers=3, bidirectional=bidirectional, dropout=0.4)
    x = np.random.default_rng(1).standard_normal((B, T, I))
    lengths = np.array([5, 2, 4]) if bidirectional else None
    assert _gradcheck_layer(layer, x, lengths, seed=3) < GRAD_TOL


@pytest.mark.parametrize("kind", KINDS)
def test_dropout_between_layers_is_two_layers_with_the_mask_between(kind: str) -> None:
    layer = _layer(kind, num_layers=2, dropout=0.5)
    x = np.random.default_rng(1).standard_normal((B, T, I))
    out, _, cache = layer.forward(x, training=True, rng=np.random.default_rng(0))
    (mask,) = cache.masks.between
    assert set(np.unique(mask)) <= {0.0, 2.0} and 0 < (mask == 0).mean() < 1
    first, second = _layer(kind), _layer(kind)
    second_params = {k.replace("_l1", "_l0"): v for k, v in layer.params.items() if "_l1" in k}
    first.load_state_dict({k: v for k, v in layer.params.items() if "_l0" in k})
    second.input_size = H
    second.load_state_dict(second_params)
    hidden, _, _ = first.forward(x)
    expected, _, _ = second.forward(hidden * mask.transpose(2, 1, 0))  # (H, T, B) -> (B, T, H)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-13)


def test_dropout_on_a_single_layer_does_nothing() -> None:
    """As in PyTorch: dropout acts between layers, so a one-layer network has no mask to draw."""
    layer = _layer("lstm", dropout=0.5)
    x = np.random.default_rng(1).standard_normal((B, T, I))
    out, _, cache = layer.forward(x, training=True, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(out, layer.forward(x)[0])
    assert cache.masks.between == []


# ---------------------------------------------------------------------- weight drop
@pytest.mark.parametrize("kind", KINDS)
def test_weight_drop_gradcheck(kind: str) -> None:
    layer = _layer(kind, num_layers=2, bidirectional=True, weight_drop=0.3)
    x = np.random.default_rng(2).standard_normal((B, T, I))
    assert _gradcheck_layer(layer, x, np.array([3, 5, 1]), seed=4) < GRAD_TOL


@pytest.mark.parametrize("kind", KINDS)
def test_weight_drop_is_the_layer_with_masked_recurrent_weights(kind: str) -> None:
    layer = _layer(kind, weight_drop=0.5)
    x = np.random.default_rng(2).standard_normal((B, T, I))
    w = np.random.default_rng(3).standard_normal((B, T, H))
    out, _, cache = layer.forward(x, training=True, rng=np.random.default_rng(5))
    (mask,) = cache.masks.w_hh
    assert mask.shape == layer.params["weight_hh_l0"].shape and 0 < (mask == 0).mean() < 1
    plain = _layer(kind)
    plain.load_state_dict({**layer.params, "weight_hh_l0": layer.params["weight_hh_l0"] * mask})
    expected, _, plain_cache = plain.forward(x)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-13)
    _, _, grads = layer.backward(w, None, cache)
    _, _, plain_grads = plain.backward(w, None, plain_cache)
    # d(W ⊙ M)/dW = M: the masked layer's gradient times the mask.
    np.testing.assert_allclose(grads["weight_hh_l0"], plain_grads["weight_hh_l0"] * mask, rtol=0, atol=1e-12)
    assert np.all(grads["weight_hh_l0"][mask == 0] == 0)


# ---------------------------------------------------------------------- inference == no dropout == torch eval()
@pytest.mark.parametrize("kind", KINDS)
def test_inference_with_dropout_equals_torch_eval(kind: str) -> None:
    layer = _layer(kind, num_layers=2, bidirectional=True, dropout=0.5, weight_drop=0.3)
    plain = _layer(kind, num_layers=2, bidirectional=True)
    x = np.random.default_rng(4).standard_normal((B, T, I))
    state = _random_state(layer, np.random.default_rng(5))
    out, final, _ = layer.forward(x, state)
    np.testing.assert_array_equal(out, plain.forward(x, state)[0])
    module = {"rnn_tanh": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind](
        I, H, num_layers=2, bidirectional=True, dropout=0.5, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        for name, value in layer.params.items():
            getattr(module, name).copy_(torch.from_numpy(value))
    module.eval()
    hx = tuple(torch.from_numpy(s) for s in state) if isinstance(state, tuple) else torch.from_numpy(state)
    with torch.no_grad():
        expected, expected_final = module(torch.from_numpy(x), hx)
    np.testing.assert_allclose(out, expected.numpy(), rtol=1e-10, atol=1e-12)
    finals = final if isinstance(final, tuple) else (final,)
    expected_finals = expected_final if isinstance(expected_final, tuple) else (expected_final,)
    for mine, theirs in zip(finals, expected_finals, strict=True):
        np.testing.assert_allclose(mine, theirs.numpy(), rtol=1e-10, atol=1e-12)


def test_masks_are_reproducible_from_the_generator_and_differ_between_draws() -> None:
    layer = _layer("gru", num_layers=2, dropout=0.5, weight_drop=0.5)
    x = np.random.default_rng(6).standard_normal((B, T, I))
    a = layer.forward(x, training=True, rng=np.random.default_rng(11))[0]
    b = layer.forward(x, training=True, rng=np.random.default_rng(11))[0]
    np.testing.assert_array_equal(a, b)
    rng = np.random.default_rng(11)
    first, second = (layer.forward(x, training=True, rng=rng)[0] for _ in range(2))
    assert not np.allclose(first, second)


# ---------------------------------------------------------------------- bias=False against torch
@pytest.mark.parametrize("kind", ("rnn_tanh", "rnn_relu", "lstm", "gru"))
def test_bias_false_matches_torch(kind: str) -> None:
    layer = _layer(kind, num_layers=2, bidirectional=True, bias=False)
    assert not any(name.startswith("bias") for name in layer.params)
    assert len(layer.params) == 8
    x = np.random.default_rng(9).standard_normal((B, T, I))
    lengths = np.array([5, 2, 4])
    state = _random_state(layer, np.random.default_rng(10))
    w = np.random.default_rng(11).standard_normal((B, T, 2 * H))
    out, final, cache = layer.forward(x, state, lengths)
    dx, d_state0, grads = layer.backward(w, None, cache)

    kwargs: dict[str, Any] = dict(num_layers=2, bidirectional=True, bias=False, batch_first=True,
                                  dtype=torch.float64)
    if kind.startswith("rnn"):
        module = torch.nn.RNN(I, H, nonlinearity=kind[4:], **kwargs)
    else:
        module = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind](I, H, **kwargs)
    assert dict(module.named_parameters()).keys() == layer.params.keys()
    with torch.no_grad():
        for name, value in layer.params.items():
            getattr(module, name).copy_(torch.from_numpy(value))
    x_t = torch.tensor(x, requires_grad=True)
    states_t = tuple(torch.tensor(s, requires_grad=True) for s in (state if isinstance(state, tuple) else (state,)))
    packed = torch.nn.utils.rnn.pack_padded_sequence(x_t, torch.tensor(lengths), batch_first=True,
                                                     enforce_sorted=False)
    out_p, final_t = module(packed, states_t if len(states_t) > 1 else states_t[0])
    out_t, _ = torch.nn.utils.rnn.pad_packed_sequence(out_p, batch_first=True, total_length=T)
    (out_t * torch.from_numpy(w)).sum().backward()

    np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=1e-10, atol=1e-12)
    finals_t = final_t if isinstance(final_t, tuple) else (final_t,)
    for mine, theirs in zip(final if isinstance(final, tuple) else (final,), finals_t, strict=True):
        np.testing.assert_allclose(mine, theirs.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, x_t.grad.numpy(), rtol=1e-10, atol=1e-12)
    for mine, theirs in zip(d_state0 if isinstance(d_state0, tuple) else (d_state0,), states_t, strict=True):
        np.testing.assert_allclose(mine, theirs.grad.numpy(), rtol=1e-10, atol=1e-12)
    for name, param in module.named_parameters():
        np.testing.assert_allclose(grads[name], param.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("kind", KINDS)
def test_bias_false_gradcheck_with_dropout(kind: str) -> None:
    layer = _layer(kind, num_layers=2, bias=False, dropout=0.25, weight_drop=0.25)
    x = np.random.default_rng(12).standard_normal((B, T, I))
    assert _gradcheck_layer(layer, x, None, seed=1) < GRAD_TOL


def test_bias_false_state_dict_round_trip_refuses_bias_keys() -> None:
    layer = _layer("lstm", bias=False)
    other = _layer("lstm", bias=False)
    other.load_state_dict(layer.state_dict())
    with pytest.raises(ValueError, match="unexpected keys.*bias_hh_l0"):
        other.load_state_dict(_layer("lstm").state_dict())


# ---------------------------------------------------------------------- the Dropout block and embedding dropout
@pytest.mark.parametrize("variational", [False, True])
def test_dropout_block_gradcheck_in_a_model(variational: bool) -> None:
    model = Sequential([
        ("embed", Embedding(7, I, dtype=np.float64, seed=1, dropout=0.3)),
        ("drop_in", Dropout(0.3, variational=variational)),
        ("rnn", LSTM(I, H, num_layers=2, dtype=np.float64, seed=2, dropout=0.2, weight_drop=0.2)),
        ("drop_out", Dropout(0.4, variational=variational)),
        ("head", Linear(H, 7, dtype=np.float64, seed=3)),
    ])
    ids = np.random.default_rng(0).integers(0, 7, (B, T))
    targets = np.random.default_rng(1).integers(0, 7, (B, T))

    def loss() -> float:
        logits, _, _ = model.forward(ids, training=True, rng=np.random.default_rng(21))
        return rnnkit.softmax_cross_entropy(logits, targets)[0]

    logits, _, cache = model.forward(ids, training=True, rng=np.random.default_rng(21))
    _, d_logits = rnnkit.softmax_cross_entropy(logits, targets)
    _, _, grads = model.backward(d_logits, None, cache)
    assert gradcheck(loss, model.params, grads).max_error < GRAD_TOL
    # Inference is deterministic and ignores every mask.
    inference = model.forward(ids)[0]
    np.testing.assert_array_equal(inference, model.forward(ids)[0])
    assert not np.allclose(inference, logits)


def test_variational_mask_is_shared_over_time_and_per_element_is_not() -> None:
    x = np.ones((4, 50, 8))
    out, cache = Dropout(0.5, variational=True).forward(x, training=True, rng=np.random.default_rng(0))
    assert cache.mask.shape == (4, 1, 8)
    np.testing.assert_array_equal(out, np.broadcast_to(out[:, :1], out.shape))
    out, _ = Dropout(0.5).forward(x, training=True, rng=np.random.default_rng(0))
    assert not np.array_equal(out, np.broadcast_to(out[:, :1], out.shape))


def test_embedding_dropout_drops_whole_rows() -> None:
    embed = Embedding(5, 3, dtype=np.float64, seed=0, dropout=0.5)
    ids = np.array([[0, 1, 2, 3, 4, 0, 1, 2, 3, 4]])
    out, cache = embed.forward(ids, training=True, rng=np.random.default_rng(3))
    row_mask = cache.row_mask[:, 0]
    assert set(np.unique(row_mask)) == {0.0, 2.0}
    np.testing.assert_array_equal(out[0], embed.params["weight"][ids[0]] * row_mask[ids[0], None])
    _, grads = embed.backward(np.ones_like(out), cache)
    np.testing.assert_array_equal(grads["weight"], 2 * row_mask[:, None] * np.ones((5, 3)))


@settings(max_examples=30, deadline=None)
@given(p=st.floats(0.0, 0.95), shape=st.lists(st.integers(1, 6), min_size=1, max_size=4),
       seed=st.integers(0, 2**32 - 1), variational=st.booleans())
def test_dropout_block_properties(p: float, shape: list[int], seed: int, variational: bool) -> None:
    """Values 0 or x/(1-p); backward applies the same mask; inference is the identity."""
    if variational:
        shape = (shape + [2, 2, 2])[:3]
    x = np.random.default_rng(seed).standard_normal(shape) + 3.0  # never 0, so kept == nonzero
    block = Dropout(p, variational=variational)
    out, cache = block.forward(x, training=True, rng=np.random.default_rng(seed))
    kept = out != 0
    np.testing.assert_allclose(out[kept], x[kept] / (1 - p), rtol=1e-14)
    d_out = np.random.default_rng(seed + 1).standard_normal(x.shape)
    dx, grads = block.backward(d_out, cache)
    assert grads == {}
    np.testing.assert_allclose(dx, np.where(kept, d_out / (1 - p), 0.0), rtol=1e-14)
    np.testing.assert_array_equal(block.forward(x)[0], x)


def test_dropout_mask_rate() -> None:
    mask = dropout_mask(np.random.default_rng(0), (200_000,), 0.3, np.float32)
    assert mask.dtype == np.float32
    assert abs((mask == 0).mean() - 0.3) < 0.005  # 5 standard deviations
    assert abs(mask.mean() - 1.0) < 0.01


def test_dropout_mask_takes_the_documented_lanes() -> None:
    """Entry i is kept when the 16-bit lane i & 3 (from the low bits) of raw word i >> 2 reaches
    round(p * 2^16): checked against Python's own shifts, for both compiled forms (the fast one reads
    the words as uint16 on little-endian machines), with a ragged last word."""
    rng = np.random.default_rng(3)
    words = rng.bit_generator.random_raw(1001)
    size, p = 4001, 0.37
    threshold, scale = round(p * 65536), np.float32(1 / (1 - p))
    expected = np.array([scale if (int(words[i // 4]) >> (16 * (i % 4))) & 0xFFFF >= threshold else 0
                         for i in range(size)], np.float32)
    by_shifts, by_lanes = np.empty(size, np.float32), np.empty(size, np.float32)
    _expand_mask(words, threshold, scale, by_shifts)
    np.testing.assert_array_equal(by_shifts, expected)
    if sys.byteorder == "little":
        _expand_lanes(words.view(np.uint16), threshold, scale, by_lanes)
        np.testing.assert_array_equal(by_lanes, expected)
    mask = dropout_mask(np.random.default_rng(3), (size,), p, np.float32)  # the same generator state
    np.testing.assert_array_equal(mask, expected)


# ---------------------------------------------------------------------- the training flag: hostile input
@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5, float("nan"), "0.5", True])
def test_bad_probabilities_are_refused(p: Any) -> None:
    with pytest.raises(ValueError, match="probability in \\[0, 1\\)"):
        LSTM(2, 3, num_layers=2, dropout=p)
    with pytest.raises(ValueError, match="probability"):
        GRU(2, 3, weight_drop=p)
    with pytest.raises(ValueError, match="probability"):
        Dropout(p)
    with pytest.raises(ValueError, match="probability"):
        Embedding(4, 2, dropout=p)


def test_training_needs_a_generator_only_with_dropout() -> None:
    x = np.zeros((1, 2, 2), np.float32)
    RNN(2, 3).forward(x, training=True)  # no dropout: nothing to draw
    with pytest.raises(ValueError, match="needs rng=np.random.default_rng"):
        RNN(2, 3, num_layers=2, dropout=0.1).forward(x, training=True)
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        RNN(2, 3, num_layers=2, dropout=0.1).forward(x, training=True, rng=np.random.RandomState(0))
    with pytest.raises(ValueError, match="training must be True or False"):
        RNN(2, 3).forward(x, training="yes")
    with pytest.raises(ValueError, match="layer 'drop'.*needs rng"):
        Sequential([("drop", Dropout(0.2))]).forward(x, training=True)


# ---------------------------------------------------------------------- initializers
def test_default_initialisation_is_unchanged() -> None:
    """The options draw after PyTorch's default, so a seed still gives the weights it always gave."""
    layer = LSTM(3, 4, num_layers=2, seed=5, dtype=np.float64)
    rng = np.random.default_rng(5)
    for name, value in layer.params.items():
        np.testing.assert_array_equal(value, rng.uniform(-0.5, 0.5, size=value.shape), err_msg=name)


@pytest.mark.parametrize("kind", KINDS)
def test_orthogonal_and_xavier_initialisation(kind: str) -> None:
    layer = _layer(kind, num_layers=2, bidirectional=True, init_hh="orthogonal", init_ih="xavier")
    G = layer.cell.num_gates
    for name, value in layer.params.items():
        if name.startswith("weight_hh"):
            for g in range(G):
                block = value[g * H : (g + 1) * H]
                np.testing.assert_allclose(block @ block.T, np.eye(H), atol=1e-12, err_msg=name)
        elif name.startswith("weight_ih"):
            bound = np.sqrt(6.0 / (value.shape[1] + H))
            assert np.abs(value).max() <= bound and np.abs(value).max() > 0.8 * bound
        else:
            assert np.abs(value).max() <= 1 / np.sqrt(H)
    # Different gates get different blocks.
    assert G == 1 or not np.allclose(layer.params["weight_hh_l0"][:H], layer.params["weight_hh_l0"][H : 2 * H])


def test_forget_gate_bias() -> None:
    layer = LSTM(3, 4, num_layers=2, bidirectional=True, forget_bias=1.0, seed=0)
    for suffix in ("_l0", "_l0_reverse", "_l1", "_l1_reverse"):
        total = layer.params[f"bias_ih{suffix}"] + layer.params[f"bias_hh{suffix}"]
        np.testing.assert_array_equal(total[4:8], np.ones(4, np.float32))
        assert np.all(total[:4] != 1.0)
    with pytest.raises(ValueError, match="forget_bias is an LSTM option"):
        Recurrent(GRU(3, 4).cell, 3, 4, forget_bias=1.0)
    with pytest.raises(ValueError, match="forget_bias needs bias=True"):
        LSTM(3, 4, bias=False, forget_bias=1.0)
    with pytest.raises(ValueError, match="init_hh must be one of"):
        LSTM(3, 4, init_hh="identity")
    with pytest.raises(ValueError, match="init_ih must be one of"):
        RNN(3, 4, init_ih="orthogonal")
