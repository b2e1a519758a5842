"""Interop for the blocks of issues 10 and 11: pooling heads, Dropout, bias=False, tied parameters.

ONNX (run in onnxruntime) and torch conversions equal rnnkit's inference forward, with non-zero random
weights and biases, with and without lengths; a training-only option with no counterpart is named.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rnnkit
from rnnkit import GRU, LSTM, RNN, Dropout, Embedding, LastStep, Linear, MeanPool, Sequential

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

TOLERANCE = 1e-5
LENGTHS = np.array([5, 2, 4, 1])


def _randomize(model: Any, seed: int) -> Any:
    rng = np.random.default_rng(seed)
    for value in model.params.values():
        value[...] = rng.uniform(-0.6, 0.6, value.shape)
    return model


def _models() -> dict[str, tuple[Any, bool]]:
    """Models with the new blocks, and whether they read token ids."""
    return {
        "bi_last_step_no_bias": (Sequential([
            ("drop_in", Dropout(0.3)),
            ("rnn", LSTM(4, 6, num_layers=2, bidirectional=True, bias=False, dropout=0.2, weight_drop=0.3, seed=1)),
            ("last", LastStep(bidirectional=True)),
            ("drop_out", Dropout(0.5, variational=False)),
            ("head", Linear(12, 3, seed=2)),
        ]), False),
        "mean_pool_gru_no_bias": (Sequential([
            ("rnn", GRU(4, 6, num_layers=2, bias=False, seed=3)),
            ("pool", MeanPool()),
            ("head", Linear(6, 2, seed=4)),
        ]), False),
        "last_step_relu": (Sequential([("rnn", RNN(4, 5, nonlinearity="relu", bias=False, seed=5)),
                                       ("last", LastStep())]), False),
        "tied_language_model": (Sequential([
            ("embed", Embedding(9, 6, dropout=0.2, seed=6)),
            ("drop", Dropout(0.4, variational=True)),
            ("rnn", LSTM(6, 6, bias=False, seed=7)),
            ("head", Linear(6, 9, seed=8)),
        ], tied={"head.weight": "embed.weight"}), True),
    }


def _input(tokens: bool) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 9, (4, 5)) if tokens else rng.standard_normal((4, 5, 4)).astype(np.float32)


def _scale(want: np.ndarray) -> float:
    return max(1.0, float(np.abs(want).max()))


@pytest.mark.parametrize("name", list(_models()))
@pytest.mark.parametrize("with_lengths", [False, True])
def test_onnx_export_equals_inference_forward(tmp_path: Path, name: str, with_lengths: bool) -> None:
    model, tokens = _models()[name]
    _randomize(model, 11)
    x = _input(tokens)
    lengths = LENGTHS if with_lengths else None
    path = rnnkit.export_onnx(model, tmp_path / f"{name}.onnx", with_lengths=with_lengths)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds: dict[str, Any] = {"tokens" if tokens else "x": x}
    if with_lengths:
        feeds["lengths"] = LENGTHS
    got = session.run(["out"], feeds)[0]
    want = model.forward(x, lengths=lengths, keep_cache=False)[0]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=TOLERANCE * _scale(want))


def test_onnx_recurrent_without_bias_leaves_out_the_b_input(tmp_path: Path) -> None:
    path = rnnkit.export_onnx(GRU(3, 4, bias=False, seed=0), tmp_path / "gru.onnx")
    graph = onnx.load(str(path)).graph
    (node,) = [n for n in graph.node if n.op_type == "GRU"]
    assert len(node.input) == 3  # X, W, R: no B (ONNX reads an absent B as zeros)
    assert not any("B_l0" in init.name for init in graph.initializer)


def test_onnx_refuses_a_sequence_block_after_a_pooling_head(tmp_path: Path) -> None:
    model = Sequential([("rnn", LSTM(3, 4, seed=0)), ("last", LastStep()), ("pool", MeanPool())])
    with pytest.raises(TypeError, match="'pool'.*'last' has already pooled"):
        rnnkit.export_onnx(model, tmp_path / "bad.onnx")


@pytest.mark.parametrize("name", list(_models()))
def test_torch_round_trip_equals_inference_forward(name: str) -> None:
    model, tokens = _models()[name]
    _randomize(model, 12)
    x = _input(tokens)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # weight_drop / embedding dropout / variational: tested below
        module = rnnkit.to_torch(model).eval()
    for lengths in (None, LENGTHS):
        want = model.forward(x, lengths=lengths, keep_cache=False)[0]
        got = module(torch.from_numpy(x), lengths=None if lengths is None else torch.from_numpy(lengths))[0]
        np.testing.assert_allclose(got.detach().numpy(), want, rtol=0, atol=TOLERANCE * _scale(want))

    back = rnnkit.from_torch(module)
    assert list(back.layers) == list(model.layers)
    assert [type(b) for b in back.layers.values()] == [type(b) for b in model.layers.values()]
    assert back.tied == model.tied
    assert sorted(back.params) == sorted(model.params)
    for key, value in model.params.items():
        np.testing.assert_array_equal(back.params[key], value)
    np.testing.assert_array_equal(back.forward(x, lengths=LENGTHS, keep_cache=False)[0],
                                  model.forward(x, lengths=LENGTHS, keep_cache=False)[0])


def test_torch_keeps_bias_false_dropout_and_ties() -> None:
    model = _models()["tied_language_model"][0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = rnnkit.to_torch(model)
    assert module.head.weight is module.embed.weight  # one shared Parameter: training keeps them tied
    assert module.rnn.bias is False and "bias_ih_l0" not in dict(module.rnn.named_parameters())
    assert isinstance(module.drop, torch.nn.Dropout) and module.drop.p == 0.4
    stacked = rnnkit.to_torch(LSTM(3, 4, num_layers=3, dropout=0.25, seed=0))
    assert stacked.dropout == 0.25
    assert rnnkit.from_torch(stacked).dropout == 0.25


def test_torch_names_the_training_options_it_leaves_out() -> None:
    with pytest.warns(UserWarning, match=r"LSTM\(weight_drop=0.3\)"):
        rnnkit.to_torch(LSTM(3, 4, weight_drop=0.3, seed=0))
    with pytest.warns(UserWarning, match=r"Embedding\(dropout=0.2\)"):
        rnnkit.to_torch(Embedding(5, 3, dropout=0.2, seed=0))
    with pytest.warns(UserWarning, match=r"Dropout\(variational=True\)"):
        rnnkit.to_torch(Dropout(0.5, variational=True))
