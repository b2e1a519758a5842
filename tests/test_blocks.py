"""Linear, Embedding and Sequential: against torch.nn, central differences, and their error messages.

The full model checked by finite differences is embedding -> 2-layer LSTM -> linear with a random
initial state, a loss on the output *and* on the final state, with and without variable lengths, so
every path (ids to rows, layer to layer, state in and out) carries gradient.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from rnnkit.gradcheck import gradcheck
from rnnkit.layers.embedding import Embedding
from rnnkit.layers.linear import Linear
from rnnkit.layers.recurrent import GRU, LSTM
from rnnkit.layers.sequential import Sequential, detach_state

B, T, E, H, V = 3, 5, 4, 6, 7  # pairwise distinct sizes, so a mixed-up axis shows


# ---------------------------------------------------------------------------- Linear
@pytest.mark.parametrize("shape", [(B, T, H), (B, H), (2, B, T, H)])
def test_linear_matches_torch(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    layer = Linear(H, V, dtype=np.float64, seed=1)
    x = rng.standard_normal(shape)
    w = rng.standard_normal((*shape[:-1], V))
    out, cache = layer.forward(x)
    dx, grads = layer.backward(w, cache)

    module = torch.nn.Linear(H, V, dtype=torch.float64)
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(layer.params["weight"]))
        module.bias.copy_(torch.from_numpy(layer.params["bias"]))
    x_t = torch.tensor(x, requires_grad=True)
    out_t = module(x_t)
    (out_t * torch.from_numpy(w)).sum().backward()

    np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, x_t.grad.numpy(), rtol=1e-10, atol=1e-12)
    assert grads.keys() == layer.params.keys()
    np.testing.assert_allclose(grads["weight"], module.weight.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grads["bias"], module.bias.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_linear_init_dtype_and_seed() -> None:
    layer = Linear(100, 50, seed=3)
    bound = 1 / np.sqrt(100)
    for name, shape in (("weight", (50, 100)), ("bias", (50,))):
        p = layer.params[name]
        assert p.shape == shape and p.dtype == np.float32
        assert np.abs(p).max() <= bound and np.abs(p).max() > 0.9 * bound  # U(-1/sqrt(in), 1/sqrt(in))
    np.testing.assert_array_equal(Linear(100, 50, seed=3).params["weight"], layer.params["weight"])
    x = np.ones((2, 3, 100), np.float32)
    out, cache = layer.forward(x)
    assert out.dtype == np.float32 and out.shape == (2, 3, 50)
    dx, grads = layer.backward(np.ones_like(out), cache)
    assert dx.dtype == np.float32 and all(g.dtype == np.float32 for g in grads.values())


def test_linear_errors() -> None:
    layer = Linear(H, V, dtype=np.float64)
    with pytest.raises(ValueError, match=r"x has shape \(2, 5\), expected \(\.\.\., 6\)"):
        layer.forward(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="x has dtype float32 but the layer's parameters are float64"):
        layer.forward(np.zeros((2, H), np.float32))
    with pytest.raises(ValueError, match="x contains NaN"):
        layer.forward(np.full((2, H), np.nan))
    with pytest.raises(ValueError, match="x must be a NumPy array"):
        layer.forward([[0.0] * H])
    out, cache = layer.forward(np.zeros((2, 3, H)))
    with pytest.raises(ValueError, match=r"d_out has shape \(2, 3\), expected \(2, 3, 7\)"):
        layer.backward(np.zeros((2, 3)), cache)
    with pytest.raises(ValueError, match="in_features must be a positive integer"):
        Linear(0, 3)
    with pytest.raises(ValueError, match="dtype must be float32 or float64"):
        Linear(3, 3, dtype=np.int64)


# ---------------------------------------------------------------------------- Embedding
def test_embedding_matches_torch_with_repeated_ids() -> None:
    rng = np.random.default_rng(0)
    layer = Embedding(V, E, dtype=np.float64, seed=1)
    ids = rng.integers(0, V - 1, (B, T))  # the last id never occurs: its gradient row must be zero
    ids[0, :3] = 2                        # repeated ids must accumulate
    w = rng.standard_normal((B, T, E))
    out, cache = layer.forward(ids)
    d_in, grads = layer.backward(w, cache)

    module = torch.nn.Embedding(V, E, dtype=torch.float64)
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(layer.params["weight"]))
    out_t = module(torch.from_numpy(ids))
    (out_t * torch.from_numpy(w)).sum().backward()

    assert d_in is None
    np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grads["weight"], module.weight.grad.numpy(), rtol=1e-10, atol=1e-12)
    assert not grads["weight"][V - 1].any()


def test_embedding_init_is_standard_normal() -> None:
    weight = Embedding(1000, 50, seed=0).params["weight"]
    assert weight.dtype == np.float32 and weight.shape == (1000, 50)
    assert abs(weight.mean()) < 0.01 and abs(weight.std() - 1) < 0.01


def test_embedding_errors() -> None:
    layer = Embedding(V, E)
    with pytest.raises(ValueError, match=r"ids contain 7, outside the valid range \[0, 7\)"):
        layer.forward(np.array([[1, 7, 2]]))
    with pytest.raises(ValueError, match=r"ids contain -1, outside the valid range \[0, 7\)"):
        layer.forward(np.array([[1, -1, 9]]))
    with pytest.raises(ValueError, match="ids must have an integer dtype"):
        layer.forward(np.array([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="ids must be a NumPy integer array"):
        layer.forward([[1, 2]])
    with pytest.raises(ValueError, match="num_embeddings must be a positive integer"):
        Embedding(0, 3)


@pytest.mark.parametrize("layer", [Linear(H, V), Embedding(V, E)], ids=["linear", "embedding"])
def test_state_dict_round_trip_and_errors(layer: Any) -> None:
    state = layer.state_dict()
    assert state.keys() == layer.params.keys()
    shifted = {k: v + 1 for k, v in state.items()}
    layer.load_state_dict(shifted)
    for k in state:
        np.testing.assert_array_equal(layer.params[k], shifted[k])
        assert layer.params[k] is not shifted[k]  # copied, not aliased
    with pytest.raises(ValueError, match=r"missing keys \['weight'\], unexpected keys \['weights'\]"):
        layer.load_state_dict({**{k: v for k, v in state.items() if k != "weight"}, "weights": state["weight"]})
    with pytest.raises(ValueError, match=r"'weight' has shape \(1, 1\), expected"):
        layer.load_state_dict({**state, "weight": np.zeros((1, 1))})
    with pytest.raises(ValueError, match="'weight' has dtype int64, expected a float array"):
        layer.load_state_dict({**state, "weight": state["weight"].astype(np.int64)})


def test_caches_do_not_share_memory_with_the_inputs() -> None:
    """Reusing the input buffer between forward and backward must not change the gradients."""
    rng = np.random.default_rng(5)
    linear, embedding = Linear(H, V, dtype=np.float64, seed=0), Embedding(V, E, dtype=np.float64, seed=0)
    x, ids = rng.standard_normal((B, T, H)), rng.integers(0, V, (B, T))
    d_lin, d_emb = rng.standard_normal((B, T, V)), rng.standard_normal((B, T, E))
    expected = linear.backward(d_lin, linear.forward(x)[1]), embedding.backward(d_emb, embedding.forward(ids)[1])
    (_, lin_cache), (_, emb_cache) = linear.forward(x), embedding.forward(ids)
    x[:] = 0.0
    ids[:] = 0
    (dx, lin_grads), (_, emb_grads) = linear.backward(d_lin, lin_cache), embedding.backward(d_emb, emb_cache)
    np.testing.assert_array_equal(dx, expected[0][0])
    for got, want in ((lin_grads, expected[0][1]), (emb_grads, expected[1][1])):
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])


# ---------------------------------------------------------------------------- Sequential
def _model(dtype: Any = np.float64) -> Sequential:
    return Sequential([
        ("embed", Embedding(V, E, dtype=dtype, seed=1)),
        ("rnn", LSTM(E, H, num_layers=2, dtype=dtype, seed=2)),
        ("head", Linear(H, V, dtype=dtype, seed=3)),
    ])


def test_sequential_params_are_the_layers_arrays() -> None:
    model = _model()
    keys = list(model.params)
    assert keys[0] == "embed.weight" and keys[-2:] == ["head.weight", "head.bias"]
    assert "rnn.weight_ih_l0" in keys and "rnn.bias_hh_l1" in keys and len(keys) == 1 + 8 + 2
    assert model.params["head.weight"] is model["head"].params["weight"]
    # An in-place update through model.params (what an optimizer does) reaches the layer.
    model.params["rnn.weight_hh_l1"] += 1.0
    np.testing.assert_array_equal(model["rnn"].params["weight_hh_l1"], model.params["rnn.weight_hh_l1"])
    assert model.recurrent == ("rnn",)
    # A dict is accepted as well, in its order.
    assert list(Sequential(dict(model.layers)).params) == keys


@pytest.mark.parametrize("lengths", [None, np.array([3, 5, 1])], ids=["full", "lengths"])
def test_sequential_gradcheck(lengths: np.ndarray | None) -> None:
    rng = np.random.default_rng(0)
    model = _model()
    ids = rng.integers(0, V, (B, T))
    h0, c0 = rng.uniform(-0.5, 0.5, (2, 2, B, H))
    w_out = rng.standard_normal((B, T, V))
    w_h, w_c = rng.standard_normal((2, 2, B, H))

    def loss() -> float:
        out, state, _ = model.forward(ids, state={"rnn": (h0, c0)}, lengths=lengths)
        h, c = state["rnn"]
        return float((out * w_out).sum() + (h * w_h).sum() + (c * w_c).sum())

    out, state, cache = model.forward(ids, state={"rnn": (h0, c0)}, lengths=lengths)
    d_in, d_state0, grads = model.backward(w_out, {"rnn": (w_h, w_c)}, cache)
    assert d_in is None and list(grads) == list(model.params)
    arrays = {**model.params, "h0": h0, "c0": c0}
    analytic = {**grads, "h0": d_state0["rnn"][0], "c0": d_state0["rnn"][1]}
    report = gradcheck(loss, arrays, analytic, max_entries=12)
    assert report.max_error < 1e-7, report


def test_sequential_matches_torch() -> None:
    rng = np.random.default_rng(1)
    model = _model()
    ids = rng.integers(0, V, (B, T))
    w_out = rng.standard_normal((B, T, V))
    out, _, cache = model.forward(ids)
    _, _, grads = model.backward(w_out, None, cache)

    embed, lstm = torch.nn.Embedding(V, E, dtype=torch.float64), torch.nn.LSTM(
        E, H, num_layers=2, batch_first=True, dtype=torch.float64)
    head = torch.nn.Linear(H, V, dtype=torch.float64)
    modules = {"embed": embed, "rnn": lstm, "head": head}
    with torch.no_grad():
        for name, module in modules.items():
            for key, p in module.named_parameters():
                p.copy_(torch.from_numpy(model.params[f"{name}.{key}"]))
    out_t = head(lstm(embed(torch.from_numpy(ids)))[0])
    (out_t * torch.from_numpy(w_out)).sum().backward()

    np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=1e-10, atol=1e-12)
    for name, module in modules.items():
        for key, p in module.named_parameters():
            np.testing.assert_allclose(grads[f"{name}.{key}"], p.grad.numpy(), rtol=1e-10, atol=1e-12,
                                       err_msg=f"{name}.{key}")


def test_sequential_float_input_and_recurrent_last() -> None:
    """A model that starts with a layer (dx is returned) and ends with a recurrent layer (d_out None)."""
    rng = np.random.default_rng(2)
    model = Sequential([("proj", Linear(E, H, dtype=np.float64, seed=0)),
                        ("gru", GRU(H, H, dtype=np.float64, seed=1))])
    x = rng.standard_normal((B, T, E))
    w_h = rng.standard_normal((1, B, H))

    def loss() -> float:
        return float((model.forward(x)[1]["gru"] * w_h).sum())

    _, state, cache = model.forward(x)
    dx, d_state0, grads = model.backward(None, {"gru": w_h}, cache)
    assert dx.shape == x.shape and d_state0["gru"].shape == (1, B, H)
    report = gradcheck(loss, {**model.params, "x": x}, {**grads, "x": dx}, max_entries=10)
    assert report.max_error < 1e-7, report


def test_sequential_carries_state_between_chunks() -> None:
    rng = np.random.default_rng(3)
    model = _model()
    ids = rng.integers(0, V, (B, 2 * T))
    whole, whole_state, _ = model.forward(ids, keep_cache=False)
    first, state, _ = model.forward(ids[:, :T], keep_cache=False)
    second, final, _ = model.forward(ids[:, T:], state=state, keep_cache=False)
    np.testing.assert_allclose(np.concatenate([first, second], axis=1), whole, rtol=1e-12, atol=1e-14)
    for a, b in zip(final["rnn"], whole_state["rnn"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_detach_state_copies() -> None:
    state = {"rnn": (np.ones((1, 2, 3)), np.zeros((1, 2, 3))), "gru": np.ones((1, 2, 3))}
    copy = detach_state(state)
    assert copy.keys() == state.keys() and isinstance(copy["rnn"], tuple)
    for a, b in ((copy["rnn"][0], state["rnn"][0]), (copy["rnn"][1], state["rnn"][1]), (copy["gru"], state["gru"])):
        np.testing.assert_array_equal(a, b)
        assert not np.shares_memory(a, b)
    assert detach_state(None) is None
    with pytest.raises(TypeError, match="state must be None, an array"):
        detach_state("h")


def test_sequential_state_dict_round_trip_and_errors() -> None:
    model, other = _model(), Sequential([
        ("embed", Embedding(V, E, dtype=np.float64, seed=10)),
        ("rnn", LSTM(E, H, num_layers=2, dtype=np.float64, seed=20)),
        ("head", Linear(H, V, dtype=np.float64, seed=30)),
    ])
    state = model.state_dict()
    assert list(state) == list(model.params)
    other.load_state_dict(state)
    ids = np.random.default_rng(4).integers(0, V, (B, T))
    np.testing.assert_array_equal(other.forward(ids)[0], model.forward(ids)[0])
    # Layer-level load keeps model.params right (it is rebuilt on access).
    assert other.params["rnn.weight_hh_l0"] is other["rnn"].params["weight_hh_l0"]

    before = other.state_dict()
    bad = {**state, "head.weight": np.zeros((V, V))}
    with pytest.raises(ValueError, match=r"'head.weight' has shape \(7, 7\), expected \(7, 6\)"):
        other.load_state_dict(bad)
    renamed = {("rnn.weight_ih_0" if k == "rnn.weight_ih_l0" else k): v for k, v in state.items()}
    with pytest.raises(ValueError, match=r"missing keys \['rnn.weight_ih_l0'\], unexpected keys \['rnn.weight_ih_0'\]"):
        other.load_state_dict(renamed)
    for k, v in other.state_dict().items():  # a failed load changes nothing
        np.testing.assert_array_equal(v, before[k])


class _Identity:
    """A parameter-free feed-forward layer written by a user: Sequential accepts it by duck typing."""

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}

    def forward(self, x: Any) -> tuple[Any, None]:
        return x, None

    def backward(self, d_out: Any, cache: None) -> tuple[Any, dict[str, np.ndarray]]:
        return d_out, {}


def test_sequential_errors() -> None:
    model = _model()
    ids = np.zeros((B, T), np.int64)
    with pytest.raises(ValueError, match="used twice"):
        Sequential([("a", Linear(2, 2)), ("a", Linear(2, 2))])
    with pytest.raises(ValueError, match="without dots"):
        Sequential([("a.b", Linear(2, 2))])
    with pytest.raises(ValueError, match="at least one"):
        Sequential([])
    with pytest.raises(TypeError, match=r"layer 'f' \(ufunc\) has no forward\(\) method"):
        Sequential([("f", np.tanh)])
    with pytest.raises(ValueError, match=r"one dtype, got \['float32', 'float64'\]"):
        Sequential([("a", Linear(2, 2)), ("b", Linear(2, 2, dtype=np.float64))])
    with pytest.raises(ValueError, match=r"keys \['lstm'\] that are not recurrent layers .*\['rnn'\]"):
        model.forward(ids, state={"lstm": None})
    with pytest.raises(ValueError, match="layer 'embed': ids contain 9"):
        model.forward(ids + 9)
    with pytest.raises(ValueError, match=r"layer 'rnn': state\[0\] \(h\) has shape"):
        model.forward(ids, state={"rnn": (np.zeros((1, B, H)), np.zeros((1, B, H)))})
    _, _, cache = model.forward(ids)
    with pytest.raises(ValueError, match="cache must be the cache returned by this model"):
        model.backward(np.zeros((B, T, V)), None, None)
    with pytest.raises(ValueError, match="layer 'head': d_out has shape"):
        model.backward(np.zeros((B, T, H)), None, cache)
    _, _, no_cache = model.forward(ids, keep_cache=False)
    assert no_cache is None
    misplaced = Sequential([("a", _Identity()), ("embed", Embedding(V, E, dtype=np.float64))])
    _, _, cache = misplaced.forward(ids)
    with pytest.raises(ValueError, match="layer 'a' gets no gradient: layer 'embed' returned no input gradient"):
        misplaced.backward(np.zeros((B, T, E)), None, cache)
