"""examples/continue_in_torch.py at tiny size: an rnnkit char-LM trained on with DistributedDataParallel over 2
CPU processes (gloo, localhost), converted back, and sampled by `rnnkit sample`.  About 15 s: two processes
import torch and meet over gloo."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rnnkit import cli
from rnnkit.charlm import load_model

pytest.importorskip("torch")

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "continue_in_torch.py"


def test_ddp_over_two_processes_then_rnnkit_samples(tmp_path, capsys) -> None:
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "the", "cat", "sat", "on", "a", "mat"]
    (tmp_path / "words.txt").write_text(" ".join(words[i] for i in rng.integers(0, len(words), 300)) + "\n")
    run = tmp_path / "run"
    assert cli.main(["train", "--data", str(tmp_path / "words.txt"), "--steps", "4", "--out", str(run),
                     "--hidden", "16", "--embed-dim", "8", "--seq-len", "8", "--batch-size", "4",
                     "--eval-every", "4", "--sample-every", "0", "--no-progress"]) == 0
    capsys.readouterr()

    out = tmp_path / "continued.safetensors"
    done = subprocess.run([sys.executable, str(EXAMPLE), str(run), "--out", str(out), "--steps", "3",
                           "--batch-size", "2", "--seq-len", "8", "--lr", "0.01"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"stdout: {done.stdout[-1500:]}\nstderr: {done.stderr[-3000:]}"
    assert "the 2 processes hold identical weights" in done.stdout
    assert "step 3/3" in done.stdout

    before, after = load_model(run).model.params, load_model(out).model.params
    assert before.keys() == after.keys()
    assert all(not np.array_equal(before[k], after[k]) for k in ("rnn.weight_hh_l0", "head.weight"))  # trained

    assert cli.main(["sample", str(out), "--prime", "the ", "--length", "30", "--seed", "1"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("the ") and len(text) == len("the ") + 30 + 1


def test_bad_options_are_refused_before_any_process_starts(tmp_path, capsys) -> None:
    spec = importlib.util.spec_from_file_location("continue_in_torch", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    for args, fragment in (([str(tmp_path), "--out", str(tmp_path / "x.pt")], "--out must name a .safetensors file"),
                           ([str(tmp_path), "--out", "x.safetensors", "--world-size", "0"],
                            "--world-size must be a positive integer")):
        with pytest.raises(SystemExit) as exited:
            example.main(args)
        assert exited.value.code == 2 and fragment in capsys.readouterr().err
