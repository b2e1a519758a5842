"""The rnnkit command: train and sample in-process and once as `python -m rnnkit`; one-line errors, exit 2."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import rnnkit
from rnnkit import cli
from rnnkit.io.checkpoint import save_tensors

TINY = ["--hidden", "16", "--embed-dim", "8", "--seq-len", "8", "--batch-size", "4", "--eval-every", "5",
        "--sample-every", "0", "--no-progress"]


@pytest.fixture
def words(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    vocab = ["alpha", "beta", "gamma", "delta", "the", "cat", "sat", "on", "a", "mat"]
    path = tmp_path / "words.txt"
    path.write_text(" ".join(vocab[i] for i in rng.integers(0, len(vocab), 300)) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def trained(tmp_path, words) -> Path:
    """A run directory trained for 6 steps."""
    out = tmp_path / "run"
    assert cli.main(["train", "--data", str(words), "--steps", "6", "--out", str(out), *TINY]) == 0
    return out


def test_train_writes_every_artifact_and_sample_streams(capsys, trained) -> None:
    assert {p.name for p in trained.iterdir()} >= {"config.json", "metrics.jsonl", "loss.png", "best.safetensors",
                                                  "latest.safetensors"}
    config = json.loads((trained / "config.json").read_text())
    assert config["hidden"] == 16 and config["steps"] == 6 and config["cell"] == "lstm"
    kinds = [json.loads(line)["kind"] for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert kinds.count("train") == 6 and kinds.count("val") == 2
    out = capsys.readouterr().out
    assert "unigram baseline" in out and "validation" in out and "loss.png" in out

    args = ["sample", str(trained), "--prime", "the c", "--length", "40", "--seed", "3"]
    assert cli.main(args) == 0
    first = capsys.readouterr().out
    assert first.startswith("the c") and len(first) == len("the c") + 40 + 1  # + a final newline
    assert cli.main(args) == 0
    assert capsys.readouterr().out == first  # the same seed gives the same text
    assert cli.main([*args[:-1], "4"]) == 0
    assert capsys.readouterr().out != first
    assert cli.main(["sample", str(trained / "latest.safetensors"), "--temperature", "0", "--length", "10"]) == 0
    assert len(capsys.readouterr().out) == 11


def test_prime_file_with_newlines(trained, tmp_path, capsys) -> None:
    prime = tmp_path / "prime.txt"
    prime.write_text("the cat\nsat on\n", encoding="utf-8")
    assert cli.main(["sample", str(trained), "--prime-file", str(prime), "--length", "5", "--seed", "0"]) == 0
    assert capsys.readouterr().out.startswith("the cat\nsat on\n")


def test_lines_mode_samples_items(tmp_path, capsys) -> None:
    names = tmp_path / "names.txt"
    rng = np.random.default_rng(1)
    syllables = ["ka", "ro", "mi", "sa", "lu", "ten"]
    names.write_text("\n".join("".join(syllables[i] for i in rng.integers(0, 6, 2)) for _ in range(30)) + "\n",
                     encoding="utf-8")
    out = tmp_path / "names-run"
    assert cli.main(["train", "--data", str(names), "--mode", "lines", "--steps", "5", "--out", str(out),
                     *TINY]) == 0
    capsys.readouterr()
    assert cli.main(["sample", str(out), "--length", "7", "--prime", "k", "--seed", "0"]) == 0
    items = capsys.readouterr().out.split("\n")
    assert len(items) == 8 and items[-1] == ""
    assert all(item.startswith("k") and 1 <= len(item) <= 7 for item in items[:-1])  # seq_len 8 = 7 + newline


def test_resume_through_the_cli(trained, words, capsys) -> None:
    assert cli.main(["train", "--out", str(trained), "--resume", "--steps", "9", "--no-progress"]) == 0
    assert "resuming at step 6" in capsys.readouterr().out
    steps = [json.loads(line)["step"] for line in (trained / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "train"]
    assert steps == list(range(1, 10))


def test_python_dash_m_rnnkit(tmp_path, words) -> None:
    out = tmp_path / "sub"
    env = {**os.environ, "PYTHONPATH": str(Path(cli.__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-m", "rnnkit", "train", "--data", str(words), "--steps", "3",
                           "--out", str(out), *TINY], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (out / "best.safetensors").is_file() and (out / "loss.png").is_file()
    sample = subprocess.run([sys.executable, "-m", "rnnkit", "sample", str(out), "--length", "20", "--seed", "1"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert sample.returncode == 0 and len(sample.stdout) == 21
    bad = subprocess.run([sys.executable, "-m", "rnnkit", "train", "--data", str(tmp_path / "nope.txt")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.count("\n") == 1 and bad.stderr.startswith("rnnkit: error: data file")


# --------------------------------------------------------------------------------------------------
# Bad input: one line on stderr, exit status 2
# --------------------------------------------------------------------------------------------------


def expect_error(capsys, argv: list[str], *fragments: str) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("rnnkit: error: ") and err.endswith("\n") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, err


@pytest.mark.parametrize(
    ("content", "fragments"),
    [(None, ["does not exist"]), (b"", ["is empty"]), (b"ok\xc3\x28bad", ["not UTF-8", "offset 2"]),
     (b"abc " * 6, ["too short for one batch"]), ("dir", ["is a directory"])],
    ids=["missing", "empty", "not-utf8", "too-short", "directory"],
)
def test_bad_data(tmp_path, capsys, content, fragments) -> None:
    path = tmp_path / "data.txt"
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    expect_error(capsys, ["train", "--data", str(path), "--out", str(tmp_path / "r"), *TINY], *fragments)


@pytest.mark.parametrize(
    ("option", "fragment"),
    [(["--seq-len", "0"], "seq_len must be a positive integer, got 0"),
     (["--hidden", "-3"], "hidden must be a positive integer, got -3"),
     (["--batch-size", "0"], "batch_size"), (["--layers", "0"], "layers"), (["--embed-dim", "0"], "embed_dim"),
     (["--steps", "0"], "steps"), (["--lr", "-1"], "lr must be"), (["--minutes", "nan"], "minutes"),
     (["--seq-len", "ten"], "argument --seq-len: invalid int value: 'ten'"),
     (["--cell", "cnn"], "invalid choice: 'cnn'"), (["--bogus"], "unrecognized arguments: --bogus"),
     (["--resume", "--init-from", "x"], "exclude each other")],
)
def test_bad_options(words, tmp_path, capsys, option, fragment) -> None:
    expect_error(capsys, ["train", "--data", str(words), "--out", str(tmp_path / "r"), *option], fragment)


def test_no_command_and_help(capsys) -> None:
    # Bare `rnnkit`: the usage and every command on stderr, argparse's status for a missing argument.
    assert cli.main([]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("usage: rnnkit")
    for command in ("train", "sample", "eval", "diagnose", "export"):
        assert f"\n    {command} " in captured.err, captured.err
    assert cli.main(["--help"]) == 0
    assert "train" in capsys.readouterr().out
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == f"rnnkit {rnnkit.__version__}\n"


def test_bad_checkpoints(trained, tmp_path, capsys) -> None:
    expect_error(capsys, ["sample", str(tmp_path / "missing.safetensors")], "no such checkpoint file or run directory")
    expect_error(capsys, ["sample", str(tmp_path / "missing-run")], "missing-run: no such checkpoint")
    expect_error(capsys, ["sample", str(tmp_path)], "without best.safetensors or latest.safetensors")
    # Another kind of model: a safetensors file that is not an rnnkit char-LM checkpoint.
    foreign = tmp_path / "foreign.safetensors"
    save_tensors(foreign, {"encoder.weight": np.zeros((2, 2), np.float32)})
    expect_error(capsys, ["sample", str(foreign)], "foreign")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "best.safetensors").write_bytes((trained / "best.safetensors").read_bytes()[:100])  # truncated
    expect_error(capsys, ["sample", str(corrupt)], "best.safetensors")
    expect_error(capsys, ["train", "--init-from", str(foreign), "--out", str(tmp_path / "r")], "foreign")


def test_bad_sampling_options(trained, tmp_path, capsys) -> None:
    expect_error(capsys, ["sample", str(trained), "--prime", "the zebra"], "not in the model's vocabulary", "'z'")
    expect_error(capsys, ["sample", str(trained), "--temperature", "-1"], "temperature")
    expect_error(capsys, ["sample", str(trained), "--top-k", "0"], "top_k")
    expect_error(capsys, ["sample", str(trained), "--length", "-5"], "length")
    expect_error(capsys, ["sample", str(trained), "--prime-file", str(tmp_path / "none.txt")],
                 "prime file", "does not exist")
    expect_error(capsys, ["sample", str(trained), "--prime", "a", "--prime-file", "x"], "not allowed with")
    assert capsys.readouterr().out == ""  # nothing half-printed


def test_bad_run_directory_use(trained, words, tmp_path, capsys) -> None:
    expect_error(capsys, ["train", "--data", str(words), "--out", str(trained)], "already holds a run", "--resume")
    expect_error(capsys, ["train", "--out", str(tmp_path / "empty"), "--resume"], "no checkpoint to resume from")
    expect_error(capsys, ["train", "--out", str(trained), "--resume", "--cell", "gru"],
                 "cell is 'lstm' there and 'gru' here")


def test_diagnose(tmp_path, capsys) -> None:
    png = tmp_path / "flow.png"
    assert cli.main(["diagnose", "--out", str(png), "--seq-len", "12", "--hidden", "8", "--batch-size", "2"]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG" and "LSTM" in capsys.readouterr().out
    expect_error(capsys, ["diagnose", "--out", str(png), "--hidden", "0"], "--hidden must be a positive integer")
    expect_error(capsys, ["diagnose", "--out", str(png), "--seq-len", "0"], "--seq-len must be a positive integer")


def test_ctrl_c_stops_cleanly_with_a_checkpoint(tmp_path, words) -> None:
    out = tmp_path / "interrupted"
    env = {**os.environ, "PYTHONPATH": str(Path(cli.__file__).resolve().parents[1])}
    process = subprocess.Popen([sys.executable, "-m", "rnnkit", "train", "--data", str(words), "--steps", "100000",
                                "--out", str(out), *TINY], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not metrics.exists() or metrics.read_text().count('"train"') < 3):
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "Ctrl-C (SIGINT): stopped after step" in stdout
    steps = metrics.read_text().count('"train"')
    assert json.loads((out / "config.json").read_text())["steps"] == 100000
    assert cli.main(["train", "--out", str(out), "--resume", "--steps", str(steps + 2), "--no-progress"]) == 0
    assert metrics.read_text().count('"train"') == steps + 2
