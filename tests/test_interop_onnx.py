"""ONNX export: the exported graph, run in onnxruntime, equals rnnkit's forward; one-line errors for bad input.

Random configurations (hypothesis): cell x 1-2 layers x bidirectional x lengths x initial state x
Embedding / Linear around the recurrent layer, with non-zero random biases and states.  float32
results agree to 1e-5 relative to the output's scale, padded positions included.  A float64 export
is checked against onnx's reference evaluator (onnxruntime runs the recurrent ops in float32 only).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest
from conftest import LAYER_KINDS, build_layer, build_random_state
from hypothesis import given, settings
from hypothesis import strategies as st

import rnnkit
from rnnkit import GRU, LSTM, RNN, Embedding, Linear, Sequential, export_onnx
from rnnkit.interop import onnx as onnx_export

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

RELATIVE = 1e-5


def session(path: Any) -> Any:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # the test machine is shared
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def randomize(model: Any, rng: np.random.Generator) -> None:
    """Non-zero random weights and biases in place (zero biases hide bias bugs)."""
    for value in model.params.values():
        value[...] = rng.uniform(-0.6, 0.6, value.shape)


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    return float(np.abs(actual - expected).max() / max(1.0, float(np.abs(expected).max())))


def as_tuple(state: Any) -> tuple[np.ndarray, ...]:
    return state if isinstance(state, tuple) else (state,)


@settings(max_examples=40, deadline=None)
@given(
    kind=st.sampled_from(LAYER_KINDS),
    num_layers=st.integers(1, 2),
    bidirectional=st.booleans(),
    with_lengths=st.booleans(),
    with_state=st.booleans(),
    front=st.sampled_from(["none", "embedding", "linear"]),
    head=st.booleans(),
    batch=st.integers(1, 4),
    steps=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_random_configurations_equal_rnnkit(tmp_path_factory, kind, num_layers, bidirectional, with_lengths,
                                            with_state, front, head, batch, steps, seed) -> None:
    rng = np.random.default_rng(seed)
    I, H, V = 3, 4, 7
    rnn = build_layer(kind, I, H, num_layers, bidirectional, dtype=np.float32, seed=seed)
    blocks: list[tuple[str, Any]] = []
    if front == "embedding":
        blocks.append(("embed", Embedding(V, I, seed=seed)))
    elif front == "linear":
        blocks.append(("proj", Linear(5, I, seed=seed)))
    blocks.append(("rnn", rnn))
    if head:
        blocks.append(("head", Linear(rnn.num_directions * H, V, seed=seed)))
    bare = len(blocks) == 1
    model = rnn if bare else Sequential(blocks)
    randomize(model, rng)

    if front == "embedding":
        x = rng.integers(0, V, (batch, steps))
        feeds = {"tokens": x.astype(np.int64)}
    else:
        x = rng.standard_normal((batch, steps, 5 if front == "linear" else I)).astype(np.float32)
        feeds = {"x": x}
    lengths = rng.integers(1, steps + 1, batch) if with_lengths else None
    if lengths is not None:
        lengths[rng.integers(batch)] = steps  # T is the longest length, as in a padded batch
        feeds["lengths"] = lengths.astype(np.int64)
    state = build_random_state(rnn, batch, rng) if with_state else None
    if with_state:
        prefix = "" if bare else "rnn."
        feeds.update({f"{prefix}{s}0": a for s, a in zip(rnn.cell.state_names, as_tuple(state), strict=True)})

    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(model, path, with_lengths=with_lengths, with_state=with_state)
    sess = session(path)
    results = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds), strict=True))

    if bare:
        out, final, _ = rnn.forward(x, state=state, lengths=lengths, keep_cache=False)
        expected_names = ["out", *(f"{s}_n" for s in rnn.cell.state_names)]
    else:
        out, finals, _ = model.forward(x, state=None if state is None else {"rnn": state}, lengths=lengths,
                                       keep_cache=False)
        final = finals["rnn"]
        expected_names = ["out", *(f"rnn.{s}_n" for s in rnn.cell.state_names)]
    assert [o.name for o in sess.get_outputs()] == expected_names
    assert relative_error(results["out"], out) < RELATIVE
    for name, value in zip(expected_names[1:], as_tuple(final), strict=True):
        assert relative_error(results[name], value) < RELATIVE


@pytest.mark.parametrize("kind", ["rnn_tanh", "lstm", "gru"])  # the reference evaluator has no Relu RNN
def test_float64_export_equals_rnnkit_in_the_reference_evaluator(tmp_path, kind) -> None:
    """onnxruntime has no float64 recurrent kernels; onnx's reference evaluator checks the float64 graph."""
    from onnx.reference import ReferenceEvaluator

    rng = np.random.default_rng(1)
    layer = build_layer(kind, 3, 4, num_layers=2, bidirectional=True, dtype=np.float64, seed=2)
    randomize(layer, rng)
    x = rng.standard_normal((2, 5, 3))
    state = build_random_state(layer, 2, rng)
    export_onnx(layer, tmp_path / "m.onnx", with_state=True)
    feeds = {"x": x, **{f"{s}0": a for s, a in zip(layer.cell.state_names, as_tuple(state), strict=True)}}
    got = ReferenceEvaluator(str(tmp_path / "m.onnx")).run(None, feeds)
    out, final, _ = layer.forward(x, state=state)
    for actual, expected in zip(got, (out, *as_tuple(final)), strict=True):
        np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-12)


def test_float64_model_exported_as_float32_runs_in_onnxruntime(tmp_path) -> None:
    rng = np.random.default_rng(2)
    layer = GRU(3, 4, dtype=np.float64, seed=0)
    randomize(layer, rng)
    export_onnx(layer, tmp_path / "m.onnx", dtype=np.float32)
    x = rng.standard_normal((2, 5, 3))
    out = session(tmp_path / "m.onnx").run(["out"], {"x": x.astype(np.float32)})[0]
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, layer.forward(x)[0], rtol=0, atol=1e-6)


def test_one_file_serves_any_batch_and_length(tmp_path) -> None:
    rng = np.random.default_rng(3)
    model = Sequential([("embed", Embedding(11, 4, seed=0)), ("rnn", LSTM(4, 6, num_layers=2, seed=1)),
                        ("head", Linear(6, 11, seed=2))])
    randomize(model, rng)
    export_onnx(model, tmp_path / "m.onnx", with_lengths=True)
    proto = onnx.load(str(tmp_path / "m.onnx"))
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input}
    assert dims == {"tokens": ["B", "T"], "lengths": ["B"]}
    assert [o.name for o in proto.graph.output] == ["out", "rnn.h_n", "rnn.c_n"]
    sess = session(tmp_path / "m.onnx")
    for batch, steps in ((1, 1), (5, 9), (2, 30)):
        tokens = rng.integers(0, 11, (batch, steps))
        lengths = rng.integers(1, steps + 1, batch)
        out, h_n, c_n = sess.run(None, {"tokens": tokens, "lengths": lengths})
        expected, final, _ = model.forward(tokens, lengths=lengths, keep_cache=False)
        assert relative_error(out, expected) < RELATIVE
        assert relative_error(h_n, final["rnn"][0]) < RELATIVE and relative_error(c_n, final["rnn"][1]) < RELATIVE


def test_generation_token_by_token_with_state(tmp_path) -> None:
    """Feeding each step's final state back in gives what one pass over the whole sequence gives."""
    rng = np.random.default_rng(4)
    model = Sequential([("embed", Embedding(9, 4, seed=0)), ("rnn", GRU(4, 5, num_layers=2, seed=1)),
                        ("head", Linear(5, 9, seed=2))])
    randomize(model, rng)
    export_onnx(model, tmp_path / "m.onnx", with_state=True)
    sess = session(tmp_path / "m.onnx")
    tokens = rng.integers(0, 9, (1, 12))
    h = np.zeros((2, 1, 5), np.float32)
    steps = []
    for t in range(12):
        out, h = sess.run(["out", "rnn.h_n"], {"tokens": tokens[:, t:t + 1], "rnn.h0": h})
        steps.append(out)
    expected, final, _ = model.forward(tokens, keep_cache=False)
    assert relative_error(np.concatenate(steps, axis=1), expected) < RELATIVE
    assert relative_error(h, final["rnn"]) < RELATIVE


def test_relu_rnn_and_opset_11(tmp_path) -> None:
    rng = np.random.default_rng(5)
    layer = RNN(3, 4, num_layers=2, nonlinearity="relu", bidirectional=True, seed=0)
    randomize(layer, rng)
    export_onnx(layer, tmp_path / "m.onnx", opset=11, with_lengths=True)
    assert onnx.load(str(tmp_path / "m.onnx")).opset_import[0].version == 11
    x = rng.standard_normal((3, 4, 3)).astype(np.float32)
    lengths = np.array([4, 1, 3])
    out, h_n = session(tmp_path / "m.onnx").run(None, {"x": x, "lengths": lengths})
    expected, final, _ = layer.forward(x, lengths=lengths)
    assert relative_error(out, expected) < RELATIVE and relative_error(h_n, final) < RELATIVE
    assert np.all(out[1, 1:] == 0)  # padded positions are exactly zero, as in rnnkit


def test_metadata_and_producer(tmp_path) -> None:
    export_onnx(LSTM(2, 3, seed=0), tmp_path / "m.onnx", metadata={"vocab": '["a", "b"]'})
    proto = onnx.load(str(tmp_path / "m.onnx"))
    assert {p.key: p.value for p in proto.metadata_props} == {"vocab": '["a", "b"]'}
    assert proto.producer_name == "rnnkit" and proto.producer_version == rnnkit.__version__


def test_large_models_keep_their_weights_beside_the_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_BYTES", 0)
    layer = LSTM(3, 32, seed=0)
    export_onnx(layer, tmp_path / "m.onnx")
    assert (tmp_path / "m.onnx.data").stat().st_size >= layer.params["weight_hh_l0"].nbytes
    x = np.random.default_rng(6).standard_normal((2, 3, 3)).astype(np.float32)
    out = session(tmp_path / "m.onnx").run(["out"], {"x": x})[0]
    assert relative_error(out, layer.forward(x)[0]) < RELATIVE


class _Custom:
    params: dict[str, np.ndarray] = {}

    def forward(self, x: Any) -> Any:
        return x, None

    def backward(self, d: Any, cache: Any) -> Any:
        return d, {}


@pytest.mark.parametrize(("model", "options", "error", "fragment"), [
    (Linear(2, 3), {}, TypeError, "recurrent layer (RNN, LSTM, GRU) or a Sequential, got Linear"),
    (Sequential([("rnn", GRU(2, 3)), ("odd", _Custom())]), {}, TypeError, "block 'odd': cannot export _Custom"),
    (Sequential([("rnn", GRU(2, 3)), ("embed", Embedding(4, 3))]), {}, TypeError,
     "block 'embed': a Embedding reads token ids, so it can only be the first block"),
    (GRU(2, 3), {"opset": 9}, ValueError, "opset must be an integer from 11 to"),
    (GRU(2, 3), {"opset": 10_000}, ValueError, "opset must be an integer from 11 to"),
    (GRU(2, 3), {"dtype": np.float16}, ValueError, "dtype must be float32 or float64"),
    (GRU(2, 3), {"with_lengths": "yes"}, ValueError, "with_lengths must be True or False"),
    (GRU(2, 3), {"metadata": {"k": 1}}, ValueError, "metadata must map strings to strings"),
    (Sequential([("a", Linear(2, 3)), ("b", Linear(3, 2))]), {"with_state": True}, ValueError,
     "with_lengths and with_state need a recurrent block"),
])
def test_bad_exports_name_the_problem_and_write_nothing(tmp_path, model, options, error, fragment) -> None:
    target = tmp_path / "m.onnx"
    target.write_bytes(b"previous")
    with pytest.raises(error, match=None) as raised:
        export_onnx(model, target, **options)
    assert fragment in str(raised.value)
    assert target.read_bytes() == b"previous"


def test_without_onnx_installed_the_error_says_how_to_get_it(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'rnnkit\[onnx\]'"):
        export_onnx(GRU(2, 3), tmp_path / "m.onnx")


def test_gate_blocks_move_to_onnx_order() -> None:
    """Rows labelled by gate: LSTM i,f,g,o -> ONNX i,o,f,c; GRU r,z,n -> ONNX z,r,h; RNN unchanged."""
    H = 2
    lstm = np.repeat(np.arange(4), H)  # [i i f f g g o o]
    assert onnx_export._reorder_gates(lstm, "lstm").tolist() == [0, 0, 3, 3, 1, 1, 2, 2]
    gru = np.repeat(np.arange(3), H)[:, None] * np.ones((1, 3))  # a (3H, I) weight
    assert onnx_export._reorder_gates(gru, "gru")[:, 0].tolist() == [1, 1, 0, 0, 2, 2]
    assert onnx_export._reorder_gates(np.arange(H), "rnn").tolist() == [0, 1]
