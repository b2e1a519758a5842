"""to_torch / from_torch round trips equal to 1e-6 in float32 (outputs and states); weight files written by
PyTorch: safetensors without torch, .pt only through torch.load(weights_only=True), never unpickled by rnnkit."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import LAYER_KINDS, build_layer, build_random_state

from rnnkit import GRU, LSTM, Embedding, Linear, Sequential, from_torch, load_state_dict_file, to_torch
from rnnkit.io.checkpoint import CheckpointError, save_checkpoint, save_tensors

torch = pytest.importorskip("torch")

TOLERANCE = 1e-6


def randomize(model: Any, rng: np.random.Generator) -> None:
    for value in model.params.values():
        value[...] = rng.uniform(-0.6, 0.6, value.shape)


def as_tuple(state: Any) -> tuple[Any, ...]:
    return state if isinstance(state, tuple) else (state,)


def to_numpy(state: Any) -> tuple[np.ndarray, ...]:
    return tuple(s.detach().numpy() for s in as_tuple(state))


def assert_close(actual: Any, expected: Any) -> None:
    for a, e in zip(as_tuple(actual), as_tuple(expected), strict=True):
        a = a.detach().numpy() if isinstance(a, torch.Tensor) else a
        assert a.shape == e.shape and a.dtype == e.dtype
        np.testing.assert_allclose(a, e, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("kind", LAYER_KINDS)
@pytest.mark.parametrize(("num_layers", "bidirectional"), [(1, False), (2, True)])
def test_layer_round_trip(kind, num_layers, bidirectional) -> None:
    rng = np.random.default_rng(0)
    layer = build_layer(kind, 3, 5, num_layers, bidirectional, dtype=np.float32, seed=1)
    randomize(layer, rng)
    module = to_torch(layer)
    assert module.batch_first and module.num_layers == num_layers and module.bidirectional == bidirectional
    assert module.weight_ih_l0.dtype == torch.float32 and module.training

    x = rng.standard_normal((4, 6, 3)).astype(np.float32)
    state = build_random_state(layer, 4, rng)
    out, final, _ = layer.forward(x, state=state)
    torch_state = tuple(torch.from_numpy(s) for s in as_tuple(state))
    with torch.no_grad():
        torch_out, torch_final = module(torch.from_numpy(x), torch_state if kind == "lstm" else torch_state[0])
    assert_close(torch_out, out)
    assert_close(torch_final, final)

    back = from_torch(module)
    assert type(back) is type(layer) and back.params.keys() == layer.params.keys()
    for name, value in layer.params.items():
        assert np.array_equal(back.params[name], value) and not np.shares_memory(back.params[name], value)
    out_back, final_back, _ = back.forward(x, state=state)
    assert_close(out_back, out)
    assert_close(final_back, final)
    assert getattr(back, "nonlinearity", None) == getattr(layer, "nonlinearity", None)


def test_from_torch_keeps_torch_initialised_weights_and_float64() -> None:
    torch.manual_seed(0)
    module = torch.nn.GRU(3, 4, num_layers=2, batch_first=True, dtype=torch.float64)
    layer = from_torch(module)
    assert layer.dtype == np.float64
    x = np.random.default_rng(1).standard_normal((2, 5, 3))
    with torch.no_grad():
        expected, h_n = module(torch.from_numpy(x))
    out, final, _ = layer.forward(x)
    np.testing.assert_allclose(out, expected.numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(final, h_n.numpy(), rtol=0, atol=1e-12)


def char_model(rng: np.random.Generator) -> Sequential:
    model = Sequential([("embed", Embedding(10, 4, seed=0)), ("rnn", LSTM(4, 6, num_layers=2, bidirectional=True,
                                                                              seed=1)),
                        ("head", Linear(12, 10, seed=2))])
    randomize(model, rng)
    return model


def test_sequential_round_trip_with_lengths_and_state() -> None:
    rng = np.random.default_rng(2)
    model = char_model(rng)
    module = to_torch(model)
    assert list(module.state_dict()) == list(model.params)  # the same dotted names, in the same order

    tokens = rng.integers(0, 10, (3, 7))
    lengths = np.array([7, 2, 5])
    state = {"rnn": build_random_state(model["rnn"], 3, rng)}
    out, final, _ = model.forward(tokens, state=state, lengths=lengths)
    torch_state = {"rnn": tuple(torch.from_numpy(s) for s in state["rnn"])}
    with torch.no_grad():
        torch_out, torch_final = module(torch.from_numpy(tokens), torch_state, torch.from_numpy(lengths))
    assert_close(torch_out, out)  # padded positions included: the head's bias on zeros
    assert_close(torch_final["rnn"], final["rnn"])

    back = from_torch(module)
    assert list(back.layers) == ["embed", "rnn", "head"]
    out_back, final_back, _ = back.forward(tokens, state=state, lengths=lengths)
    assert_close(out_back, out)
    assert_close(final_back["rnn"], final["rnn"])


def test_from_torch_containers_and_wrappers() -> None:
    torch.manual_seed(1)
    blocks = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    model = from_torch(blocks)
    assert list(model.layers) == ["0", "1"]
    x = np.random.default_rng(3).standard_normal((2, 5, 3)).astype(np.float32)
    with torch.no_grad():
        assert_close(blocks(torch.from_numpy(x)), model.forward(x)[0])

    named = torch.nn.ModuleDict({"embed": torch.nn.Embedding(6, 3), "rnn": torch.nn.RNN(3, 4, batch_first=True)})
    assert list(from_torch(torch.nn.DataParallel(named)).layers) == ["embed", "rnn"]


def test_from_torch_drops_training_only_options() -> None:
    """Dropout between layers and padding_idx act only in training: the inference function is the same."""
    torch.manual_seed(2)
    module = torch.nn.LSTM(3, 4, num_layers=2, dropout=0.5, batch_first=False).eval()
    layer = from_torch(module)
    x = np.random.default_rng(4).standard_normal((2, 5, 3)).astype(np.float32)  # (B, T, I): rnnkit is batch-first
    with torch.no_grad():
        expected, _ = module(torch.from_numpy(x.transpose(1, 0, 2).copy()))
    assert_close(layer.forward(x)[0], expected.numpy().transpose(1, 0, 2))
    embedding = torch.nn.Embedding(5, 2, padding_idx=0)
    assert np.array_equal(from_torch(embedding).params["weight"], embedding.weight.detach().numpy())


class OwnLSTM(torch.nn.LSTM):
    pass


@pytest.mark.parametrize(("module", "error", "fragment"), [
    (torch.nn.Linear(2, 3, bias=False), ValueError, "rnnkit's Linear always has a bias"),
    (torch.nn.Embedding(4, 2, max_norm=1.0), ValueError, "max_norm=1.0) has no rnnkit equivalent"),
    (torch.nn.GRU(2, 3).half(), ValueError, "dtype ['float16']"),
    (torch.nn.Conv1d(2, 3, 1), TypeError, "cannot convert torch.nn.modules.conv.Conv1d to rnnkit"),
    (OwnLSTM(2, 3), TypeError, "cannot convert"),
    (torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU()), TypeError, "block '1': cannot convert"),
    (torch.nn.Sequential(), ValueError, "has no blocks"),
    ("not a module", TypeError, "module must be a torch.nn.Module, got str"),
])
def test_from_torch_refuses_what_rnnkit_cannot_compute(module, error, fragment) -> None:
    with pytest.raises(error) as raised:
        from_torch(module)
    assert fragment in str(raised.value)


def test_from_torch_converts_recurrent_layers_without_bias() -> None:
    """bias=False (issue 10) has an rnnkit equivalent now: the layer has no bias arrays, as torch's."""
    module = torch.nn.GRU(2, 3, bias=False, batch_first=True)
    layer = from_torch(module)
    assert layer.bias is False and sorted(layer.params) == ["weight_hh_l0", "weight_ih_l0"]
    x = np.random.default_rng(0).standard_normal((2, 4, 2)).astype(np.float32)
    np.testing.assert_allclose(layer.forward(x, keep_cache=False)[0],
                               module(torch.from_numpy(x))[0].detach().numpy(), rtol=0, atol=TOLERANCE)


def test_to_torch_refuses_what_it_cannot_convert() -> None:
    with pytest.raises(TypeError, match="cannot convert str to PyTorch"):
        to_torch("model")
    with pytest.raises(ValueError, match="block name 'training' clashes with an attribute of torch.nn.Module"):
        to_torch(Sequential([("training", Linear(2, 2))]))


# --------------------------------------------------------------------------------------------------
# load_state_dict_file
# --------------------------------------------------------------------------------------------------


def test_pt_file_made_by_torch_loads(tmp_path) -> None:
    torch.manual_seed(3)
    module = torch.nn.Sequential(torch.nn.Embedding(5, 3), torch.nn.Linear(3, 2))
    module.add_module("rnn", torch.nn.GRU(2, 4, batch_first=True))
    torch.save(module.state_dict(), tmp_path / "model.pt")
    tensors = load_state_dict_file(tmp_path / "model.pt")
    assert list(tensors) == list(module.state_dict())
    model = Sequential([("0", Embedding(5, 3)), ("1", Linear(3, 2)), ("rnn", GRU(2, 4))])
    model.load_state_dict(tensors)
    for name, value in module.state_dict().items():
        assert np.array_equal(model.params[name], value.numpy())


def test_bfloat16_tensors_come_back_as_float32(tmp_path) -> None:
    torch.save({"w": torch.tensor([1.5, -2.25], dtype=torch.bfloat16)}, tmp_path / "w.pth")
    tensors = load_state_dict_file(tmp_path / "w.pth")
    assert tensors["w"].dtype == np.float32 and tensors["w"].tolist() == [1.5, -2.25]


def test_safetensors_written_by_pytorch_load_without_torch(tmp_path) -> None:
    safetensors_torch = pytest.importorskip("safetensors.torch")
    torch.manual_seed(4)
    module = torch.nn.LSTM(3, 4, num_layers=2, batch_first=True)
    safetensors_torch.save_file(module.state_dict(), str(tmp_path / "lstm.safetensors"))
    script = (
        "import sys; sys.modules['torch'] = None\n"  # any import of torch now fails
        "import numpy as np, rnnkit\n"
        f"tensors = rnnkit.load_state_dict_file({str(tmp_path / 'lstm.safetensors')!r})\n"
        "layer = rnnkit.LSTM(3, 4, num_layers=2); layer.load_state_dict(tensors)\n"
        f"np.savez({str(tmp_path / 'out.npz')!r}, **layer.params)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    with np.load(tmp_path / "out.npz") as saved:
        for name, value in module.state_dict().items():
            assert np.array_equal(saved[name], value.numpy())


def test_pt_file_without_torch_is_a_one_line_error(tmp_path, monkeypatch) -> None:
    torch.save({"w": torch.zeros(2)}, tmp_path / "w.pt")
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(CheckpointError) as raised:
        load_state_dict_file(tmp_path / "w.pt")
    message = str(raised.value)
    assert "\n" not in message and "torch is not installed" in message and "safetensors" in message


class _Payload:
    """Unpickling this would run os.system: rnnkit must never do it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_with_code_is_refused_and_never_run(tmp_path) -> None:
    marker = tmp_path / "ran"
    for suffix, data in ((".pt", None), (".pkl", pickle.dumps({"w": _Payload(marker)}, protocol=2))):
        path = tmp_path / f"evil{suffix}"
        if data is None:
            torch.save({"w": torch.zeros(2), "x": _Payload(marker)}, path)
        else:
            path.write_bytes(data)
        with pytest.raises(CheckpointError, match=r"torch.load\(weights_only=True\) cannot read it") as raised:
            load_state_dict_file(path)
        assert "\n" not in str(raised.value)
    assert not marker.exists()


def test_rnnkit_checkpoint_gives_its_weights_only(tmp_path) -> None:
    weights = {"rnn.weight": np.ones((2, 2), np.float32)}
    save_checkpoint(tmp_path / "c.safetensors", weights, {"optimizer": {"m": np.zeros(3)}})
    tensors = load_state_dict_file(tmp_path / "c.safetensors")
    assert list(tensors) == ["rnn.weight"] and np.array_equal(tensors["rnn.weight"], weights["rnn.weight"])


@pytest.mark.parametrize(("make", "fragment"), [
    (lambda p: None, "no such file"),
    (lambda p: p.mkdir(), "is a directory"),
    (lambda p: p.write_bytes(b"hello world, not weights"), "neither a safetensors file nor a PyTorch"),
    (lambda p: p.write_bytes(b""), "neither a safetensors file nor a PyTorch"),
    (lambda p: p.write_bytes((100).to_bytes(8, "little") + b"{\"a\": 1}"), "truncated"),
    (lambda p: torch.save({"state_dict": {"w": torch.zeros(1)}}, p), "not a flat state dict (keys ['state_dict'])"),
    (lambda p: torch.save([torch.zeros(1)], p), "holds a list, not a state dict"),
])
def test_bad_weight_files_get_one_line_errors(tmp_path, make, fragment) -> None:
    path = tmp_path / "weights.bin"
    make(path)
    with pytest.raises(CheckpointError) as raised:
        load_state_dict_file(path)
    assert fragment in str(raised.value) and "\n" not in str(raised.value)


def test_plain_safetensors_round_trip(tmp_path) -> None:
    layer = GRU(2, 3, seed=0)
    save_tensors(tmp_path / "gru.safetensors", layer.params)
    back = GRU(2, 3, seed=1)
    back.load_state_dict(load_state_dict_file(tmp_path / "gru.safetensors"))
    assert all(np.array_equal(back.params[k], v) for k, v in layer.params.items())


def test_feed_forward_blocks_convert_alone() -> None:
    rng = np.random.default_rng(5)
    linear, embedding = Linear(3, 2, seed=0), Embedding(6, 3, dtype=np.float64, seed=0)
    randomize(linear, rng)
    x = rng.standard_normal((2, 4, 3)).astype(np.float32)
    with torch.no_grad():
        assert_close(to_torch(linear)(torch.from_numpy(x)), linear.forward(x)[0])
        ids = rng.integers(0, 6, (2, 4))
        module = to_torch(embedding)
        assert isinstance(module, torch.nn.Embedding) and module.weight.dtype == torch.float64
        assert np.array_equal(module(torch.from_numpy(ids)).numpy(), embedding.forward(ids)[0])
