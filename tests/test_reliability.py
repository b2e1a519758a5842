"""Reliability (issue 9): one group of tests per class of failure, each of which failed before the fix.

1 run directories, 2 signals and streams, 3 divergence, 4 checkpoint integrity, 5 resource bounds,
6 numerical edges, 7 stale caches, 8 side features that must not stop the main job.  The kill -9
and subprocess signal trials are in test_crash_safety.py, the checkpoint mutation fuzzer in
test_checkpoint_fuzz.py, the property-based tests in test_properties.py.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import rnnkit
from rnnkit import cli
from rnnkit.charlm import train as train_module
from rnnkit.charlm.data import DataError
from rnnkit.charlm.model import PRIME_CHUNK, CharLM, ModelConfig, load_model, sample_from_logits
from rnnkit.charlm.train import TrainConfig, Trainer, TrainingDiverged, train
from rnnkit.io.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from rnnkit.optim import SGD, Adagrad, Adam, AdamW, RMSprop

WORDS = ["alpha", "beta", "gamma", "delta", "the", "cat", "sat", "on", "a", "mat", "run", "fast"]
PACKAGE_ROOT = str(Path(rnnkit.__file__).resolve().parents[1])


@pytest.fixture(autouse=True)
def no_plots(monkeypatch) -> None:
    """Drawing loss.png is most of a tiny run's time; the tests of class 8 put it back."""
    monkeypatch.setattr(train_module, "plot_losses", lambda *args, **kwargs: None)


def write_words(path: Path, n_words: int = 200, extra: str = "") -> Path:
    rng = np.random.default_rng(0)
    path.write_text(" ".join(WORDS[i] for i in rng.integers(0, len(WORDS), n_words)) + extra + "\n", encoding="utf-8")
    return path


def write_names(path: Path, n: int = 40) -> Path:
    rng = np.random.default_rng(0)
    syllables = ["ka", "ro", "mi", "sa", "lu", "ten", "dor", "vi"]
    names = ["".join(syllables[i] for i in rng.integers(0, len(syllables), rng.integers(1, 4))).title()
             for _ in range(n)]
    path.write_text("\n".join(names) + "\n", encoding="utf-8")
    return path


def config(tmp_path: Path, data: Path, out: str = "run", **changes) -> TrainConfig:
    settings = dict(data=str(data), hidden=16, embed_dim=8, seq_len=8, batch_size=4, steps=12, eval_every=5,
                    sample_every=0, out=str(tmp_path / out))
    settings.update(changes)
    return TrainConfig(**settings)


def run(cfg: TrainConfig, explicit=None, log=None):
    return train(cfg, explicit, log=io.StringIO() if log is None else log, progress=False)


def resume(tmp_path: Path, out: str = "run", **changes):
    cfg = TrainConfig(out=str(tmp_path / out), resume=True, **changes)
    return run(cfg, explicit={"resume", "out", *changes})


def strict_records(path: Path) -> list[dict]:
    """metrics.jsonl parsed as strict JSON: NaN, Infinity and -Infinity are refused."""
    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not JSON")
    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def cli_error(capsys, argv: list[str]) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("rnnkit: error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


# ================================================================================================
# 1. Run directories
# ================================================================================================


def test_a_directory_that_is_not_a_run_is_refused_and_left_untouched(tmp_path) -> None:
    data = write_words(tmp_path / "words.txt")
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("years of work")
    (foreign / "metrics.jsonl").write_text("my own metrics\n")
    with pytest.raises(ValueError, match=r"is not empty and is not an rnnkit run directory \(it holds thesis.tex\)"):
        run(config(tmp_path, data, "mine"))
    assert (foreign / "metrics.jsonl").read_text() == "my own metrics\n"
    assert sorted(p.name for p in foreign.iterdir()) == ["metrics.jsonl", "thesis.tex"]
    # A config.json that is not a run's config makes a directory foreign too.
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text('{"name": "my web app"}')
    with pytest.raises(ValueError, match="not an rnnkit run directory"):
        run(config(tmp_path, data, "other"))
    assert (other / "config.json").read_text() == '{"name": "my web app"}'
    with pytest.raises(ValueError, match="is a file, not a run directory"):
        run(config(tmp_path, data, "words.txt"))


def test_out_slash_is_refused_before_anything_is_written(tmp_path) -> None:
    data = write_words(tmp_path / "words.txt")
    with pytest.raises(ValueError, match="not an rnnkit run directory"):
        Trainer(TrainConfig(data=str(data), out="/", seq_len=8, batch_size=4), progress=False)


def test_empty_and_unfinished_run_directories_are_accepted(tmp_path) -> None:
    data = write_words(tmp_path / "words.txt")
    (tmp_path / "empty").mkdir()
    assert run(config(tmp_path, data, "empty", steps=3)).step == 3
    # A run that stopped before its first checkpoint (only config.json and metrics.jsonl) may be restarted.
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.json").write_text(json.dumps({"hidden": 16}))
    (unfinished / "metrics.jsonl").write_text('{"kind": "run", "step": 0}\n')
    (unfinished / ".latest.safetensors.0123456789ab.tmp").write_bytes(b"torn")
    assert run(config(tmp_path, data, "unfinished", steps=3)).step == 3


def test_a_second_training_in_the_same_directory_gets_a_one_line_error(tmp_path) -> None:
    data = write_words(tmp_path / "words.txt")
    out = tmp_path / "run"
    out.mkdir()
    # Another session holds the lock (as a running training does, for its whole duration).
    with train_module._RunLock(out):
        with pytest.raises(ValueError, match=r"another training is running in .*run \(process \d+\)"):
            run(config(tmp_path, data))
        assert not (out / "metrics.jsonl").exists() and not (out / "config.json").exists()
    assert run(config(tmp_path, data, steps=3)).step == 3  # the lock is released with its holder


def test_two_resumes_of_one_run_at_once_get_a_one_line_error(tmp_path) -> None:
    data = write_words(tmp_path / "words.txt")
    run(config(tmp_path, data, steps=5))
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text()
    with train_module._RunLock(tmp_path / "run"), pytest.raises(ValueError, match="another training is running"):
        resume(tmp_path, steps=10)
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == metrics


# ================================================================================================
# 2. Signals and streams
# ================================================================================================


def raise_signal_after_step(monkeypatch, signum: int, at_step: int = 7) -> None:
    step = Trainer.train_step

    def step_then_signal(self):
        result = step(self)
        if self.step == at_step:
            signal.raise_signal(signum)
        return result

    monkeypatch.setattr(Trainer, "train_step", step_then_signal)


@pytest.mark.parametrize("name", ["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_save_latest_and_report_the_signal(tmp_path, monkeypatch, name) -> None:
    signum = getattr(signal, name, None)
    if signum is None:
        pytest.skip(f"{name} does not exist on this platform")
    data = write_words(tmp_path / "words.txt")
    raise_signal_after_step(monkeypatch, signum)
    log = io.StringIO()
    result = run(config(tmp_path, data, steps=50), log=log)
    assert result.stopped_by == "interrupt" and result.signal == signum and result.step == 7
    assert load_model(tmp_path / "run" / "latest.safetensors").document["progress"]["step"] == 7
    assert f"{name}: stopped after step 7" in log.getvalue()
    assert signal.getsignal(signum) is signal.SIG_DFL  # the handler is put back


def test_an_ignored_sighup_stays_ignored(tmp_path, monkeypatch) -> None:
    if not hasattr(signal, "SIGHUP"):
        pytest.skip("no SIGHUP on this platform")
    data = write_words(tmp_path / "words.txt")
    monkeypatch.setattr(signal, "getsignal", signal.getsignal)  # restored by monkeypatch, with the handler below
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    try:
        raise_signal_after_step(monkeypatch, signal.SIGHUP, at_step=3)
        result = run(config(tmp_path, data, steps=6))
        assert result.stopped_by == "steps" and result.step == 6
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)


class BrokenPipe(io.StringIO):
    """A log whose reader went away after the first message (``| tee`` after Ctrl-C, ``| head``)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        if self.writes > 1:
            raise BrokenPipeError(32, "Broken pipe")
        return super().write(text)


@pytest.mark.parametrize("make_log", [
    BrokenPipe,
    lambda: io.TextIOWrapper(io.BytesIO(), encoding="cp1252"),   # cannot show "→"
    lambda: io.TextIOWrapper(io.BytesIO(), encoding="ascii"),
], ids=["broken-pipe", "cp1252", "ascii"])
def test_printing_never_stops_training(tmp_path, make_log) -> None:
    data = write_words(tmp_path / "words.txt", extra=" → ünïcödé ✓ 😀")
    log = make_log()
    result = run(config(tmp_path, data, steps=12, sample_every=2), log=log)
    assert result.stopped_by == "steps" and result.step == 12


def test_a_closed_log_stream_is_tolerated(tmp_path) -> None:
    data = write_words(tmp_path / "words.txt")
    log = io.StringIO()
    log.close()
    assert run(config(tmp_path, data, steps=6, sample_every=3), log=log).step == 6


def test_a_signal_while_the_message_pipe_is_dead_still_saves(tmp_path, monkeypatch) -> None:
    data = write_words(tmp_path / "words.txt")
    raise_signal_after_step(monkeypatch, signal.SIGINT)
    result = run(config(tmp_path, data, steps=50), log=BrokenPipe())
    assert result.stopped_by == "interrupt" and result.signal == signal.SIGINT
    assert load_model(tmp_path / "run" / "latest.safetensors").document["progress"]["step"] == 7


def test_ctrl_c_during_start_up_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    data = write_words(tmp_path / "words.txt")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "load_text", interrupted)
    assert cli.main(["train", "--data", str(data), "--out", str(tmp_path / "run")]) == 130
    assert capsys.readouterr().err == "rnnkit: interrupted\n"


def test_ctrl_c_while_the_command_loads_is_one_line(monkeypatch, capsys) -> None:
    import importlib.abc

    class Interrupted(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "rnnkit.cli":
                raise KeyboardInterrupt
            return None

    from rnnkit import __main__ as entry

    monkeypatch.delitem(sys.modules, "rnnkit.cli")
    monkeypatch.setattr(sys, "meta_path", [Interrupted(), *sys.meta_path])
    with pytest.raises(SystemExit) as exit_:
        entry.run()
    assert exit_.value.code == 130 and capsys.readouterr().err == "rnnkit: interrupted\n"


def run_cli(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": PACKAGE_ROOT, **kwargs.pop("env", {})}
    return subprocess.run([sys.executable, "-m", "rnnkit", *args], capture_output=True, env=env, timeout=120,
                          **kwargs)


TINY = ["--hidden", "8", "--embed-dim", "4", "--seq-len", "8", "--batch-size", "4", "--eval-every", "4"]


@pytest.mark.parametrize("closed", [1, 2], ids=["stdout", "stderr"])
def test_a_closed_stdout_or_stderr_is_tolerated(tmp_path, closed) -> None:
    data = write_words(tmp_path / "words.txt")
    args = ["train", "--data", str(data), "--steps", "8", "--sample-every", "4", "--out", str(tmp_path / "run"), *TINY]
    # Python sees a closed descriptor as sys.stdout / sys.stderr = None.
    done = run_cli(args, stdin=subprocess.DEVNULL, pass_fds=(), preexec_fn=lambda: os.close(closed))
    assert done.returncode == 0, done.stderr
    assert b"Traceback" not in done.stdout + done.stderr
    assert load_model(tmp_path / "run" / "latest.safetensors").document["progress"]["step"] == 8


def test_a_cp1252_console_shows_the_text_with_replacements(tmp_path) -> None:
    data = write_words(tmp_path / "words.txt", extra=" → ✓")
    out = tmp_path / "run"
    env = {"PYTHONIOENCODING": "cp1252"}
    done = run_cli(["train", "--data", str(data), "--steps", "8", "--sample-every", "2", "--out", str(out), *TINY],
                   env=env)
    assert done.returncode == 0 and b"Traceback" not in done.stderr, done.stderr
    done = run_cli(["sample", str(out), "--prime", "→ ✓ ", "--length", "20", "--seed", "0"], env=env)
    assert done.returncode == 0 and done.stdout.startswith(b"? ? ") and b"Traceback" not in done.stderr


# ================================================================================================
# 3. Divergence
# ================================================================================================


def test_a_huge_learning_rate_stops_with_the_step_and_the_fix(tmp_path) -> None:
    data = write_words(tmp_path / "words.txt", 400)
    with pytest.raises(TrainingDiverged, match=r"training diverged at step \d+: .*try a smaller --lr \(it is 1e\+06; "
                                               r"e\.g\. --lr 100000\)"):
        run(config(tmp_path, data, optimizer="sgd", lr=1e6, clip=0.0, steps=200, eval_every=5))
    out = tmp_path / "run"
    records = strict_records(out / "metrics.jsonl")
    assert records[0]["kind"] == "run"
    # Whatever was saved is a good state: finite, and below the divergence limit.
    for name in ("best.safetensors", "latest.safetensors"):
        if (out / name).exists():
            loaded = load_model(out / name)
            assert all(np.isfinite(v).all() for v in loaded.model.params.values())
            assert math.isfinite(loaded.document["progress"]["val_loss"])


def test_a_nan_validation_loss_saves_nothing_and_logs_null(tmp_path, monkeypatch) -> None:
    data = write_words(tmp_path / "words.txt")
    evaluate = CharLM.evaluate
    calls = []

    def nan_on_second(self, batches, on_batch=None):
        calls.append(1)
        return float("nan") if len(calls) == 2 else evaluate(self, batches, on_batch)

    monkeypatch.setattr(CharLM, "evaluate", nan_on_second)
    with pytest.raises(TrainingDiverged, match=r"diverged at step 10: the validation loss is nan .* holds step 5"):
        run(config(tmp_path, data, steps=20, eval_every=5))
    records = strict_records(tmp_path / "run" / "metrics.jsonl")
    vals = [r for r in records if r["kind"] == "val"]
    assert vals[-1] == {**vals[-1], "step": 10, "loss": None, "bpc": None}
    for name in ("best.safetensors", "latest.safetensors"):
        assert load_model(tmp_path / "run" / name).document["progress"]["step"] == 5


def test_non_finite_weights_after_an_update_name_the_step(tmp_path, monkeypatch) -> None:
    data = write_words(tmp_path / "words.txt")
    step = Adam.step

    def poisoned(self, params, grads):
        step(self, params, grads)
        if self.step_count == 3:
            params["rnn.weight_hh_l0"][0, 0] = np.inf

    monkeypatch.setattr(Adam, "step", poisoned)
    with pytest.raises(TrainingDiverged, match=r"at step 3: the update made rnn.weight_hh_l0 NaN or infinite; "
                                               r"try a smaller --lr"):
        run(config(tmp_path, data))


def test_divergence_through_the_cli_is_one_line(tmp_path, capsys) -> None:
    data = write_words(tmp_path / "words.txt", 400)
    err = cli_error(capsys, ["train", "--data", str(data), "--out", str(tmp_path / "run"), "--optimizer", "sgd",
                             "--lr", "1e6", "--clip", "0", "--steps", "200", "--no-progress", *TINY])
    assert "training diverged at step" in err and "x contains NaN" not in err


# ================================================================================================
# 4. Checkpoint integrity
# ================================================================================================


@pytest.fixture(scope="module")
def trained_template(tmp_path_factory) -> Path:
    """A run trained for 10 steps, once per module; tests get their own copy (``trained_run``)."""
    base = tmp_path_factory.mktemp("template")
    data = write_words(base / "words.txt")
    run(config(base, data, steps=10))
    return base / "run"


@pytest.fixture
def trained_run(tmp_path, trained_template) -> Path:
    shutil.copytree(trained_template, tmp_path / "run")
    return tmp_path / "run"


def test_an_edited_document_byte_is_refused(trained_run) -> None:
    latest = trained_run / "latest.safetensors"
    data = latest.read_bytes()
    assert b'\\"lr\\":0.002' in data  # the document is JSON inside the header's JSON
    latest.write_bytes(data.replace(b'\\"lr\\":0.002', b'\\"lr\\":9.002', 1))
    with pytest.raises(CheckpointError, match="corrupt: the file does not match its checksum"):
        load_model(latest)


def rewrite_document(path: Path, change) -> None:
    """Change a checkpoint's document and save it again (with a valid checksum: only validation can catch it)."""
    tensors, document = load_checkpoint(path)
    change(document)
    save_checkpoint(path, tensors, document)


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["progress"].update(step=-3), r"progress.step must be an integer >= 0, got -3"),
    (lambda d: d["progress"].update(step=True), r"progress.step must be an integer >= 0, got True"),
    (lambda d: d["progress"].update(epoch="1"), r"progress.epoch must be an integer >= 0"),
    (lambda d: d["progress"].update(index=10**30), r"progress.index \(\d+\) is outside the epoch"),
    (lambda d: d["progress"].update(rng={"bit_generator": "PCG64", "state": "x"}), r"progress.rng is not a random"),
    (lambda d: d["progress"].update(rng=[1, 2]), r"progress.rng is not a random"),
    (lambda d: d["progress"].update(best_val_loss=-1.0), r"progress.best_val_loss must be null or a finite loss"),
    (lambda d: d["progress"].update(best_step=10**6), r"progress.best_step must be null or a step in 0..10"),
    (lambda d: d["progress"].update(elapsed_s=-5), r"progress.elapsed_s must be a finite number >= 0"),
    (lambda d: d["progress"].update(state={"rnn": [np.zeros((1, 4, 16), np.float32)]}), r"progress.state is unusable"),
    (lambda d: d["progress"].pop("order"), r"progress must be a dict with the keys"),
    (lambda d: d["optimizer"]["hyperparameters"].update(lr=9.002), r"optimizer has lr 9.002"),
    (lambda d: d["optimizer"].update(step=4), r"optimizer has lr 0.002 and 4 steps, but .* at step 10"),
    (lambda d: d["optimizer"].update(type="SGD"), r"optimizer is unusable \(state_dict is for 'SGD'"),
    (lambda d: d["optimizer"]["state"]["head.bias"].update(exp_avg=np.zeros(3, np.float32),
                                                             exp_avg_sq=np.zeros(3, np.float32)),
     r"optimizer.state.head.bias.exp_avg is float32\[3\]"),
    (lambda d: d["optimizer"]["state"]["head.bias"]["exp_avg"].fill(np.nan), r"exp_avg holds NaN"),
    (lambda d: d.update(mode="lines"), r"mode is 'lines' but the run's config says 'stream'"),
    (lambda d: d.update(max_item_length=3), r"max_item_length is 3 but the run's config says 8"),
    (lambda d: d["config"].update(hidden=32), r"model does not agree with the run's config"),
    (lambda d: d["config"].update(hidden="big"), r"the saved training config is unusable"),
], ids=lambda value: "" if callable(value) else value.split(" ")[0])
def test_every_resume_field_is_validated_before_use(trained_run, change, message) -> None:
    rewrite_document(trained_run / "latest.safetensors", change)
    with pytest.raises(CheckpointError, match=message):
        resume(trained_run.parent, steps=20)


def test_an_item_order_that_is_not_a_permutation_is_refused(tmp_path) -> None:
    data = write_names(tmp_path / "names.txt")
    run(config(tmp_path, data, mode="lines", seq_len=16, steps=8))
    latest = tmp_path / "run" / "latest.safetensors"
    for bad in (lambda o: o.__setitem__(0, o[1]), lambda o: o.__setitem__(0, -1), lambda o: o.__setitem__(0, 10**9)):
        rewrite_document(latest, lambda d, bad=bad: bad(d["progress"]["order"]))
        with pytest.raises(CheckpointError, match=r"progress.order is not a permutation of the \d+ training items"):
            resume(tmp_path, steps=20)


@pytest.mark.parametrize(("field", "value"), [("layers", 10**9), ("hidden", 10**12), ("vocab_size", 10**15),
                                               ("embed_dim", 10**10)])
def test_declared_sizes_are_checked_before_allocating(trained_run, field, value) -> None:
    latest = trained_run / "latest.safetensors"
    rewrite_document(latest, lambda d: d["model"].update({field: value}))
    with pytest.raises(CheckpointError, match="declares|the vocabulary has 19 characters but the model"):
        load_model(latest)


def test_devices_and_fifos_are_never_read(tmp_path) -> None:
    zero = tmp_path / "zero.safetensors"
    zero.symlink_to("/dev/zero")
    with pytest.raises(CheckpointError, match="zero.safetensors: checkpoint file is not a regular file"):
        load_model(zero)
    if hasattr(os, "mkfifo"):
        fifo = tmp_path / "fifo.safetensors"
        os.mkfifo(fifo)
        with pytest.raises(CheckpointError, match="not a regular file"):  # would block forever if opened plainly
            load_model(fifo)
        fifo_text = tmp_path / "fifo.txt"
        os.mkfifo(fifo_text)
        with pytest.raises(DataError, match="not a regular file"):
            run(config(tmp_path, fifo_text))
    text = tmp_path / "zero.txt"
    text.symlink_to("/dev/zero")
    with pytest.raises(DataError, match="data file .*zero.txt' is not a regular file"):
        run(config(tmp_path, text))


def test_non_finite_weights_are_refused(trained_run) -> None:
    latest = trained_run / "latest.safetensors"
    tensors, document = load_checkpoint(latest)
    tensors["head.bias"][2] = np.nan
    save_checkpoint(latest, tensors, document)
    with pytest.raises(CheckpointError, match="'head.bias' contains NaN or infinite values"):
        load_model(latest)


# ================================================================================================
# 5. Resource bounds
# ================================================================================================


@pytest.mark.parametrize("option", [["--hidden", "99999999999999999999"], ["--hidden", "1000000"],
                                    ["--layers", "1000000000"], ["--embed-dim", "10000000000000"]])
def test_sizes_beyond_memory_are_one_line_errors(tmp_path, capsys, option) -> None:
    data = write_words(tmp_path / "words.txt")
    err = cli_error(capsys, ["train", "--data", str(data), "--out", str(tmp_path / "run"), "--seq-len", "8",
                             "--batch-size", "4", *option])
    assert "needs about" in err and "of memory is available" in err
    assert not (tmp_path / "run").exists()


def test_memory_error_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    def exhausted(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(cli, "train", exhausted)
    err = cli_error(capsys, ["train", "--out", str(tmp_path / "run")])
    assert "out of memory" in err


def test_a_long_prime_is_read_in_chunks_with_the_same_result() -> None:
    model = CharLM(ModelConfig(vocab_size=7, hidden=8, embed_dim=4), seed=0)
    prime = np.random.default_rng(0).integers(0, 7, 3 * PRIME_CHUNK + 17)
    seen = []
    forward = model.net.forward

    def spy(x, *args, **kwargs):
        seen.append(x.shape[1])
        return forward(x, *args, **kwargs)

    model.net.forward = spy
    token = next(model.generate(prime, 1, rng=np.random.default_rng(0), temperature=0))
    assert max(seen) == PRIME_CHUNK and len(seen) == 4
    logits, _, _ = forward(prime[None, :], keep_cache=False)  # one pass over the whole prime
    assert token == int(np.argmax(logits[0, -1]))


def test_validation_is_capped_and_reports_progress(tmp_path) -> None:
    data = write_words(tmp_path / "words.txt", 2000)
    trainer = Trainer(config(tmp_path, data, val_max_chars=100), progress=False)
    assert trainer.val_chars == 100
    done = []
    trainer.model.evaluate(trainer.val_batches, done.append)
    assert done == list(range(1, len(trainer.val_batches) + 1))
    uncapped = Trainer(config(tmp_path, data, "all", val_max_chars=0), progress=False)
    assert uncapped.val_chars > 800
    names = write_names(tmp_path / "names.txt", 200)
    lines = Trainer(config(tmp_path, names, "lines", mode="lines", seq_len=16, val_max_chars=30), progress=False)
    assert 0 < lines.val_chars <= 30
    with pytest.raises(ValueError, match="val_max_chars must be an integer >= 0"):
        config(tmp_path, data, val_max_chars=-1)


# ================================================================================================
# 6. Numerical edges
# ================================================================================================


@pytest.mark.parametrize("temperature", [1e-320, 5e-324, 1e-300, 1e-20, 1e-5])
def test_a_tiny_temperature_is_greedy(temperature) -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        logits = (rng.standard_normal(9) * 30).astype(np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no overflow, no invalid value
            assert sample_from_logits(logits, temperature, None, rng) == int(np.argmax(logits))


def test_the_inf_norm_propagates_nan_from_any_array() -> None:
    grads = {"a": np.ones(3), "b": np.array([1.0, np.nan]), "c": np.zeros(2)}
    assert math.isnan(rnnkit.grad_norm(grads, math.inf))
    assert rnnkit.grad_norm({"a": np.array([1.0, -4.0]), "b": np.array([3.0])}, math.inf) == 4.0


@pytest.mark.parametrize("optimizer", [SGD(lr=0.1), Adagrad(), RMSprop(), Adam(), AdamW()], ids=type)
def test_optimizers_refuse_float16(optimizer) -> None:
    params = {"w": np.ones(3, np.float16)}
    with pytest.raises(ValueError, match=r"params\['w'\] must be float32 or float64"):
        optimizer.step(params, {"w": np.zeros(3, np.float16)})
    assert np.array_equal(params["w"], np.ones(3, np.float16))


def test_non_native_byte_order_is_accepted_and_messages_suggest_working_fixes() -> None:
    layer = rnnkit.GRU(3, 4, seed=0)
    x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
    out, _, cache = layer.forward(x)
    swapped = x.astype(x.dtype.newbyteorder())
    out_swapped, _, cache_swapped = layer.forward(swapped)
    assert np.array_equal(out, out_swapped)
    d = np.ones_like(out)
    assert np.array_equal(layer.backward(d, None, cache)[0],
                          layer.backward(d.astype(d.dtype.newbyteorder()), None, cache_swapped)[0])
    head = rnnkit.Linear(4, 2)
    assert np.array_equal(head.forward(out)[0], head.forward(out.astype(out.dtype.newbyteorder()))[0])
    with pytest.raises(ValueError) as error:
        layer.forward(x.astype(np.float16))
    assert "astype(np.float32)" in str(error.value) and "float16" not in str(error.value).split("convert")[1]
    with pytest.raises(ValueError, match="or build the layer with dtype=np.float64"):
        layer.forward(x.astype(np.float64))


def test_big_endian_states_and_gradients_reach_the_compiled_loop_in_native_order() -> None:
    """Every array the compiled time loop reads (x, both initial states, d_out, d_state) may be big-endian."""
    layer = rnnkit.LSTM(3, 4, num_layers=2, bidirectional=True, seed=0)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    state = tuple(rng.standard_normal((4, 2, 4)).astype(np.float32) for _ in range(2))
    d_out = rng.standard_normal((2, 5, 8)).astype(np.float32)
    d_state = tuple(rng.standard_normal((4, 2, 4)).astype(np.float32) for _ in range(2))

    def swap(a: np.ndarray) -> np.ndarray:
        return a.astype(a.dtype.newbyteorder())

    out, final, cache = layer.forward(x, state=state, lengths=np.array([5, 3]))
    out_s, final_s, cache_s = layer.forward(swap(x), state=tuple(map(swap, state)), lengths=np.array([5, 3]))
    assert np.array_equal(out, out_s) and all(np.array_equal(a, b) for a, b in zip(final, final_s, strict=True))
    dx, d0, grads = layer.backward(d_out, d_state, cache)
    dx_s, d0_s, grads_s = layer.backward(swap(d_out), tuple(map(swap, d_state)), cache_s)
    assert np.array_equal(dx, dx_s) and all(np.array_equal(a, b) for a, b in zip(d0, d0_s, strict=True))
    assert all(np.array_equal(grads[k], grads_s[k]) for k in grads)


# ================================================================================================
# 7. Stale caches
# ================================================================================================


def layer_cases():
    rng = np.random.default_rng(0)
    x3 = rng.standard_normal((2, 4, 3)).astype(np.float32)
    ids = rng.integers(0, 5, (2, 4))
    return [
        ("lstm", lambda: rnnkit.LSTM(3, 4, seed=1), x3, True),
        ("gru", lambda: rnnkit.GRU(3, 4, num_layers=2, bidirectional=True, seed=1), x3, True),
        ("rnn", lambda: rnnkit.RNN(3, 4, seed=1), x3, True),
        ("linear", lambda: rnnkit.Linear(3, 4, seed=1), x3, False),
        ("embedding", lambda: rnnkit.Embedding(5, 3, seed=1), ids, False),
    ]


def backward(layer, recurrent: bool, out, cache):
    d = np.ones_like(out)
    return layer.backward(d, None, cache) if recurrent else layer.backward(d, cache)


def forward(layer, recurrent: bool, x):
    if recurrent:
        out, _, cache = layer.forward(x)
    else:
        out, cache = layer.forward(x)
    return out, cache


@pytest.mark.parametrize(("make", "x", "recurrent"), [case[1:] for case in layer_cases()],
                         ids=[case[0] for case in layer_cases()])
def test_backward_refuses_stale_and_foreign_caches(make, x, recurrent) -> None:
    layer, twin = make(), make()  # the same shape and the same weights
    out, cache = forward(layer, recurrent, x)
    with pytest.raises(ValueError, match="cache comes from another"):
        backward(twin, recurrent, out, cache)
    name = next(iter(layer.params))

    edits = {
        "changed in place": lambda p: p[name].__setitem__(..., p[name] + 0.5),
        "changed in place ": lambda p: p[name].__imul__(0.5),
        "replaced": lambda p: p.__setitem__(name, p[name].copy()),
        "updated \\(an optimizer step\\)": lambda p: SGD(lr=1e-30).step(p, {k: np.zeros_like(v) for k, v in p.items()}),
    }
    for message, edit in edits.items():
        out, cache = forward(layer, recurrent, x)
        backward(layer, recurrent, out, cache)  # fine while nothing changed
        edit(layer.params)
        with pytest.raises(ValueError, match=f"weights were {message.strip()}"):
            backward(layer, recurrent, out, cache)
    out, cache = forward(layer, recurrent, x)
    layer.load_state_dict(layer.state_dict())
    with pytest.raises(ValueError, match="weights were replaced"):
        backward(layer, recurrent, out, cache)


def test_sequential_refuses_another_models_cache() -> None:
    def model():
        return rnnkit.Sequential([("embed", rnnkit.Embedding(5, 3, seed=0)), ("rnn", rnnkit.LSTM(3, 4, seed=0)),
                                  ("head", rnnkit.Linear(4, 5, seed=0))])
    a, b = model(), model()
    ids = np.random.default_rng(0).integers(0, 5, (2, 4))
    out, _, cache = a.forward(ids)
    with pytest.raises(ValueError, match="cache comes from another Sequential model"):
        b.backward(np.ones_like(out), None, cache)
    Adam(lr=1e-3).step(a.params, a.backward(np.ones_like(out), None, cache)[2])
    with pytest.raises(ValueError, match=r"layer 'head': the Linear's weights were updated"):
        a.backward(np.ones_like(out), None, cache)


# ================================================================================================
# 8. Side features that must not stop the main job
# ================================================================================================


def test_a_data_file_name_with_dollars_trains_and_plots(tmp_path, monkeypatch) -> None:
    from rnnkit.charlm.plot import plot_losses

    monkeypatch.setattr(train_module, "plot_losses", plot_losses)
    data = write_words(tmp_path / "price $5 and $6.txt")
    result = run(config(tmp_path, data, steps=6))
    assert result.plot is not None and result.plot.read_bytes()[:4] == b"\x89PNG"


def test_a_failing_plot_warns_and_training_goes_on(tmp_path, monkeypatch) -> None:
    data = write_words(tmp_path / "words.txt")

    def broken(*args, **kwargs):
        raise RuntimeError("the backend exploded")

    monkeypatch.setattr(train_module, "plot_losses", broken)
    log = io.StringIO()
    result = run(config(tmp_path, data, steps=12), log=log)
    assert result.step == 12 and result.plot is None
    assert log.getvalue().count("warning: the loss plot could not be drawn (the backend exploded)") == 1


def test_a_moved_data_file_resumes_when_its_sha256_matches(tmp_path) -> None:
    data = write_words(tmp_path / "words.txt")
    run(config(tmp_path, data, steps=6))
    moved = tmp_path / "elsewhere.txt"
    data.rename(moved)
    with pytest.raises(DataError, match="does not exist any more; if it moved, pass its new place with --data"):
        resume(tmp_path, steps=10)
    other = write_words(tmp_path / "other.txt", 300)
    with pytest.raises(DataError, match="SHA-256 differs"):
        resume(tmp_path, steps=10, data=str(other))
    assert resume(tmp_path, steps=10, data=str(moved)).step == 10
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"] == str(moved)


@pytest.mark.parametrize("steps", [5, 6, None])
def test_resume_with_nothing_left_to_do_changes_nothing(tmp_path, steps) -> None:
    data = write_words(tmp_path / "words.txt")
    run(config(tmp_path, data, steps=6))
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    with pytest.raises(ValueError, match=r"is at step 6 already, so .* leaves nothing to do; give a --steps above 6"):
        resume(tmp_path, **({} if steps is None else {"steps": steps}))
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before
