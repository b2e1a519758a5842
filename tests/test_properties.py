"""Property-based tests (hypothesis, bounded examples): layers, losses, optimizers, clipping, the checkpoint loader.

Each property is a statement that must hold for every input in a wide space, checked against an
independent computation or an exact identity:

* a padded batch with ``lengths`` equals running every sequence alone, cut to its length; backward
  is linear in ``d_out`` and sends nothing to the padding;
* cross-entropy equals its float64 definition, is invariant to adding a constant to a row of
  logits, and its gradient rows sum to zero;
* SGD is ``p - lr * g`` exactly; Adam's first step moves no weight by more than ``lr``; every
  optimizer keeps finite weights finite;
* clipping leaves a global norm of at most ``max_norm`` and keeps the direction; the infinity norm
  is the largest magnitude and NaN anywhere gives NaN;
* any JSON-like document with arrays round-trips through a checkpoint exactly; any bytes given to the
  safetensors reader give tensors or a :class:`CheckpointError`, never another exception.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rnnkit import GRU, LSTM, RNN, clip_grad_norm, grad_norm, softmax_cross_entropy
from rnnkit.io.checkpoint import CheckpointError, decode_tensors, load_checkpoint, save_checkpoint
from rnnkit.optim import SGD, Adagrad, Adam, AdamW, RMSprop

PROPERTY = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
FEW = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

LAYERS = {"rnn": RNN, "lstm": LSTM, "gru": GRU}
finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)


def layer_inputs():
    return st.fixed_dictionaries({
        "kind": st.sampled_from(sorted(LAYERS)),
        "B": st.integers(1, 4), "T": st.integers(1, 6), "I": st.integers(1, 4), "H": st.integers(1, 5),
        "layers": st.integers(1, 2), "bidirectional": st.booleans(), "seed": st.integers(0, 2**16),
    })


@FEW
@given(layer_inputs())
def test_a_padded_batch_equals_each_sequence_alone(p) -> None:
    rng = np.random.default_rng(p["seed"])
    layer = LAYERS[p["kind"]](p["I"], p["H"], p["layers"], bidirectional=p["bidirectional"], dtype=np.float64,
                              seed=p["seed"])
    x = rng.standard_normal((p["B"], p["T"], p["I"]))
    lengths = rng.integers(1, p["T"] + 1, p["B"])
    out, state, _ = layer.forward(x, lengths=lengths)
    h = state[0] if p["kind"] == "lstm" else state
    for b, n in enumerate(lengths):
        alone, alone_state, _ = layer.forward(x[b : b + 1, :n])
        alone_h = alone_state[0] if p["kind"] == "lstm" else alone_state
        np.testing.assert_allclose(out[b, :n], alone[0], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(h[:, b], alone_h[:, 0], rtol=1e-12, atol=1e-12)
        assert not out[b, n:].any()  # padding outputs are exactly zero


@FEW
@given(layer_inputs(), st.floats(-3, 3))
def test_backward_is_linear_in_d_out_and_ignores_padding(p, a) -> None:
    rng = np.random.default_rng(p["seed"])
    layer = LAYERS[p["kind"]](p["I"], p["H"], p["layers"], bidirectional=p["bidirectional"], dtype=np.float64,
                              seed=p["seed"])
    x = rng.standard_normal((p["B"], p["T"], p["I"]))
    lengths = rng.integers(1, p["T"] + 1, p["B"])
    out, _, cache = layer.forward(x, lengths=lengths)
    d1, d2 = rng.standard_normal(out.shape), rng.standard_normal(out.shape)
    dx1, _, g1 = layer.backward(d1, None, cache)
    dx2, _, g2 = layer.backward(d2, None, cache)
    dx, _, g = layer.backward(a * d1 + d2, None, cache)
    np.testing.assert_allclose(dx, a * dx1 + dx2, rtol=1e-9, atol=1e-9)
    for name in g:
        np.testing.assert_allclose(g[name], a * g1[name] + g2[name], rtol=1e-9, atol=1e-9)
    for b, n in enumerate(lengths):
        assert not dx[b, n:].any()  # inputs past a sequence's end never influenced the loss


@PROPERTY
@given(st.integers(1, 3), st.integers(1, 5), st.integers(1, 7), st.integers(0, 2**16), st.floats(-50, 50))
def test_cross_entropy_matches_its_definition(B, T, V, seed, shift) -> None:
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((B, T, V)) * rng.uniform(0.1, 20)
    targets = rng.integers(0, V, (B, T))
    loss, d = softmax_cross_entropy(logits, targets)
    z = logits - logits.max(axis=-1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    expected = -np.take_along_axis(log_p, targets[..., None], -1).mean()
    assert loss >= 0 and math.isclose(loss, expected, rel_tol=1e-12, abs_tol=1e-12)
    np.testing.assert_allclose(d.sum(axis=-1), 0, atol=1e-12)
    shifted, d_shifted = softmax_cross_entropy(logits + shift, targets)
    assert math.isclose(shifted, loss, rel_tol=1e-9, abs_tol=1e-9)
    np.testing.assert_allclose(d_shifted, d, atol=1e-12)


def params_and_grads():
    shapes = st.lists(st.tuples(st.integers(1, 4), st.integers(1, 4)), min_size=1, max_size=3)
    return st.tuples(shapes, st.integers(0, 2**16), st.sampled_from([np.float32, np.float64]),
                     st.floats(1e-6, 10.0))


@PROPERTY
@given(params_and_grads())
def test_sgd_is_p_minus_lr_g_and_adam_moves_at_most_lr(case) -> None:
    shapes, seed, dtype, lr = case
    rng = np.random.default_rng(seed)
    params = {f"p{i}": rng.standard_normal(shape).astype(dtype) for i, shape in enumerate(shapes)}
    grads = {name: (rng.standard_normal(p.shape) * 10 ** rng.uniform(-6, 6)).astype(dtype)
             for name, p in params.items()}
    before = {name: p.copy() for name, p in params.items()}
    SGD(lr=lr).step(params, grads)
    for name in params:
        assert np.array_equal(params[name], (before[name] - dtype(lr) * grads[name]).astype(dtype))
    adam_params = {name: p.copy() for name, p in before.items()}
    Adam(lr=lr).step(adam_params, grads)
    for name in params:
        moved = np.abs(adam_params[name].astype(np.float64) - before[name])
        assert (moved <= lr * (1 + 1e-5) + np.abs(before[name]) * np.finfo(dtype).eps * 2).all()


@PROPERTY
@given(params_and_grads(), st.sampled_from([SGD, Adagrad, RMSprop, Adam, AdamW]), st.booleans())
def test_every_optimizer_keeps_finite_weights_finite(case, kind, zero) -> None:
    shapes, seed, dtype, lr = case
    rng = np.random.default_rng(seed)
    params = {f"p{i}": rng.standard_normal(shape).astype(dtype) for i, shape in enumerate(shapes)}
    optimizer = kind(lr=min(lr, 1.0))
    for _ in range(3):
        grads = {name: (np.zeros_like(p) if zero else rng.standard_normal(p.shape).astype(dtype))
                 for name, p in params.items()}
        optimizer.step(params, grads)
    assert all(np.isfinite(p).all() and p.dtype == dtype for p in params.values())


@PROPERTY
@given(st.lists(st.lists(finite, min_size=1, max_size=6), min_size=1, max_size=4), st.floats(1e-3, 1e3))
def test_clipping_bounds_the_norm_and_keeps_the_direction(arrays, max_norm) -> None:
    grads = {f"g{i}": np.array(values) for i, values in enumerate(arrays)}
    flat = np.concatenate([g.ravel() for g in grads.values()])
    original = {name: g.copy() for name, g in grads.items()}
    total = clip_grad_norm(grads, max_norm)
    assert math.isclose(total, float(np.linalg.norm(flat)), rel_tol=1e-12, abs_tol=1e-300)
    after = np.concatenate([g.ravel() for g in grads.values()])
    assert np.linalg.norm(after) <= max_norm * (1 + 1e-9) or np.array_equal(after, flat)
    scale = min(1.0, max_norm / (total + 1e-6))
    for name in grads:
        np.testing.assert_allclose(grads[name], original[name] * scale, rtol=1e-12, atol=0)
    assert grad_norm(original, math.inf) == float(np.abs(flat).max())


@PROPERTY
@given(st.lists(st.lists(finite, min_size=1, max_size=4), min_size=2, max_size=4), st.data())
def test_nan_anywhere_makes_every_norm_nan(arrays, data) -> None:
    grads = {f"g{i}": np.array(values) for i, values in enumerate(arrays)}
    where = data.draw(st.integers(0, len(grads) - 1))
    grads[f"g{where}"][data.draw(st.integers(0, grads[f"g{where}"].size - 1))] = np.nan
    for norm_type in (1.0, 2.0, 3.5, math.inf):
        assert math.isnan(grad_norm(grads, norm_type)), norm_type


arrays = st.builds(
    lambda shape, dtype, seed: np.array(np.random.default_rng(seed).standard_normal(shape) * 100).astype(dtype),
    st.lists(st.integers(0, 3), max_size=3).map(tuple),
    st.sampled_from([np.float32, np.float64, np.int64, np.uint8, np.int32]),
    st.integers(0, 2**16),
)
json_leaves = (st.none() | st.booleans() | st.integers(-(2**200), 2**200) | finite | st.text(max_size=12) | arrays)
documents = st.dictionaries(
    st.text(min_size=1, max_size=8).filter(lambda k: "/" not in k and k != "__ndarray__"),
    st.recursive(json_leaves, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.text(min_size=1, max_size=6).filter(lambda k: "/" not in k and k != "__ndarray__"), inner, max_size=3),
        max_leaves=10),
    max_size=5,
)


def same(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


@PROPERTY
@given(documents, st.integers(0, 2**16))
def test_any_document_round_trips_exactly(tmp_path, document, seed) -> None:
    weights = {"w": np.random.default_rng(seed).standard_normal((3, 2)).astype(np.float32)}
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, weights, document)
    loaded_weights, loaded_document = load_checkpoint(path)
    assert same(loaded_document, document) and same(loaded_weights, weights)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.builds(lambda n, rest: n.to_bytes(8, "little") + rest,
                                           st.integers(0, 400), st.binary(max_size=400)))
def test_the_safetensors_reader_never_fails_uncleanly(data) -> None:
    try:
        tensors, metadata = decode_tensors(data, source="fuzz")
    except CheckpointError as error:
        assert str(error).startswith("fuzz: ") and "\n" not in str(error)
        return
    assert isinstance(tensors, dict) and isinstance(metadata, dict)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_document_floats_are_refused_before_writing(tmp_path, value) -> None:
    with pytest.raises(ValueError, match="not valid JSON"):
        save_checkpoint(tmp_path / "c.safetensors", {}, {"loss": value})
    assert not (tmp_path / "c.safetensors").exists()
