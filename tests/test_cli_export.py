"""`rnnkit export RUN|CHECKPOINT --format onnx|safetensors|torch --out FILE`: each format works and is what
it says; bad input gets one line on stderr and exit status 2, and never destroys a training checkpoint."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from rnnkit import cli, load_state_dict_file, to_torch
from rnnkit.charlm import load_model
from rnnkit.io import describe
from rnnkit.io.checkpoint import load_checkpoint

TINY = ["--hidden", "16", "--embed-dim", "8", "--seq-len", "8", "--batch-size", "4", "--eval-every", "5",
        "--sample-every", "0", "--no-progress"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A run directory trained for 6 steps (a 2-layer GRU, so that state and gate orders matter)."""
    root = tmp_path_factory.mktemp("export")
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "the", "cat", "sat", "on", "a", "mat"]
    (root / "words.txt").write_text(" ".join(words[i] for i in rng.integers(0, len(words), 300)) + "\n")
    out = root / "run"
    args = ["train", "--data", str(root / "words.txt"), "--steps", "6", "--out", str(out), "--cell", "gru",
            "--layers", "2", *TINY]
    assert cli.main(args) == 0
    return out


def export(run: Path, *args: str) -> int:
    return cli.main(["export", str(run), *args])


def test_onnx_generation_token_by_token_equals_rnnkit(run, tmp_path, capsys) -> None:
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    out = tmp_path / "lm.onnx"
    assert export(run, "--format", "onnx", "--with-state", "--out", str(out)) == 0
    assert f"wrote {out} (onnx" in capsys.readouterr().out
    loaded = load_model(run)
    metadata = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(metadata["vocab"]) == loaded.vocab.to_json() and metadata["mode"] == "stream"

    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    ids = loaded.vocab.encode("the cat sat")
    h = np.zeros((2, 1, 16), np.float32)
    logits = []
    for token in ids:
        step, h = sess.run(["out", "rnn.h_n"], {"tokens": np.array([[token]]), "rnn.h0": h})
        logits.append(step[0, 0])
    expected, final, _ = loaded.model.net.forward(ids[None], keep_cache=False)
    np.testing.assert_allclose(np.array(logits), expected[0], rtol=0, atol=1e-5)
    np.testing.assert_allclose(h, final["rnn"], rtol=0, atol=1e-5)


def test_safetensors_is_weights_only_and_samples_the_same_text(run, tmp_path, capsys) -> None:
    out = tmp_path / "lm.safetensors"
    assert export(run, "--format", "safetensors", "--out", str(out)) == 0
    capsys.readouterr()
    assert out.stat().st_size < 0.5 * (run / "best.safetensors").stat().st_size  # no optimizer moments
    tensors, document = load_checkpoint(out)
    assert "optimizer" not in document and "progress" not in document
    architecture = document["architecture"]  # rnnkit.save's architecture document
    assert architecture["type"] == "Sequential" and architecture["tied"] == {}
    blocks = architecture["layers"]
    assert [(name, b["type"]) for name, b in blocks] == [("embed", "Embedding"), ("drop_in", "Dropout"), ("rnn", "GRU"),
                                                         ("drop_out", "Dropout"), ("head", "Linear")]  # --dropout 0.3
    assert blocks[1][1]["p"] == blocks[3][1]["p"] == 0.3
    assert blocks[2][1]["num_layers"] == 2 and blocks[2][1]["hidden_size"] == 16
    assert architecture == describe(load_model(run).model.net)
    assert sorted(load_state_dict_file(out)) == sorted(load_model(run).model.params)

    sample = ["--prime", "the ", "--length", "40", "--seed", "3"]
    assert cli.main(["sample", str(run), *sample]) == 0
    from_run = capsys.readouterr().out
    assert cli.main(["sample", str(out), *sample]) == 0
    assert capsys.readouterr().out == from_run


def test_safetensors_file_is_readable_by_the_safetensors_package(run, tmp_path, capsys) -> None:
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    out = tmp_path / "lm.safetensors"
    assert export(run, "--format", "safetensors", "--out", str(out)) == 0
    params = load_model(run).model.params
    loaded = safetensors_numpy.load_file(str(out))
    assert loaded.keys() == params.keys() and all(np.array_equal(loaded[k], v) for k, v in params.items())


def test_torch_state_dict_loads_into_the_converted_module(run, tmp_path, capsys) -> None:
    torch = pytest.importorskip("torch")
    out = tmp_path / "lm.pt"
    assert export(run, "--format", "torch", "--out", str(out)) == 0
    state_dict = torch.load(out, weights_only=True)
    net = load_model(run).model.net
    module = to_torch(net)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.zero_()
    module.load_state_dict(state_dict)
    tokens = np.array([[1, 2, 3, 0, 4]])
    module.eval()  # the run has dropout (the default): compare inference with inference
    with torch.no_grad():
        logits, _ = module(torch.from_numpy(tokens))
    np.testing.assert_allclose(logits.numpy(), net.forward(tokens)[0], rtol=0, atol=1e-6)


@pytest.mark.parametrize(("args", "fragment"), [
    (["--format", "onnx", "--out", "{tmp}/m.pt"], "--out must name a .onnx file for --format onnx"),
    (["--format", "torch", "--out", "{tmp}/m.onnx"], "--out must name a .pt or .pth file for --format torch"),
    (["--format", "safetensors", "--out", "{tmp}/.safetensors"], "--out must name a .safetensors file"),
    (["--format", "torch", "--with-state", "--out", "{tmp}/m.pt"], "with_state: options of --format onnx only"),
    (["--format", "onnx", "--opset", "3", "--out", "{tmp}/m.onnx"], "opset must be an integer from 11"),
    (["--format", "onnx", "--out", "{tmp}/missing/m.onnx"], "the directory"),
    (["--format", "safetensors", "--out", "{run}/best.safetensors"], "is the checkpoint being exported"),
    (["--format", "safetensors", "--out", "{run}/latest.safetensors"], "is a training checkpoint"),
    (["--format", "zip", "--out", "{tmp}/m.zip"], "invalid choice: 'zip'"),
    (["--out", "{tmp}/m.onnx"], "the following arguments are required: --format"),
])
def test_bad_exports_are_one_line_errors(run, tmp_path, capsys, args, fragment) -> None:
    before = (run / "latest.safetensors").read_bytes()
    args = [a.format(tmp=tmp_path, run=run) for a in args]
    assert export(run, *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("rnnkit: error: ") and err.count("\n") == 1 and fragment in err
    assert (run / "latest.safetensors").read_bytes() == before


def test_bad_checkpoints_are_one_line_errors(run, tmp_path, capsys) -> None:
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint at all")
    for source in (tmp_path / "nothing", tmp_path / "junk.safetensors", tmp_path):
        assert cli.main(["export", str(source), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("rnnkit: error: ") and err.count("\n") == 1
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize(("missing", "fmt", "fragment"), [
    ("onnx", "onnx", "pip install 'rnnkit[onnx]'"),
    ("torch", "torch", "needs PyTorch, which is not installed"),
])
def test_missing_optional_packages_are_one_line_errors(run, tmp_path, capsys, monkeypatch, missing, fmt,
                                                       fragment) -> None:
    monkeypatch.setitem(sys.modules, missing, None)
    suffix = ".onnx" if fmt == "onnx" else ".pt"
    assert export(run, "--format", fmt, "--out", str(tmp_path / f"m{suffix}")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err


def test_a_regularized_tied_run_exports_to_every_format(tmp_path, capsys) -> None:
    """Issue 10's model (dropout blocks, embedding dropout, weight drop, tied head) through issue 12's export."""
    ort = pytest.importorskip("onnxruntime")
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    (tmp_path / "words.txt").write_text(" ".join(["ab", "ba", "cab"][i] for i in rng.integers(0, 3, 200)) + "\n")
    run = tmp_path / "run"
    args = ["train", "--data", str(tmp_path / "words.txt"), "--steps", "3", "--out", str(run), "--cell", "lstm",
            "--dropout", "0.3", "--embed-dropout", "0.1", "--weight-drop", "0.2", "--tie-weights",
            "--hidden", "8", "--embed-dim", "8", "--seq-len", "8", "--batch-size", "4", "--eval-every", "3",
            "--sample-every", "0", "--no-progress"]
    assert cli.main(args) == 0
    loaded = load_model(run)
    net = loaded.model.net
    assert net.tied == {"head.weight": "embed.weight"} and "drop_in" in net.layers
    ids = np.array([loaded.vocab.encode("ab cab ba")])
    expected = net.forward(ids, keep_cache=False)[0]

    onnx_file = tmp_path / "lm.onnx"
    assert export(run, "--format", "onnx", "--out", str(onnx_file)) == 0
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(["out"], {"tokens": ids})[0], expected, rtol=0, atol=1e-5)

    weights = tmp_path / "lm.safetensors"
    assert export(run, "--format", "safetensors", "--out", str(weights)) == 0
    _, document = load_checkpoint(weights)
    assert document["architecture"] == describe(net)
    np.testing.assert_array_equal(load_model(weights).model.net.forward(ids, keep_cache=False)[0], expected)

    state_file = tmp_path / "lm.pt"
    with pytest.warns(UserWarning) as caught:  # the training-only options torch.nn has no counterpart of
        assert export(run, "--format", "torch", "--out", str(state_file)) == 0
    assert {str(w.message).split(":")[0] for w in caught} == {"Embedding(dropout=0.1)", "LSTM(weight_drop=0.2)"}
    with pytest.warns(UserWarning):
        module = to_torch(net)
    module.load_state_dict(torch.load(state_file, weights_only=True))
    got = module.eval()(torch.from_numpy(ids))[0].detach().numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    capsys.readouterr()
