"""Tied parameters in ``Sequential``: one parameter under two uses (``head.weight`` = ``embed.weight``).

Checked against the untied computation with the same weights: the tied gradient is the sum of the
two untied gradients (and passes a float64 gradcheck), one optimizer step on the tied model equals
one Adam step on that summed gradient, the parameter is listed, saved and loaded once and stays
one array after loading; and a model with dropout trains reproducibly through ``tbptt_step``.
"""

from __future__ import annotations

import numpy as np
import pytest

import rnnkit
from rnnkit import GRU, LSTM, Adam, Dropout, Embedding, Linear, Sequential, gradcheck, softmax_cross_entropy
from rnnkit.io.checkpoint import load_checkpoint, save_checkpoint

V, E, B, T = 9, 5, 3, 4


def _model(tied: bool, dropout: float = 0.0) -> Sequential:
    layers = [
        ("embed", Embedding(V, E, dtype=np.float64, seed=1, dropout=dropout)),
        ("rnn", GRU(E, E, dtype=np.float64, seed=2)),
        ("drop", Dropout(dropout, variational=True)),
        ("head", Linear(E, V, dtype=np.float64, seed=3)),
    ]
    return Sequential(layers, tied={"head.weight": "embed.weight"} if tied else None)


IDS = np.random.default_rng(0).integers(0, V, (B, T))
TARGETS = np.random.default_rng(1).integers(0, V, (B, T))


def _grads(model: Sequential) -> dict[str, np.ndarray]:
    logits, _, cache = model.forward(IDS)
    _, d_logits = softmax_cross_entropy(logits, TARGETS)
    return model.backward(d_logits, None, cache)[2]


def test_a_tied_parameter_is_one_array_listed_once() -> None:
    model = _model(tied=True)
    assert "head.weight" not in model.params and "embed.weight" in model.params
    assert model["head"].params["weight"] is model["embed"].params["weight"]
    assert list(model.state_dict()) == ["embed.weight", *[k for k in _model(False).params if k.startswith("rnn")],
                                        "head.bias"]
    assert "tied: head.weight = embed.weight" in repr(model)


def test_tied_gradient_is_the_sum_of_both_uses_and_gradchecks() -> None:
    tied, untied = _model(tied=True), _model(tied=False)
    untied.load_state_dict({**tied.state_dict(), "head.weight": tied.params["embed.weight"].copy()})
    grads, separate = _grads(tied), _grads(untied)
    assert grads.keys() == tied.params.keys()
    np.testing.assert_allclose(grads["embed.weight"], separate["embed.weight"] + separate["head.weight"],
                               rtol=1e-13, atol=1e-15)

    def loss() -> float:
        return softmax_cross_entropy(tied.forward(IDS)[0], TARGETS)[0]

    assert gradcheck(loss, tied.params, grads).max_error < 1e-7


def test_one_update_per_step_equal_to_the_untied_sum() -> None:
    tied, untied = _model(tied=True), _model(tied=False)
    untied.load_state_dict({**tied.state_dict(), "head.weight": tied.params["embed.weight"].copy()})
    optimizer = Adam(lr=0.1)
    for _ in range(3):
        rnnkit.tbptt_step(tied, softmax_cross_entropy, optimizer, IDS, TARGETS)
    assert optimizer.state.keys() == tied.params.keys()  # one Adam state for the tied parameter

    # The untied computation: the shared weight's gradient is the sum of its two uses, and it gets one
    # Adam update (Adam is per parameter, so the other parameters can have an optimizer of their own).
    shared_optimizer, other_optimizer = Adam(lr=0.1), Adam(lr=0.1)
    for _ in range(3):
        g = _grads(untied)
        shared = {"w": untied.params["embed.weight"]}
        shared_optimizer.step(shared, {"w": g["embed.weight"] + g["head.weight"]})
        untied["head"].params["weight"][...] = shared["w"]
        others = {k: v for k, v in untied.params.items() if k not in ("embed.weight", "head.weight")}
        other_optimizer.step(others, {k: g[k] for k in others})
    for key, value in tied.params.items():
        np.testing.assert_allclose(value, untied.params[key], rtol=1e-12, atol=1e-14, err_msg=key)
    np.testing.assert_array_equal(tied["head"].params["weight"], tied.params["embed.weight"])


def test_saved_once_and_reloaded_tied(tmp_path) -> None:
    model = _model(tied=True)
    save_checkpoint(tmp_path / "m.safetensors", model.state_dict(), {"kind": "test"})
    weights, _ = load_checkpoint(tmp_path / "m.safetensors")
    assert "head.weight" not in weights
    fresh = _model(tied=True)
    fresh.load_state_dict(weights)
    assert fresh["head"].params["weight"] is fresh["embed"].params["weight"]
    np.testing.assert_array_equal(fresh.forward(IDS)[0], model.forward(IDS)[0])
    fresh.params["embed.weight"] += 1.0  # an in-place update reaches both uses
    np.testing.assert_array_equal(fresh["head"].params["weight"], fresh.params["embed.weight"])
    with pytest.raises(ValueError, match="unexpected keys \\['head.weight'\\]"):
        fresh.load_state_dict(_model(tied=False).state_dict())


@pytest.mark.parametrize("tied, message", [
    ({"head.weight": "embed.nope"}, "leader 'embed.nope' is not a parameter"),
    ({"head.bias": "embed.weight"}, "tied parameters must have the same shape"),
    ({"head.weight": "head.weight"}, "cannot be tied to itself"),
    ({"head.weight": "embed.weight", "embed.weight": "rnn.weight_ih_l0"}, "a follower cannot lead"),
    (["head.weight"], "tied must be a dict"),
])
def test_bad_ties_are_refused(tied, message) -> None:
    layers = [("embed", Embedding(V, E)), ("rnn", LSTM(E, E)), ("head", Linear(E, V))]
    with pytest.raises((ValueError, TypeError), match=message):
        Sequential(layers, tied=tied)


def test_tbptt_with_dropout_is_reproducible_from_the_generator() -> None:
    def losses(seed: int) -> list[float]:
        model, optimizer, rng = _model(tied=True, dropout=0.3), Adam(lr=0.05), np.random.default_rng(seed)
        state, out = None, []
        for _ in range(4):
            step = rnnkit.tbptt_step(model, softmax_cross_entropy, optimizer, IDS, TARGETS, state, rng=rng)
            state, out = step.state, [*out, step.loss]
        return out

    assert losses(3) == losses(3)
    assert losses(3) != losses(4)
    with pytest.raises(ValueError, match="needs rng"):
        rnnkit.tbptt_step(_model(tied=False, dropout=0.3), softmax_cross_entropy, Adam(), IDS, TARGETS)


def test_tbptt_step_accepts_a_model_without_the_training_flag() -> None:
    """A hand-written model with only the old forward(x, state) contract still trains (it has no dropout)."""
    inner = _model(tied=False)

    class Plain:
        params = property(lambda self: inner.params)

        def forward(self, x, state=None):
            return inner.forward(x, state=state)

        def backward(self, d_out, d_state, cache):
            return inner.backward(d_out, d_state, cache)

    expected_loss = softmax_cross_entropy(inner.forward(IDS)[0], TARGETS)[0]
    step = rnnkit.tbptt_step(Plain(), softmax_cross_entropy, Adam(), IDS, TARGETS)
    assert step.loss == expected_loss
