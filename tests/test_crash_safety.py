"""Crash safety of ``rnnkit train`` as a real process: kill -9 at random moments, and stop signals.

* **kill -9** at a few random points (a seeded generator picks how many training steps to wait
  for): the run directory always holds a loadable checkpoint or none, and resuming (or, before the
  first checkpoint, starting again in the same directory) reaches the end with losses bit for bit
  those of an uninterrupted run.
* **SIGINT through a pipe**: stdout is a pipe whose reader has gone away (``| tee`` after Ctrl-C
  killed it too); the run still saves ``latest``, exits with 130, prints no traceback, and resumes
  exactly.  **SIGTERM** and **SIGHUP** save and exit with 143 and 129.

Tiny models: every process runs for a second or two.
"""

from __future__ import annotations

import io
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
from rnnkit.charlm import train as train_module
from rnnkit.charlm.model import load_model
from rnnkit.charlm.train import TrainConfig, train

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX signals and kill -9")

PACKAGE_ROOT = str(Path(rnnkit.__file__).resolve().parents[1])
STEPS = 30
SETTINGS = dict(hidden=8, embed_dim=4, seq_len=8, batch_size=4, eval_every=6, sample_every=0)
KILL_TRIALS = 4


@pytest.fixture(autouse=True)
def no_plots(monkeypatch) -> None:
    """The in-process runs skip drawing loss.png (most of a tiny run's time); the subprocesses draw it."""
    monkeypatch.setattr(train_module, "plot_losses", lambda *args, **kwargs: None)


def options(**settings) -> list[str]:
    return [part for key, value in settings.items() for part in (f"--{key.replace('_', '-')}", str(value))]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("crash")
    words = ["alpha", "beta", "gamma", "delta", "the", "cat", "sat", "on", "a", "mat"]
    rng = np.random.default_rng(0)
    path = base / "words.txt"
    path.write_text(" ".join(words[i] for i in rng.integers(0, len(words), 300)) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory) -> list[tuple]:
    """The per-step (step, loss, grad_norm) of an uninterrupted run."""
    out = tmp_path_factory.mktemp("reference") / "run"
    config = TrainConfig(data=str(corpus), steps=STEPS, out=str(out), **SETTINGS)
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(train_module, "plot_losses", lambda *args, **kwargs: None)
        train(config, log=io.StringIO(), progress=False)
    return trajectory(out)


def trajectory(out: Path) -> list[tuple]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"], r["grad_norm"]) for r in rows if r["kind"] == "train"]


def start(corpus: Path, out: Path, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": PACKAGE_ROOT}
    args = [sys.executable, "-m", "rnnkit", "train", "--data", str(corpus), "--steps", "100000", "--out", str(out),
            *options(**SETTINGS)]
    return subprocess.Popen(args, env=env, **popen)


def wait_for_steps(out: Path, steps: int, process: subprocess.Popen, timeout: float = 60) -> None:
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if metrics.exists() and metrics.read_text().count('"kind": "train"') >= steps:
            return
        time.sleep(0.005)
    raise AssertionError(f"the training did not reach step {steps}")


def test_kill_9_at_random_moments_never_loses_the_run(corpus, reference, tmp_path) -> None:
    rng = np.random.default_rng(9)
    survived = 0
    for trial in range(KILL_TRIALS):
        out = tmp_path / f"trial{trial}"
        process = start(corpus, out, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_steps(out, int(rng.integers(1, 20)), process)
        time.sleep(float(rng.uniform(0, 0.05)))  # a moment anywhere in a step, an evaluation or a save
        process.kill()  # SIGKILL: no handler runs, no file is closed
        process.wait(timeout=30)
        latest = out / "latest.safetensors"
        if latest.exists():
            load_model(latest)  # never torn
            args = ["train", "--out", str(out), "--resume", "--steps", str(STEPS), "--no-progress"]
        else:
            # Killed before the first checkpoint: the directory holds config.json and metrics.jsonl
            # only, and a new run may start in it.
            args = ["train", "--data", str(corpus), "--steps", str(STEPS), "--out", str(out), "--no-progress",
                    *options(**SETTINGS)]
        assert cli.main(args) == 0
        assert trajectory(out) == reference, f"trial {trial}"
        survived += 1
    print(f"kill -9 trials survived: {survived} of {KILL_TRIALS}")


def test_sigint_through_a_dead_pipe_saves_and_resumes_exactly(corpus, reference, tmp_path) -> None:
    out = tmp_path / "piped"
    process = start(corpus, out, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for_steps(out, 6, process)
    process.stdout.close()  # the reader (tee) is gone: every later write to stdout is EPIPE
    process.send_signal(signal.SIGINT)
    stderr = process.stderr.read().decode("utf-8", "replace")
    assert process.wait(timeout=60) == 130, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    saved = load_model(out / "latest.safetensors").document["progress"]["step"]
    assert saved == len(trajectory(out))  # the checkpoint is of the last step trained
    assert cli.main(["train", "--out", str(out), "--resume", "--steps", str(STEPS), "--no-progress"]) == 0
    assert trajectory(out) == reference


@pytest.mark.parametrize("name", ["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_save_and_exit_with_128_plus_n(corpus, tmp_path, name) -> None:
    signum = getattr(signal, name)
    out = tmp_path / name
    process = start(corpus, out, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for_steps(out, 3, process)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signum, stderr
    assert b"Traceback" not in stderr and f"{name}: stopped after step".encode() in stdout
    assert load_model(out / "latest.safetensors").document["progress"]["step"] == len(trajectory(out))
