"""rnnkit.save / rnnkit.load: round trips for every block, optimizer state, and hostile files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rnnkit
from rnnkit import (
    GRU,
    LSTM,
    RNN,
    Adam,
    Embedding,
    LastStep,
    Linear,
    MeanPool,
    Sequential,
    softmax_cross_entropy,
    tbptt_step,
)
from rnnkit.io import CheckpointError, save_checkpoint, save_tensors
from rnnkit.io.model import describe


def _blocks(dtype: Any) -> dict[str, tuple[Any, np.ndarray]]:
    """Every block kind with an input it accepts."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5, 4)).astype(dtype)
    return {
        "rnn_relu_bi_2": (RNN(4, 6, num_layers=2, nonlinearity="relu", bidirectional=True, dtype=dtype, seed=1), x),
        "lstm": (LSTM(4, 6, dtype=dtype, seed=2), x),
        "gru_bi": (GRU(4, 6, bidirectional=True, dtype=dtype, seed=3), x),
        "linear": (Linear(4, 2, dtype=dtype, seed=4), x),
        "embedding": (Embedding(7, 3, dtype=dtype, seed=5), rng.integers(0, 7, (3, 5))),
        "last_step": (LastStep(bidirectional=True), x),
        "mean_pool": (MeanPool(), x),
        "classifier": (Sequential([("rnn", LSTM(4, 6, bidirectional=True, dtype=dtype, seed=6)),
                                   ("last", LastStep(bidirectional=True)),
                                   ("head", Linear(12, 3, dtype=dtype, seed=7))]), x),
        "language_model": (Sequential([("embed", Embedding(7, 4, dtype=dtype, seed=8)),
                                       ("rnn", GRU(4, 6, num_layers=2, dtype=dtype, seed=9)),
                                       ("pool", MeanPool()),
                                       ("head", Linear(6, 7, dtype=dtype, seed=10))]), rng.integers(0, 7, (3, 5))),
    }


def _run(block: Any, x: np.ndarray) -> np.ndarray:
    lengths = np.array([5, 2, 4])
    if "state" in block.forward.__code__.co_varnames:
        return block.forward(x, lengths=lengths, keep_cache=False)[0]
    if "lengths" in block.forward.__code__.co_varnames:
        return block.forward(x, lengths=lengths)[0]
    return block.forward(x)[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(_blocks(np.float32)))
def test_round_trip_gives_identical_weights_and_outputs(tmp_path: Path, name: str, dtype: Any) -> None:
    block, x = _blocks(dtype)[name]
    path = rnnkit.save(block, tmp_path / "model.safetensors")
    loaded = rnnkit.load(path)
    assert type(loaded) is type(block) and repr(loaded) == repr(block)
    assert describe(loaded) == describe(block)
    assert list(loaded.params) == list(block.params)
    for key, value in block.params.items():
        assert loaded.params[key].dtype == value.dtype
        np.testing.assert_array_equal(loaded.params[key], value)
    np.testing.assert_array_equal(_run(loaded, x), _run(block, x))


def test_optimizer_state_round_trips_so_training_continues_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 5, (4, 6))
    targets = rng.integers(0, 5, (4, 6))

    def model() -> Sequential:
        return Sequential([("embed", Embedding(5, 3, dtype=np.float64, seed=0)),
                           ("rnn", LSTM(3, 4, dtype=np.float64, seed=1)), ("head", Linear(4, 5, dtype=np.float64))])

    original, opt = model(), Adam(lr=0.01)
    for _ in range(3):
        tbptt_step(original, softmax_cross_entropy, opt, ids, targets)
    rnnkit.save(original, tmp_path / "m.safetensors", optimizer=opt, metadata={"epoch": 3})
    resumed_opt = Adam()
    resumed = rnnkit.load(tmp_path / "m.safetensors", optimizer=resumed_opt)
    assert resumed_opt.step_count == 3 and resumed_opt.lr == 0.01
    for _ in range(2):
        a = tbptt_step(original, softmax_cross_entropy, opt, ids, targets)
        b = tbptt_step(resumed, softmax_cross_entropy, resumed_opt, ids, targets)
        assert a.loss == b.loss
    with pytest.raises(CheckpointError, match="holds no optimizer state"):
        rnnkit.save(original, tmp_path / "plain.safetensors")
        rnnkit.load(tmp_path / "plain.safetensors", optimizer=Adam())


def _write(tmp_path: Path, architecture: Any, weights: dict[str, np.ndarray] | None = None) -> Path:
    path = tmp_path / "hostile.safetensors"
    save_checkpoint(path, weights or {}, {"kind": "rnnkit.model", "architecture": architecture})
    return path


@pytest.mark.parametrize(
    ("architecture", "message"),
    [
        ({"type": "os.system", "command": "rm -rf /"}, r"unknown block type 'os.system'"),
        ({"type": "Linear", "in_features": 2, "out_features": 3, "dtype": "float32", "bias": False},
         r"unknown \['bias'\]"),
        ({"type": "Linear", "in_features": 2, "dtype": "float32"}, r"missing \['out_features'\]"),
        ({"type": "Linear", "in_features": "2", "out_features": 3, "dtype": "float32"},
         "option 'in_features' must be int"),
        ({"type": "LSTM", "input_size": 2, "hidden_size": 3, "num_layers": True, "bidirectional": False,
          "dtype": "float32"}, "option 'num_layers' must be int"),
        ({"type": "Linear", "in_features": 2, "out_features": 3, "dtype": "float16"}, "dtype must be one of"),
        ({"type": "Linear", "in_features": -2, "out_features": 3, "dtype": "float32"},
         "in_features must be a positive integer"),
        ({"type": "Sequential", "layers": [["a", {"type": "Pickle"}]]}, r"architecture.layers\[0\] \('a'\)"),
        ({"type": "Sequential", "layers": [["a.b", {"type": "MeanPool"}]]}, "without dots"),
        (["Linear"], "must be an object with a 'type' string"),
    ],
)
def test_load_refuses_unknown_or_malformed_architectures(tmp_path: Path, architecture: Any, message: str) -> None:
    with pytest.raises(CheckpointError, match=message):
        rnnkit.load(_write(tmp_path, architecture))


def test_load_refuses_weights_that_do_not_fit_and_files_that_are_not_models(tmp_path: Path) -> None:
    spec = {"type": "Linear", "in_features": 2, "out_features": 3, "dtype": "float32"}
    with pytest.raises(CheckpointError, match="do not fit the architecture.*missing keys"):
        rnnkit.load(_write(tmp_path, spec, {"weight": np.zeros((3, 2), np.float32)}))
    with pytest.raises(CheckpointError, match="do not fit the architecture.*'weight' has shape"):
        rnnkit.load(_write(tmp_path, spec, {"weight": np.zeros((2, 3), np.float32), "bias": np.zeros(3, np.float32)}))
    save_checkpoint(tmp_path / "other.safetensors", {}, {"config": {}})
    with pytest.raises(CheckpointError, match="not a model saved by rnnkit.save"):
        rnnkit.load(tmp_path / "other.safetensors")
    save_tensors(tmp_path / "plain.safetensors", {"w": np.zeros(2)})
    with pytest.raises(CheckpointError, match="not an rnnkit checkpoint"):
        rnnkit.load(tmp_path / "plain.safetensors")
    with pytest.raises(CheckpointError, match="not found|No such file|does not exist"):
        rnnkit.load(tmp_path / "missing.safetensors")


def test_save_refuses_blocks_it_could_not_rebuild(tmp_path: Path) -> None:
    class Custom(Linear):
        pass

    with pytest.raises(TypeError, match="cannot save a Custom"):
        rnnkit.save(Sequential([("head", Custom(2, 3))]), tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()


def test_the_file_is_plain_safetensors_with_the_models_names(tmp_path: Path) -> None:
    import safetensors.numpy

    model = _blocks(np.float32)["classifier"][0]
    rnnkit.save(model, tmp_path / "m.safetensors")
    tensors = safetensors.numpy.load_file(str(tmp_path / "m.safetensors"))
    assert set(tensors) == set(model.params)
    np.testing.assert_array_equal(tensors["head.weight"], model.params["head.weight"])


def test_load_refuses_a_damaged_file(tmp_path: Path) -> None:
    path = rnnkit.save(Linear(3, 2, seed=0), tmp_path / "m.safetensors")
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # one flipped byte in the weights
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        rnnkit.load(path)
    path.write_bytes(bytes(data[: len(data) // 2]))  # a truncated copy
    with pytest.raises(CheckpointError):
        rnnkit.load(path)


# ------------------------------------------------------------------ issue 10's blocks and options
def _regularized(dtype: Any) -> Sequential:
    """Every regularization and initialisation option issue 10 added, and a tied head."""
    return Sequential([
        ("embed", rnnkit.Embedding(9, 6, dtype=dtype, seed=1, dropout=0.25)),
        ("drop_in", rnnkit.Dropout(0.2, variational=True)),
        ("rnn", LSTM(6, 5, num_layers=2, dtype=dtype, seed=2, dropout=0.3, weight_drop=0.4, init_hh="orthogonal",
                     init_ih="xavier", forget_bias=1.5)),
        ("gru", GRU(5, 6, dtype=dtype, seed=3, bias=False)),
        ("rnn_plain", RNN(6, 6, nonlinearity="relu", dtype=dtype, seed=4, bias=False, dropout=0.1)),
        ("drop_out", rnnkit.Dropout(0.5)),
        ("head", Linear(6, 9, dtype=dtype, seed=5)),
    ], tied={"head.weight": "embed.weight"})


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_regularized_tied_model_round_trips_exactly(tmp_path: Path, dtype: Any) -> None:
    model = _regularized(dtype)
    path = rnnkit.save(model, tmp_path / "reg.safetensors")
    loaded = rnnkit.load(path)

    assert describe(loaded) == describe(model)
    assert repr(loaded.layers["rnn"]) == repr(model.layers["rnn"])
    assert sorted(loaded.params) == sorted(model.params)  # the follower head.weight is stored once, as the leader
    assert "head.weight" not in loaded.params
    for name, value in model.params.items():
        assert loaded.params[name].dtype == value.dtype
        np.testing.assert_array_equal(loaded.params[name], value)
    assert loaded.layers["gru"].params.keys() == {"weight_ih_l0", "weight_hh_l0"}  # bias=False: no bias arrays
    # The tie is live again: the head uses the embedding's array itself.
    assert loaded.layers["head"].params["weight"] is loaded.layers["embed"].params["weight"]

    ids = np.random.default_rng(0).integers(0, 9, (3, 7))
    # Inference: every dropout is off, bit for bit the same outputs.
    np.testing.assert_array_equal(loaded.forward(ids, keep_cache=False)[0], model.forward(ids, keep_cache=False)[0])
    # Training: the same generator state draws the same masks in both, so the same outputs and gradients.
    out_a, _, cache_a = model.forward(ids, training=True, rng=np.random.default_rng(7))
    out_b, _, cache_b = loaded.forward(ids, training=True, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(out_b, out_a)
    assert not np.array_equal(out_a, model.forward(ids, keep_cache=False)[0])  # the masks did act
    d_out = np.random.default_rng(1).standard_normal(out_a.shape).astype(dtype)
    grads_a = model.backward(d_out, None, cache_a)[2]
    grads_b = loaded.backward(d_out, None, cache_b)[2]
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        np.testing.assert_array_equal(grads_b[name], grads_a[name])


def test_files_without_the_new_options_load_with_their_defaults(tmp_path: Path) -> None:
    """An architecture written before the regularization options existed (none of them, no "tied")."""
    model = Sequential([("embed", Embedding(5, 4, seed=0)), ("rnn", LSTM(4, 3, seed=1)),
                        ("head", Linear(3, 5, seed=2))])
    architecture = describe(model)
    del architecture["tied"]
    for _, block in architecture["layers"]:
        for option in ("dropout", "bias", "weight_drop", "init_hh", "init_ih", "forget_bias"):
            block.pop(option, None)
    path = tmp_path / "old.safetensors"
    save_checkpoint(path, model.params, {"kind": "rnnkit.model", "architecture": architecture})
    loaded = rnnkit.load(path)
    assert describe(loaded) == describe(model)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda a: a["layers"][1][1].update(p=1.5), "p must be a probability"),
    (lambda a: a["layers"][1][1].update(p="0.5"), "'p' must be float"),
    (lambda a: a["layers"][2][1].update(bias="no"), "'bias' must be bool"),
    (lambda a: a["layers"][2][1].update(dropout=True), "'dropout' must be float"),
    (lambda a: a["layers"][2][1].update(forget_bias="1"), "'forget_bias' must be a number or null"),
    (lambda a: a["layers"][2][1].update(init_hh="zeros"), "init_hh"),
    (lambda a: a.update(tied={"head.weight": "nowhere.weight"}), "tied"),
    (lambda a: a.update(tied=["head.weight"]), "tied must be an object"),
])
def test_hostile_regularization_options_are_refused(tmp_path: Path, edit: Any, message: str) -> None:
    model = Sequential([("embed", Embedding(5, 4, seed=0)), ("drop", rnnkit.Dropout(0.5)),
                        ("rnn", LSTM(4, 4, seed=1)), ("head", Linear(4, 5, seed=2))],
                       tied={"head.weight": "embed.weight"})
    architecture = describe(model)
    edit(architecture)
    path = tmp_path / "edited.safetensors"
    save_checkpoint(path, model.params, {"kind": "rnnkit.model", "architecture": architecture})
    with pytest.raises(CheckpointError, match=message):
        rnnkit.load(path)
