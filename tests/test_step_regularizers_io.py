"""proj_size, recurrent dropout and zoneout beyond the layer: Sequential, save/load, interop, the char-LM.

``--resume`` stays bit-exact with the in-loop masks on (they come from the trainer's generator,
whose state the checkpoint stores); the CLI flags reach the saved config; ``rnnkit.save`` /
``load`` round-trip the options exactly; the exports refuse what they cannot compute.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from test_charlm_train import assert_same_run, config, run, trajectory, write_words

import rnnkit
from rnnkit import GRU, LSTM, RNN, Embedding, LastStep, Linear, Sequential
from rnnkit.charlm.model import CharLM, ModelConfig, count_parameters, load_model
from rnnkit.cli import main

IN_LOOP = dict(recurrent_dropout=0.2, zoneout=0.1, proj_size=6, hidden=10, embed_dim=6, layers=2)


def test_resume_is_exact_with_recurrent_dropout_zoneout_and_projection(tmp_path) -> None:
    data = write_words(tmp_path / "words.txt", 110)
    straight = run(config(tmp_path, data, "straight", **IN_LOOP, tie_weights=True))
    assert straight.step == 20
    run(config(tmp_path, data, "split", steps=10, **IN_LOOP, tie_weights=True))
    run(config(tmp_path, data, "split", steps=20, resume=True), explicit={"steps", "resume", "out"})
    assert_same_run(tmp_path / "split", tmp_path / "straight")
    # The masks really were on: the same run without them has other losses.
    run(config(tmp_path, data, "plain", **{**IN_LOOP, "recurrent_dropout": 0.0, "zoneout": 0.0}, tie_weights=True))
    assert trajectory(tmp_path / "plain")[0] != trajectory(tmp_path / "straight")[0]
    model = load_model(tmp_path / "split" / "latest.safetensors").model
    rnn = model.net["rnn"]
    assert (rnn.proj_size, rnn.recurrent_dropout, rnn.zoneout) == (6, 0.2, 0.1)
    assert model.net["head"].params["weight"].shape == (model.config.vocab_size, 6)


def test_cli_flags_reach_the_config(tmp_path, capsys) -> None:
    data = write_words(tmp_path / "words.txt", 110)
    out = tmp_path / "cli"
    status = main(["train", "--data", str(data), "--out", str(out), "--steps", "2", "--eval-every", "2",
                   "--hidden", "8", "--embed-dim", "8", "--seq-len", "8", "--batch-size", "4", "--sample-every", "0",
                   "--no-progress", "--recurrent-dropout", "0.3", "--zoneout", "0.15", "--proj-size", "5"])
    assert status == 0
    saved = json.loads((out / "config.json").read_text())
    assert (saved["recurrent_dropout"], saved["zoneout"], saved["proj_size"]) == (0.3, 0.15, 5)
    capsys.readouterr()
    for flags, message in ((["--cell", "gru", "--recurrent-dropout", "0.1"], "not available for the GRU"),
                           (["--proj-size", "8"], "proj_size must be smaller than hidden"),
                           (["--cell", "gru", "--proj-size", "2"], "proj_size is an LSTM option"),
                           (["--zoneout", "1"], "zoneout must be a probability")):
        status = main(["train", "--data", str(data), "--out", str(tmp_path / "bad"), "--hidden", "8", *flags])
        err = capsys.readouterr().err
        assert status == 2 and err.count("\n") == 1 and message in err, (flags, err)


def test_charlm_evaluation_with_zoneout_is_deterministic() -> None:
    config = ModelConfig(vocab_size=6, hidden=8, embed_dim=8, layers=2, zoneout=0.3, recurrent_dropout=0.3,
                         proj_size=3)
    model = CharLM(config, seed=0)
    assert count_parameters(config) == model.num_parameters()  # the memory check's arithmetic
    ids = np.random.default_rng(0).integers(0, 6, (2, 7))
    np.testing.assert_array_equal(model.net.forward(ids)[0], model.net.forward(ids)[0])


def test_save_load_round_trips_the_options(tmp_path) -> None:
    model = Sequential([
        ("embed", Embedding(9, 5, seed=0)),
        ("lstm", LSTM(5, 8, 2, bidirectional=True, seed=1, proj_size=3, recurrent_dropout=0.25, zoneout=0.1)),
        ("rnn", RNN(6, 4, seed=2, recurrent_dropout=0.3)),
        ("gru", GRU(4, 4, seed=3, zoneout=0.2)),
        ("last", LastStep()),
        ("head", Linear(4, 2, seed=4)),
    ])
    rnnkit.save(model, tmp_path / "m.safetensors")
    back = rnnkit.load(tmp_path / "m.safetensors")
    assert repr(back) == repr(model)
    lstm = back["lstm"]
    assert (lstm.proj_size, lstm.recurrent_dropout, lstm.zoneout) == (3, 0.25, 0.1)
    assert back["gru"].zoneout == 0.2 and back["rnn"].recurrent_dropout == 0.3
    ids = np.random.default_rng(0).integers(0, 9, (3, 7))
    np.testing.assert_array_equal(back.forward(ids)[0], model.forward(ids)[0])
    a = model.forward(ids, training=True, rng=np.random.default_rng(5))[0]
    b = back.forward(ids, training=True, rng=np.random.default_rng(5))[0]
    np.testing.assert_array_equal(a, b)


def test_torch_round_trip_of_a_projected_lstm() -> None:
    torch = pytest.importorskip("torch")
    layer = LSTM(4, 7, 2, bidirectional=True, dtype=np.float64, seed=0, proj_size=3, recurrent_dropout=0.2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = rnnkit.to_torch(layer)
    assert any("recurrent_dropout" in str(w.message) for w in caught)
    assert module.proj_size == 3
    x = np.random.default_rng(1).normal(size=(2, 5, 4))
    with torch.no_grad():
        expected = module(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(layer.forward(x)[0], expected, rtol=1e-10, atol=1e-12)
    back = rnnkit.from_torch(module)
    assert back.proj_size == 3
    np.testing.assert_array_equal(back.forward(x)[0], layer.forward(x)[0])


def test_exports_refuse_what_they_cannot_compute(tmp_path) -> None:
    pytest.importorskip("torch")
    with pytest.raises(TypeError, match="zoneout"):
        rnnkit.to_torch(GRU(4, 4, zoneout=0.1))
    pytest.importorskip("onnx")
    with pytest.raises(TypeError, match="no output projection"):
        rnnkit.export_onnx(LSTM(4, 6, proj_size=2), tmp_path / "p.onnx")
    with pytest.raises(TypeError, match="no zoneout"):
        rnnkit.export_onnx(LSTM(4, 6, zoneout=0.2), tmp_path / "z.onnx")
    assert not list(tmp_path.iterdir())  # nothing half-written
